"""Turns a DispatchCreate request into a stored, schedulable dispatch.

Everything is checked before anything is stored, so a refused dispatch
leaves nothing behind: graph shape, payload presence, executors, and that
some executor can ever run each task's hardware spec.
"""

from __future__ import annotations

import json
import time
import uuid

from cobalt_common.errors import DispatchError
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_controller._convert import PB_TO_KIND, spec_from_pb, spec_to_json
from cobalt_controller._executors import ExecutorPool
from cobalt_controller._model import COMPLETED, PARAMETER, Dispatch, Input, Task
from cobalt_controller._payloads import Payloads
from cobalt_controller.state import DispatchRow, NodeRow, WriteBatch
from cobalt_executors import Executor, PayloadRef


def build_dispatch(
    req: pb.DispatchCreateRequest, payloads: Payloads, executors: ExecutorPool
) -> tuple[Dispatch, WriteBatch]:
    n = len(req.nodes)
    if n == 0:
        raise DispatchError("the workflow has no nodes.")
    if req.output_node >= n:
        raise DispatchError(f"output node {req.output_node} does not exist.")
    inline = {p.sha256: p.data for p in req.payloads}
    wanted: set[str] = set()
    tasks: list[Task] = []
    resolved: dict[str, object] = {}
    candidates: dict[tuple[str, object], tuple[Executor, ...]] = {}
    for i, node in enumerate(req.nodes):
        if node.node_id != i:
            raise DispatchError(f"node ids must be 0..{n - 1} in order; got {node.node_id} at {i}.")
        kind = PB_TO_KIND.get(node.kind)
        if kind is None:
            raise DispatchError(f"node {i} has no kind.")
        inputs = []
        for inp in node.inputs:
            if inp.parent >= i:
                raise DispatchError(
                    f"node {i} depends on node {inp.parent}, which is not before it."
                )
            inputs.append(Input(inp.parent, inp.position, inp.keyword, inp.wait_only))
        ref_json = ""
        if node.HasField("executor") and node.executor.name:
            ref_json = json.dumps(
                {
                    "name": node.executor.name,
                    "type": node.executor.type,
                    "options_json": node.executor.options_json,
                }
            )
        sha = node.value_sha256 if kind == PARAMETER else node.function_sha256
        if not sha:
            raise DispatchError(f"node {i} ({node.name}) carries no payload.")
        wanted.add(sha)
        t = Task(
            i,
            node.name,
            kind,
            node.function_sha256,
            tuple(inputs),
            spec_from_pb(node.hardware),
            node.retries,
            ref_json,
        )
        if kind == PARAMETER:
            t.status = COMPLETED
            t.output = PayloadRef(sha, inline.get(sha), len(inline.get(sha, b"")))
        else:
            key = ref_json
            if key not in resolved:
                resolved[key] = executors.resolve(ref_json)
            ckey = (key, t.hardware)
            found = candidates.get(ckey)
            if found is None:
                named = resolved[key]
                found = executors.candidates(t.hardware, named, node.name)  # type: ignore[arg-type]
                candidates[ckey] = found
            t.candidates = found
            t.waiting = len({inp.parent for inp in inputs if tasks[inp.parent].kind != PARAMETER})
            for parent in {inp.parent for inp in inputs}:
                if tasks[parent].kind != PARAMETER:
                    tasks[parent].children.append(i)
        tasks.append(t)
    missing = payloads.missing(wanted - inline.keys())
    if missing:
        raise DispatchError(
            f"{len(missing)} payload(s) were neither sent inline nor uploaded, for example "
            f"{sorted(missing)[0]}; upload them with BlobPut first."
        )
    for sha, data in inline.items():
        if len(data) <= payloads.inline_limit:
            payloads.remember(sha, data)
        else:
            payloads.blobs.put(sha, data)
    # A parameter whose value was uploaded earlier is resolved by reference.
    for t in tasks:
        if t.kind == PARAMETER and t.output is not None and t.output.data is None:
            t.output = payloads.ref(t.output.sha256)
    now = time.time()
    d = Dispatch(
        uuid.uuid4().hex,
        req.name or "workflow",
        tasks,
        req.output_node,
        now,
        parent_dispatch_id=req.parent_dispatch_id or None,
        parent_node_id=req.parent_node_id if req.parent_dispatch_id else None,
    )
    d.status = "PENDING"
    batch = WriteBatch()
    batch.payloads.update({s: b for s, b in inline.items() if len(b) <= payloads.inline_limit})
    row = DispatchRow(
        d.dispatch_id,
        d.name,
        d.status,
        now,
        d.output_node,
        d.task_count,
        parent_dispatch_id=d.parent_dispatch_id,
        parent_node_id=d.parent_node_id,
    )
    node_rows = [
        NodeRow(
            dispatch_id=d.dispatch_id,
            node_id=t.node_id,
            name=t.name,
            kind=t.kind,
            status=t.status,
            function_sha256=t.fn_sha,
            value_sha256=t.output.sha256 if t.kind == PARAMETER and t.output else "",
            inputs=t.inputs_json(),
            hardware=spec_to_json(t.hardware),
            retries=t.retries,
            executor_ref=t.executor_ref,
            output_sha256=t.output.sha256 if t.output else "",
        )
        for t in tasks
    ]
    batch.new_dispatches.append((row, node_rows))
    return d, batch
