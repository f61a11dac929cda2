"""Turns a DispatchCreate request into a stored, schedulable dispatch.

Everything is checked before anything is stored, so a refused dispatch
leaves nothing behind: ids and content addresses, that each inline payload's
bytes hash to its sha256, graph shape, payload presence, executors, and that
some executor can ever run each task's hardware spec.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence

from cobalt_common.checks import brief, check_content, validate_sha256
from cobalt_common.errors import DispatchError, SpecError
from cobalt_common.pricing import billed_seconds, format_usd
from cobalt_common.runtime import RUNTIME_KEYS
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_controller import _numbers
from cobalt_controller._convert import PB_TO_KIND, spec_to_json
from cobalt_controller._executors import ExecutorPool
from cobalt_controller._executors import ref_json as ref_json_of
from cobalt_controller._payloads import Payloads
from cobalt_controller.dispatch._model import (
    COMPLETED,
    ELECTRON,
    PARAMETER,
    PENDING,
    Dispatch,
    Input,
    Task,
)
from cobalt_controller.dispatch._reuse import reuse_results
from cobalt_controller.state import DispatchRow, NodeRow, WriteBatch
from cobalt_executors import Executor, PayloadRef

_DISPATCH_ID = re.compile(r"[0-9a-f]{32}")


def build_tasks(
    req: pb.DispatchCreateRequest,
    executors: ExecutorPool,
    inline: Mapping[str, bytes] | None = None,
) -> list[Task]:
    """Checks the graph and finds each task's candidate executors, cheapest first.

    ``inline`` holds the payloads sent with the request, by sha256.
    """
    n = len(req.nodes)
    if n == 0:
        raise DispatchError("the workflow has no nodes.")
    if req.output_node >= n:
        raise DispatchError(f"output node {req.output_node} does not exist.")
    inline = inline or {}
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
            if inp.parent >= n or inp.parent == i:
                what = "itself" if inp.parent == i else f"node {inp.parent}, which does not exist"
                raise DispatchError(f"node {i} depends on {what}.")
            inputs.append(Input(inp.parent, inp.position, inp.keyword, inp.wait_only))
        ref_json = ref_json_of(node.executor) if node.HasField("executor") else ""
        sha = node.value_sha256 if kind == PARAMETER else node.function_sha256
        if not sha:
            raise DispatchError(f"node {i} ({brief(node.name)}) carries no payload.")
        validate_sha256(sha, f"node {i}'s {'value' if kind == PARAMETER else 'function'}")
        if node.function_sha256:
            validate_sha256(node.function_sha256, f"node {i}'s function")
        where = f"node {i} ({brief(node.name)})"
        t = Task(
            i,
            node.name,
            kind,
            node.function_sha256,
            tuple(inputs),
            _numbers.hardware(node.hardware, where),
            _numbers.retries(node.retries, where),
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
                spec = t.hardware
                found = tuple(sorted(found, key=lambda ex: ex.rate_usd_per_hour(spec)))
                candidates[ckey] = found
            t.candidates = found
            t.function_key = node.function_key
        tasks.append(t)
    link(tasks)
    return tasks


def link(tasks: list[Task]) -> None:
    """Gives each task its children and the count of parents it waits for, and refuses
    a cycle. Ids are not an order: a task is numbered before the parameters and
    collections made from its arguments, so a parent may come after its child."""
    for t in tasks:
        if t.kind == PARAMETER:
            continue
        parents = sorted({inp.parent for inp in t.inputs if tasks[inp.parent].kind != PARAMETER})
        t.waiting = len(parents)
        for parent in parents:
            tasks[parent].children.append(t.node_id)
    left = [t.waiting for t in tasks]
    ready = [t.node_id for t in tasks if t.kind != PARAMETER and t.waiting == 0]
    reached = 0
    while ready:
        reached += 1
        for child in tasks[ready.pop()].children:
            left[child] -= 1
            if left[child] == 0:
                ready.append(child)
    if reached < sum(1 for t in tasks if t.kind != PARAMETER):
        stuck = next(t for t in tasks if t.kind != PARAMETER and left[t.node_id] > 0)
        raise DispatchError(
            f"node {stuck.node_id} ({brief(stuck.name)}) is in, or after, a cycle of inputs, "
            "so it could never start; a workflow's graph must be acyclic."
        )


def build_dispatch(
    req: pb.DispatchCreateRequest,
    payloads: Payloads,
    executors: ExecutorPool,
    previous: tuple[str, Sequence[NodeRow]] | None = None,
) -> tuple[Dispatch, WriteBatch]:
    """Checks the request and makes the dispatch and its first write.

    ``previous`` is the dispatch named by ``reuse_dispatch_id`` and its nodes:
    tasks it completed with the same function and inputs are not run again
    (:mod:`._reuse`).
    """
    budget = req.budget_usd
    if not (budget == 0 or (math.isfinite(budget) and budget > 0)):
        raise SpecError(f"budget_usd must be a positive number of US dollars, got {budget!r}.")
    _numbers.wait_seconds(req.wait_s, "wait_s")
    dispatch_id = req.dispatch_id or uuid.uuid4().hex
    if not _DISPATCH_ID.fullmatch(dispatch_id):
        raise DispatchError(f"dispatch id {brief(dispatch_id)} is not 32 lowercase hex digits.")
    if req.parent_dispatch_id and not _DISPATCH_ID.fullmatch(req.parent_dispatch_id):
        raise DispatchError(
            f"parent dispatch id {brief(req.parent_dispatch_id)} is not 32 lowercase hex digits."
        )
    for p in req.payloads:
        check_content(p.sha256, p.data)
    inline = {p.sha256: p.data for p in req.payloads}
    source = {
        what: validate_sha256(sha, f"the {what}")
        for what, sha in (("lattice", req.lattice_sha256), ("inputs", req.inputs_sha256))
        if sha
    }
    tasks = build_tasks(req, executors, inline)
    if budget:
        check_budget(tasks, budget)
    wanted = {t.output.sha256 if t.kind == PARAMETER and t.output else t.fn_sha for t in tasks}
    wanted |= set(source.values())
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
    if previous is not None:
        reuse_results(tasks, previous[0], previous[1], payloads)
    now = time.time()
    d = Dispatch(
        dispatch_id,
        req.name or "workflow",
        tasks,
        req.output_node,
        now,
        parent_dispatch_id=req.parent_dispatch_id or None,
        parent_node_id=req.parent_node_id if req.parent_dispatch_id else None,
    )
    d.status = PENDING
    d.budget_usd = budget or None
    d.working_dir = req.working_dir
    d.client_runtime = client_runtime(req.client_runtime)
    d.lattice_sha256 = source.get("lattice", "")
    d.inputs_sha256 = source.get("inputs", "")
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
        budget_usd=d.budget_usd,
        working_dir=d.working_dir,
        client_runtime=json.dumps(d.client_runtime) if d.client_runtime else "",
        lattice_sha256=d.lattice_sha256,
        inputs_sha256=d.inputs_sha256,
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
            function_key=t.function_key,
            started_at=t.started_at,
            ended_at=t.ended_at,
            reason=t.reason,
            placement=t.placement,
        )
        for t in tasks
    ]
    batch.new_dispatches.append((row, node_rows))
    return d, batch


def worst_case_usd(ex: Executor, t: Task) -> float:
    """The most ``t`` can cost on ``ex``: its rate for its whole time limit."""
    rate = ex.rate_usd_per_hour(t.hardware)
    if rate == 0:
        return 0.0
    if not t.hardware.time_limit_s:
        return math.inf
    return rate * billed_seconds(t.hardware.time_limit_s, t.hardware.time_limit_s) / 3600


def check_budget(tasks: list[Task], budget: float) -> None:
    """Refuses a dispatch that a budget could never let finish.

    A priced task without a time limit has no worst case to hold against the
    budget, and a task whose cheapest worst case is above the whole budget
    could never start; both are refused before anything runs.
    """
    unbounded: dict[str, str] = {}
    too_big: dict[str, float] = {}
    for t in tasks:
        if t.kind != ELECTRON or not t.candidates:
            continue
        worst = worst_case_usd(t.candidates[0], t)
        if math.isinf(worst):
            rate = t.candidates[0].rate_usd_per_hour(t.hardware)
            unbounded.setdefault(t.name, f"{format_usd(rate)}/h on {t.candidates[0].name}")
        elif worst > budget:
            too_big[t.name] = max(worst, too_big.get(t.name, 0.0))
    if unbounded:
        names = ", ".join(f"{name!r} ({rate})" for name, rate in list(unbounded.items())[:5])
        raise SpecError(
            f"budget_usd needs a worst case for every priced task, but {names} "
            'has no time_limit. Give it one, for example @ct.electron(time_limit="2h").'
        )
    if too_big:
        name, worst = max(too_big.items(), key=lambda kv: kv[1])
        raise SpecError(
            f"task {name!r} alone could cost up to {format_usd(worst)}, more than the whole "
            f"budget of {format_usd(budget)}. Raise budget_usd or lower its time_limit."
        )


def client_runtime(given: Mapping[str, str]) -> dict[str, str]:
    """The client's versions as sent, checked: known keys, short printable values."""
    if not given:
        return {}
    unknown = sorted(set(given) - set(RUNTIME_KEYS))
    if unknown:
        raise DispatchError(
            f"client_runtime names {', '.join(k[:40] for k in unknown)}; "
            f"known: {', '.join(RUNTIME_KEYS)}."
        )
    for key, value in given.items():
        if not value or len(value) > 64 or not value.isprintable():
            raise DispatchError(f"client_runtime {key} {value[:70]!r} is not a version.")
    return dict(given)
