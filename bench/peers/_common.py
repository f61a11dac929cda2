"""Helpers shared by the peer benchmark scripts (standard library only; no cobalt)."""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--fanout", type=int, default=2000, help="number of fan-out tasks")
    parser.add_argument("--roundtrip", type=int, default=100, help="number of round trips")
    args = parser.parse_args()
    if args.fanout < 1 or args.roundtrip < 1:
        parser.error("--fanout and --roundtrip must be at least 1")
    return args


def exit_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def expected_sum(n: int) -> int:
    return n * (n + 1) // 2


def time_fanout(run: Callable[[int], int], n: int) -> float:
    started = time.perf_counter()
    total = run(n)
    elapsed = time.perf_counter() - started
    if total != expected_sum(n):
        raise AssertionError(f"fan-out of {n} summed to {total}, expected {expected_sum(n)}")
    return elapsed


def time_roundtrips(run: Callable[[], int], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        value = run()
        samples.append(time.perf_counter() - started)
        if value != 2:
            raise AssertionError(f"round trip returned {value!r}, expected 2")
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def report(peer: str, version: str, n: int, fanout_s: float, samples: list[float]) -> None:
    result = {
        "peer": peer,
        "version": version,
        "fanout_n": n,
        "fanout_s": round(fanout_s, 4),
        "fanout_tasks_per_s": round((n + 1) / fanout_s, 2),
        "roundtrip_runs": len(samples),
        "roundtrip_p50_ms": round(statistics.median(samples) * 1000, 3),
        "roundtrip_p99_ms": round(percentile(samples, 99) * 1000, 3),
    }
    print(json.dumps(result), flush=True)
