"""``ct.dispatch``, ``ct.dispatch_sync``, ``ct.get_result`` and ``ct.cancel``."""

from __future__ import annotations

import functools
import math
import os
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import cloudpickle

from cobalt._client import Client, get_client
from cobalt._executors import Executor
from cobalt._graph import Graph, GraphNode, NodeKind
from cobalt._pickling import dumps, sha256_hex
from cobalt._progress import LiveProgress, choose_view, wants_view
from cobalt._result import Result, TaskRecord
from cobalt_common.errors import (
    ControllerUnavailableError,
    GraphError,
    SpecError,
    TaskFailedError,
    WaitTimeoutError,
)
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.wire import spec_to_pb

if TYPE_CHECKING:
    from cobalt._lattice import Lattice

INLINE_LIMIT = 64 * 1024
_WAIT_CHUNK_S = 30.0
_KIND = {
    NodeKind.ELECTRON: pb.NODE_KIND_ELECTRON,
    NodeKind.PARAMETER: pb.NODE_KIND_PARAMETER,
    NodeKind.COLLECTION: pb.NODE_KIND_COLLECTION,
    NodeKind.GETATTR: pb.NODE_KIND_GETATTR,
    NodeKind.GETITEM: pb.NODE_KIND_GETITEM,
    NodeKind.SUBLATTICE: pb.NODE_KIND_SUBLATTICE,
}


def _lattice_of(obj: Any, api: str) -> Lattice[Any, Any]:
    from cobalt._electron import Electron
    from cobalt._lattice import Lattice

    if isinstance(obj, Lattice):
        return obj
    name = getattr(obj, "__name__", type(obj).__name__)
    if isinstance(obj, Electron):
        raise GraphError(
            f"{api} expects a lattice, but {name!r} is an electron. Wrap the call in a "
            "@ct.lattice function, or decorate it with @ct.lattice instead."
        )
    raise GraphError(
        f"{api} expects a @ct.lattice function; got {name!r}. Decorate it with @ct.lattice."
    )


def _consumer_path(graph: Graph, node_id: int) -> tuple[str, str]:
    """How a user names a parameter: ``args[0]`` of task ``train``."""
    for node in graph.nodes[node_id + 1 :]:
        for position, parent in enumerate(node.args):
            if parent == node_id:
                return f"args[{position}]", f"argument args[{position}] of task {node.name!r}"
        for keyword, parent in node.kwargs.items():
            if parent == node_id:
                return f"kwargs[{keyword!r}]", f"argument {keyword}= of task {node.name!r}"
    if node_id == graph.output:
        return "return value", f"return value of lattice {graph.name!r}"
    return f"node {node_id}", f"value of node {node_id}"


def _function_path(name: str) -> tuple[str, str]:
    return name, f"the function of task {name!r}"


def _executor_ref(executor: str | Executor | None) -> pb.ExecutorRef | None:
    if executor is None:
        return None
    if isinstance(executor, str):
        return pb.ExecutorRef(name=executor)
    return pb.ExecutorRef(
        name=executor.name, type=executor.type_name, options_json=executor.options_json()
    )


def build_request(graph: Graph) -> tuple[pb.DispatchCreateRequest, dict[str, bytes]]:
    """The whole workflow as one request, plus payloads too large to send inline."""
    req = pb.DispatchCreateRequest(name=graph.name, output_node=graph.output)
    payloads: dict[str, bytes] = {}
    functions: dict[int, str] = {}
    for node in graph.nodes:
        msg = req.nodes.add(node_id=node.node_id, kind=_KIND[node.kind], name=node.name)
        if node.kind == NodeKind.PARAMETER:
            data = dumps(node.value, functools.partial(_consumer_path, graph, node.node_id))
            sha = sha256_hex(data)
            payloads[sha] = data
            msg.value_sha256 = sha
            continue
        sha_or_none = functions.get(id(node.function))
        if sha_or_none is None:
            data = dumps(node.function, functools.partial(_function_path, node.name))
            sha_or_none = sha256_hex(data)
            payloads[sha_or_none] = data
            functions[id(node.function)] = sha_or_none
        msg.function_sha256 = sha_or_none
        if node.kind in (NodeKind.ELECTRON, NodeKind.SUBLATTICE):
            msg.function_key = _function_key(node)
        _add_inputs(msg, node)
        msg.hardware.CopyFrom(spec_to_pb(node.options.hardware))
        msg.retries = node.options.retries
        ref = _executor_ref(node.options.executor)
        if ref is not None:
            msg.executor.CopyFrom(ref)
    return req, split_payloads(req.payloads, payloads)


