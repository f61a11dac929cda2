"""What recording cost costs: fan-out throughput before and after, in one run.

Checks out a revision from before cost recording into a temporary git
worktree and runs the core fan-out benchmark (``cobalt_bench.py``) against it
and against this checkout, alternating, so both see the same machine state.
The older code is put first on ``PYTHONPATH``, which the editable install of
this checkout yields to.

    .venv/bin/python bench/cost_overhead.py              # 4 rounds of each
    .venv/bin/python bench/cost_overhead.py --base REV --rounds 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEFORE_COST = "a139190"
"""The last revision whose controller recorded no cost."""


def _run(source: Path | None, fanout: int) -> dict[str, Any]:
    env = dict(os.environ)
    if source is not None:
        dirs = [str(source / d) for d in ("sdk", "controller", "executors", "common")]
        env["PYTHONPATH"] = os.pathsep.join([*dirs, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "cobalt_bench.py"),
            "--fanout",
            str(fanout),
            "--roundtrip",
            "20",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default=BEFORE_COST, help="the revision to compare against")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--fanout", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cobalt-base-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base],
            check=True,
            capture_output=True,
        )
        try:
            before: list[float] = []
            after: list[float] = []
            for i in range(args.rounds):
                for label, source, runs in (("before", base, before), ("after", None, after)):
                    r = _run(source, args.fanout)
                    runs.extend(args.fanout / s for s in r["fanout_runs_s"])
                    print(
                        f"round {i + 1} {label:6}: "
                        + ", ".join(f"{args.fanout / s:,.0f}" for s in r["fanout_runs_s"])
                        + " tasks/s",
                        flush=True,
                    )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                check=False,
                capture_output=True,
            )
    b, a = statistics.median(before), statistics.median(after)
    print(f"\nfan-out of {args.fanout} tasks, median of {len(before)} runs each:")
    print(f"  before cost recording ({args.base}): {b:,.0f} tasks/s")
    print(f"  with cost recording (this checkout): {a:,.0f} tasks/s")
    print(f"  after/before = {a / b:.3f} ({(a / b - 1) * 100:+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
