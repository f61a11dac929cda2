"""The core benchmark: cobalt against Ray, Dask and Covalent, in one run.

    .venv/bin/python bench/core.py                 # all peers
    .venv/bin/python bench/core.py --peers ray dask

Each peer is installed in its own virtual environment under a temporary
folder (see bench/_peers.py). Covalent is slow (about 5 tasks/s), so it runs a
smaller fan-out and fewer round trips; rates remain comparable. Prints a
table of figures and ratios; these are measurements, not pass/fail tests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import measure_peer

HERE = Path(__file__).resolve().parent
SMALL = {"covalent": (100, 5)}


def measure_cobalt(fanout_n: int, roundtrip_runs: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "cobalt_bench.py"),
            "--fanout",
            str(fanout_n),
            "--roundtrip",
            str(roundtrip_runs),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", nargs="*", default=["ray", "dask", "covalent"])
    parser.add_argument("--fanout", type=int, default=2000)
    parser.add_argument("--roundtrip", type=int, default=100)
    args = parser.parse_args()
    results = {"cobalt": measure_cobalt(args.fanout, args.roundtrip)}
    for peer in args.peers:
        n, r = SMALL.get(peer, (args.fanout, args.roundtrip))
        print(f"measuring {peer} (fan-out {n}, {r} round trips) ...", file=sys.stderr)
        results[peer] = measure_peer(peer, fanout_n=n, roundtrip_runs=r, timeout_s=900)
    me = results["cobalt"]
    print(
        f"\n{'system':<10} {'fan-out tasks/s':>16} {'cobalt x':>9} {'rt p50 ms':>10} "
        f"{'rt p99 ms':>10} {'cobalt x':>9}"
    )
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<10} error: {r['error']}")
            continue
        speed = me["fanout_tasks_per_s"] / r["fanout_tasks_per_s"]
        latency = r["roundtrip_p50_ms"] / me["roundtrip_p50_ms"]
        print(
            f"{name:<10} {r['fanout_tasks_per_s']:>16.0f} {speed:>8.2f}x "
            f"{r['roundtrip_p50_ms']:>10.2f} {r['roundtrip_p99_ms']:>10.2f} {latency:>8.2f}x"
        )
    print(
        "\n'cobalt x': how many times faster cobalt is (fan-out rate ratio; round-trip p50 ratio)."
    )
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