def split_payloads(inline: Any, payloads: dict[str, bytes]) -> dict[str, bytes]:
    """Adds the small payloads to ``inline`` (a request's repeated Payload field) and
    returns the large ones, which go to the blob store before the request."""
    large = {}
    for sha, data in payloads.items():
        if len(data) <= INLINE_LIMIT:
            inline.add(sha256=sha, data=data, size=len(data))
        else:
            large[sha] = data
    return large


def _function_key(node: GraphNode) -> str:
    """``module.qualname`` of the user's function: the same electron across dispatches."""
    fn = getattr(node.function, "fn", node.function)
    key = getattr(fn, "function_key", None)
    if isinstance(key, str):
        return key
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', node.name)}"


def _add_inputs(msg: pb.Node, node: GraphNode) -> None:
    for position, parent in enumerate(node.args):
        msg.inputs.add(parent=parent, position=position)
    for keyword, parent in node.kwargs.items():
        msg.inputs.add(parent=parent, position=-1, keyword=keyword)
    for parent in node.waits:
        msg.inputs.add(parent=parent, position=-1, wait_only=True)


def _upload(client: Client, large: dict[str, bytes]) -> None:
    if not large:
        return
    missing = client.call(client.stub.BlobHas, pb.BlobHasRequest(sha256=list(large))).missing
    for sha in missing:
        data = large[sha]

        def chunks(sha: str = sha, data: bytes = data) -> Any:
            for start in range(0, max(len(data), 1), 1 << 20):
                yield pb.BlobChunk(sha256=sha, data=data[start : start + (1 << 20)])

        client.call(client.stub.BlobPut, chunks())


def _create(
    client: Client,
    graph: Graph,
    parent: tuple[str, int] | None = None,
    wait_s: float = 0.0,
    budget_usd: float | None = None,
) -> pb.DispatchCreateResponse:
    req, large = build_request(graph)
    if parent is not None:
        req.parent_dispatch_id, req.parent_node_id = parent
    if budget_usd is not None:
        req.budget_usd = budget_usd
    # The id is chosen here, so that a wait interrupted before the answer
    # arrives can still say which dispatch goes on running.
    req.dispatch_id = uuid.uuid4().hex
    req.working_dir = os.getcwd()
    _upload(client, large)
    if wait_s:
        req.wait_s = wait_s
        try:
            resp = client.call_interruptibly(client.stub.DispatchCreate, req)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(_interrupted(req.dispatch_id)) from None
    else:
        resp = client.call(client.stub.DispatchCreate, req)
    return cast(pb.DispatchCreateResponse, resp)


def _interrupted(dispatch_id: str) -> str:
    return (
        f"stopped waiting; dispatch {dispatch_id} goes on running. "
        f"ct.cancel({dispatch_id!r}) stops it, and "
        f"ct.get_result({dispatch_id!r}, wait=True) waits again."
    )


def _dispatch_graph(
    graph: Graph, wait_s: float = 0.0, budget_usd: float | None = None
) -> tuple[Client, pb.DispatchCreateResponse]:
    client = get_client(start=True)
    try:
        return client, _create(client, graph, wait_s=wait_s, budget_usd=budget_usd)
    except ControllerUnavailableError:
        # The controller went away since we last saw it: start a new one, once.
        client = get_client(start=True)
        return client, _create(client, graph, wait_s=wait_s, budget_usd=budget_usd)


