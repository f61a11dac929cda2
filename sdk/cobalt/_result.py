"""What a dispatch returns: :class:`Result`, and the tables of its tasks.

A Result keeps the client of the controller that produced it and asks that
controller for what it fetches later (its value, tasks, a node's output),
whatever ``COBALT_HOME`` is current by then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import cloudpickle

from cobalt import _html as h
from cobalt import status as status_names
from cobalt._client import Client, get_client
from cobalt._failures import (
    FAILED,
    dispatch_failure,
    in_sublattice,
    remember,
    rerun_locally,
    task_failure,
)
from cobalt._pickling import loads as unpickle
from cobalt._records import Status, TaskRecord, datetime_of, status_from_pb
from cobalt_common.errors import Error, TaskFailedError
from cobalt_common.hardware import GPU_TYPES, HardwareSpec, format_duration, format_memory
from cobalt_common.pricing import format_usd
from cobalt_common.v1 import controller_pb2 as pb


@dataclass
class Result:
    """The state and outcome of one dispatch (Covalent's ``Result``).

    ``result`` and ``tasks`` are fetched from the controller when first read:
    the one this Result was read from (kept in ``_client``, and followed if it
    restarts). A Result made by hand, without one, asks the controller of the
    current ``COBALT_HOME``.

    The status constants are Covalent's names: ``result.status ==
    Result.COMPLETED``. The three post-processing statuses are never reached:
    a lattice's output is computed by the graph, with no post-processing step.
    """

    NEW_OBJ: ClassVar[str] = status_names.NEW_OBJECT
    RUNNING: ClassVar[str] = status_names.RUNNING
    COMPLETED: ClassVar[str] = status_names.COMPLETED
    FAILED: ClassVar[str] = status_names.FAILED
    CANCELLED: ClassVar[str] = status_names.CANCELLED
    PENDING_POSTPROCESSING: ClassVar[str] = status_names.PENDING_POSTPROCESSING
    POSTPROCESSING: ClassVar[str] = status_names.POSTPROCESSING
    POSTPROCESSING_FAILED: ClassVar[str] = status_names.POSTPROCESSING_FAILED

    dispatch_id: str
    name: str
    status: Status
    error: str | None
    """Why the dispatch failed; ``None`` when nothing failed."""
    start_time: datetime | None
    end_time: datetime | None
    task_count: int
    status_counts: dict[str, int]
    cost_usd: float = 0.0
    """What the dispatch cost so far: the sum of its tasks' ``cost_usd``."""
    budget_usd: float | None = None
    cost_emulated: bool = False
    """Some of the cost is for emulated GPUs, priced as the GPUs they stand for."""
    _client: Client | None = field(default=None, repr=False)
    _output: pb.Payload | None = field(default=None, repr=False)
    _value: Any = field(default=None, repr=False)
    _loaded: bool = field(default=False, repr=False)
    _tasks: list[TaskRecord] | None = field(default=None, repr=False)
    _fetch: Fetch = field(default_factory=lambda: Fetch(), repr=False)
    _inputs_sha256: str = field(default="", repr=False)
    _inputs: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def from_pb(cls, resp: pb.DispatchGetResponse, client: Client) -> Result:
        d = resp.dispatch
        return cls(
            dispatch_id=d.dispatch_id,
            name=d.name,
            status=status_from_pb(d.status),
            error=d.error or None,
            start_time=datetime_of(d.started_at or d.created_at),
            end_time=datetime_of(d.ended_at),
            task_count=d.task_count,
            status_counts=dict(d.status_counts),
            cost_usd=d.cost_usd,
            budget_usd=d.budget_usd or None,
            cost_emulated=d.emulated,
            _client=client,
            _output=resp.output if resp.HasField("output") else None,
            _inputs_sha256=d.inputs_sha256,
        )

    @property
    def result(self) -> Any:
        """The lattice's return value; None until the dispatch completed (or when
        ``ct.get_result(..., workflow_output=False)`` read this Result)."""
        if self.status != Status.COMPLETED or not self._fetch.workflow_output:
            return None
        if not self._loaded:
            self._value = cloudpickle.loads(self._payload_bytes())
            self._loaded = True
        return self._value

    @property
    def inputs(self) -> dict[str, Any] | None:
        """The lattice's arguments as dispatched: ``{"args": [...], "kwargs": {...}}``
        (Covalent's ``Result.inputs``), fetched when first read.

        None for a dispatch that kept none: made by an older cobalt, or whose
        lattice could not be pickled when it was dispatched.
        """
        if self._inputs is None and self._inputs_sha256:
            client = self._controller()
            data = client.fetch_payload(pb.Payload(sha256=self._inputs_sha256))
            what = f"the inputs of dispatch {self.dispatch_id}"
            self._inputs = unpickle(data, what, client.fetch_sha256)
        return self._inputs

    def _controller(self) -> Client:
        return self._client.current() if self._client is not None else get_client()

    def _payload_bytes(self) -> bytes:
        if self._output is not None and self._output.data:
            return self._output.data
        client = self._controller()
        if self._output is None:
            self._output = client.dispatch_get(self.dispatch_id, include_output=True).output
        return client.fetch_payload(self._output)

    @property
    def duration_s(self) -> float | None:
        if self.start_time and self.end_time:
            return (self.end_time - self.start_time).total_seconds()
        return None

    @property
    def tasks(self) -> list[TaskRecord]:
        """One record per electron (and sublattice), in node order."""
        if self._tasks is None or not self.status.ended:
            records = map(TaskRecord.from_pb, self._controller().task_list(self.dispatch_id))
            self._tasks = [t for t in records if t.kind in ("electron", "sublattice")]
        return self._tasks

    def rerun_locally(self, node_id: int) -> Any:
        """Runs the electron at ``node_id`` in this process, with the inputs it received.

        Made for a failed task: the remote exception is raised here, where a
        debugger (``%debug`` in a notebook) can step into it. Hooks that pass a
        value (``call_before`` with ``retval_keyword``) run too; ``deps_pip`` and
        ``deps_bash`` do not, as they prepared the remote machine.
        """
        return rerun_locally(self._controller(), self.dispatch_id, node_id)

    def raise_for_status(self) -> Result:
        """Raises :class:`~cobalt.TaskFailedError` if a task failed; returns self otherwise."""
        if self.status in FAILED:
            raise remember(self._failure())
        return self

    def _failure(self) -> TaskFailedError:
        """The exception for this failed dispatch: its first failed task, with its traceback
        and logs. A failed sublattice is followed into its child dispatch (on the same
        controller), so the error is the task that actually raised."""
        failed = [t for t in self.tasks if t.status in FAILED]
        if not failed:
            error = self.error or ""
            return dispatch_failure(self.dispatch_id, self.name, self.status, error, self)
        task = failed[0]
        if task.kind == "sublattice" and task.sublattice_dispatch_id:
            client = self._controller()
            child = Result.from_pb(client.dispatch_get(task.sublattice_dispatch_id), client)
            if any(t.status in FAILED for t in child.tasks):
                return in_sublattice(child._failure(), task)
        return task_failure(self.dispatch_id, task, more=len(failed) - 1, result=self)

    def get_node_result(self, node_id: int) -> dict[str, Any]:
        """A node's output, status, error, logs and times, under Covalent's keys.

        ``"sublattice_result"`` is the child dispatch's :class:`Result` for a
        sublattice node, ``None`` for any other. ``"output"`` is ``None`` when
        ``ct.get_result(..., intermediate_outputs=False)`` read this Result, and
        ``"sublattice_result"`` when ``sublattice_results=False`` did.

        Raises:
            NotFoundError: the dispatch has no node ``node_id``.
        """
        client = self._controller()
        task, output = client.node_get(
            self.dispatch_id, node_id, include_output=self._fetch.intermediate_outputs
        )
        record = TaskRecord.from_pb(task)
        value = cloudpickle.loads(output) if output is not None else None
        child = None
        if record.sublattice_dispatch_id and self._fetch.sublattice_results:
            resp = client.dispatch_get(record.sublattice_dispatch_id, include_output=True)
            child = Result.from_pb(resp, client)
            child._fetch = self._fetch
        return {
            "node_id": record.node_id,
            "node_name": record.name,
            "output": value,
            "status": record.status,
            "error": record.error or None,
            "sublattice_result": child,
            "stdout": record.stdout,
            "stderr": record.stderr,
            "start_time": record.start_time,
            "end_time": record.end_time,
            "executor": record.executor,
            "hardware_requested": record.hardware_requested,
            "hardware_given": record.hardware_given,
        }

    def _node_ids(self) -> list[int]:
        """Every node of the graph, parameters and collections included, in id order."""
        records = self._controller().task_list(self.dispatch_id, include_parameters=True)
        return sorted(record.node_id for record in records)

    def get_all_node_outputs(self) -> dict[str, Any]:
        """Every node's output, keyed ``"name(node_id)"`` as Covalent keys them.

        Parameter nodes give their values and lookup nodes what they picked out;
        a node that has not completed gives ``None``.
        """
        outputs: dict[str, Any] = {}
        for node_id in self._node_ids():
            node = self.get_node_result(node_id)
            outputs[f"{node['node_name']}({node_id})"] = node["output"]
        return outputs

    def get_all_node_results(self) -> list[dict[str, Any]]:
        """:meth:`get_node_result` of every node, in node id order."""
        return [self.get_node_result(node_id) for node_id in self._node_ids()]

    def task_table(self) -> str:
        """A plain-text table: hardware requested and given, duration (and billed), cost, status."""
        return format_task_table(self.tasks)

    def cost_line(self) -> str:
        """The dispatch's cost in words, with its budget and emulation label."""
        text = f"cost {format_usd(self.cost_usd)}"
        if self.budget_usd:
            text += f" of a {format_usd(self.budget_usd)} budget"
        if self.cost_emulated:
            text += " (includes emulated GPUs, priced as the GPUs they stand for)"
        return text

    def _repr_html_(self) -> str:
        """The status, cost, error and task table, for a notebook cell."""
        facts = [h.badge(self.status.value)]
        if self.duration_s is not None:
            facts.append(h.esc(format_duration(self.duration_s)))
        cost = h.esc(format_usd(self.cost_usd))
        if self.budget_usd:
            cost += h.esc(f" of a {format_usd(self.budget_usd)} budget")
        if self.cost_emulated:
            cost += " " + h.emulated_tag()
        facts.append(cost)
        link = self._client.current().dashboard_page(self.dispatch_id) if self._client else ""
        if link:
            # No token in the link: notebooks are saved and shared with their outputs.
            facts.append(f'<a href="{h.esc(link)}" target="_blank">open in the dashboard</a>')
        parts = [
            f"<div><b>{h.esc(self.name)}</b> <code>{h.esc(self.dispatch_id)}</code></div>",
            f"<div>{' &middot; '.join(facts)}</div>",
        ]
        if self.error:
            parts.append(h.pre(self.error))
        try:
            tasks = self.tasks
        except Error as exc:
            parts.append(f"<div><i>{h.esc(f'tasks unavailable: {exc}')}</i></div>")
            return "".join(parts)
        parts.append(task_table_html(tasks))
        return f"<div>{''.join(parts)}</div>"

    def __str__(self) -> str:
        lines = [f"Dispatch {self.dispatch_id} ({self.name}): {self.status}"]
        if self.duration_s is not None:
            lines[0] += f" in {format_duration(self.duration_s)}"
        lines[0] += f", {self.cost_line()}"
        if self.error:
            lines.append(self.error)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Fetch:
    """What a :class:`Result` fetches from the controller when it is read
    (``ct.get_result``'s ``workflow_output``, ``intermediate_outputs`` and
    ``sublattice_results``): all of it unless the caller said otherwise."""

    workflow_output: bool = True
    intermediate_outputs: bool = True
    sublattice_results: bool = True


def _requested(spec: HardwareSpec) -> str:
    parts = []
    if spec.gpu:
        name = GPU_TYPES[spec.gpu].display_name if spec.gpu in GPU_TYPES else spec.gpu
        parts.append(f"{spec.gpus}x {name}")
    parts.append(f"{spec.cpus:g} CPU")
    if spec.memory_mb:
        parts.append(format_memory(spec.memory_mb))
    if spec.time_limit_s:
        parts.append(f"limit {format_duration(spec.time_limit_s)}")
    return ", ".join(parts)


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> str:
    """Columns under a header and a rule; the columns in ``right`` (numbers) align right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths)]
    lines += [line(r) for r in rows]
    return "\n".join(lines)


def format_cost(amount: float, emulated: bool) -> str:
    """A cost, labelled when it is for emulated GPUs."""
    return format_usd(amount) + (" (emulated)" if emulated else "")


def format_took(t: TaskRecord, now: float | None = None) -> str:
    """How long a task ran and how long it was billed for: ``"2.1 s (billed 3 s)"``.

    Billing counts every started second of every attempt, so the two differ.
    A task still running (given ``now``, a Unix time) shows its time so far and "…".
    """
    if t.duration_s is not None:
        took = format_duration(t.duration_s)
    elif now is not None and t.start_time is not None:
        took = format_duration(now - t.start_time.timestamp()) + "…"
    else:
        took = "-"
    return f"{took} (billed {format_duration(t.billed_s)})" if t.billed_s else took


def _task_cells(t: TaskRecord) -> tuple[str, ...]:
    """Node, name, requested, given, executor, duration and cost of a task, as plain text."""
    return (
        str(t.node_id),
        t.name,
        _requested(t.hardware_requested),
        t.hardware_given.describe() if t.executor else "-",
        t.executor or "-",
        format_took(t),
        format_usd(t.cost_usd),
    )


def task_table_html(tasks: list[TaskRecord]) -> str:
    """The task table as HTML, with a total cost row."""

    def tagged(cost: str, emulated: bool) -> str:
        return h.esc(cost) + (" " + h.emulated_tag() if emulated else "")

    rows = []
    for t in tasks:
        cells = _task_cells(t)
        escaped = [h.esc(c) for c in cells[2:6]]
        rows.append(
            (
                cells[0],
                h.esc(cells[1]),
                h.badge(t.status.value),
                *escaped,
                tagged(cells[6], t.emulated),
            )
        )
    header = ("node", "name", "status", "requested", "given", "executor", "duration", "cost")
    total = tagged(format_usd(sum(t.cost_usd for t in tasks)), any(t.emulated for t in tasks))
    footer = ("", "total", "", "", "", "", "", total)
    return h.table(header, rows, right=(0, 6, 7), footer=footer)


def format_task_table(tasks: list[TaskRecord]) -> str:
    """Aligned columns for a terminal or a notebook's text output, with a total cost."""
    header = ("node", "name", "requested", "given", "executor", "duration", "cost", "status")
    rows = []
    for t in tasks:
        cells = _task_cells(t)
        label = " (emulated)" if t.emulated else ""
        rows.append((*cells[:6], cells[6] + label, t.status.value))
    total = sum(t.cost_usd for t in tasks)
    rows.append(
        ("", "total", "", "", "", "", format_cost(total, any(t.emulated for t in tasks)), "")
    )
    return format_table(header, rows, right=(0, 5, 6))
