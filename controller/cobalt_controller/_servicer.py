"""The gRPC service: translates wire messages to scheduler calls and back."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from cobalt_common import errors
from cobalt_common.checks import brief, validate_sha256
from cobalt_common.pricing import describe_prices
from cobalt_common.status import DISPATCH_ENDED
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.v1 import controller_pb2_grpc as pb_grpc
from cobalt_common.wire import STATUS_TO_PB
from cobalt_controller import _numbers
from cobalt_controller._convert import dispatch_row_to_pb, dispatch_to_pb, node_row_to_pb
from cobalt_controller._deploy_rpc import DeploymentRpcs
from cobalt_controller._executors import ExecutorPool
from cobalt_controller._grpc_errors import abort
from cobalt_controller._payloads import Payloads
from cobalt_controller.agents import AgentTokens
from cobalt_controller.deploy import DeploymentManager
from cobalt_controller.dispatch._cost import estimate, local_day
from cobalt_controller.dispatch._events import EventHub
from cobalt_controller.dispatch._intake import build_dispatch
from cobalt_controller.dispatch._model import COMPLETED, PARAMETER, TERMINAL
from cobalt_controller.dispatch._scheduler import Scheduler
from cobalt_controller.dispatch._task_cancel import check_task_ids
from cobalt_controller.state import DispatchRow, NodeRow

log = logging.getLogger("cobalt.controller")
CHUNK = 1 << 20
MAX_UPLOAD_URL_BYTES = 5 << 30
"""The largest output an agent uploads in one presigned PUT (S3's limit for one)."""


class ControllerServicer(pb_grpc.ControllerServicer):
    """Every RPC of the ``Controller`` service: dispatch, blob and cost RPCs here,
    the deployment RPCs handed to a :class:`DeploymentRpcs` it holds."""

    def __init__(
        self,
        scheduler: Scheduler,
        payloads: Payloads,
        executors: ExecutorPool,
        hub: EventHub,
        info: dict[str, Any],
        on_stop: Callable[[], None],
        deployments: DeploymentManager | None = None,
        agent_tokens: AgentTokens | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.state = scheduler.state
        self.payloads = payloads
        self.executors = executors
        self.hub = hub
        self.info = info
        self.on_stop = on_stop
        self.deployment_rpcs = DeploymentRpcs(deployments, payloads, executors)
        self.agent_tokens = agent_tokens

    # -- controller ----------------------------------------------------------------

    def ControllerStatus(self, request: Any, context: Any) -> pb.ControllerStatusResponse:
        machine = self.executors.machine
        infos = []
        for ex in self.executors.all():
            capacity, free = ex.describe()
            infos.append(
                pb.ExecutorInfo(
                    name=ex.name,
                    type=ex.type_name,
                    capacity=capacity,
                    free=free,
                    configured=self.executors.is_configured(ex),
                    prices=describe_prices(ex.prices),
                )
            )
        return pb.ControllerStatusResponse(
            version=self.info["version"],
            pid=os.getpid(),
            address=self.info["address"],
            started_at=self.info["started_at"],
            database_url=self.info["database_url"],
            executors=infos,
            active_dispatches=len(self.scheduler.active),
            dashboard=str(self.info.get("dashboard", "")),
            gateway=str(self.info.get("gateway", "")),
            machine=machine.describe() if machine.members else "",
            machine_free=machine.describe(free=True) if machine.members else "",
        )

    def ControllerStop(self, request: Any, context: Any) -> pb.ControllerStopResponse:
        self.on_stop()
        return pb.ControllerStopResponse()

    def AgentTokenCreate(
        self, request: pb.AgentTokenCreateRequest, context: Any
    ) -> pb.AgentTokenCreateResponse:
        if self.agent_tokens is None:
            abort(context, errors.ExecutorError("this controller serves no agents."))
        try:
            return self.agent_tokens.create(request, self.executors.all())
        except errors.Error as exc:
            abort(context, exc)

    # -- blobs ---------------------------------------------------------------------

    def BlobHas(self, request: pb.BlobHasRequest, context: Any) -> pb.BlobHasResponse:
        try:
            shas = {validate_sha256(sha) for sha in request.sha256}
        except errors.Error as exc:
            abort(context, exc)
        return pb.BlobHasResponse(missing=sorted(self.payloads.missing(shas)))

    def BlobPut(self, request_iterator: Iterator[pb.BlobChunk], context: Any) -> pb.BlobPutResponse:
        """Streams the chunks into the blob store as they arrive: the controller
        holds about one chunk of an upload at a time, never the whole blob."""
        first = next(request_iterator, None)
        sha = first.sha256 if first is not None else ""
        try:
            validate_sha256(sha)
        except errors.Error as exc:
            abort(context, exc)

        def chunks() -> Iterator[bytes]:
            if first is not None:
                yield first.data
            for chunk in request_iterator:
                yield chunk.data

        if not self.payloads.blobs.put_stream(sha, chunks()):
            context.abort(grpc.StatusCode.DATA_LOSS, f"blob content does not match sha256 {sha}")
        return pb.BlobPutResponse(sha256=sha)

    def BlobUploadUrl(
        self, request: pb.BlobUploadUrlRequest, context: Any
    ) -> pb.BlobUploadUrlResponse:
        """A presigned PUT for an agent's large output, when the blob store takes them:
        the object store then checks the bytes against ``sha256``, and they never
        pass through the controller."""
        try:
            sha = validate_sha256(request.sha256)
        except errors.Error as exc:
            abort(context, exc)
        if not 0 <= request.size <= MAX_UPLOAD_URL_BYTES:
            abort(
                context,
                errors.SpecError(
                    f"size must be a number of bytes from 0 to {MAX_UPLOAD_URL_BYTES}, "
                    f"not {request.size}"
                ),
            )
        blobs = self.payloads.blobs
        if blobs.has(sha):
            return pb.BlobUploadUrlResponse(stored=True)
        upload = blobs.upload_url(sha, request.size)
        if upload is None:
            return pb.BlobUploadUrlResponse()
        return pb.BlobUploadUrlResponse(url=upload.url, headers=upload.headers)

    def BlobGet(self, request: pb.BlobGetRequest, context: Any) -> Iterator[pb.BlobChunk]:
        try:
            sha = validate_sha256(request.sha256)
        except errors.Error as exc:
            abort(context, exc)
        data = self.payloads.get_bytes(sha)
        if data is None:
            abort(context, errors.NotFoundError(f"no payload {sha}"))
        for start in range(0, max(len(data), 1), CHUNK):
            yield pb.BlobChunk(sha256=sha, data=data[start : start + CHUNK])

    # -- dispatches ----------------------------------------------------------------

    def DispatchCreate(
        self, request: pb.DispatchCreateRequest, context: Any
    ) -> pb.DispatchCreateResponse:
        try:
            previous = self._reused(request.reuse_dispatch_id)
            d, batch = build_dispatch(request, self.payloads, self.executors, previous)
        except errors.Error as exc:
            abort(context, exc)
        try:
            self.state.apply(batch)
        except Exception:
            # A reused id is the one way a checked dispatch fails to store;
            # asking first would cost every dispatch a query.
            if self.state.get_dispatch(d.dispatch_id) is not None:
                abort(
                    context,
                    errors.DispatchError(f"a dispatch with id {d.dispatch_id} already exists."),
                )
            raise
        self.scheduler.submit_dispatch(d)
        if d.parent_dispatch_id is not None and d.parent_node_id is not None:
            self.scheduler.link_sublattice(d.parent_dispatch_id, d.parent_node_id, d.dispatch_id)
        resp = pb.DispatchCreateResponse(dispatch_id=d.dispatch_id)
        if request.wait_s > 0:
            get = pb.DispatchGetRequest(
                dispatch_id=d.dispatch_id, wait_s=request.wait_s, include_output=True
            )
            resp.result.CopyFrom(self.DispatchGet(get, context))
        return resp

    def _reused(self, dispatch_id: str) -> tuple[str, list[NodeRow]] | None:
        """The dispatch whose results a new one may take over, and its nodes."""
        if not dispatch_id:
            return None
        if self.state.get_dispatch(dispatch_id) is None:
            raise errors.NotFoundError(
                f"no dispatch with id {brief(dispatch_id)} on this controller to reuse results "
                "from; results are reused only from a dispatch of the controller that runs the "
                "new one (`cobalt dispatches` lists them). Redispatch without "
                "reuse_previous_results, or point COBALT_HOME at that dispatch's controller."
            )
        return dispatch_id, self.state.get_nodes(dispatch_id, include_logs=False)

    def _output(self, sha: str) -> pb.Payload:
        data = self.payloads.get_bytes(sha)
        if data is None:
            return pb.Payload(sha256=sha)
        if len(data) > self.payloads.inline_limit:
            return pb.Payload(sha256=sha, size=len(data))
        return pb.Payload(sha256=sha, data=data, size=len(data))

    def DispatchGet(self, request: pb.DispatchGetRequest, context: Any) -> pb.DispatchGetResponse:
        try:
            _numbers.wait_seconds(request.wait_s, "wait_s")
        except errors.Error as exc:
            abort(context, exc)
        d = self.scheduler.active.get(request.dispatch_id)
        if d is not None and request.wait_s > 0:
            d.done.wait(request.wait_s)
        if d is not None and (d.done.is_set() or d.status not in DISPATCH_ENDED):
            resp = pb.DispatchGetResponse(dispatch=dispatch_to_pb(d))
            out = d.tasks[d.output_node].output
            if request.include_output and d.status == COMPLETED and out is not None:
                resp.output.CopyFrom(self._output(out.sha256))
            return resp
        row = self.state.get_dispatch(request.dispatch_id)
        if row is None:
            abort(context, errors.NotFoundError(_unknown(request.dispatch_id)))
        resp = pb.DispatchGetResponse(dispatch=self._dispatch_row_pb(row))
        if request.include_output and row.status == COMPLETED:
            node = self.state.get_node(row.dispatch_id, row.output_node)
            if node is not None and node.output_sha256:
                resp.output.CopyFrom(self._output(node.output_sha256))
        return resp

    def _dispatch_row_pb(self, row: DispatchRow) -> pb.Dispatch:
        """A stored dispatch on the wire, with its tasks counted by status."""
        counts = self.state.status_counts([row.dispatch_id]).get(row.dispatch_id)
        return dispatch_row_to_pb(row, counts)

    def DispatchList(
        self, request: pb.DispatchListRequest, context: Any
    ) -> pb.DispatchListResponse:
        rows = self.state.list_dispatches(request.limit or 50)
        counts = self.state.status_counts(r.dispatch_id for r in rows)
        return pb.DispatchListResponse(
            dispatches=[dispatch_row_to_pb(r, counts.get(r.dispatch_id)) for r in rows]
        )

    def DispatchEstimate(
        self, request: pb.DispatchCreateRequest, context: Any
    ) -> pb.DispatchEstimateResponse:
        try:
            return estimate(request, self.executors, self.state)
        except errors.Error as exc:
            abort(context, exc)

    def DispatchCancel(
        self, request: pb.DispatchCancelRequest, context: Any
    ) -> pb.DispatchCancelResponse:
        d = self.scheduler.active.get(request.dispatch_id)
        if d is None:
            row = self.state.get_dispatch(request.dispatch_id)
            if row is None:
                abort(context, errors.NotFoundError(_unknown(request.dispatch_id)))
            if request.task_ids:  # ended: nothing to stop, but wrong ids are still wrong
                kinds = [n.kind for n in self.state.get_nodes(row.dispatch_id, include_logs=False)]
                try:
                    check_task_ids(row.dispatch_id, kinds, request.task_ids)
                except errors.Error as exc:
                    abort(context, exc)
            return pb.DispatchCancelResponse(dispatch=self._dispatch_row_pb(row))
        if not request.task_ids:
            self.scheduler.cancel(d.dispatch_id)
            d.done.wait(5.0)
            return pb.DispatchCancelResponse(dispatch=dispatch_to_pb(d))
        try:
            ids = check_task_ids(d.dispatch_id, [t.kind for t in d.tasks], request.task_ids)
        except errors.Error as exc:
            abort(context, exc)
        self.scheduler.cancel_tasks(d.dispatch_id, ids)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not d.done.is_set():
            if all(d.tasks[i].status in TERMINAL for i in ids):
                break
            time.sleep(0.02)
        return pb.DispatchCancelResponse(dispatch=dispatch_to_pb(d))

    def DispatchWatch(
        self, request: pb.DispatchWatchRequest, context: Any
    ) -> Iterator[pb.DispatchEvent]:
        q = self.hub.subscribe(request.dispatch_id)
        try:
            d = self.scheduler.active.get(request.dispatch_id)
            row = self.state.get_dispatch(request.dispatch_id)
            if row is None and d is None:
                abort(context, errors.NotFoundError(_unknown(request.dispatch_id)))
            for node in self.state.get_nodes(request.dispatch_id, include_logs=False):
                if node.kind != PARAMETER:
                    yield pb.DispatchEvent(
                        dispatch_id=request.dispatch_id, time=time.time(), task=node_row_to_pb(node)
                    )
            snapshot = dispatch_to_pb(d) if d is not None else self._dispatch_row_pb(row)  # type: ignore[arg-type]
            yield pb.DispatchEvent(
                dispatch_id=request.dispatch_id, time=time.time(), dispatch=snapshot
            )
            if d is None or d.done.is_set():
                return
            while context.is_active():
                try:
                    event = q.get(timeout=1.0)
                except Exception:
                    if d.done.is_set():
                        return
                    continue
                if event is None:
                    return
                yield event
                if event.HasField("dispatch") and event.dispatch.status in _ENDED_PB:
                    return
        finally:
            self.hub.unsubscribe(request.dispatch_id, q)

    # -- tasks ---------------------------------------------------------------------

    def TaskList(self, request: pb.TaskListRequest, context: Any) -> pb.TaskListResponse:
        if self.state.get_dispatch(request.dispatch_id) is None:
            abort(context, errors.NotFoundError(_unknown(request.dispatch_id)))
        rows = self.state.get_nodes(request.dispatch_id, include_logs=request.include_logs)
        return pb.TaskListResponse(
            tasks=[
                node_row_to_pb(r) for r in rows if request.include_parameters or r.kind != PARAMETER
            ]
        )

    def NodeGet(self, request: pb.NodeGetRequest, context: Any) -> pb.NodeGetResponse:
        row = self.state.get_node(request.dispatch_id, request.node_id)
        if row is None:
            if self.state.get_dispatch(request.dispatch_id) is None:
                abort(context, errors.NotFoundError(_unknown(request.dispatch_id)))
            abort(
                context,
                errors.NotFoundError(
                    f"dispatch {brief(request.dispatch_id)} has no node {request.node_id}; "
                    "node ids are listed in Result.tasks."
                ),
            )
        resp = pb.NodeGetResponse(task=node_row_to_pb(row))
        # A parameter's output is its value, as the tasks that take it receive it.
        output = row.output_sha256 or (row.value_sha256 if row.kind == "parameter" else "")
        if request.include_output and output:
            resp.output.CopyFrom(self._output(output))
        return resp

    # -- deployments: handed to DeploymentRpcs ---------------------------------------

    def DeploymentCreate(self, request: pb.DeploymentCreateRequest, context: Any) -> pb.Deployment:
        return self.deployment_rpcs.DeploymentCreate(request, context)

    def DeploymentGet(self, request: pb.DeploymentGetRequest, context: Any) -> pb.Deployment:
        return self.deployment_rpcs.DeploymentGet(request, context)

    def DeploymentList(
        self, request: pb.DeploymentListRequest, context: Any
    ) -> pb.DeploymentListResponse:
        return self.deployment_rpcs.DeploymentList(request, context)

    def DeploymentTeardown(self, request: pb.DeploymentGetRequest, context: Any) -> pb.Deployment:
        return self.deployment_rpcs.DeploymentTeardown(request, context)

    def DeploymentTokenRotate(
        self, request: pb.DeploymentGetRequest, context: Any
    ) -> pb.Deployment:
        return self.deployment_rpcs.DeploymentTokenRotate(request, context)

    def DeploymentEvents(
        self, request: pb.DeploymentEventsRequest, context: Any
    ) -> pb.DeploymentEventsResponse:
        return self.deployment_rpcs.DeploymentEvents(request, context)

    def DeploymentLogs(
        self, request: pb.DeploymentLogsRequest, context: Any
    ) -> pb.DeploymentLogsResponse:
        return self.deployment_rpcs.DeploymentLogs(request, context)

    def DeploymentMetrics(
        self, request: pb.DeploymentGetRequest, context: Any
    ) -> pb.DeploymentMetricsResponse:
        return self.deployment_rpcs.DeploymentMetrics(request, context)

    def ReplicaReady(
        self, request: pb.ReplicaReadyRequest, context: Any
    ) -> pb.ReplicaReadyResponse:
        return self.deployment_rpcs.ReplicaReady(request, context)

    # -- cost ----------------------------------------------------------------------

    def CostSummary(self, request: pb.CostSummaryRequest, context: Any) -> pb.CostSummaryResponse:
        try:
            since = local_day(_numbers.since_time(request.since)) if request.since else ""
        except errors.Error as exc:
            abort(context, exc)
        return pb.CostSummaryResponse(
            rows=[
                pb.CostRow(
                    day=r.day,
                    executor=r.executor,
                    gpu=r.gpu_type,
                    emulated=r.emulated,
                    tasks=r.tasks,
                    billed_s=r.billed_s,
                    cost_usd=r.cost_usd,
                )
                for r in self.state.cost_summary(since)
            ]
        )


_ENDED_PB = frozenset(STATUS_TO_PB[s] for s in DISPATCH_ENDED)


def _unknown(dispatch_id: str) -> str:
    return (
        f"no dispatch with id {brief(dispatch_id)} on this controller; "
        "`cobalt dispatches` lists the known ones."
    )
