"""Helpers shared by the peer benchmark scripts (standard library only; no cobalt)."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import statistics
import subprocess
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


# -- the Slurm peers (bench/slurm.py) ----------------------------------------------


def parse_slurm_args(description: str) -> argparse.Namespace:
    """The Slurm peers' arguments: counts, and the cluster and folder they work in."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--slurm-conf", required=True, help="the cluster's slurm.conf")
    parser.add_argument("--folder", required=True, help="a folder the jobs share")
    parser.add_argument("--fanout", type=int, default=500, help="number of fan-out tasks")
    parser.add_argument("--roundtrip", type=int, default=10, help="number of round trips")
    parser.add_argument("--cold", type=int, default=3, help="starts from an idle cluster")
    args = parser.parse_args()
    if min(args.fanout, args.roundtrip, args.cold) < 1:
        parser.error("--fanout, --roundtrip and --cold must be at least 1")
    os.environ["SLURM_CONF"] = args.slurm_conf
    return args


def slurm_jobs() -> list[str]:
    """The ids of the jobs the cluster has not finished."""
    done = subprocess.run(
        ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.split()


def wait_no_jobs(timeout_s: float = 60.0) -> None:
    """Waits until the cluster runs no job, so that the next start is from an idle one."""
    deadline = time.monotonic() + timeout_s
    while slurm_jobs():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Slurm jobs still running after {timeout_s:g} s: {slurm_jobs()}")
        time.sleep(0.1)


def cancel_jobs() -> None:
    """Cancels what jobs are left (the cluster is the benchmark's own) and waits for them."""
    ids = slurm_jobs()
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30, check=False)
    wait_no_jobs(30)


def time_fanout_values(run: Callable[[int], list[int]], n: int) -> float:
    """Seconds from dispatch until all ``n`` results are back (checked)."""
    started = time.perf_counter()
    values = run(n)
    elapsed = time.perf_counter() - started
    if sum(values) != expected_sum(n):
        raise AssertionError(f"fan-out of {n} summed to {sum(values)}, expected {expected_sum(n)}")
    return elapsed


def time_cold(run: Callable[[], float], samples: int, reset: Callable[[], None]) -> dict[str, Any]:
    """Starts from an idle cluster, each at a random moment: seconds to the task's
    start and to its result. ``run`` dispatches one ``stamp`` and returns its value;
    ``reset`` brings the cluster back to idle."""
    to_running, to_result = [], []
    for index in range(samples):
        if index:
            reset()
        time.sleep(random.uniform(0, 1))
        wall, started = time.time(), time.perf_counter()
        ran_at = run()
        to_result.append(time.perf_counter() - started)
        to_running.append(ran_at - wall)
    return {"cold_to_running_s": to_running, "cold_to_result_s": to_result}


def slurm_report(
    peer: str, version: str, n: int, fanout_s: float, samples: list[float], **extra: Any
) -> None:
    """Prints the JSON line bench/slurm.py reads (fan-out rate without a reduce task)."""
    result = {
        "peer": peer,
        "version": version,
        "fanout_n": n,
        "fanout_s": round(fanout_s, 4),
        "fanout_tasks_per_s": round(n / fanout_s, 3),
        "roundtrip_runs": len(samples),
        "roundtrip_p50_ms": round(statistics.median(samples) * 1000, 3),
        "roundtrip_p99_ms": round(percentile(samples, 99) * 1000, 3),
        **extra,
    }
    print(json.dumps(result), flush=True)