def check_budget(budget_usd: Any) -> float | None:
    """A budget is a positive, finite number of US dollars, or None for none."""
    if budget_usd is None:
        return None
    if (
        isinstance(budget_usd, bool)
        or not isinstance(budget_usd, int | float)
        or not math.isfinite(budget_usd)
        or budget_usd <= 0
    ):
        raise SpecError(
            f"budget_usd must be a positive number of US dollars, such as 25.0; got "
            f"{budget_usd!r}. Leave it out for no budget."
        )
    return float(budget_usd)


def dispatch(
    lattice: Any, *, budget_usd: float | None = None, **options: Any
) -> Callable[..., str]:
    """Returns a function that dispatches ``lattice`` with its arguments and
    returns the dispatch id at once.

    Args:
        lattice: a ``@ct.lattice`` function.
        budget_usd: a hard cap on what the dispatch may cost. A task starts
            only if its worst case (its rate for its whole time limit) fits in
            what is left; when the next task cannot fit, the dispatch ends
            ``BUDGET_EXCEEDED`` and keeps the results it has.

    Example:
        >>> import cobalt as ct
        >>> @ct.lattice
        ... def workflow(x):
        ...     return x
        >>> dispatch_id = ct.dispatch(workflow, budget_usd=5.0)(1)  # doctest: +SKIP
    """
    lat = _lattice_of(lattice, "ct.dispatch")
    if options:
        raise GraphError(f"ct.dispatch got unknown option(s): {', '.join(sorted(options))}.")
    budget = check_budget(budget_usd)

    @functools.wraps(lat.function)
    def submit(*args: Any, **kwargs: Any) -> str:
        graph = lat.build_graph(*args, **kwargs)
        return _dispatch_graph(graph, budget_usd=budget)[1].dispatch_id

    return submit


def dispatch_sync(
    lattice: Any,
    *,
    budget_usd: float | None = None,
    raise_on_failure: bool = True,
    progress: bool | None = None,
) -> Callable[..., Result]:
    """Like :func:`dispatch`, but waits and returns the :class:`Result`.

    When a task fails or hits its time limit, it raises
    :class:`~cobalt.TaskFailedError` with the remote traceback, the task's
    name, node id, reason and the end of its output; ``exc.result`` is the
    Result. ``raise_on_failure=False`` returns the failed Result instead.
    A cancelled dispatch, or one stopped by its budget, is returned either way.

    While it waits it shows live progress: a widget in a notebook, a bar on a
    terminal (``progress=False`` turns that off, ``True`` forces the bar).
    """
    lat = _lattice_of(lattice, "ct.dispatch_sync")
    budget = check_budget(budget_usd)

    @functools.wraps(lat.function)
    def run(*args: Any, **kwargs: Any) -> Result:
        graph = lat.build_graph(*args, **kwargs)
        if wants_view(progress):
            client, resp = _dispatch_graph(graph, budget_usd=budget)
            result = _wait_showing(client, resp.dispatch_id, None, progress)
        else:
            # One request creates the dispatch and waits for it (a first stretch of it).
            client, resp = _dispatch_graph(graph, wait_s=_WAIT_CHUNK_S, budget_usd=budget)
            result = Result.from_pb(resp.result, client)
            if not result.status.ended:
                result = _wait(client, resp.dispatch_id, None)
        return result.raise_for_status() if raise_on_failure else result

    return run


def get_dispatch(
    dispatch_id: str, *, include_output: bool = False, wait_s: float = 0.0
) -> pb.DispatchGetResponse:
    client = get_client()
    req = pb.DispatchGetRequest(
        dispatch_id=dispatch_id, include_output=include_output, wait_s=wait_s
    )
    return cast(pb.DispatchGetResponse, client.call(client.stub.DispatchGet, req))


def _wait_showing(
    client: Client, dispatch_id: str, timeout: float | None, progress: bool | None
) -> Result:
    """:func:`_wait`, with live progress where there is somewhere to show it."""
    view = choose_view(client, dispatch_id, progress)
    if view is None:
        return _wait(client, dispatch_id, timeout)
    live = LiveProgress(client, dispatch_id, view)
    try:
        return _wait(client, dispatch_id, timeout)
    finally:
        live.stop()


