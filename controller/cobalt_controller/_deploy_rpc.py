"""The deployment RPCs, which the controller's gRPC servicer hands to :class:`DeploymentRpcs`."""

from __future__ import annotations

import json
import time
from typing import Any

from cobalt_common import errors
from cobalt_common.checks import brief, check_content, validate_sha256
from cobalt_common.deploy import Manifest
from cobalt_common.deploy_metrics import MetricsSummary
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.wire import spec_from_pb, spec_to_pb
from cobalt_controller._convert import given_to_json, given_to_pb
from cobalt_controller._executors import ExecutorPool, ref_json
from cobalt_controller._grpc_errors import abort
from cobalt_controller._numbers import wait_seconds
from cobalt_controller._payloads import Payloads
from cobalt_controller.deploy import DeploymentManager, LiveDeployment, candidates_for
from cobalt_controller.state import DeploymentRow

DEPLOYMENT_STATUS_TO_PB = {
    "STARTING": pb.DEPLOYMENT_STATUS_STARTING,
    "ACTIVE": pb.DEPLOYMENT_STATUS_ACTIVE,
    "FAILED": pb.DEPLOYMENT_STATUS_FAILED,
    "STOPPED": pb.DEPLOYMENT_STATUS_STOPPED,
}
EVENTS_DEFAULT_LIMIT = 100
LOG_TAIL_DEFAULT = 64 * 1024


