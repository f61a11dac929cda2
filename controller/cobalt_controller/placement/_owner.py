"""The one owner of executor capacity, for tasks and replicas alike.

Every start of a task attempt or a replica goes through :class:`Placement`,
and so does every outcome on its way back. It keeps what runs where, by a
typed :class:`WorkKind`, and routes each outcome to the component that asked
for the run (the scheduler or the deployment manager); no task key is parsed.

Priority between tasks and replicas (:data:`HOLD_S`):

    **A replica waiting for room comes before tasks, for a while.** A replica
    serves requests that wait now; a task waits in its queue. When a replica
    finds no room on any of its candidate executors, the room it lacks is held
    for it on each of them: no new task starts there that would take the same
    kind of hardware, namely a GPU of the replica's type when the replica asks
    for GPUs, and otherwise CPUs (when both ask for some) or memory (when both
    state some). Tasks that need none of it start as before, and running tasks
    are never stopped: as they end, their room goes to the replica at its next
    try. A replica holds room for at most ``HOLD_S`` seconds; one that still
    does not fit by then (other replicas or long-running tasks keep the room)
    stops holding, and it and the tasks then take room first come, first
    served. Tasks never hold room against replicas.

Hardware of replicas adopted after a controller restart is counted with
:meth:`Placement.adopt` and given back with :meth:`Placement.forget`.

Threads: the scheduler's thread submits tasks, the deployment manager submits
replicas under its own lock, executors report from their own threads. The
task path takes no lock: it reads the held room through one reference that
is replaced, never changed, and records each run with one dict write. Only
replicas waiting or adopted take the owner's short lock, which never calls out
while it is held.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cobalt_common.hardware import HardwareGiven, HardwareSpec
from cobalt_executors import Executor, TaskOutcome, TaskSubmission

log = logging.getLogger("cobalt.controller")

HOLD_S = 30.0
"""How long a replica waiting for room holds it against new tasks."""


class WorkKind(enum.Enum):
    """What a run on an executor is, and so who hears how it ended."""

    TASK = "task"
    """One attempt of a dispatch's task: the scheduler's."""
    REPLICA = "replica"
    """One replica of a deployment: the deployment manager's."""


_TASK = WorkKind.TASK


@dataclass(frozen=True, slots=True)
class _Waiting:
    spec: HardwareSpec
    executors: tuple[Executor, ...]
    since: float


def holds_back(replica: HardwareSpec, task: HardwareSpec) -> bool:
    """Whether a task of spec ``task`` would take room a waiting replica of spec
    ``replica`` holds (the rule in this module's docstring).

    Example:
        >>> gpu = HardwareSpec(gpu="h100", gpus=1)
        >>> holds_back(gpu, HardwareSpec(gpu="h100", gpus=1)), holds_back(gpu, HardwareSpec())
        (True, False)
        >>> holds_back(HardwareSpec(cpus=2), HardwareSpec(cpus=1))
        True
    """
    if replica.gpu:
        return task.gpu == replica.gpu
    return (replica.cpus > 0 and task.cpus > 0) or (replica.memory_mb > 0 and task.memory_mb > 0)


