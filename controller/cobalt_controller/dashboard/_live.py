"""Live updates for open dashboard pages, coalesced so a big fan-out cannot flood them.

The scheduler calls :meth:`LiveFeed.notify` after each committed round. That
call only records which dispatch and task changed, and, for a dispatch a page
watches, the task's committed fields (a small tuple, under an uncontended
lock), so the scheduling thread never waits on a browser. A separate thread
wakes at most :data:`PUSH_INTERVAL_S` apart and hands each watching page one
message with every change since the last: a 2,000-task fan-out finishing
reaches a page as a few messages of many rows, not 2,000 messages. Task rows
come from those tuples, not from the store: the feed shares the interpreter
with the scheduler, and reading thousands of rows back four times a second
would slow the fan-out the page watches. When a push takes long, the pushes
space out further.

A page reads its view, then subscribes with the time it read. The feed
remembers when each task of a recent dispatch last changed, so changes that
fell between the read and the subscription reach the page as one message of
just those tasks, read from the store; only when it no longer knows (a
dispatch idle for :data:`_FORGET_AFTER_S`) is the page told to read
everything again.

Messages are JSON texts for Server-Sent Events:

- ``{"type": "dispatches", "dispatches": [...]}`` for the list of dispatches;
- ``{"type": "dispatch", "dispatch": {...}, "tasks": [...]}`` for one dispatch,
  with only the task rows that changed;
- ``{"type": "deployments", "names": [...]}`` for the deployments list, and
  ``{"type": "deployment", "name": ...}`` for one deployment's page: which
  deployments changed (the manager records an event with every change); the
  page reads them again, as they change rarely;
- ``{"type": "resync"}`` when a page may have missed changes (it subscribed
  after reading, or it fell behind): it reads the whole view again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cobalt_controller.dashboard import _views

if TYPE_CHECKING:
    from cobalt_controller.dispatch._model import Dispatch, Task
    from cobalt_controller.state import StateStore

log = logging.getLogger("cobalt.dashboard")

PUSH_INTERVAL_S = 0.25
"""Changes reach a page at most four times a second."""
QUEUE_LIMIT = 64
"""Messages a page may fall behind before it is told to read everything again."""
ALL = "*"
"""The subscription key of the dispatch list: every dispatch."""
DEPLOYMENTS = "deployment:*"
"""The subscription key of the deployments list: every deployment."""
RESYNC = json.dumps({"type": "resync"})
_FORGET_AFTER_S = 120.0


def deployment_key(name: str) -> str:
    """The subscription key of one deployment's page; of the list for ``""``."""
    return f"deployment:{name}" if name else DEPLOYMENTS


@dataclass(eq=False)
class Subscription:
    """One open page: its key (a dispatch id, :data:`ALL`, :data:`DEPLOYMENTS` or a
    :func:`deployment_key`) and its message queue."""

    key: str
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)

    def deliver(self, message: str | None) -> None:
        """Queues a message; runs on the page's event loop."""
        if message is not None and self.queue.qsize() >= QUEUE_LIMIT:
            while not self.queue.empty():
                self.queue.get_nowait()
            message = RESYNC
        self.queue.put_nowait(message)


