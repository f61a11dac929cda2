"""Messages about dispatches: why a task went where it did, what stopped a budget, and
why a dispatch ended as it did."""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter

from cobalt_common.hardware import HardwareSpec, format_duration
from cobalt_common.pricing import format_usd
from cobalt_common.status import Status
from cobalt_controller.dispatch._intake import worst_case_usd
from cobalt_controller.dispatch._model import (
    BUDGET_EXCEEDED,
    CANCELLED,
    COMPLETED,
    ELECTRON,
    FAILED,
    SKIPPED,
    TIMED_OUT,
    Dispatch,
    Ledger,
    Task,
)
from cobalt_executors import Executor


def placement_note(t: Task, chosen: int, waited_s: float = 0.0) -> str:
    """Why ``t`` went to its ``chosen`` candidate (candidates are cheapest first),
    and how long it waited for a cheaper one when the controller lets tasks wait."""
    note = _placement_note(t.candidates, t.hardware, chosen)
    if waited_s < 0.1:
        return note
    if chosen and pricier(t.candidates, t.hardware, chosen):
        return f"{note}; waited {format_duration(waited_s)} for a cheaper one first"
    return f"{note}; waited {format_duration(waited_s)} for it"


@functools.lru_cache(maxsize=4096)
def pricier(candidates: tuple[Executor, ...], spec: HardwareSpec, chosen: int) -> bool:
    """Whether candidate ``chosen`` costs more per hour than the cheapest one."""
    return candidates[chosen].rate_usd_per_hour(spec) > candidates[0].rate_usd_per_hour(spec)


@functools.lru_cache(maxsize=4096)
def _placement_note(candidates: tuple[Executor, ...], spec: HardwareSpec, chosen: int) -> str:
    rates = [(ex.name, format_usd(ex.rate_usd_per_hour(spec))) for ex in candidates]
    name, rate = rates[chosen]
    if len(rates) == 1:
        return f"{name} at {rate}/h: the only executor able to run it"
    if chosen == 0:
        others = ", ".join(f"{n} {r}/h" for n, r in rates[1:])
        return f"{name} at {rate}/h: the cheapest of {len(rates)} able to run it (also: {others})"
    busy = ", ".join(f"{n} {r}/h" for n, r in rates[:chosen])
    return f"{name} at {rate}/h: the cheapest free now; cheaper but busy: {busy}"


def exhausted_message(ledger: Ledger, blocked: tuple[Dispatch, Task, str]) -> str:
    """One sentence: which task the budget stopped, and by how much."""
    _, t, executor = blocked
    worst = worst_case_usd(t.candidates[0], t)
    limit = format_duration(t.hardware.time_limit_s or 0)
    return (
        f"the budget of {format_usd(ledger.budget_usd)} ran out: task {t.name!r} "
        f"(node {t.node_id}) could cost up to {format_usd(worst)} "
        f"({dataclasses.replace(t.hardware, time_limit_s=None).describe()} on "
        f"{executor} for its {limit} time limit), and {format_usd(max(ledger.left, 0.0))} "
        "was left."
    )


def _names(tasks: list[Task]) -> str:
    counts = Counter(t.name for t in tasks)
    shown = [f"{name} x{n}" if n > 1 else name for name, n in counts.most_common(6)]
    if len(counts) > 6:
        shown.append(f"{len(counts) - 6} more")
    return ", ".join(shown)


def budget_report(d: Dispatch) -> str:
    """The error of a dispatch stopped by its budget: what ran, and what did not."""
    ledger = d.ledger
    assert ledger is not None
    tasks = [t for t in d.tasks if t.kind == ELECTRON]
    ran = [t for t in tasks if t.attempts > 0]
    not_run = [t for t in tasks if t.status == SKIPPED]
    first = next((t for t in not_run if t.reason == "budget"), None)
    lines = [
        f"Budget exceeded: {format_usd(ledger.budget_usd)} budget, "
        f"{format_usd(ledger.spent)} spent."
    ]
    if first is not None:
        why = first.error.removeprefix("not run: ")
        lines.append(why[:1].upper() + why[1:])
    lines.append(
        f"Ran {len(ran)} task(s) for {format_usd(d.cost_usd)}: {_names(ran) or 'none'}."
        if ran
        else "No task ran."
    )
    if not_run:
        lines.append(f"Did not run {len(not_run)} task(s): {_names(not_run)}.")
    lines.append(
        "Results of completed tasks are kept (Result.get_node_result). Raise budget_usd, "
        "or lower time limits, which set each task's worst case, to run the rest."
    )
    return "\n".join(lines)


def ended_status(d: Dispatch) -> Status:
    """How a dispatch whose tasks have all ended ends: cancelled as a whole, stopped by
    its budget, failed or timed out by a task, cancelled by a task cancelled alone (the
    others ran), failed when its output did not complete, else completed."""
    statuses = {t.status for t in d.tasks}
    if d.cancelled:
        return CANCELLED
    if d.ledger is not None and d.ledger.exhausted:
        return BUDGET_EXCEEDED
    for status in (FAILED, TIMED_OUT, CANCELLED):
        if status in statuses:
            return status
    return COMPLETED if d.tasks[d.output_node].status == COMPLETED else FAILED


def dispatch_error(d: Dispatch) -> str:
    """Why a dispatch that ended did not complete, for its record ("" when it did)."""
    if d.status == COMPLETED:
        return ""
    if d.status == CANCELLED and d.cancelled:
        return "The dispatch was cancelled."
    if d.status == CANCELLED:
        names = [f"{t.name!r} (node {t.node_id})" for t in d.tasks if t.status == CANCELLED]
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        return (
            f"Task{'s' if len(names) > 1 else ''} {', '.join(names[:5])}{more} cancelled; "
            "what depended on them did not run, the other tasks ran."
        )
    if d.status == BUDGET_EXCEEDED:
        return budget_report(d)
    failed = [t for t in d.tasks if t.status in (FAILED, TIMED_OUT)]
    if not failed:
        return f"The dispatch's output node {d.output_node} did not complete."
    parts = [f"Task {t.name!r} (node {t.node_id}) {t.status}:\n{t.error}" for t in failed[:5]]
    if len(failed) > 5:
        parts.append(f"... and {len(failed) - 5} more failed tasks.")
    return "\n".join(parts)
