"""The state store seam: where dispatches, tasks and small payloads persist.

Backends: :mod:`.sql` (SQLAlchemy; SQLite by default, PostgreSQL by URL) and
:mod:`.memory` (for tests). The scheduler keeps live state in memory and
writes through a :class:`WriteBatch` once per scheduling round, so a round
costs one transaction however many tasks changed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

NODE_UPDATE_FIELDS = (
    "status",
    "executor",
    "hardware_given",
    "attempts",
    "started_at",
    "ended_at",
    "error",
    "reason",
    "stdout",
    "stderr",
    "output_sha256",
    "sublattice_dispatch_id",
    "cost_usd",
    "billed_s",
    "rate_usd_per_hour",
    "placement",
    "gpu_type",
    "emulated",
    "ended_day",
)
DISPATCH_UPDATE_FIELDS = ("status", "started_at", "ended_at", "error", "cost_usd", "emulated")


@dataclass(slots=True)
class DispatchRow:
    dispatch_id: str
    name: str
    status: str
    created_at: float
    output_node: int
    task_count: int
    started_at: float | None = None
    ended_at: float | None = None
    error: str = ""
    parent_dispatch_id: str | None = None
    parent_node_id: int | None = None
    cost_usd: float = 0.0
    budget_usd: float | None = None
    emulated: bool = False
    """Some of the cost is for emulated GPUs."""
    working_dir: str = ""
    """The client's directory when it dispatched; tasks start there when it exists."""


@dataclass(slots=True)
class NodeRow:
    dispatch_id: str
    node_id: int
    name: str
    kind: str
    status: str
    function_sha256: str = ""
    value_sha256: str = ""
    inputs: str = "[]"
    """JSON list of [parent, position, keyword, wait_only]."""
    hardware: str = "{}"
    """JSON of the requested HardwareSpec."""
    retries: int = 0
    executor_ref: str = ""
    """JSON of the client's executor choice ({} when the controller places it)."""
    executor: str = ""
    hardware_given: str = ""
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    error: str = ""
    reason: str = ""
    stdout: str = ""
    stderr: str = ""
    output_sha256: str = ""
    sublattice_dispatch_id: str = ""
    function_key: str = ""
    """``module.qualname`` of an electron: the same electron across dispatches."""
    cost_usd: float = 0.0
    billed_s: float = 0.0
    rate_usd_per_hour: float = 0.0
    placement: str = ""
    gpu_type: str = ""
    emulated: bool = False
    ended_day: str = ""
    """``YYYY-MM-DD`` in the controller's local time; groups cost by day."""


@dataclass(frozen=True, slots=True)
class CostRow:
    """Spend of the tasks that ended on one day on one executor and GPU type."""

    day: str
    executor: str
    gpu_type: str
    emulated: bool
    tasks: int
    billed_s: float
    cost_usd: float


@dataclass(slots=True)
class WriteBatch:
    """Changes of one scheduling round, applied in one transaction."""

    new_dispatches: list[tuple[DispatchRow, list[NodeRow]]] = field(default_factory=list)
    node_updates: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    dispatch_updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    payloads: dict[str, bytes] = field(default_factory=dict)

    def update_node(self, dispatch_id: str, node_id: int, **values: Any) -> None:
        self.node_updates.setdefault((dispatch_id, node_id), {}).update(values)

    def update_dispatch(self, dispatch_id: str, **values: Any) -> None:
        self.dispatch_updates.setdefault(dispatch_id, {}).update(values)

    def __bool__(self) -> bool:
        return bool(
            self.new_dispatches or self.node_updates or self.dispatch_updates or self.payloads
        )


class StateStore(ABC):
    """Durable state of dispatches and tasks."""

    @abstractmethod
    def apply(self, batch: WriteBatch) -> None:
        """Applies one batch atomically."""

    @abstractmethod
    def get_dispatch(self, dispatch_id: str) -> DispatchRow | None: ...

    @abstractmethod
    def list_dispatches(self, limit: int = 50) -> list[DispatchRow]:
        """Most recent first."""

    @abstractmethod
    def unfinished_dispatches(self) -> list[DispatchRow]:
        """Dispatches that had not ended when the controller last stopped."""

    @abstractmethod
    def get_nodes(
        self,
        dispatch_id: str,
        *,
        include_logs: bool = True,
        node_ids: Collection[int] | None = None,
    ) -> list[NodeRow]:
        """The nodes of a dispatch in node-id order: all, or only ``node_ids``."""

    @abstractmethod
    def get_node(self, dispatch_id: str, node_id: int) -> NodeRow | None: ...

    @abstractmethod
    def get_payload(self, sha256: str) -> bytes | None: ...

    @abstractmethod
    def status_counts(self, dispatch_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """Tasks (electrons and sublattices) per status, for each dispatch."""

    @abstractmethod
    def recent_run_times(self, function_key: str, limit: int = 50) -> list[float]:
        """Run times in seconds of the electron's latest completed tasks, newest first."""

    @abstractmethod
    def cost_summary(self, since_day: str = "") -> list[CostRow]:
        """Spend grouped by day, executor, GPU type and emulation, from ``since_day`` on."""

    @abstractmethod
    def missing_payloads(self, shas: Iterable[str]) -> set[str]:
        """Which of these payloads the store does not hold."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases connections."""
