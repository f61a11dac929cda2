"""Stored rows as the JSON the dashboard's pages render.

Only electrons and sublattices are tasks here: parameters, collections and
attribute or item access are plumbing of the graph, not work anyone pays for.
Hardware is described with :mod:`cobalt_common.hardware`, the words every
other part of cobalt uses; emulated GPUs are marked wherever a GPU or a cost
appears.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from cobalt_common.errors import SpecError
from cobalt_common.hardware import HardwareGiven, HardwareSpec, gpu_label
from cobalt_common.spend import Spend, spend_by, total
from cobalt_common.status import DISPATCH_ENDED
from cobalt_controller._convert import given_from_json
from cobalt_controller.state import CostRow, DispatchRow, NodeRow

TASK_KINDS = frozenset({"electron", "sublattice"})
ENDED = DISPATCH_ENDED
"""Dispatch statuses after which nothing about a dispatch changes."""

Json = dict[str, Any]


@functools.lru_cache(maxsize=4096)
def describe_requested(hardware: str) -> str:
    """``"1x H100, 24 CPUs, 48 GB, limit 18h"`` from a stored spec (JSON)."""
    try:
        return HardwareSpec.from_dict(json.loads(hardware or "{}")).describe()
    except (ValueError, TypeError, SpecError):
        return hardware


def _duration(started: float | None, ended: float | None, now: float) -> float | None:
    if started is None:
        return None
    return max((ended if ended is not None else now) - started, 0.0)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def task(node: NodeRow, now: float | None = None) -> Json:
    """One row of a dispatch's task table (kept small: a page may hold 100,000)."""
    given = given_from_json(node.hardware_given)
    return _task_row(
        node.node_id,
        node.name,
        node.status,
        node.executor,
        describe_requested(node.hardware),
        given,
        node.emulated or (given is not None and given.emulated),
        node.started_at,
        node.ended_at,
        node.billed_s,
        node.cost_usd,
        node.reason,
        node.sublattice_dispatch_id,
        now or time.time(),
    )


class LiveTask(NamedTuple):
    """A task as the scheduler committed it, taken when a page watches its dispatch:
    the fields of its row in the task table, without reading the store again."""

    node_id: int
    name: str
    status: str
    executor: str
    hardware: HardwareSpec
    given: HardwareGiven | None
    started_at: float | None
    ended_at: float | None
    billed_s: float
    cost_usd: float
    reason: str
    child: str


def live_task(t: LiveTask, now: float) -> Json:
    """A :class:`LiveTask` as :func:`task` shows the same task read from the store."""
    given = t.given
    return _task_row(
        t.node_id,
        t.name,
        t.status,
        t.executor,
        _describe_spec(t.hardware),
        given,
        given is not None and given.emulated,
        t.started_at,
        t.ended_at,
        t.billed_s,
        t.cost_usd,
        t.reason,
        t.child,
        now,
    )


@functools.lru_cache(maxsize=4096)
def _describe_spec(spec: HardwareSpec) -> str:
    return spec.describe()


@functools.lru_cache(maxsize=4096)
def _describe_given(given: HardwareGiven) -> str:
    return given.describe()


def _task_row(
    node_id: int,
    name: str,
    status: str,
    executor: str,
    requested: str,
    given: HardwareGiven | None,
    emulated: bool,
    started_at: float | None,
    ended_at: float | None,
    billed_s: float,
    cost_usd: float,
    reason: str,
    child: str,
    now: float,
) -> Json:
    return {
        "id": node_id,
        "name": name,
        "status": status,
        "executor": executor,
        "requested": requested,
        "given": _describe_given(given) if given is not None else "",
        "emulated": emulated,
        "started_at": _ms(started_at),
        "ended_at": _ms(ended_at),
        "duration_s": _ms(_duration(started_at, ended_at, now)),
        "billed_s": billed_s,
        "cost_usd": cost_usd,
        "reason": reason,
        "child": child,
    }


def tasks(nodes: Iterable[NodeRow], now: float | None = None) -> list[Json]:
    """The task rows of a dispatch, in node order."""
    now = now or time.time()
    return [task(n, now) for n in nodes if n.kind in TASK_KINDS]


def task_detail(node: NodeRow) -> Json:
    """A task with everything the detail panel shows: logs, error and billing."""
    detail = task(node)
    given = given_from_json(node.hardware_given)
    gpu_type = node.gpu_type or (given.gpu if given is not None and given.gpu else "")
    detail.update(
        kind=node.kind,
        gpu=gpu_label(gpu_type, detail["emulated"]) if gpu_type else "",
        attempts=node.attempts,
        stdout=node.stdout,
        stderr=node.stderr,
        error=node.error,
        rate_usd_per_hour=node.rate_usd_per_hour,
        placement=node.placement,
    )
    return detail


def count_statuses(nodes: Iterable[NodeRow]) -> dict[str, int]:
    """Tasks per status, as the store's ``status_counts`` counts them."""
    counts: dict[str, int] = {}
    for n in nodes:
        if n.kind in TASK_KINDS:
            counts[n.status] = counts.get(n.status, 0) + 1
    return counts


def dispatch(row: DispatchRow, counts: dict[str, int], now: float | None = None) -> Json:
    """One dispatch: status, duration, cost and its tasks counted by status."""
    return {
        "id": row.dispatch_id,
        "name": row.name,
        "status": row.status,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "duration_s": _duration(row.started_at, row.ended_at, now or time.time()),
        "cost_usd": row.cost_usd,
        "budget_usd": row.budget_usd,
        "emulated": row.emulated,
        "counts": dict(sorted(counts.items())),
        "tasks": sum(counts.values()),
        "error": row.error,
        "parent": row.parent_dispatch_id or "",
        "parent_node": row.parent_node_id,
    }


def dispatches(rows: Sequence[DispatchRow], counts: dict[str, dict[str, int]]) -> list[Json]:
    now = time.time()
    return [dispatch(r, counts.get(r.dispatch_id, {}), now) for r in rows]


def _totals(spend: Spend) -> Json:
    return dataclasses.asdict(spend)


def cost(rows: Sequence[CostRow], since_day: str) -> Json:
    """Spend by day, by executor and by GPU type (emulated GPUs apart from real ones)."""
    return {
        "since": since_day,
        "total": _totals(total(rows)),
        "by_day": [{"day": d, **_totals(s)} for d, s in spend_by(rows, lambda r: r.day)],
        "by_executor": [
            {"executor": e, **_totals(s)}
            for e, s in spend_by(rows, lambda r: r.executor, most_first=True)
        ],
        "by_gpu": [
            {"gpu_type": gpu, "label": gpu_label(gpu, emulated), **_totals(s)}
            for (gpu, emulated), s in _by_gpu(rows)
        ],
    }


def _by_gpu(rows: Sequence[CostRow]) -> list[tuple[tuple[str, bool], Spend]]:
    keyed = {gpu_label(r.gpu_type, r.emulated): (r.gpu_type, r.emulated) for r in rows}
    grouped = spend_by(rows, lambda r: gpu_label(r.gpu_type, r.emulated), most_first=True)
    return [(keyed[label], s) for label, s in grouped]
