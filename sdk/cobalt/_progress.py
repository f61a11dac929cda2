"""Live progress while a dispatch runs: a widget in notebooks, a bar in terminals.

The view follows the controller's event stream (``DispatchWatch``) on a
background thread: nothing polls. It shows a progress bar by task status,
the tasks with their hardware, executor, duration and billed time and cost,
the running total and a link to the dispatch's dashboard page.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Protocol

import grpc

from cobalt import _html as h
from cobalt._client import Client
from cobalt._records import STATUS_ORDER, Status, TaskRecord, count_words, status_from_pb
from cobalt._result import format_took
from cobalt_common.hardware import format_duration
from cobalt_common.pricing import format_usd
from cobalt_common.v1 import controller_pb2 as pb

_TABLE_ROWS = 40
_REFRESH_S = 0.25


class _State:
    """What the stream has said so far about one dispatch."""

    def __init__(self, dispatch_id: str) -> None:
        self.dispatch_id = dispatch_id
        self.name = ""
        self.status = Status.PENDING
        self.cost_usd = 0.0
        self.emulated = False
        self.started_at = self.ended_at = 0.0
        self.tasks: dict[int, TaskRecord] = {}
        self.lock = threading.Lock()

    def apply(self, event: pb.DispatchEvent) -> None:
        with self.lock:
            if event.HasField("task"):
                record = TaskRecord.from_pb(event.task)
                if record.kind in ("electron", "sublattice"):
                    self.tasks[record.node_id] = record
            else:
                d = event.dispatch
                self.name = d.name
                self.status = status_from_pb(d.status)
                self.cost_usd = d.cost_usd
                self.emulated = d.emulated
                self.started_at, self.ended_at = d.started_at, d.ended_at

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tasks.values():
            counts[t.status.value] = counts.get(t.status.value, 0) + 1
        return counts

    def summary(self, now: float) -> str:
        """One line in words: what a saved notebook shows for the widget as text."""
        counts = count_words(self.counts())
        parts = [
            f"{self.name or 'dispatch'} {self.dispatch_id}: {self.status.value}",
            f"{len(self.tasks)} tasks" + (f": {counts}" if counts else ""),
            format_usd(self.cost_usd) + (" (emulated)" if self.emulated else ""),
        ]
        if self.started_at:
            parts.append(format_duration((self.ended_at or now) - self.started_at))
        return " · ".join(parts)


class _View(Protocol):
    def render(self, state: _State) -> None: ...
    def close(self) -> None: ...


class _WidgetView:
    """An ipywidgets view, displayed in the cell that dispatched."""

    def __init__(self, dashboard: str) -> None:
        import ipywidgets
        from IPython.display import display

        self._dashboard = dashboard
        self._header = ipywidgets.HTML()
        self._bar = ipywidgets.HTML()
        self._table = ipywidgets.HTML()
        self._box = ipywidgets.VBox([self._header, self._bar, self._table])
        self._text = "dispatch in progress"
        self._handle = display(self._bundle(), raw=True, display_id=True)  # type: ignore[no-untyped-call]

    def _bundle(self) -> dict[str, Any]:
        """The widget, with a line of text in place of its repr for saved notebooks."""
        return {**self._box._repr_mimebundle_(), "text/plain": self._text}

    def render(self, state: _State) -> None:
        with state.lock:
            counts = state.counts()
            tasks = sorted(state.tasks.values(), key=_interest)[:_TABLE_ROWS]
            total = len(state.tasks)
            header = self._header_html(state, total)
            self._text = state.summary(time.time())
        self._header.value = header
        self._bar.value = _bar_html(counts, total)
        self._table.value = _tasks_html(tasks, total)

    def _header_html(self, state: _State, total: int) -> str:
        cost = h.esc(format_usd(state.cost_usd)) + (
            " " + h.emulated_tag() if state.emulated else ""
        )
        link = (
            f' &middot; <a href="{h.esc(self._dashboard)}" target="_blank">dashboard</a>'
            if self._dashboard
            else ""
        )
        return (
            f"<b>{h.esc(state.name or 'dispatch')}</b> <code>{h.esc(state.dispatch_id)}</code> "
            f"{h.badge(state.status.value)} &middot; {total} tasks &middot; {cost}{link}"
        )

    def close(self) -> None:
        """Sends the final line of text, which is what ``nbconvert --to text`` shows."""
        if self._handle is not None:
            self._handle.update(self._bundle(), raw=True)


class _TerminalView:
    """A rich progress bar on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            console=Console(file=sys.stderr),
        )
        self._task = self._progress.add_task("dispatch", total=None, detail="")
        self._progress.start()

    def render(self, state: _State) -> None:
        with state.lock:
            counts = state.counts()
            total = len(state.tasks)
            name = state.name or "dispatch"
            cost = format_usd(state.cost_usd) + (" (emulated)" if state.emulated else "")
        done = sum(n for s, n in counts.items() if s not in ("RUNNING", "PENDING"))
        detail = count_words(counts)
        self._progress.update(
            self._task,
            description=name,
            total=total or None,
            completed=done,
            detail=f"{detail} · {cost}",
        )

    def close(self) -> None:
        self._progress.stop()


