"""What the controller reports about a dispatch's tasks: :class:`TaskRecord`, and
:class:`Status` (``cobalt_common.status``, the one vocabulary of statuses).

Plain records read from the wire, below everything that fetches them
(:class:`~cobalt.Result`, live progress, failures, the CLI).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cobalt_common.hardware import HardwareGiven, HardwareSpec
from cobalt_common.status import Status as Status
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.wire import spec_from_pb
from cobalt_common.wire import status_from_pb as status_from_pb

_PB_KIND = {
    pb.NODE_KIND_ELECTRON: "electron",
    pb.NODE_KIND_PARAMETER: "parameter",
    pb.NODE_KIND_COLLECTION: "collection",
    pb.NODE_KIND_GETATTR: "getattr",
    pb.NODE_KIND_GETITEM: "getitem",
    pb.NODE_KIND_SUBLATTICE: "sublattice",
    pb.NODE_KIND_OPERATION: "operation",
}


STATUS_ORDER = ("COMPLETED", "RUNNING", "PENDING", "FAILED", "TIMED_OUT", "CANCELLED", "SKIPPED")
"""The order task counts are shown in."""


def count_words(counts: Mapping[str, int], sep: str = ", ") -> str:
    """Task counts by status in words: ``"3 completed, 1 running"``."""
    return sep.join(f"{counts[s]} {s.lower()}" for s in STATUS_ORDER if counts.get(s))


def datetime_of(ts: float) -> datetime | None:
    return datetime.fromtimestamp(ts, tz=UTC) if ts else None


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task of a dispatch: what it asked for, what it got, how it went."""

    node_id: int
    name: str
    kind: str
    status: Status
    executor: str
    hardware_requested: HardwareSpec
    hardware_given: HardwareGiven
    start_time: datetime | None
    end_time: datetime | None
    duration_s: float | None
    error: str
    stdout: str
    stderr: str
    attempts: int
    reason: str = ""
    sublattice_dispatch_id: str = ""
    cost_usd: float = 0.0
    """What the task cost, all attempts; a sublattice's is its child dispatch's."""
    billed_s: float = 0.0
    """Whole seconds billed, all attempts."""
    rate_usd_per_hour: float = 0.0
    """The hourly price of the hardware it was given."""
    placement: str = ""
    """Which executor was chosen, and why."""
    inputs: tuple[tuple[int, int, str, bool], ...] = ()
    """Where its arguments came from: (parent node, position or -1, keyword, wait only)."""
    function_sha256: str = ""

    @property
    def emulated(self) -> bool:
        """True when the task ran on emulated GPUs (inventory only, on CPU)."""
        return self.hardware_given.emulated

    @classmethod
    def from_pb(cls, t: pb.TaskRecord) -> TaskRecord:
        req = t.hardware_requested
        given = t.hardware_given
        duration = t.ended_at - t.started_at if t.started_at and t.ended_at else None
        return cls(
            node_id=t.node_id,
            name=t.name,
            kind=_PB_KIND.get(t.kind, "electron"),
            status=status_from_pb(t.status),
            executor=t.executor,
            hardware_requested=spec_from_pb(req),
            hardware_given=HardwareGiven(
                cpus=given.cpus,
                memory_mb=given.memory_mb,
                gpu=given.gpu or None,
                gpu_indices=tuple(given.gpu_indices),
                emulated=given.emulated,
            ),
            start_time=datetime_of(t.started_at),
            end_time=datetime_of(t.ended_at),
            duration_s=duration,
            error=t.error,
            stdout=t.stdout,
            stderr=t.stderr,
            attempts=t.attempts,
            reason=t.reason,
            sublattice_dispatch_id=t.sublattice_dispatch_id,
            cost_usd=t.cost_usd,
            billed_s=t.billed_s,
            rate_usd_per_hour=t.rate_usd_per_hour,
            placement=t.placement,
            inputs=tuple((i.parent, i.position, i.keyword, i.wait_only) for i in t.inputs),
            function_sha256=t.function_sha256,
        )
