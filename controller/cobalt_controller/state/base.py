"""The state store seam: where dispatches, tasks, deployments and small payloads persist.

Backends: :mod:`.sql` (SQLAlchemy; SQLite by default, PostgreSQL by URL) and
:mod:`.memory` (for tests). The scheduler keeps live state in memory and
writes through a :class:`WriteBatch` once per scheduling round, so a round
costs one transaction however many tasks changed.

Deployments change rarely (a deploy, a replica starting or ending, a scaling
decision), so they are written row by row as they change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
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
    "credential_sha256",
)
REUSED = "reused"
"""The ``reason`` of a task whose output was taken over from an earlier dispatch: it
did not run, so its zero run time is no estimate of how long the function takes."""

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
    client_runtime: str = ""
    """JSON of the client's Python, cloudpickle and cobalt versions (cobalt_common.runtime)."""
    lattice_sha256: str = ""
    """The pickled lattice, so that it can run again; "" when it was not kept."""
    inputs_sha256: str = ""
    """Its pickled ``{"args": [...], "kwargs": {...}}``; "" when they were not kept."""


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
    credential_sha256: str = ""
    """The SHA-256 of the running attempt's credential, so that a restarted
    controller that takes the attempt back accepts it again; never the credential."""


@dataclass(slots=True)
class DeploymentRow:
    """A deployment: what to run (manifest, payloads, hardware) and how it stands."""

    name: str
    status: str
    """STARTING, ACTIVE, FAILED or STOPPED."""
    version: int
    manifest_json: str
    service_sha256: str
    args_json: str = "[]"
    """JSON list of [position, keyword, sha256] of the initializer's arguments."""
    hardware: str = "{}"
    """JSON of the HardwareSpec each replica gets."""
    executor_ref: str = ""
    token: str = ""
    working_dir: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    error: str = ""
    cost_usd: float = 0.0
    """Replica time billed so far, all versions."""
    emulated: bool = False
    openapi_json: str = ""
    """The OpenAPI description the first ready replica reported."""
    desired_replicas: int = 0


@dataclass(slots=True)
class ReplicaRow:
    """One replica of a deployment: one long-running task on an executor."""

    replica_id: str
    deployment: str
    version: int
    status: str
    """starting, ready, draining, stopped or failed."""
    url: str = ""
    secret: str = ""
    executor: str = ""
    hardware_given: str = ""
    pid: int = 0
    started_at: float | None = None
    ready_at: float | None = None
    ended_at: float | None = None
    error: str = ""
    billed_s: float = 0.0
    cost_usd: float = 0.0
    rate_usd_per_hour: float = 0.0
    gpu_type: str = ""
    emulated: bool = False
    ended_day: str = ""
    """``YYYY-MM-DD`` in the controller's local time; groups cost by day."""


@dataclass(slots=True)
class DeploymentEventRow:
    """Something that happened to a deployment, with the inputs of a decision."""

    deployment: str
    time: float
    kind: str
    message: str
    inputs_json: str = ""


LIVE_REPLICA_STATUSES = ("starting", "ready", "draining")


@dataclass(frozen=True, slots=True)
class CostRow:
    """Spend of the tasks and replicas that ended on one day on one executor and GPU type.

    ``tasks`` counts both: a replica is billed like one long task."""

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

    def merged(self, newer: WriteBatch) -> WriteBatch:
        """This batch with ``newer``'s writes applied over it (this one is changed)."""
        for key, values in newer.node_updates.items():
            self.update_node(*key, **values)
        for dispatch_id, values in newer.dispatch_updates.items():
            self.update_dispatch(dispatch_id, **values)
        self.new_dispatches.extend(newer.new_dispatches)
        self.payloads.update(newer.payloads)
        return self

    def by_dispatch(self) -> dict[str | None, WriteBatch]:
        """This batch split by dispatch; payloads, which belong to none, first (None)."""
        parts: dict[str | None, WriteBatch] = {}
        if self.payloads:
            parts[None] = WriteBatch(payloads=dict(self.payloads))
        for row, nodes in self.new_dispatches:
            parts.setdefault(row.dispatch_id, WriteBatch()).new_dispatches.append((row, nodes))
        for key, values in self.node_updates.items():
            parts.setdefault(key[0], WriteBatch()).node_updates[key] = values
        for dispatch_id, values in self.dispatch_updates.items():
            parts.setdefault(dispatch_id, WriteBatch()).dispatch_updates[dispatch_id] = values
        return parts

    def drop(self, dispatch_ids: set[str]) -> None:
        """Removes everything of ``dispatch_ids`` from this batch."""
        self.new_dispatches[:] = [
            (row, nodes)
            for row, nodes in self.new_dispatches
            if row.dispatch_id not in dispatch_ids
        ]
        for key in [k for k in self.node_updates if k[0] in dispatch_ids]:
            del self.node_updates[key]
        for dispatch_id in dispatch_ids & self.dispatch_updates.keys():
            del self.dispatch_updates[dispatch_id]


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

    @abstractmethod
    def descendant_dispatches(self, dispatch_id: str) -> set[str]:
        """The dispatches started below this one (its sublattices, theirs, ...), not itself."""

    @abstractmethod
    def holds_payload(self, dispatch_ids: Collection[str], sha256: str) -> bool:
        """Whether a node of one of these dispatches has this payload as its
        parameter value, its function, or its output."""

    # -- deployments -------------------------------------------------------------

    @abstractmethod
    def put_deployment(self, row: DeploymentRow) -> None:
        """Stores a deployment, replacing any stored under the same name."""

    @abstractmethod
    def update_deployment(self, name: str, **values: Any) -> None:
        """Changes only the given fields of a stored deployment."""

    @abstractmethod
    def get_deployment(self, name: str) -> DeploymentRow | None: ...

    @abstractmethod
    def list_deployments(self, *, include_stopped: bool = False) -> list[DeploymentRow]:
        """By name; STOPPED ones only when asked."""

    @abstractmethod
    def put_replica(self, row: ReplicaRow) -> None:
        """Stores a replica, replacing any stored under the same id."""

    @abstractmethod
    def update_replica(self, replica_id: str, **values: Any) -> None:
        """Changes only the given fields of a stored replica."""

    @abstractmethod
    def get_replicas(self, deployment: str, *, live_only: bool = False) -> list[ReplicaRow]:
        """A deployment's replicas, oldest first; only starting, ready and
        draining ones with ``live_only``."""

    @abstractmethod
    def add_deployment_events(self, events: Sequence[DeploymentEventRow]) -> None: ...

    @abstractmethod
    def deployment_events(self, deployment: str, limit: int = 100) -> list[DeploymentEventRow]:
        """Newest first."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases connections."""
