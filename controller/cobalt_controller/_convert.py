"""Conversions between live state, stored rows and wire messages."""

from __future__ import annotations

import functools
import json

from cobalt_common.hardware import HardwareGiven, HardwareSpec
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.wire import STATUS_TO_PB, spec_to_pb
from cobalt_controller.dispatch._model import Dispatch, Input, Task
from cobalt_controller.state import DispatchRow, NodeRow

KIND_TO_PB = {
    name.lower(): getattr(pb, f"NODE_KIND_{name}")
    for name in (
        "ELECTRON",
        "PARAMETER",
        "COLLECTION",
        "GETATTR",
        "GETITEM",
        "SUBLATTICE",
        "OPERATION",
    )
}
PB_TO_KIND = {v: k for k, v in KIND_TO_PB.items()}


def spec_to_json(spec: HardwareSpec) -> str:
    return json.dumps(spec.to_dict())


def stored_spec_to_pb(text: str) -> pb.HardwareSpec:
    """A stored spec on the wire; one that no longer validates (stored by an older,
    laxer controller) goes out empty rather than failing the whole listing."""
    try:
        return spec_to_pb(HardwareSpec.from_dict(json.loads(text)))
    except (ValueError, TypeError):
        return pb.HardwareSpec()


@functools.lru_cache(maxsize=1024)
def given_to_json(given: HardwareGiven | None) -> str:
    """The hardware a task or replica got, as stored; "" before placement."""
    if given is None:
        return ""
    return json.dumps(given.to_dict())


@functools.lru_cache(maxsize=4096)
def given_from_json(text: str) -> HardwareGiven | None:
    """The stored hardware back; ``None`` before placement or when unreadable."""
    if not text:
        return None
    try:
        g = json.loads(text)
        return HardwareGiven(
            cpus=float(g.get("cpus") or 0.0),
            memory_mb=int(g.get("memory_mb") or 0),
            gpu=g.get("gpu") or None,
            gpu_indices=tuple(g.get("gpu_indices") or ()),
            emulated=bool(g.get("emulated")),
        )
    except (ValueError, TypeError, AttributeError):
        return None


def given_to_pb(text: str) -> pb.HardwareGiven:
    if not text:
        return pb.HardwareGiven()
    g = json.loads(text)
    return pb.HardwareGiven(
        gpu=g.get("gpu") or "",
        gpu_indices=g.get("gpu_indices") or [],
        emulated=bool(g.get("emulated")),
        cpus=g.get("cpus") or 0.0,
        memory_mb=g.get("memory_mb") or 0,
    )


def dispatch_row_to_pb(row: DispatchRow, counts: dict[str, int] | None = None) -> pb.Dispatch:
    return pb.Dispatch(
        dispatch_id=row.dispatch_id,
        name=row.name,
        status=STATUS_TO_PB[row.status],
        created_at=row.created_at,
        started_at=row.started_at or 0.0,
        ended_at=row.ended_at or 0.0,
        error=row.error,
        task_count=row.task_count,
        status_counts=counts or {},
        parent_dispatch_id=row.parent_dispatch_id or "",
        cost_usd=row.cost_usd,
        budget_usd=row.budget_usd or 0.0,
        emulated=row.emulated,
        lattice_sha256=row.lattice_sha256,
        inputs_sha256=row.inputs_sha256,
    )


def dispatch_to_pb(d: Dispatch, *, counts: bool = True) -> pb.Dispatch:
    return pb.Dispatch(
        dispatch_id=d.dispatch_id,
        name=d.name,
        status=STATUS_TO_PB[d.status],
        created_at=d.created_at,
        started_at=d.started_at or 0.0,
        ended_at=d.ended_at or 0.0,
        error=d.error,
        task_count=d.task_count,
        status_counts=d.status_counts() if counts else {},
        parent_dispatch_id=d.parent_dispatch_id or "",
        cost_usd=d.cost_usd,
        budget_usd=d.budget_usd or 0.0,
        emulated=d.emulated,
        lattice_sha256=d.lattice_sha256,
        inputs_sha256=d.inputs_sha256,
    )


def node_row_to_pb(row: NodeRow) -> pb.TaskRecord:
    return pb.TaskRecord(
        node_id=row.node_id,
        name=row.name,
        kind=KIND_TO_PB.get(row.kind, pb.NODE_KIND_UNSPECIFIED),
        status=STATUS_TO_PB[row.status],
        executor=row.executor,
        hardware_requested=stored_spec_to_pb(row.hardware),
        hardware_given=given_to_pb(row.hardware_given),
        started_at=row.started_at or 0.0,
        ended_at=row.ended_at or 0.0,
        error=row.error,
        stdout=row.stdout,
        stderr=row.stderr,
        attempts=row.attempts,
        reason=row.reason,
        sublattice_dispatch_id=row.sublattice_dispatch_id,
        output_sha256=row.output_sha256,
        cost_usd=row.cost_usd,
        billed_s=row.billed_s,
        rate_usd_per_hour=row.rate_usd_per_hour,
        placement=row.placement,
        function_key=row.function_key,
        inputs=[
            pb.Input(parent=p, position=pos, keyword=kw, wait_only=bool(w))
            for p, pos, kw, w in json.loads(row.inputs)
        ],
        function_sha256=row.function_sha256,
    )


def task_to_pb(t: Task) -> pb.TaskRecord:
    """A live task as a record (without logs, which only the store holds)."""
    given = t.given
    return pb.TaskRecord(
        node_id=t.node_id,
        name=t.name,
        kind=KIND_TO_PB.get(t.kind, pb.NODE_KIND_UNSPECIFIED),
        status=STATUS_TO_PB[t.status],
        executor=t.executor,
        hardware_requested=spec_to_pb(t.hardware),
        hardware_given=pb.HardwareGiven(
            gpu=given.gpu or "",
            gpu_indices=list(given.gpu_indices),
            emulated=given.emulated,
            cpus=given.cpus,
            memory_mb=given.memory_mb,
        )
        if given is not None
        else pb.HardwareGiven(),
        started_at=t.started_at or 0.0,
        ended_at=t.ended_at or 0.0,
        error=t.error,
        attempts=t.attempts,
        reason=t.reason,
        sublattice_dispatch_id=t.sublattice_dispatch_id,
        output_sha256=t.output.sha256 if t.output else "",
        cost_usd=t.cost_usd,
        billed_s=t.billed_s,
        rate_usd_per_hour=t.rate,
        placement=t.placement,
        function_key=t.function_key,
    )


def task_from_row(row: NodeRow) -> Task:
    inputs = tuple(Input(p, pos, kw, bool(w)) for p, pos, kw, w in json.loads(row.inputs))
    t = Task(
        row.node_id,
        row.name,
        row.kind,
        row.function_sha256,
        inputs,
        HardwareSpec.from_dict(json.loads(row.hardware)),
        row.retries,
        row.executor_ref,
    )
    t.attempts = row.attempts
    t.function_key = row.function_key
    t.cost_usd = row.cost_usd
    t.billed_s = row.billed_s
    t.rate = row.rate_usd_per_hour
    t.placement = row.placement
    return t
