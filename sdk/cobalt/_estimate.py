"""``ct.estimate``: what a workflow would cost, before it runs."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from cobalt import _html as h
from cobalt._client import get_client
from cobalt._dispatch import lattice_of
from cobalt._result import format_table
from cobalt._submit import build_request
from cobalt_common.hardware import HardwareSpec, format_duration
from cobalt_common.pricing import format_usd
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.wire import spec_from_pb


@dataclass(frozen=True, slots=True)
class TaskEstimate:
    """The cost bounds of one task, priced on the cheapest executor able to run it."""

    node_id: int
    name: str
    executor: str
    hardware_requested: HardwareSpec
    rate_usd_per_hour: float
    worst_usd: float
    """Rate times the whole time limit; ``inf`` for a priced task without a time limit."""
    expected_usd: float | None
    """From the median recorded run time of the same electron; None without history."""
    expected_s: float | None
    runs: int
    """How many recorded runs ``expected_usd`` rests on."""
    emulated: bool
    sublattice: bool = False
    """A sublattice's tasks are known only once it runs; it is not priced here."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """Worst-case and expected cost of a workflow, per task and in total.

    Example:
        >>> est = ct.estimate(workflow)(data)  # doctest: +SKIP
        >>> est.worst_usd, est.expected_usd  # doctest: +SKIP
        (12.64, 1.37)
    """

    name: str
    tasks: list[TaskEstimate]

    @property
    def worst_usd(self) -> float:
        """The most the workflow can cost: ``inf`` when a priced task has no time limit."""
        return sum(t.worst_usd for t in self.tasks)

    @property
    def expected_usd(self) -> float:
        """The sum of the expected costs of the tasks that have recorded runs."""
        return sum(t.expected_usd or 0.0 for t in self.tasks)

    @property
    def without_history(self) -> list[TaskEstimate]:
        """Tasks with no recorded runs, left out of :attr:`expected_usd`."""
        return [t for t in self.tasks if t.expected_usd is None and not t.sublattice]

    def summary(self) -> str:
        emulated = "; emulated GPUs are priced as the GPUs they stand for" if self._emulated else ""
        missing = self.without_history
        priced = [t for t in self.tasks if not t.sublattice]
        expected = (
            "no expected cost yet, as none of these electrons has recorded runs"
            if priced and len(missing) == len(priced)
            else f"expected {format_usd(self.expected_usd)}"
        )
        text = (
            f"Estimate for {self.name!r}: worst case {format_usd(self.worst_usd)}, "
            f"{expected}{emulated}"
        )
        if missing and len(missing) < len(priced):
            text += (
                f"; {len(missing)} of {len(self.tasks)} tasks have no recorded runs "
                "and are not in the expected cost"
            )
        sublattices = sum(1 for t in self.tasks if t.sublattice)
        if sublattices:
            text += f"; {sublattices} sublattice(s) are priced only when they run"
        return text + "."

    @property
    def _emulated(self) -> bool:
        return any(t.emulated for t in self.tasks)

    _HEADER = ("node", "name", "hardware", "executor", "rate/h", "limit", "worst", "expected")

    def _rows(self) -> list[tuple[tuple[str, ...], bool]]:
        """Each task's cells as plain text, and whether its worst case is for emulated GPUs."""
        rows: list[tuple[tuple[str, ...], bool]] = []
        for t in self.tasks:
            limit = t.hardware_requested.time_limit_s
            if t.sublattice:
                worst = expected = "when it runs"
            else:
                worst = format_usd(t.worst_usd)
                expected = (
                    "no runs yet"
                    if t.expected_usd is None
                    else f"{format_usd(t.expected_usd)} ({t.runs} run{'s' if t.runs > 1 else ''})"
                )
            cells = (
                str(t.node_id),
                t.name,
                t.hardware_requested.describe(),
                t.executor,
                format_usd(t.rate_usd_per_hour),
                format_duration(limit) if limit else "none",
                worst,
                expected,
            )
            rows.append((cells, t.emulated and not t.sublattice))
        return rows

    def table(self) -> str:
        """One row per task: hardware, executor, rate, time limit, worst and expected cost."""
        rows = [
            (*cells[:6], cells[6] + (" (emulated)" if emulated else ""), cells[7])
            for cells, emulated in self._rows()
        ]
        return format_table(self._HEADER, rows, right=(0, 4, 5, 6, 7))

    def __str__(self) -> str:
        return f"{self.table()}\n\n{self.summary()}"

    def _repr_html_(self) -> str:
        rows = [
            (
                *(h.esc(c) for c in cells[:6]),
                h.esc(cells[6]) + (" " + h.emulated_tag() if emulated else ""),
                h.esc(cells[7]),
            )
            for cells, emulated in self._rows()
        ]
        return (
            f"<div><div>{h.esc(self.summary())}</div>"
            f"{h.table(self._HEADER, rows, right=(0, 4, 5, 6, 7))}</div>"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def _task(t: pb.TaskEstimate, sublattice: bool) -> TaskEstimate:
    return TaskEstimate(
        node_id=t.node_id,
        name=t.name,
        executor=t.executor,
        hardware_requested=spec_from_pb(t.hardware),
        rate_usd_per_hour=t.rate_usd_per_hour,
        worst_usd=math.inf if t.unbounded else t.worst_usd,
        expected_usd=t.expected_usd if t.runs else None,
        expected_s=t.expected_s if t.runs else None,
        runs=t.runs,
        emulated=t.emulated,
        sublattice=sublattice,
    )


def estimate(lattice: Any) -> Callable[..., Estimate]:
    """Returns a function that prices ``lattice`` with its arguments, without running it.

    Each task is priced on the cheapest executor able to run it. The worst
    case takes each task's whole time limit; the expected cost takes the
    median run time of the same electron's recorded runs.

    Example:
        >>> est = ct.estimate(workflow)(data)  # doctest: +SKIP
        >>> print(est)  # doctest: +SKIP
    """
    lat = lattice_of(lattice, "ct.estimate")

    @functools.wraps(lat.function)
    def price(*args: Any, **kwargs: Any) -> Estimate:
        graph = lat.build_graph(*args, **kwargs)
        req, _ = build_request(graph)
        del req.payloads[:]  # pricing needs the graph, not the data
        client = get_client(start=True)
        resp = cast(pb.DispatchEstimateResponse, client.call(client.stub.DispatchEstimate, req))
        kinds = {n.node_id: n.kind for n in req.nodes}
        return Estimate(
            graph.name,
            [_task(t, kinds[t.node_id] == pb.NODE_KIND_SUBLATTICE) for t in resp.tasks],
        )

    return price
