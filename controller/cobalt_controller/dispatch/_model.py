"""Live state of dispatches and tasks, held by the scheduler."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cobalt_common.deploy import deploy_task_service
from cobalt_common.hardware import HardwareSpec
from cobalt_common.status import TASK_ENDED, Status
from cobalt_controller._credentials import TaskScope

if TYPE_CHECKING:
    from cobalt_executors import Executor, HardwareGiven, PayloadRef

# The statuses of cobalt_common.status, bound to module names: the scheduler
# compares against these in its loop, and a global name is cheaper to read than
# an enum member (a StrEnum member compares and hashes as its string).
NEW, PENDING, RUNNING = Status.NEW, Status.PENDING, Status.RUNNING
COMPLETED, FAILED, CANCELLED = Status.COMPLETED, Status.FAILED, Status.CANCELLED
TIMED_OUT, SKIPPED, BUDGET_EXCEEDED = Status.TIMED_OUT, Status.SKIPPED, Status.BUDGET_EXCEEDED
TERMINAL = TASK_ENDED

PARAMETER, SUBLATTICE, ELECTRON = "parameter", "sublattice", "electron"
TASK_KINDS = frozenset({ELECTRON, SUBLATTICE})


@dataclass(frozen=True, slots=True)
class Input:
    parent: int
    position: int
    keyword: str
    wait_only: bool


class Task:
    """One node of a dispatch. Kept small: a dispatch may hold 100,000."""

    __slots__ = (
        "attempts",
        "billed_s",
        "candidates",
        "children",
        "cost_usd",
        "credential_sha256",
        "ended_at",
        "error",
        "executor",
        "executor_ref",
        "fn_sha",
        "function_key",
        "given",
        "hardware",
        "inputs",
        "kind",
        "name",
        "node_id",
        "output",
        "placement",
        "rate",
        "ready_at",
        "reason",
        "reserved",
        "retries",
        "started_at",
        "status",
        "sublattice_dispatch_id",
        "task_key",
        "waiting",
    )

    def __init__(
        self,
        node_id: int,
        name: str,
        kind: str,
        fn_sha: str,
        inputs: tuple[Input, ...],
        hardware: HardwareSpec,
        retries: int,
        executor_ref: str,
    ) -> None:
        self.node_id = node_id
        self.name = name
        self.kind = kind
        self.fn_sha = fn_sha
        self.inputs = inputs
        self.hardware = hardware
        self.retries = retries
        self.executor_ref = executor_ref
        self.children: list[int] = []
        self.waiting = 0
        self.status: Status = PENDING
        self.attempts = 0
        self.output: PayloadRef | None = None
        self.candidates: tuple[Executor, ...] = ()
        self.executor = ""
        self.given: HardwareGiven | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.error = ""
        self.reason = ""
        self.task_key = ""
        self.sublattice_dispatch_id = ""
        self.function_key = ""
        self.cost_usd = 0.0
        """All attempts; for a sublattice, its child dispatch's cost."""
        self.billed_s = 0.0
        self.rate = 0.0
        """USD per hour of the hardware of the latest attempt."""
        self.placement = ""
        self.ready_at = 0.0
        """When the task last became ready to run (0: not yet); the wait for a
        cheaper executor counts from here."""
        self.reserved = 0.0
        """Budget held for the running attempt: its worst-case cost."""
        self.credential_sha256 = ""
        """The running attempt's credential's SHA-256 (see NodeRow)."""

    def scope(self, dispatch_id: str) -> TaskScope:
        """What the credential of its running attempt reaches."""
        deploys = deploy_task_service(self.function_key) if self.kind == ELECTRON else ""
        return TaskScope(self.task_key, dispatch_id, self.node_id, deploys)

    def inputs_json(self) -> str:
        return json.dumps([[i.parent, i.position, i.keyword, i.wait_only] for i in self.inputs])


class Ledger:
    """The budget of a dispatch, shared with its sublattices' dispatches.

    A task starts only if its worst case fits in what is left; while it runs
    its worst case is held, and when it ends its real cost replaces the hold.
    """

    __slots__ = ("blocked", "budget_usd", "exhausted", "held", "running", "spent")

    def __init__(self, budget_usd: float, spent: float = 0.0) -> None:
        self.budget_usd = budget_usd
        self.spent = spent
        self.held = 0.0
        self.running = 0
        self.exhausted = False
        self.blocked: dict[tuple[str, int], tuple[Dispatch, Task, str]] = {}
        """Tasks that do not fit, with why, by (dispatch id, node id)."""

    @property
    def left(self) -> float:
        return self.budget_usd - self.spent - self.held


class Dispatch:
    __slots__ = (
        "budget_usd",
        "cancelled",
        "child_dispatches",
        "client_runtime",
        "cost_usd",
        "created_at",
        "dispatch_id",
        "done",
        "emulated",
        "ended_at",
        "error",
        "inputs_sha256",
        "lattice_sha256",
        "ledger",
        "name",
        "output_node",
        "parent_dispatch_id",
        "parent_node_id",
        "remaining",
        "started_at",
        "status",
        "tasks",
        "working_dir",
    )

    def __init__(
        self,
        dispatch_id: str,
        name: str,
        tasks: list[Task],
        output_node: int,
        created_at: float,
        parent_dispatch_id: str | None = None,
        parent_node_id: int | None = None,
    ) -> None:
        self.dispatch_id = dispatch_id
        self.name = name
        self.tasks = tasks
        self.output_node = output_node
        self.created_at = created_at
        self.parent_dispatch_id = parent_dispatch_id
        self.parent_node_id = parent_node_id
        self.status: Status = NEW
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.error = ""
        self.remaining = sum(1 for t in tasks if t.status not in TERMINAL)
        self.cancelled = False
        self.done = threading.Event()
        self.child_dispatches: set[str] = set()
        self.budget_usd: float | None = None
        self.cost_usd = 0.0
        self.emulated = False
        self.ledger: Ledger | None = None
        self.working_dir = ""
        self.client_runtime: dict[str, str] = {}
        self.lattice_sha256 = ""
        self.inputs_sha256 = ""

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tasks:
            if t.kind in TASK_KINDS:
                counts[t.status] = counts.get(t.status, 0) + 1
        return counts

    @property
    def task_count(self) -> int:
        """Electrons and sublattices: the tasks a user sees in ``Result.tasks``."""
        return sum(1 for t in self.tasks if t.kind in TASK_KINDS)