def _interest(t: TaskRecord) -> tuple[int, int]:
    """Failures first, then running, pending and finished tasks, each in node order."""
    rank = {"FAILED": 0, "TIMED_OUT": 0, "RUNNING": 1, "PENDING": 2}.get(t.status.value, 3)
    return rank, t.node_id


def _bar_html(counts: dict[str, int], total: int) -> str:
    segments = "".join(
        f'<div title="{counts[s]} {s.lower()}" style="width:{100 * counts[s] / total:.2f}%;'
        f'background:{h.STATUS_COLORS[s]}"></div>'
        for s in STATUS_ORDER
        if counts.get(s) and total
    )
    legend = count_words(counts, " &middot; ")
    return (
        '<div style="display:flex;height:12px;width:100%;max-width:720px;background:#eee;'
        f'border-radius:6px;overflow:hidden">{segments}</div>'
        f'<div style="font-size:0.85em;color:#555">{legend}</div>'
    )


def _tasks_html(tasks: list[TaskRecord], total: int) -> str:
    now = time.time()
    rows = []
    for t in tasks:
        took = format_took(t, now)
        cost = h.esc(format_usd(t.cost_usd)) + (" " + h.emulated_tag() if t.emulated else "")
        rows.append(
            (
                str(t.node_id),
                h.esc(t.name),
                h.badge(t.status.value),
                h.esc(t.hardware_requested.describe()),
                h.esc(t.executor or "-"),
                h.esc(took),
                cost,
            )
        )
    header = ("node", "name", "status", "hardware", "executor", "duration", "cost")
    more = (
        f'<div style="font-size:0.85em;color:#555">{total - len(tasks)} more tasks</div>'
        if total > len(tasks)
        else ""
    )
    return h.table(header, rows, right=(0, 5, 6)) + more


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    ipython = getattr(shell, "get_ipython", lambda: None)()
    return ipython is not None and getattr(ipython, "kernel", None) is not None


def wants_view(progress: bool | None) -> bool:
    """Whether a dispatch that waits should show progress: in notebooks and terminals."""
    if progress is not None:
        return progress
    return _in_notebook() or sys.stderr.isatty()


def choose_view(client: Client, dispatch_id: str, progress: bool | None) -> _View | None:
    """A widget in a notebook, a bar on a terminal, nothing otherwise (or when turned off)."""
    if progress is False:
        return None
    try:
        if _in_notebook():
            return _WidgetView(client.dashboard_page(dispatch_id))
        if progress or sys.stderr.isatty():
            return _TerminalView()
    except ImportError:
        return None
    return None


class LiveProgress:
    """Follows a dispatch's events into a view until :meth:`stop`."""

    def __init__(self, client: Client, dispatch_id: str, view: _View) -> None:
        self._client = client
        self._view = view
        self._state = _State(dispatch_id)
        self._call: Any = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="cobalt-progress", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        req = pb.DispatchWatchRequest(dispatch_id=self._state.dispatch_id)
        last = 0.0
        try:
            self._call = self._client.stub.DispatchWatch(req, metadata=self._client.metadata)
            for event in self._call:
                self._state.apply(event)
                now = time.monotonic()
                if now - last >= _REFRESH_S:
                    self._view.render(self._state)
                    last = now
        except grpc.RpcError:
            pass  # cancelled by stop(), or the controller went away: the wait reports that

    def stop(self) -> None:
        """Lets the stream deliver the dispatch's last events, then draws them once more."""
        self._thread.join(timeout=1.0)
        if self._thread.is_alive() and self._call is not None:
            self._call.cancel()
            self._thread.join(timeout=1.0)
        self._view.render(self._state)
        self._view.close()
