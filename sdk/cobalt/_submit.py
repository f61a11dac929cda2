"""A built graph sent to the controller in one request, and the wait for its :class:`Result`.

Below the public calls (:mod:`cobalt._dispatch`) and the sublattice runner
(:mod:`cobalt._runtime.sublattice`), which both start from a graph: each
function and argument is pickled once and content-addressed, small payloads
go inline and large ones to the blob store first.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, cast

from cobalt._client import Client, get_client
from cobalt._executors import Executor
from cobalt._graph import Graph, GraphNode, NodeKind
from cobalt._pickling import dumps, sha256_hex
from cobalt._progress import LiveProgress, choose_view
from cobalt._result import Result
from cobalt_common.errors import ControllerUnavailableError, PicklingError, WaitTimeoutError
from cobalt_common.runtime import runtime_versions
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.wire import spec_to_pb

INLINE_LIMIT = 64 * 1024
WAIT_CHUNK_S = 30.0
_KIND = {
    NodeKind.ELECTRON: pb.NODE_KIND_ELECTRON,
    NodeKind.PARAMETER: pb.NODE_KIND_PARAMETER,
    NodeKind.COLLECTION: pb.NODE_KIND_COLLECTION,
    NodeKind.GETATTR: pb.NODE_KIND_GETATTR,
    NodeKind.GETITEM: pb.NODE_KIND_GETITEM,
    NodeKind.SUBLATTICE: pb.NODE_KIND_SUBLATTICE,
    NodeKind.OPERATION: pb.NODE_KIND_OPERATION,
}


def _consumer_path(graph: Graph, node_id: int) -> tuple[str, str]:
    """How a user names a parameter: ``args[0]`` of task ``train``."""
    for node in graph.nodes:  # a consumer is numbered before its parameters
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


def executor_ref(executor: str | Executor | None) -> pb.ExecutorRef | None:
    if executor is None:
        return None
    if isinstance(executor, str):
        return pb.ExecutorRef(name=executor)
    return pb.ExecutorRef(
        name=executor.name,
        type=executor.type_name,
        options_json=executor.options_json(),
        match_json=executor.match_json(),
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
        if node.kind in (NodeKind.ELECTRON, NodeKind.SUBLATTICE):
            msg.function_key = _function_key(node)
            if node.node_id not in graph.replaced:
                sha_or_none = graph.stored_functions.get(msg.function_key, sha_or_none)
        if sha_or_none is None:
            data = dumps(node.function, functools.partial(_function_path, node.name))
            sha_or_none = sha256_hex(data)
            payloads[sha_or_none] = data
            functions[id(node.function)] = sha_or_none
        msg.function_sha256 = sha_or_none
        _add_inputs(msg, node)
        msg.hardware.CopyFrom(spec_to_pb(node.options.hardware))
        msg.retries = node.options.retries
        ref = executor_ref(node.options.executor)
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


Source = tuple[Any, Sequence[Any], Mapping[str, Any]]
"""What a graph was built from: the lattice, and the arguments it was called with."""


def add_source(
    req: pb.DispatchCreateRequest,
    source: Source,
    large: dict[str, bytes],
    graph: Graph | None = None,
) -> None:
    """Names the pickled lattice and its pickled inputs in ``req``, so that the dispatch
    can run again (``ct.redispatch``) and ``Result.inputs`` can give the arguments back.

    An argument passed straight to a task is a parameter of ``graph`` already; when
    its payload is too large to go inline, the inputs name that payload instead of
    holding its bytes a second time (read back by ``loads(..., fetch=...)``).

    A lattice that cannot be pickled as a whole (a global it uses holds a lock, say)
    still runs, since its tasks were pickled one by one; it is kept without them.
    """
    lattice, args, kwargs = source
    name = getattr(lattice, "__name__", "workflow")
    refs = _stored_arguments(req, graph, large, [*args, *kwargs.values()])
    try:
        lattice_data = dumps(lattice, lambda: (name, f"lattice {name!r}"))
        inputs = {"args": list(args), "kwargs": dict(kwargs)}
        inputs_data = dumps(inputs, lambda: ("inputs", f"the inputs of lattice {name!r}"), refs)
    except PicklingError as exc:
        warnings.warn(
            f"{exc} The dispatch runs, but without its lattice kept, so ct.redispatch cannot "
            "run it again and Result.inputs is None.",
            stacklevel=4,
        )
        return
    req.lattice_sha256, req.inputs_sha256 = sha256_hex(lattice_data), sha256_hex(inputs_data)
    kept = {req.lattice_sha256: lattice_data, req.inputs_sha256: inputs_data}
    large.update(split_payloads(req.payloads, kept))


def _stored_arguments(
    req: pb.DispatchCreateRequest, graph: Graph | None, large: dict[str, bytes], values: list[Any]
) -> dict[int, str]:
    """The arguments that are large parameters of ``graph``: their sha256, by ``id``."""
    if graph is None:
        return {}
    wanted = {id(v) for v in values}
    return {
        id(node.value): msg.value_sha256
        for node, msg in zip(graph.nodes, req.nodes, strict=True)
        if node.kind == NodeKind.PARAMETER
        and id(node.value) in wanted
        and msg.value_sha256 in large
    }


def create(
    client: Client,
    graph: Graph,
    parent: tuple[str, int] | None = None,
    wait_s: float = 0.0,
    budget_usd: float | None = None,
    source: Source | None = None,
    reuse: str = "",
) -> pb.DispatchCreateResponse:
    """Sends ``graph`` as one DispatchCreate (large payloads uploaded first); ``parent`` is
    the (dispatch, node) of the sublattice task it runs for; ``wait_s`` waits that long;
    ``source`` is kept with it (:func:`add_source`); ``reuse`` names a dispatch whose
    completed tasks with the same function and inputs are not run again."""
    req, large = build_request(graph)
    if source is not None:
        add_source(req, source, large, graph)
    req.reuse_dispatch_id = reuse
    if parent is not None:
        req.parent_dispatch_id, req.parent_node_id = parent
    if budget_usd is not None:
        req.budget_usd = budget_usd
    # The id is chosen here, so that a wait interrupted before the answer
    # arrives can still say which dispatch goes on running.
    req.dispatch_id = uuid.uuid4().hex
    req.working_dir = os.getcwd()
    req.client_runtime.update(runtime_versions())
    client.upload(large)
    if wait_s:
        req.wait_s = wait_s
        try:
            resp = client.call_interruptibly(client.stub.DispatchCreate, req)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(interrupted(req.dispatch_id)) from None
    else:
        resp = client.call(client.stub.DispatchCreate, req)
    return cast(pb.DispatchCreateResponse, resp)


def interrupted(dispatch_id: str) -> str:
    """What Ctrl-C during a wait says: the dispatch goes on, and how to stop or rejoin it."""
    return (
        f"stopped waiting; dispatch {dispatch_id} goes on running. "
        f"ct.cancel({dispatch_id!r}) stops it, and "
        f"ct.get_result({dispatch_id!r}, wait=True) waits again."
    )


def dispatch_graph(
    graph: Graph,
    wait_s: float = 0.0,
    budget_usd: float | None = None,
    source: Source | None = None,
) -> tuple[Client, pb.DispatchCreateResponse]:
    """Creates the dispatch on the current home's controller, starting one if none runs."""
    send = functools.partial(
        create, graph=graph, wait_s=wait_s, budget_usd=budget_usd, source=source
    )
    client = get_client(start=True)
    try:
        return client, send(client)
    except ControllerUnavailableError:
        # The controller went away since we last saw it: start a new one, once.
        client = get_client(start=True)
        return client, send(client)


