"""The core benchmark on an older revision and on this checkout, alternating, in one run.

Checks the older revision out into a temporary git worktree and runs
``cobalt_bench.py`` (fan-out and one-task round trip) against it and against
this checkout in turn, so both see the same machine state. The older code is
put first on ``PYTHONPATH``, which the editable install of this checkout
yields to. This is how a change that should cost no speed is held to it.

    .venv/bin/python bench/compare_revisions.py --base 26bdcdd
    .venv/bin/python bench/compare_revisions.py --base v0.1 --rounds 6 --roundtrip 300

Prints the medians of each side and the ratios; a measurement, not a test.
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


def run_core(source: Path | None, fanout: int, roundtrip: int) -> dict[str, Any]:
    """One run of cobalt_bench.py with the code of ``source`` (None: this checkout)."""
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
            str(roundtrip),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the revision to compare against")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--fanout", type=int, default=2000)
    parser.add_argument("--roundtrip", type=int, default=200)
    args = parser.parse_args(argv)
    sides: dict[str, dict[str, list[float]]] = {
        side: {"fanout": [], "rt": [], "p99": []} for side in ("before", "after")
    }
    with tempfile.TemporaryDirectory(prefix="cobalt-base-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base],
            check=True,
            capture_output=True,
        )
        try:
            for i in range(args.rounds):
                for side, source in (("before", base), ("after", None)):
                    r = run_core(source, args.fanout, args.roundtrip)
                    rates = [(args.fanout + 1) / s for s in r["fanout_runs_s"]]
                    sides[side]["fanout"] += rates
                    sides[side]["rt"].append(r["roundtrip_p50_ms"])
                    sides[side]["p99"].append(r["roundtrip_p99_ms"])
                    print(
                        f"round {i + 1} {side:6}: fan-out "
                        + ", ".join(f"{x:,.0f}" for x in rates)
                        + f" tasks/s; round trip p50 {r['roundtrip_p50_ms']:.2f} ms, "
                        f"p99 {r['roundtrip_p99_ms']:.2f} ms",
                        flush=True,
                    )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                check=False,
                capture_output=True,
            )
    med = {s: {k: statistics.median(v) for k, v in d.items()} for s, d in sides.items()}
    b, a = med["before"], med["after"]
    print(f"\n{'':24} {'fan-out tasks/s':>16} {'rt p50 ms':>10} {'rt p99 ms':>10}")
    for label, m in ((f"before ({args.base})", b), ("after (this checkout)", a)):
        print(f"{label:24} {m['fanout']:16,.0f} {m['rt']:10.2f} {m['p99']:10.2f}")
    print(
        f"{'after / before':24} {a['fanout'] / b['fanout']:16.3f} "
        f"{a['rt'] / b['rt']:10.3f} {a['p99'] / b['p99']:10.3f}"
    )
    print("(fan-out: higher is better; round trip: lower is better; medians of every run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