class Placement:
    """Starts tasks and replicas on executors, holds room for waiting replicas,
    counts adopted ones, and routes every outcome by its kind.

    Components register for their kind's outcomes with :meth:`route` and for
    news of freed room with :meth:`on_room`; executors report to :meth:`report`.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._placed: dict[str, tuple[WorkKind, Executor]] = {}
        """Runs started and not yet reported, by task key."""
        self._routes: dict[WorkKind, Callable[[TaskOutcome], None]] = {}
        self._room: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiting] = {}
        self._adopted: dict[str, Executor] = {}
        self._held: Mapping[Executor, tuple[HardwareSpec, ...]] = {}
        """Room held for waiting replicas, per executor; replaced whole, read without lock."""
        self._held_until = float("inf")

    # -- wiring ----------------------------------------------------------------------------

    def route(self, kind: WorkKind, handler: Callable[[TaskOutcome], None]) -> None:
        """Sends outcomes of ``kind`` to ``handler`` (called on the executor's thread:
        it must only queue the outcome)."""
        self._routes[kind] = handler

    def on_room(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` when room frees that no outcome announces (a hold that
        ends, an adopted replica that stops); it must return at once."""
        self._room.append(callback)

    # -- starting runs ---------------------------------------------------------------------

    def submit_task(self, ex: Executor, submission: TaskSubmission) -> HardwareGiven | None:
        """Starts a task attempt on ``ex``; None when it has no room, or the room is held
        for a waiting replica."""
        held = self._held
        if held:
            if self._clock() >= self._held_until:
                self._rehold()
                held = self._held
            specs = held.get(ex)
            if specs is not None:
                spec = submission.hardware
                for replica in specs:
                    if holds_back(replica, spec):
                        return None
        key = submission.task_key
        placed = self._placed
        # Recorded first: an executor may report a fast run before try_submit returns.
        placed[key] = (_TASK, ex)
        try:
            given = ex.try_submit(submission)
        except BaseException:
            placed.pop(key, None)
            raise
        if given is None:
            placed.pop(key, None)
        return given

    def submit_replica(self, ex: Executor, submission: TaskSubmission) -> HardwareGiven | None:
        """Starts a replica on ``ex``; None when it has no room. A replica that starts
        stops waiting. Raises what the executor raises."""
        key = submission.task_key
        self._placed[key] = (WorkKind.REPLICA, ex)
        try:
            given = ex.try_submit(submission)
        except BaseException:
            self._placed.pop(key, None)
            raise
        if given is None:
            self._placed.pop(key, None)
        elif key in self._waiting:
            self._stop_waiting(key)
        return given

    def replica_waits(
        self, task_key: str, spec: HardwareSpec, executors: tuple[Executor, ...]
    ) -> None:
        """``task_key``, a replica of ``spec``, found no room on ``executors``: from now
        on (for at most :data:`HOLD_S`) room is held for it there."""
        with self._lock:
            if task_key in self._waiting:
                return
            self._waiting[task_key] = _Waiting(spec, executors, self._clock())
            self._rebuild()

    def _stop_waiting(self, task_key: str) -> None:
        with self._lock:
            if self._waiting.pop(task_key, None) is None:
                return
            self._rebuild()
        self._announce_room()

    def _rehold(self) -> None:
        """Drops holds older than :data:`HOLD_S`."""
        with self._lock:
            self._rebuild()
        self._announce_room()

    def _rebuild(self) -> None:
        """Recomputes the held room from the waiting replicas (under the lock)."""
        now = self._clock()
        held: dict[Executor, tuple[HardwareSpec, ...]] = {}
        until = float("inf")
        for w in self._waiting.values():
            if now - w.since >= HOLD_S:
                continue
            until = min(until, w.since + HOLD_S)
            for ex in w.executors:
                held[ex] = (*held.get(ex, ()), w.spec)
        self._held, self._held_until = held, until

    # -- runs that end ---------------------------------------------------------------------

    def report(self, outcome: TaskOutcome) -> None:
        """An executor's report: sent to the component that started the run."""
        entry = self._placed.pop(outcome.task_key, None)
        if entry is None:
            log.warning("an outcome for %s, which nothing started, was dropped", outcome.task_key)
            if outcome.on_stored is not None:
                outcome.on_stored()
            return
        kind = entry[0]
        handler = self._routes.get(kind)
        if handler is None:
            log.error("no component takes outcomes of %s runs; dropped", kind.value)
        else:
            handler(outcome)
        if kind is WorkKind.REPLICA:
            # The scheduler hears only its tasks' outcomes: tell it a replica's room freed.
            self._announce_room()

    def reclaim_task(self, ex: Executor, task_key: str, given: HardwareGiven) -> bool:
        """Takes back a task attempt the previous controller started on ``ex``, if ``ex``
        still runs it (an agent's); False: it is gone, and runs again."""
        self._placed[task_key] = (_TASK, ex)
        if ex.reclaim(task_key, given):
            return True
        self._placed.pop(task_key, None)
        return False

    def cancel(self, task_key: str, reason: str) -> None:
        """Stops a started run (``cancelled`` or ``time_limit``); its outcome follows."""
        entry = self._placed.get(task_key)
        if entry is not None:
            entry[1].cancel(task_key, reason)

    def running(self, kind: WorkKind) -> list[str]:
        """Keys of the runs of ``kind`` started and not yet reported."""
        return [key for key, (k, _) in list(self._placed.items()) if k is kind]

    # -- adopted replicas ------------------------------------------------------------------

    def adopt(self, task_key: str, ex: Executor, given: HardwareGiven) -> bool:
        """Counts ``given`` as held on ``ex`` by a replica the previous controller started;
        False when ``ex`` does not have that hardware free (it is then not counted)."""
        if not ex.adopt(task_key, given):
            return False
        with self._lock:
            self._adopted[task_key] = ex
        return True

    def forget(self, task_key: str) -> None:
        """``task_key`` ended or stopped without a report (an adopted replica), or is no
        longer wanted before it started: it stops waiting, and what it held is freed."""
        if task_key in self._waiting:
            self._stop_waiting(task_key)
        with self._lock:
            ex = self._adopted.pop(task_key, None)
        if ex is not None:
            ex.release(task_key)
            self._announce_room()

    def room_freed(self) -> None:
        """An executor has more room than before (an agent attached): place again."""
        self._announce_room()

    def _announce_room(self) -> None:
        for callback in self._room:
            callback()