class DeploymentRpcs:
    """``Deployment*`` and ``ReplicaReady`` handlers, which the servicer calls.

    Without a deployment manager (``deployments=None``) every handler answers
    that this controller does not run deployments.
    """

    def __init__(
        self,
        deployments: DeploymentManager | None,
        payloads: Payloads,
        executors: ExecutorPool,
    ) -> None:
        self.deployments = deployments
        self.payloads = payloads
        self.executors = executors

    def _manager(self, context: Any) -> DeploymentManager:
        if self.deployments is None:
            abort(context, errors.DeploymentError("this controller does not run deployments."))
        return self.deployments

    def _gateway_url(self) -> str:
        m = self.deployments
        return m.gateway.url if m is not None and m.gateway is not None else ""

    def DeploymentCreate(self, request: pb.DeploymentCreateRequest, context: Any) -> pb.Deployment:
        manager = self._manager(context)
        try:
            check_payloads(request)
            manifest = Manifest.from_json(request.manifest_json)
        except errors.Error as exc:
            abort(context, exc)
        except (ValueError, KeyError, TypeError, OverflowError, AttributeError) as exc:
            abort(context, errors.SpecError(f"the deployment's manifest is not valid: {exc}"))
        except RecursionError:
            abort(context, errors.SpecError("the deployment's manifest is nested too deeply"))
        if request.name and request.name != manifest.name:
            abort(
                context,
                errors.SpecError(
                    f"the request names deployment {brief(request.name)} but its manifest "
                    f"{brief(manifest.name)}."
                ),
            )
        try:
            wait_seconds(request.wait_s, "wait_s")
            spec = spec_from_pb(request.hardware)
            ref = ref_json(request.executor) if request.HasField("executor") else ""
            candidates = candidates_for(self.executors, spec, ref, manifest.name)
            args = [(a.position, a.keyword, a.sha256) for a in request.args]
            self._store_payloads(request, {request.service_sha256, *(a[2] for a in args)})
            d = manager.create(
                manifest,
                request.manifest_json,
                request.service_sha256,
                args,
                spec,
                ref,
                candidates,
                request.working_dir,
            )
        except errors.Error as exc:
            abort(context, exc)
        if request.wait_s > 0:
            d = manager.wait(d.name, request.wait_s)
        return self._deployment_pb(d)

    def _store_payloads(self, request: pb.DeploymentCreateRequest, wanted: set[str]) -> None:
        inline = {p.sha256: p.data for p in request.payloads}
        if not request.service_sha256:
            raise errors.DeploymentError("the deployment carries no service payload.")
        missing = self.payloads.missing(wanted - inline.keys())
        if missing:
            raise errors.DeploymentError(
                f"{len(missing)} payload(s) were neither sent inline nor uploaded, for example "
                f"{sorted(missing)[0]}; upload them with BlobPut first."
            )
        for sha, data in inline.items():
            # Into the blob store even when small: replicas restart long after
            # the cache may have dropped it, and after controller restarts.
            self.payloads.blobs.put(sha, data)
            if len(data) <= self.payloads.inline_limit:
                self.payloads.remember(sha, data)

    def DeploymentGet(self, request: pb.DeploymentGetRequest, context: Any) -> pb.Deployment:
        manager = self._manager(context)
        try:
            wait_seconds(request.wait_s, "wait_s")
            if request.name in manager.live:
                return self._deployment_pb(manager.wait(request.name, request.wait_s))
        except errors.Error as exc:
            abort(context, exc)
        row = manager.state.get_deployment(request.name)
        if row is None:
            abort(context, errors.NotFoundError(_unknown(request.name)))
        assert row is not None
        return self._row_pb(row)

    def DeploymentList(
        self, request: pb.DeploymentListRequest, context: Any
    ) -> pb.DeploymentListResponse:
        manager = self._manager(context)
        out = []
        for row in manager.state.list_deployments(include_stopped=request.include_stopped):
            d = manager.live.get(row.name)
            out.append(self._deployment_pb(d) if d is not None else self._row_pb(row))
        return pb.DeploymentListResponse(deployments=out)

    def DeploymentTeardown(self, request: pb.DeploymentGetRequest, context: Any) -> pb.Deployment:
        manager = self._manager(context)
        if request.name not in manager.live:
            row = manager.state.get_deployment(request.name)
            if row is None:
                abort(context, errors.NotFoundError(_unknown(request.name)))
            assert row is not None
            if row.status != "STOPPED":
                manager.state.update_deployment(request.name, status="STOPPED")
                row.status = "STOPPED"
            return self._row_pb(row)
        try:
            return self._deployment_pb(manager.teardown(request.name))
        except errors.Error as exc:
            abort(context, exc)

    def DeploymentTokenRotate(
        self, request: pb.DeploymentGetRequest, context: Any
    ) -> pb.Deployment:
        manager = self._manager(context)
        try:
            return self._deployment_pb(manager.rotate_token(request.name))
        except errors.Error as exc:
            abort(context, exc)

    def DeploymentEvents(
        self, request: pb.DeploymentEventsRequest, context: Any
    ) -> pb.DeploymentEventsResponse:
        manager = self._manager(context)
        if manager.state.get_deployment(request.name) is None:
            abort(context, errors.NotFoundError(_unknown(request.name)))
        rows = manager.state.deployment_events(request.name, request.limit or EVENTS_DEFAULT_LIMIT)
        return pb.DeploymentEventsResponse(
            events=[
                pb.DeploymentEvent(
                    time=e.time, kind=e.kind, message=e.message, inputs_json=e.inputs_json
                )
                for e in rows
            ]
        )

    def DeploymentLogs(
        self, request: pb.DeploymentLogsRequest, context: Any
    ) -> pb.DeploymentLogsResponse:
        manager = self._manager(context)
        try:
            found = manager.logs(request.name, request.tail_bytes or LOG_TAIL_DEFAULT)
        except errors.Error as exc:
            abort(context, exc)
        return pb.DeploymentLogsResponse(
            replicas=[
                pb.ReplicaLog(
                    replica_id=r.replica_id,
                    status=r.status,
                    stdout=r.stdout,
                    stderr=r.stderr,
                    ended_at=r.ended_at,
                )
                for r in found
            ]
        )

    def DeploymentMetrics(
        self, request: pb.DeploymentGetRequest, context: Any
    ) -> pb.DeploymentMetricsResponse:
        manager = self._manager(context)
        if request.name in manager.live:
            try:
                return metrics_pb(request.name, manager.metrics(request.name, fresh=True))
            except errors.Error as exc:
                abort(context, exc)
        row = manager.state.get_deployment(request.name)
        if row is None:
            abort(context, errors.NotFoundError(_unknown(request.name)))
        assert row is not None
        return metrics_pb(row.name, MetricsSummary(cost_usd=row.cost_usd, emulated=row.emulated))

    def ReplicaReady(
        self, request: pb.ReplicaReadyRequest, context: Any
    ) -> pb.ReplicaReadyResponse:
        manager = self._manager(context)
        keep = manager.on_replica_ready(
            request.deployment, request.replica_id, request.url, request.pid, request.openapi_json
        )
        return pb.ReplicaReadyResponse(keep=keep)

    # -- conversions ------------------------------------------------------------------

    def _url(self, name: str) -> str:
        base = self._gateway_url()
        return f"{base}/{name}" if base else ""

    def _deployment_pb(self, d: LiveDeployment) -> pb.Deployment:
        manager = self.deployments
        assert manager is not None
        now = time.time()
        with manager._lock:
            in_flight = manager.gateway.in_flight(d.name) if manager.gateway else {}
            replicas = [
                pb.Replica(
                    replica_id=r.replica_id,
                    status=r.status,
                    url=r.url,
                    executor=r.executor_name,
                    hardware_given=given_to_pb(given_to_json(r.given)),
                    started_at=r.started_at or 0.0,
                    ready_at=r.ready_at or 0.0,
                    in_flight=in_flight.get(r.replica_id, 0),
                    version=r.version,
                    error=r.error,
                )
                for r in d.replicas.values()
            ]
            m = d.manifest
            return pb.Deployment(
                name=d.name,
                status=DEPLOYMENT_STATUS_TO_PB[d.status],
                url=self._url(d.name),
                token=d.token if m.auth else "",
                auth=m.auth,
                routes=[
                    pb.DeploymentRoute(name=r.name, path=r.path, streaming=r.streaming)
                    for r in m.routes
                ],
                ready_replicas=sum(1 for r in d.replicas.values() if r.status == "ready"),
                desired_replicas=d.desired,
                replicas=replicas,
                manifest_json=d.manifest_json,
                error=d.error,
                created_at=d.created_at,
                updated_at=d.updated_at,
                cost_usd=d.live_cost(now),
                emulated=d.emulated
                or any(r.given is not None and r.given.emulated for r in d.replicas.values()),
                hardware=spec_to_pb(d.spec),
                executor=_executor_name(d.executor_ref),
                version=d.version,
            )

    def _row_pb(self, row: DeploymentRow) -> pb.Deployment:
        from cobalt_common.hardware import HardwareSpec

        m = Manifest.from_json(row.manifest_json)
        return pb.Deployment(
            name=row.name,
            status=DEPLOYMENT_STATUS_TO_PB.get(row.status, pb.DEPLOYMENT_STATUS_UNSPECIFIED),
            url=self._url(row.name),
            token=row.token if m.auth else "",
            auth=m.auth,
            routes=[
                pb.DeploymentRoute(name=r.name, path=r.path, streaming=r.streaming)
                for r in m.routes
            ],
            desired_replicas=row.desired_replicas,
            manifest_json=row.manifest_json,
            error=row.error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            cost_usd=row.cost_usd,
            emulated=row.emulated,
            hardware=spec_to_pb(HardwareSpec.from_dict(json.loads(row.hardware or "{}"))),
            executor=_executor_name(row.executor_ref),
            version=row.version,
        )


