"""cobalt's side of the core benchmark: fan-out throughput and round trip.

Runs against a fresh controller in a temporary COBALT_HOME (SQLite state, the
local executor), and prints one line of JSON like the peer scripts do.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cobalt as ct

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workloads import fanout, one


def measure(fanout_n: int, roundtrip_runs: int) -> dict[str, Any]:
    ct.dispatch_sync(fanout)(50)
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        result = ct.dispatch_sync(fanout)(fanout_n)
        runs.append(time.perf_counter() - start)
        assert result.result == sum(range(1, fanout_n + 1)), result
    for _ in range(10):
        ct.dispatch_sync(one)(1)
    latencies = []
    for _ in range(roundtrip_runs):
        start = time.perf_counter()
        result = ct.dispatch_sync(one)(1)
        latencies.append(time.perf_counter() - start)
        assert result.result == 2
    latencies.sort()
    typical = statistics.median(runs)
    return {
        "peer": "cobalt",
        "version": ct.__version__,
        "fanout_n": fanout_n,
        "fanout_s": typical,
        "fanout_runs_s": runs,
        "fanout_tasks_per_s": (fanout_n + 1) / typical,
        "roundtrip_runs": roundtrip_runs,
        "roundtrip_p50_ms": statistics.median(latencies) * 1000,
        "roundtrip_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--fanout", type=int, default=2000)
    parser.add_argument("--roundtrip", type=int, default=100)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cobalt-bench-"))
    os.environ["COBALT_HOME"] = str(home)
    # Started and stopped the way every revision can (bench/compare_revisions.py
    # runs this script against older code): the embedded start, then SIGTERM.
    from cobalt._embedded import start_controller

    pid = start_controller(home).pid
    try:
        print(json.dumps(measure(args.fanout, args.roundtrip)))
    finally:
        stop(pid)
    return 0


def stop(pid: int) -> None:
    """Stops a controller by SIGTERM and waits until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaps it when this process started it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
