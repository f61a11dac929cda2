"""The controller's resident memory after a 100,000-task workflow.

    .venv/bin/python bench/memory.py [--tasks 100000]

Reports the controller's RSS before, at its peak while the workflow runs, and
after it ended, with the growth per task. Target: below 1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cobalt as ct

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workloads import fanout


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cobalt-mem-"))
    os.environ["COBALT_HOME"] = str(home)
    cli = Path(sys.executable).with_name("cobalt")
    subprocess.run([str(cli), "controller", "start"], check=True, stdout=subprocess.DEVNULL)
    try:
        pid = int(json.loads((home / "controller.json").read_text())["pid"])
        ct.dispatch_sync(fanout)(10)
        before = rss_mb(pid)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        result = ct.dispatch_sync(fanout)(args.tasks)
        took = time.perf_counter() - start
        done.set()
        sampler.join()
        after = rss_mb(pid)
        assert result.result == sum(range(1, args.tasks + 1)), result
        print(f"tasks:            {args.tasks:,} (+1 reduce, +{args.tasks:,} parameters)")
        print(f"wall time:        {took:.1f} s ({(args.tasks + 1) / took:,.0f} tasks/s)")
        print(
            f"controller RSS:   before {before:.0f} MB, peak {peak[0]:.0f} MB, after {after:.0f} MB"
        )
        growth = (peak[0] - before) * 1024 * 1024 / args.tasks
        print(
            f"growth per task:  {growth:,.0f} bytes at peak; "
            f"{(after - before) * 1024 * 1024 / args.tasks:,.0f} bytes retained"
        )
        print(f"target < 1 GB:    {'met' if peak[0] < 1024 else 'NOT met'}")
    finally:
        subprocess.run([str(cli), "controller", "stop"], check=False, stdout=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