def metrics_pb(name: str, s: MetricsSummary) -> pb.DeploymentMetricsResponse:
    """A deployment's metrics on the wire; unknown values stay unset."""
    known = {
        key: value
        for key, value in (
            ("time_to_first_token_p50", s.time_to_first_token_p50),
            ("time_to_first_token_p99", s.time_to_first_token_p99),
            ("inter_token_p50", s.inter_token_p50),
            ("inter_token_p99", s.inter_token_p99),
            ("tokens_per_second", s.tokens_per_second),
            ("tokens_per_busy_second", s.tokens_per_busy_second),
            ("cost_per_1k_requests", s.cost_per_1k_requests),
            ("cost_per_million_tokens", s.cost_per_million_tokens),
        )
        if value is not None
    }
    return pb.DeploymentMetricsResponse(
        name=name,
        requests=s.requests,
        model_requests=s.model_requests,
        prompt_tokens=s.prompt_tokens,
        generated_tokens=s.generated_tokens,
        cached_prompt_tokens=s.cached_prompt_tokens,
        window_s=s.window_s,
        batch_sizes=s.batch_sizes,
        endpoint_batch_sizes=[
            pb.EndpointBatchSizes(path=path, sizes=sizes)
            for path, sizes in s.endpoint_batch_sizes.items()
        ],
        cost_usd=s.cost_usd,
        emulated=s.emulated,
        models=list(s.models),
        errors=list(s.errors),
        replicas_reporting=s.replicas_reporting,
        as_of=s.as_of,
        **known,
    )


def _executor_name(ref: str) -> str:
    return str(json.loads(ref).get("name", "")) if ref else ""


def _unknown(name: str) -> str:
    return f"no deployment named {brief(name)}; `cobalt deployments` lists the running ones."


def check_payloads(request: pb.DeploymentCreateRequest) -> None:
    """Refuses a deployment whose content addresses are malformed or whose inline
    bytes do not hash to their sha256, before anything of it is stored."""
    if request.service_sha256:
        validate_sha256(request.service_sha256, "service")
    for a in request.args:
        validate_sha256(a.sha256, "argument")
    for p in request.payloads:
        check_content(p.sha256, p.data)