class LiveFeed:
    """Collects changes from the scheduler and pushes them to subscribed pages."""

    def __init__(
        self,
        state: StateStore,
        *,
        interval_s: float = PUSH_INTERVAL_S,
        forget_after_s: float = _FORGET_AFTER_S,
    ) -> None:
        self.state = state
        self.interval_s = interval_s
        self.forget_after_s = forget_after_s
        self._lock = threading.Lock()
        self._dirty_dispatches: set[str] = set()
        self._dirty_tasks: dict[str, dict[int, _views.LiveTask]] = {}
        """Committed task fields of watched dispatches, the latest per task."""
        self._task_times: dict[str, dict[int, float]] = {}
        """When each task of a recently changed dispatch last changed."""
        self._catch_up: list[tuple[Subscription, set[int]]] = []
        self._dirty_deployments: set[str] = set()
        self._changed_at: dict[str, float] = {}
        self._any_changed_at = 0.0
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._watching = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cobalt-dashboard-live", daemon=True)

    # -- the scheduler thread ------------------------------------------------------

    def notify(self, dispatch: Dispatch, task: Task | None) -> None:
        """Records a committed change. Constant time; never blocks on a page."""
        now = time.time()
        dispatch_id = dispatch.dispatch_id
        with self._lock:
            self._changed_at[dispatch_id] = now
            self._any_changed_at = now
            times = self._task_times.get(dispatch_id)
            if times is None:
                times = self._task_times[dispatch_id] = {}
            if task is not None:
                times[task.node_id] = now
            if not self._watching:
                return
            self._dirty_dispatches.add(dispatch_id)
            if (
                task is not None
                and task.kind in _views.TASK_KINDS
                and dispatch_id in self._subscriptions
            ):
                tasks = self._dirty_tasks.get(dispatch_id)
                if tasks is None:
                    tasks = self._dirty_tasks[dispatch_id] = {}
                tasks[task.node_id] = _live_task(task)

    def notify_deployment(self, name: str) -> None:
        """Records that a deployment changed (the deployment manager calls this with
        each event it records, under its lock). Constant time; never blocks on a page."""
        now = time.time()
        with self._lock:
            self._changed_at[deployment_key(name)] = now
            self._changed_at[DEPLOYMENTS] = now
            if self._watching:
                self._dirty_deployments.add(name)

    # -- pages (the web server's event loop) -----------------------------------------

    def subscribe(self, key: str, since: float | None = None) -> Subscription:
        """Registers a page. ``since``: when the page read its data; a change after
        that which this feed may not carry to it makes its first message a resync."""
        sub = Subscription(key, asyncio.get_running_loop())
        with self._lock:
            self._subscriptions.setdefault(key, []).append(sub)
            self._watching += 1
            changed = self._any_changed_at if key == ALL else self._changed_at.get(key, 0.0)
            stale = since is not None and changed >= since
            times = self._task_times.get(key) if stale else None
            if stale and times is not None and since is not None:
                # Only the tasks that changed since the page read: one small message.
                self._catch_up.append((sub, {n for n, at in times.items() if at >= since}))
                self._dirty_dispatches.add(key)
                stale = False
        if stale:
            sub.deliver(RESYNC)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subscriptions.get(sub.key, [])
            if sub in subs:
                subs.remove(sub)
                self._watching -= 1
            if not subs:
                self._subscriptions.pop(sub.key, None)

    # -- the push thread ---------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends the push thread and every open stream."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._lock:
            subs = [s for group in self._subscriptions.values() for s in group]
        for sub in subs:
            self._send(sub, None)

    def _run(self) -> None:
        delay = self.interval_s
        while not self._stop.wait(delay):
            started = time.thread_time()
            try:
                self.push()
            except Exception:
                log.exception("could not push dashboard updates")
            # This thread shares the interpreter with the scheduler: keep its
            # own CPU time to a small share however much changes at once.
            delay = max(self.interval_s, _CPU_SHARE_FACTOR * (time.thread_time() - started))

    def push(self) -> None:
        """Sends every change recorded since the last push (the thread calls this)."""
        with self._lock:
            dirty, self._dirty_dispatches = self._dirty_dispatches, set()
            dirty_tasks, self._dirty_tasks = self._dirty_tasks, {}
            deployments, self._dirty_deployments = self._dirty_deployments, set()
            subs = {key: list(group) for key, group in self._subscriptions.items()}
            cutoff = time.time() - self.forget_after_s
            catch_up, self._catch_up = self._catch_up, []
            if len(self._changed_at) > 1000:
                self._changed_at = {k: t for k, t in self._changed_at.items() if t > cutoff}
            if self._task_times:
                self._task_times = {
                    k: v for k, v in self._task_times.items() if self._changed_at.get(k, 0) > cutoff
                }
        if deployments:
            self._push_deployments(sorted(deployments), subs)
        if not dirty:
            return
        if subs.get(ALL):
            self._broadcast(subs[ALL], self._dispatches_message(sorted(dirty)))
        for sub, node_ids in catch_up:
            message = self._dispatch_message(sub.key, self._stored_tasks(sub.key, node_ids))
            if message is not None:
                self._send(sub, message)
        for dispatch_id in dirty:
            watchers = subs.get(dispatch_id)
            if watchers:
                live = dirty_tasks.get(dispatch_id, {})
                now = time.time()
                rows = [_views.live_task(live[n], now) for n in sorted(live)]
                message = self._dispatch_message(dispatch_id, rows)
                if message is not None:
                    self._broadcast(watchers, message)

    def _push_deployments(self, names: list[str], subs: dict[str, list[Subscription]]) -> None:
        if subs.get(DEPLOYMENTS):
            self._broadcast(subs[DEPLOYMENTS], _dumps({"type": "deployments", "names": names}))
        for name in names:
            watchers = subs.get(deployment_key(name))
            if watchers:
                self._broadcast(watchers, _dumps({"type": "deployment", "name": name}))

    def _dispatches_message(self, ids: list[str]) -> str:
        rows = [r for r in (self.state.get_dispatch(i) for i in ids) if r is not None]
        counts = self.state.status_counts(ids)
        return _dumps({"type": "dispatches", "dispatches": _views.dispatches(rows, counts)})

    def _stored_tasks(self, dispatch_id: str, node_ids: set[int]) -> list[_views.Json]:
        if not node_ids:
            return []
        nodes = self.state.get_nodes(dispatch_id, include_logs=False, node_ids=node_ids)
        return _views.tasks(nodes)

    def _dispatch_message(self, dispatch_id: str, tasks: list[_views.Json]) -> str | None:
        row = self.state.get_dispatch(dispatch_id)
        if row is None:
            return None
        counts = self.state.status_counts([dispatch_id]).get(dispatch_id, {})
        return _dumps(
            {
                "type": "dispatch",
                "dispatch": _views.dispatch(row, counts, time.time()),
                "tasks": tasks,
            }
        )

    def _broadcast(self, subs: list[Subscription], message: str) -> None:
        for sub in subs:
            self._send(sub, message)

    @staticmethod
    def _send(sub: Subscription, message: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the page's loop has closed
            sub.loop.call_soon_threadsafe(sub.deliver, message)


_CPU_SHARE_FACTOR = 8
"""Wait this many times the CPU time of the last push: at most about 1/9 of a core."""


def _live_task(t: Task) -> _views.LiveTask:
    return _views.LiveTask(
        t.node_id,
        t.name,
        t.status,
        t.executor,
        t.hardware,
        t.given,
        t.started_at,
        t.ended_at,
        t.billed_s,
        t.cost_usd,
        t.reason,
        t.sublattice_dispatch_id,
    )


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=False)