def _wait(client: Client, dispatch_id: str, timeout: float | None) -> Result:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        chunk = _WAIT_CHUNK_S
        if deadline is not None:
            chunk = max(0.0, min(chunk, deadline - time.monotonic()))
        req = pb.DispatchGetRequest(dispatch_id=dispatch_id, include_output=True, wait_s=chunk)
        try:
            resp = client.call_interruptibly(client.stub.DispatchGet, req)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(_interrupted(dispatch_id)) from None
        result = Result.from_pb(resp, client)
        if result.status.ended:
            return result
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeoutError(
                f"dispatch {dispatch_id} is still {result.status} after {timeout:g}s; "
                "call ct.get_result(dispatch_id, wait=True) to wait until it ends."
            )


def get_result(
    dispatch_id: str,
    wait: bool | float = False,
    *,
    raise_on_failure: bool = False,
    progress: bool | None = None,
) -> Result:
    """The :class:`Result` of a dispatch.

    Args:
        dispatch_id: what :func:`dispatch` returned.
        wait: ``False`` returns the current state at once; ``True`` waits until
            the dispatch ends; a number waits at most that many seconds and
            then raises :class:`~cobalt.WaitTimeoutError`.
        raise_on_failure: raise :class:`~cobalt.TaskFailedError` (with the
            remote traceback) when a task failed, instead of returning.
        progress: while waiting, show live progress (a widget in a notebook,
            a bar on a terminal); ``False`` turns it off.
    """
    client = get_client()
    if wait is False or wait == 0:
        req = pb.DispatchGetRequest(dispatch_id=dispatch_id, include_output=True)
        result = Result.from_pb(client.call(client.stub.DispatchGet, req), client)
    else:
        timeout = None if wait is True else float(wait)
        if wants_view(progress):
            result = _wait_showing(client, dispatch_id, timeout, progress)
        else:
            result = _wait(client, dispatch_id, timeout)
    return result.raise_for_status() if raise_on_failure else result


def cancel(dispatch_id: str) -> Result:
    """Cancels a dispatch: stops its running tasks and starts no more."""
    client = get_client()
    resp = client.call(
        client.stub.DispatchCancel, pb.DispatchCancelRequest(dispatch_id=dispatch_id)
    )
    return Result.from_pb(pb.DispatchGetResponse(dispatch=resp.dispatch), client)


def list_tasks(dispatch_id: str) -> list[TaskRecord]:
    client = get_client()
    req = pb.TaskListRequest(dispatch_id=dispatch_id, include_logs=True)
    return [TaskRecord.from_pb(t) for t in client.call(client.stub.TaskList, req).tasks]


def get_node(dispatch_id: str, node_id: int) -> tuple[TaskRecord, bytes | None]:
    client = get_client()
    req = pb.NodeGetRequest(dispatch_id=dispatch_id, node_id=node_id, include_output=True)
    resp = client.call(client.stub.NodeGet, req)
    output = fetch_payload(client, resp.output) if resp.output.sha256 else None
    return TaskRecord.from_pb(resp.task), output


def fetch_payload(client: Client | None, payload: pb.Payload) -> bytes:
    if payload.data:
        return payload.data
    client = client or get_client()
    chunks = client.stream(client.stub.BlobGet, pb.BlobGetRequest(sha256=payload.sha256))
    return b"".join(c.data for c in chunks)


def run_sublattice(
    lattice: Lattice[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Runs a sublattice from inside the task that stands for it, as a child dispatch."""
    graph = lattice.build_graph(*args, **kwargs)
    client = get_client()
    parent = None
    if os.environ.get("COBALT_DISPATCH_ID"):
        parent = (os.environ["COBALT_DISPATCH_ID"], int(os.environ.get("COBALT_NODE_ID", "0")))
    dispatch_id = _create(client, graph, parent).dispatch_id
    result = _wait(client, dispatch_id, None)
    if result.status.value != "COMPLETED":
        raise TaskFailedError(
            f"sublattice {graph.name!r} (dispatch {dispatch_id}) ended {result.status}:\n"
            f"{result.error}",
            reason="exception",
        )
    return cloudpickle.loads(fetch_payload(client, result._output)) if result._output else None
