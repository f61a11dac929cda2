"""Event-driven scheduling.

One thread owns all live state. It drains a queue of events (new dispatch,
task outcome, cancel), applies them, places every ready task that fits, and
commits the round's changes in one transaction before anyone is told: a
client that sees a result can rely on it being stored.

Tasks start, stop and are billed through the controller's
:class:`~cobalt_controller.placement.Placement`, which owns executor capacity
for tasks and replicas alike and routes task outcomes here.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from cobalt_common.status import Status
from cobalt_controller._convert import given_to_json
from cobalt_controller._credentials import Credentials
from cobalt_controller._executors import ExecutorPool
from cobalt_controller._payloads import Payloads
from cobalt_controller.dispatch._budget import (
    dispatch_error,
    ended_status,
    exhausted_message,
    placement_note,
    pricier,
)
from cobalt_controller.dispatch._cost import local_day
from cobalt_controller.dispatch._intake import worst_case_usd
from cobalt_controller.dispatch._model import (
    CANCELLED,
    COMPLETED,
    ELECTRON,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    SUBLATTICE,
    TERMINAL,
    TIMED_OUT,
    Dispatch,
    Ledger,
    Task,
)
from cobalt_controller.dispatch._submission import build_submission
from cobalt_controller.placement import Placement, WorkKind, charge, rate_usd_per_hour
from cobalt_controller.state import StateStore, WriteBatch
from cobalt_executors import TaskOutcome

log = logging.getLogger("cobalt.controller")

WRITE_ATTEMPTS = 3
"""Rounds in a row whose write may fail before the rest is stored dispatch by dispatch,
and a dispatch whose own changes still cannot be stored is stopped."""
Listener = Callable[[Dispatch, Task | None], None]


class Scheduler:
    """Runs dispatches: places ready tasks, applies outcomes, retries, stops.

    Args:
        state: where every round's changes are committed.
        payloads: the functions, arguments and outputs (opaque bytes).
        executors: the controller's executors.
        placement: the owner of executor capacity; the scheduler takes its task
            outcomes. None: one of its own (a scheduler alone, in tests).
        retry_backoff_s: the wait before a failed task's first retry, doubled
            for each later one, up to ``retry_backoff_max_s``.
        credentials: mints each attempt's own credential; None: tasks get none.
        wait_for_cheaper_s: how long a ready task waits for its cheapest executor to
            have room before it goes to a pricier one with room now; the placement
            note says which happened.
    """

    def __init__(
        self,
        state: StateStore,
        payloads: Payloads,
        executors: ExecutorPool,
        *,
        placement: Placement | None = None,
        retry_backoff_s: float = 1.0,
        retry_backoff_max_s: float = 60.0,
        credentials: Credentials | None = None,
        wait_for_cheaper_s: float = 0.0,
    ) -> None:
        self.state = state
        self.placement = placement if placement is not None else Placement()
        self.placement.route(WorkKind.TASK, self.report)
        self.placement.on_room(self._room_freed)
        self.credentials = credentials
        """Mints each attempt's own credential; None: tasks get none (tests)."""
        self.payloads = payloads
        self.executors = executors
        self.retry_backoff_s = retry_backoff_s
        self.retry_backoff_max_s = retry_backoff_max_s
        self.wait_for_cheaper_s = wait_for_cheaper_s
        self._wakeups: list[float] = []
        """Times a task's wait for a cheaper executor ends: placement runs again then."""
        self.active: dict[str, Dispatch] = {}
        self.listener: Listener | None = None
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._ready: dict[tuple[Any, ...], deque[tuple[Dispatch, Task]]] = {}
        self._submitted: dict[str, tuple[Dispatch, Task]] = {}
        self._timers: list[tuple[float, int, Dispatch, Task]] = []
        self._deadlines: list[tuple[float, str]] = []
        self._seq = itertools.count()
        self._batch = WriteBatch()
        self._finished: list[Dispatch] = []
        self._changed: list[tuple[Dispatch, Task | None]] = []
        self._dirty: dict[tuple[str, int], tuple[Task, dict[str, str] | None]] = {}
        self._cost_changed: set[Dispatch] = set()
        self._failed_writes = 0
        self._stored: list[Callable[[], None]] = []
        """Callbacks of outcomes applied this round, called once the round is stored."""
        self._unstorable: set[str] = set()
        """Dispatches stopped because their state could not be stored: nothing more of
        them is written or announced."""
        self._ledgers: set[Ledger] = set()
        """Ledgers with tasks held back by their budget."""
        self._cancelling: set[tuple[str, int]] = set()
        """Running tasks cancelled one by one, by (dispatch id, node id): they end
        CANCELLED, not retried, unless they complete first."""
        self._thread = threading.Thread(target=self._run, name="cobalt-scheduler", daemon=True)
        self._stopping = False

    # -- called from other threads -------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit_dispatch(self, dispatch: Dispatch) -> None:
        self.active[dispatch.dispatch_id] = dispatch
        self._events.put(("dispatch", dispatch))

    def report(self, outcome: TaskOutcome) -> None:
        self._events.put(("outcome", outcome))

    def cancel(self, dispatch_id: str) -> None:
        self._events.put(("cancel", dispatch_id))

    def cancel_tasks(self, dispatch_id: str, node_ids: list[int]) -> None:
        """Cancels these tasks (checked by :func:`._task_cancel.check_task_ids`) only."""
        self._events.put(("cancel_tasks", dispatch_id, node_ids))

    def _room_freed(self) -> None:
        self._events.put(("room",))

    def link_sublattice(self, parent_id: str, node_id: int, child_id: str) -> None:
        self._events.put(("link", parent_id, node_id, child_id))

    def stop(self) -> None:
        self._events.put(("stop",))
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    # -- the scheduling thread -----------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            try:
                event = self._events.get(timeout=self._wait_time())
            except queue.Empty:
                event = None
            try:
                if event is not None:
                    self._handle(event)
                    while True:
                        try:
                            self._handle(self._events.get_nowait())
                        except queue.Empty:
                            break
                self._fire_timers()
                self._place()
                if self._ledgers:
                    self._check_budgets()
                self._flush()
            except Exception:
                log.exception("scheduling round failed")

    def _wait_time(self) -> float:
        now = time.time()
        nearest = 0.5
        if self._timers:
            nearest = min(nearest, self._timers[0][0] - now)
        if self._deadlines:
            nearest = min(nearest, self._deadlines[0][0] - now)
        while self._wakeups and self._wakeups[0] <= now:
            heapq.heappop(self._wakeups)
        if self._wakeups:
            nearest = min(nearest, self._wakeups[0] - now)
        return max(nearest, 0.0)

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "outcome":
            self._on_outcome(event[1])
        elif kind == "dispatch":
            self._on_dispatch(event[1])
        elif kind == "cancel":
            self._on_cancel(event[1])
        elif kind == "cancel_tasks":
            self._on_cancel_tasks(event[1], event[2])
        elif kind == "link":
            self._on_link(*event[1:])
        elif kind == "stop":
            self._stopping = True
        # "room": room freed that no outcome announced; the round places tasks anew.

    def _on_dispatch(self, d: Dispatch) -> None:
        parent = self.active.get(d.parent_dispatch_id) if d.parent_dispatch_id else None
        if parent is not None and parent.ledger is not None:
            d.ledger = parent.ledger
        elif d.budget_usd:
            d.ledger = Ledger(d.budget_usd, spent=d.cost_usd)
        for t in d.tasks:
            if t.status == PENDING and t.waiting == 0:
                self._make_ready(d, t)
            elif t.status == RUNNING and t.task_key:
                self._resume_running(d, t)
        if d.remaining == 0:
            self._finish(d)

    def _resume_running(self, d: Dispatch, t: Task) -> None:
        """A task the previous controller started, still running on an agent: its
        outcome is awaited as if this controller had started it."""
        self._submitted[t.task_key] = (d, t)
        if t.hardware.time_limit_s and t.started_at:
            heapq.heappush(self._deadlines, (t.started_at + t.hardware.time_limit_s, t.task_key))

    def _make_ready(self, d: Dispatch, t: Task) -> None:
        t.ready_at = time.time()
        key = (t.candidates, t.hardware, t.kind == SUBLATTICE)
        q = self._ready.get(key)
        if q is None:
            q = self._ready[key] = deque()
        q.append((d, t))

    def _place(self) -> None:
        if not self._ready:
            return
        emptied = []
        for key, q in self._ready.items():
            while q:
                d, t = q[0]
                if t.status != PENDING or d.cancelled:
                    q.popleft()
                    continue
                if not self._try_submit(d, t):
                    break
                q.popleft()
            if not q:
                emptied.append(key)
        for key in emptied:
            del self._ready[key]

    def _try_submit(self, d: Dispatch, t: Task) -> bool:
        ledger = d.ledger
        worst = 0.0
        if ledger is not None and t.kind == ELECTRON:
            # Candidates are sorted cheapest first: if the cheapest could
            # overspend, every other could too.
            worst = worst_case_usd(t.candidates[0], t)
            if worst > ledger.left:
                if ledger.exhausted:
                    return False
                ledger.blocked[(d.dispatch_id, t.node_id)] = (d, t, t.candidates[0].name)
                self._ledgers.add(ledger)
                return False
            ledger.blocked.pop((d.dispatch_id, t.node_id), None)
        t.attempts += 1
        t.task_key = f"{d.dispatch_id}/{t.node_id}/{t.attempts}"
        try:
            submission = build_submission(d, t, self.payloads, self.credentials)
        except KeyError as exc:
            t.attempts -= 1
            self._fail(
                d, t, FAILED, f"payload {exc} of task {t.name!r} is missing from the store.", "lost"
            )
            return True
        submit = self.placement.submit_task
        waited = time.time() - t.ready_at if t.ready_at else 0.0
        for i, ex in enumerate(t.candidates):
            if i and ledger is not None and t.kind == ELECTRON:
                worst = worst_case_usd(ex, t)
                if worst > ledger.left:
                    break
            if i and waited < self.wait_for_cheaper_s and pricier(t.candidates, t.hardware, i):
                heapq.heappush(self._wakeups, t.ready_at + self.wait_for_cheaper_s)
                break
            given = submit(ex, submission)
            if given is None:
                continue
            now = time.time()
            t.status = RUNNING
            t.executor = ex.name
            t.given = given
            t.started_at = now
            t.rate = rate_usd_per_hour(ex, given) if t.kind == ELECTRON else 0.0
            t.placement = placement_note(t, i, waited if self.wait_for_cheaper_s else 0.0)
            if ledger is not None and worst > 0:
                t.reserved = worst
                ledger.held += worst
                ledger.running += 1
            self._submitted[t.task_key] = (d, t)
            if t.hardware.time_limit_s:
                deadline = now + t.hardware.time_limit_s
                # One NaN in the heap would hide every deadline behind it; intake
                # and HardwareSpec refuse non-finite limits, so this never fires.
                assert math.isfinite(deadline), f"deadline {deadline!r} of {t.task_key}"
                heapq.heappush(self._deadlines, (deadline, t.task_key))
            if d.started_at is None:
                d.started_at = now
                d.status = RUNNING
                self._batch.update_dispatch(d.dispatch_id, status=RUNNING, started_at=now)
                self._changed.append((d, None))
            self._touch(d, t)
            return True
        self._revoke(t.task_key)
        t.attempts -= 1
        return False

    def _charge(self, d: Dispatch, t: Task) -> None:
        """Bills the attempt that just ended, and releases its budget hold."""
        billed, cost = charge(t.started_at, t.ended_at or 0.0, t.rate, t.hardware.time_limit_s)
        t.billed_s += billed
        ledger = d.ledger
        if ledger is not None and t.reserved:
            ledger.held -= t.reserved
            ledger.running -= 1
            t.reserved = 0.0
        if not cost:
            return
        t.cost_usd += cost
        if ledger is not None:
            ledger.spent += cost
        emulated = t.given is not None and t.given.emulated
        # A sublattice's cost is its child dispatch's: roll it up the chain.
        node: Dispatch | None = d
        while node is not None:
            node.cost_usd += cost
            node.emulated = node.emulated or emulated
            self._cost_changed.add(node)
            parent_id, parent_node = node.parent_dispatch_id, node.parent_node_id
            node = self.active.get(parent_id) if parent_id else None
            if node is not None and parent_node is not None:
                node.tasks[parent_node].cost_usd += cost
                self._touch(node, node.tasks[parent_node], notify=False)

    def _revoke(self, task_key: str) -> None:
        if self.credentials is not None:
            self.credentials.revoke(task_key)

    def _on_outcome(self, o: TaskOutcome) -> None:
        self._revoke(o.task_key)
        entry = self._submitted.pop(o.task_key, None)
        if entry is None:
            if o.on_stored is not None:
                o.on_stored()  # known already: nothing to store
            return
        if o.on_stored is not None:
            self._stored.append(o.on_stored)
        d, t = entry
        cancelled = (d.dispatch_id, t.node_id) in self._cancelling
        self._cancelling.discard((d.dispatch_id, t.node_id))
        t.ended_at = o.ended_at or time.time()
        if o.started_at:
            t.started_at = o.started_at
        t.given = o.hardware_given
        if t.kind == ELECTRON:
            self._charge(d, t)
        logs = {"stdout": o.stdout, "stderr": o.stderr}
        if o.status == COMPLETED and o.output is not None:
            t.status = COMPLETED
            out = o.output
            if out.data is not None:
                self.payloads.remember(out.sha256, out.data)
                self._batch.payloads[out.sha256] = out.data
                t.output = out
            else:
                t.output = out
            d.remaining -= 1
            t.error = t.reason = ""
            self._touch(d, t, logs)
            for c in t.children:
                child = d.tasks[c]
                child.waiting -= 1
                if child.waiting == 0 and child.status == PENDING and not d.cancelled:
                    self._make_ready(d, child)
        else:
            status = FAILED if o.status == COMPLETED else o.status  # completed, no output
            retry = status in (FAILED, TIMED_OUT) and t.attempts <= t.retries and not d.cancelled
            if cancelled:
                status, retry = CANCELLED, False
            if retry:
                delay = min(self.retry_backoff_s * 2 ** (t.attempts - 1), self.retry_backoff_max_s)
                t.status = PENDING
                t.error = o.error
                t.reason = o.reason
                heapq.heappush(self._timers, (time.time() + delay, next(self._seq), d, t))
                self._touch(d, t, logs)
            elif cancelled:
                self._fail(d, t, CANCELLED, o.error or "cancelled while it ran", "cancelled", logs)
            else:
                self._fail(d, t, status, o.error, o.reason or status.lower(), logs)
        if d.remaining == 0:
            self._finish(d)

    def _fail(
        self,
        d: Dispatch,
        t: Task,
        status: Status,
        error: str,
        reason: str,
        logs: dict[str, str] | None = None,
    ) -> None:
        t.status = status
        t.error = error
        t.reason = reason
        t.ended_at = t.ended_at or time.time()
        d.remaining -= 1
        self._touch(d, t, logs)
        why = f"not run: task {t.name!r} (node {t.node_id}) ended {status}"
        stack = list(t.children)
        while stack:
            child = d.tasks[stack.pop()]
            if child.status in TERMINAL:
                continue
            child.status = SKIPPED
            child.error = why
            d.remaining -= 1
            self._touch(d, child)
            stack.extend(child.children)
        if d.remaining == 0:
            self._finish(d)

    def _fire_timers(self) -> None:
        now = time.time()
        while self._timers and self._timers[0][0] <= now:
            _, _, d, t = heapq.heappop(self._timers)
            if t.status == PENDING and not d.cancelled:
                self._make_ready(d, t)
        while self._deadlines and self._deadlines[0][0] <= now:
            _, key = heapq.heappop(self._deadlines)
            if key in self._submitted:
                self._revoke(key)
                self.placement.cancel(key, "time_limit")

    def _on_cancel(self, dispatch_id: str) -> None:
        d = self.active.get(dispatch_id)
        if d is None or d.cancelled:
            return
        d.cancelled = True
        for t in d.tasks:
            if t.status == RUNNING:
                if t.task_key in self._submitted:
                    self._revoke(t.task_key)
                    self.placement.cancel(t.task_key, "cancelled")
            elif t.status == PENDING:
                t.status = CANCELLED
                t.error = "cancelled before it started"
                d.remaining -= 1
                self._touch(d, t)
        for child_id in d.child_dispatches:
            self._on_cancel(child_id)
        if d.remaining == 0:
            self._finish(d)

    def _on_cancel_tasks(self, dispatch_id: str, node_ids: list[int]) -> None:
        """Stops these tasks; what depends on them is skipped, the rest goes on."""
        d = self.active.get(dispatch_id)
        if d is None or d.cancelled:
            return
        for t in (d.tasks[i] for i in node_ids):
            if t.status == RUNNING and t.task_key in self._submitted:
                self._cancelling.add((dispatch_id, t.node_id))
                self._revoke(t.task_key)
                self.placement.cancel(t.task_key, "cancelled")
                if t.sublattice_dispatch_id:
                    self._on_cancel(t.sublattice_dispatch_id)
            elif t.status == PENDING:
                if d.ledger is not None:  # no longer waiting for room in the budget
                    d.ledger.blocked.pop((dispatch_id, t.node_id), None)
                self._fail(d, t, CANCELLED, "cancelled before it started", "cancelled")

    def _check_budgets(self) -> None:
        """Ends dispatches whose held-back task can never fit.

        Once nothing of the budget is held by running tasks, what is left can
        only shrink: a task that does not fit now never will.
        """
        for ledger in list(self._ledgers):
            if not ledger.blocked:
                self._ledgers.discard(ledger)
            elif ledger.running == 0:
                self._ledgers.discard(ledger)
                self._exhaust(ledger)

    def _exhaust(self, ledger: Ledger) -> None:
        ledger.exhausted = True
        why = exhausted_message(ledger, next(iter(ledger.blocked.values())))
        ledger.blocked.clear()
        for d in [d for d in self.active.values() if d.ledger is ledger]:
            for t in d.tasks:
                if t.status == PENDING:
                    t.status = SKIPPED
                    t.reason = "budget"
                    t.error = f"not run: {why}"
                    d.remaining -= 1
                    self._touch(d, t)
            if d.remaining == 0:
                self._finish(d)

    def _on_link(self, parent_id: str, node_id: int, child_id: str) -> None:
        d = self.active.get(parent_id)
        if d is None:
            return
        d.child_dispatches.add(child_id)
        t = d.tasks[node_id]
        t.sublattice_dispatch_id = child_id
        self._touch(d, t, notify=False)
        if d.cancelled:
            self._on_cancel(child_id)

    def _finish(self, d: Dispatch) -> None:
        if d in self._finished or d.ended_at is not None:
            return
        d.status = ended_status(d)
        d.ended_at = time.time()
        d.error = dispatch_error(d)
        self._batch.update_dispatch(
            d.dispatch_id, status=d.status, ended_at=d.ended_at, error=d.error
        )
        self._cost_changed.add(d)
        self._changed.append((d, None))
        self._finished.append(d)

    def _touch(
        self, d: Dispatch, t: Task, logs: dict[str, str] | None = None, *, notify: bool = True
    ) -> None:
        """Marks a task changed: written at the end of the round, then announced."""
        key = (d.dispatch_id, t.node_id)
        if logs is not None or key not in self._dirty:
            self._dirty[key] = (t, logs)
        if notify:
            self._changed.append((d, t))

    def _write_dirty(self) -> None:
        # Every changed task writes the same columns, so a round is one executemany
        # (two when some rows also carry logs).
        for (dispatch_id, node_id), (t, logs) in self._dirty.items():
            row = {
                "status": t.status,
                "executor": t.executor,
                "hardware_given": given_to_json(t.given),
                "attempts": t.attempts,
                "started_at": t.started_at,
                "ended_at": t.ended_at,
                "error": t.error,
                "reason": t.reason,
                "output_sha256": t.output.sha256 if t.output is not None else "",
                "sublattice_dispatch_id": t.sublattice_dispatch_id,
                "cost_usd": t.cost_usd,
                "billed_s": t.billed_s,
                "rate_usd_per_hour": t.rate,
                "placement": t.placement,
                "gpu_type": (t.given.gpu or "") if t.given is not None else "",
                "emulated": t.given is not None and t.given.emulated,
                "ended_day": local_day(t.ended_at) if t.ended_at else "",
                "credential_sha256": t.credential_sha256 if t.status == RUNNING else "",
            }
            if logs is not None:
                row.update(logs)
            self._batch.node_updates[(dispatch_id, node_id)] = row
        self._dirty.clear()

    def _flush(self) -> None:
        if self._dirty:
            self._write_dirty()
        if self._cost_changed:
            for d in self._cost_changed:
                self._batch.update_dispatch(d.dispatch_id, cost_usd=d.cost_usd, emulated=d.emulated)
            self._cost_changed.clear()
        if self._unstorable:
            self._batch.drop(self._unstorable)
        if self._batch:
            batch, self._batch = self._batch, WriteBatch()
            try:
                self.state.apply(batch)
                self._failed_writes = 0
            except Exception:
                self._failed_writes += 1
                if self._failed_writes < WRITE_ATTEMPTS:
                    # Nothing of a round is announced before it is stored: it is kept,
                    # under any later changes, and written again with the next round.
                    self._batch = batch.merged(self._batch)
                    raise
                self._failed_writes = 0
                log.exception(
                    "a round failed to store %d times in a row; storing it dispatch by dispatch",
                    WRITE_ATTEMPTS,
                )
                self._store_apart(batch)
        changed, self._changed = self._changed, []
        if self._unstorable:
            changed = [
                (d, t) for d, t in changed if t is None or d.dispatch_id not in self._unstorable
            ]
        finished, self._finished = self._finished, []
        stored, self._stored = self._stored, []
        for callback in stored:
            try:
                callback()
            except Exception:
                log.exception("telling an executor that an outcome is stored failed")
        if self.listener is not None:
            for d, t in changed:
                self.listener(d, t)
        for d in finished:
            d.done.set()
            self.active.pop(d.dispatch_id, None)

    def _store_apart(self, batch: WriteBatch) -> None:
        """Stores ``batch`` one dispatch at a time, so that one dispatch whose state
        the store refuses cannot hold back the others; that one is stopped."""
        for dispatch_id, part in batch.by_dispatch().items():
            try:
                self.state.apply(part)
            except Exception as exc:
                if dispatch_id is None:  # payloads alone: kept for the next round
                    self._batch = part.merged(self._batch)
                else:
                    self._abandon(dispatch_id, exc)

    def _abandon(self, dispatch_id: str, exc: Exception) -> None:
        """Stops a dispatch whose state cannot be stored, and says why."""
        self._unstorable.add(dispatch_id)
        log.error("dispatch %s stopped: its state cannot be stored (%r)", dispatch_id, exc)
        d = self.active.get(dispatch_id)
        if d is None or (d.ended_at is not None and d not in self._finished):
            return  # ended and announced in an earlier round
        self._on_cancel(dispatch_id)  # stops its tasks and its sublattices, no retries
        d.status = FAILED
        d.ended_at = time.time()
        d.error = (
            f"cobalt could not store this dispatch's state ({type(exc).__name__}: "
            f"{str(exc)[:200]}), so it was stopped and its tasks cancelled; other dispatches "
            "go on. The controller's log has the details."
        )
        try:
            final = WriteBatch()
            final.update_dispatch(dispatch_id, status=d.status, ended_at=d.ended_at, error=d.error)
            self.state.apply(final)
        except Exception:
            log.exception("could not store that dispatch %s failed either", dispatch_id)
        if d not in self._finished:
            self._finished.append(d)
        self._changed.append((d, None))