def wait_showing(
    client: Client, dispatch_id: str, timeout: float | None, progress: bool | None
) -> Result:
    """:func:`wait_until_ended`, with live progress where there is somewhere to show it."""
    view = choose_view(client, dispatch_id, progress)
    if view is None:
        return wait_until_ended(client, dispatch_id, timeout)
    live = LiveProgress(client, dispatch_id, view)
    try:
        return wait_until_ended(client, dispatch_id, timeout)
    finally:
        live.stop()


def wait_until_ended(client: Client, dispatch_id: str, timeout: float | None) -> Result:
    """Waits, in stretches the controller holds open, until the dispatch ends; its Result."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        chunk = WAIT_CHUNK_S
        if deadline is not None:
            chunk = max(0.0, min(chunk, deadline - time.monotonic()))
        try:
            resp = client.dispatch_get(
                dispatch_id, include_output=True, wait_s=chunk, interruptible=True
            )
        except KeyboardInterrupt:
            raise KeyboardInterrupt(interrupted(dispatch_id)) from None
        result = Result.from_pb(resp, client)
        if result.status.ended:
            return result
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeoutError(
                f"dispatch {dispatch_id} is still {result.status} after {timeout:g}s; "
                "call ct.get_result(dispatch_id, wait=True) to wait until it ends."
            )
