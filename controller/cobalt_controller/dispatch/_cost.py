"""Estimates before a run, and the calendar day that spend is booked on."""

from __future__ import annotations

import functools
import math
import statistics
from datetime import datetime

from cobalt_common.pricing import billed_seconds
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.wire import spec_to_pb
from cobalt_controller._executors import ExecutorPool
from cobalt_controller.dispatch._intake import build_tasks, worst_case_usd
from cobalt_controller.dispatch._model import ELECTRON, SUBLATTICE
from cobalt_controller.state import StateStore


@functools.lru_cache(maxsize=64)
def _day_of_minute(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60).strftime("%Y-%m-%d")


def local_day(ts: float) -> str:
    """``YYYY-MM-DD`` of a unix time in the controller's time zone.

    Cached per minute, since the tasks of a fan-out end in the same few.
    """
    return _day_of_minute(int(ts // 60))


def estimate(
    req: pb.DispatchCreateRequest, executors: ExecutorPool, state: StateStore
) -> pb.DispatchEstimateResponse:
    """Worst and expected cost of each task of a workflow that has not run.

    Each task is priced on the cheapest executor able to run it: the one
    placement prefers. The worst case is that rate for the whole time limit;
    the expected cost uses the median run time of the electron's latest
    completed runs (by ``module.qualname``), when there are any.
    """
    tasks = build_tasks(req, executors)
    history: dict[str, tuple[float, int]] = {}
    out = pb.DispatchEstimateResponse()
    for t in tasks:
        if t.kind not in (ELECTRON, SUBLATTICE):
            continue
        ex = t.candidates[0]
        item = pb.TaskEstimate(
            node_id=t.node_id,
            name=t.name,
            executor=ex.name,
            hardware=spec_to_pb(t.hardware),
        )
        if t.kind == SUBLATTICE:
            # Its tasks are only known once it runs; it has no cost of its own.
            out.tasks.append(item)
            continue
        rate = ex.rate_usd_per_hour(t.hardware)
        worst = worst_case_usd(ex, t)
        item.rate_usd_per_hour = rate
        item.unbounded = math.isinf(worst)
        item.worst_usd = 0.0 if item.unbounded else worst
        if t.function_key not in history:
            times = state.recent_run_times(t.function_key) if t.function_key else []
            history[t.function_key] = (statistics.median(times), len(times)) if times else (0.0, 0)
        expected_s, runs = history[t.function_key]
        item.runs = runs
        if runs:
            item.expected_s = expected_s
            item.expected_usd = (
                billed_seconds(expected_s, t.hardware.time_limit_s) * rate / 3600 if rate else 0.0
            )
        if t.hardware.gpu:
            devices = [d for d in ex.inventory().gpus if d.type == t.hardware.gpu]
            item.emulated = bool(devices) and all(d.emulated for d in devices)
        out.tasks.append(item)
    return out
