"""Trivial tasks through cobalt's Ray executor against plain Ray, on one head, in one run.

    .venv/bin/python bench/ray.py             # 2,000 tasks each
    .venv/bin/python bench/ray.py --tasks 200 # a quick look

It starts a throwaway Ray head confined to loopback (``tests/service_ray.py``:
4 CPUs, 8192 MB, two emulated L4s) and measures, in this order:

- **plain Ray**: ``ray.get([f.remote(i) for i in range(N)])`` from a driver on
  the head, after one warm-up round (tasks/s, median of ``--repeats``).
- **cobalt**: one workflow of N trivial tasks on the Ray executor (one agent in
  an actor holding the node; warm workers), dispatch until every result is back,
  after one warm-up workflow (tasks/s, median of ``--repeats``).

Plain Ray runs first: the agent's actor then holds the node's CPUs, which a plain
Ray task would wait for. Prints both rates and cobalt's share of plain Ray's
(the target is at least 0.8x). These are measurements, not pass/fail tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


PLAIN = textwrap.dedent(
    """\
    import json, statistics, sys, time, ray
    ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")

    @ray.remote(num_cpus=1)
    def f(i):
        return i + 1

    n, repeats = int(sys.argv[2]), int(sys.argv[3])
    ray.get([f.remote(i) for i in range(n)])
    rates = []
    for _ in range(repeats):
        began = time.perf_counter()
        assert ray.get([f.remote(i) for i in range(n)]) == [i + 1 for i in range(n)]
        rates.append(n / (time.perf_counter() - began))
    print(json.dumps(statistics.median(rates)))
    ray.shutdown()
    """
)


def measure_plain(env: dict[str, str], address: str, tasks: int, repeats: int) -> float:
    """Plain Ray's rate, from a driver of its own (as a Ray user runs it)."""
    done = subprocess.run(
        [sys.executable, "-c", PLAIN, address, str(tasks), str(repeats)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"plain Ray failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def measure_cobalt(config: str, tasks: int, repeats: int) -> tuple[float, float]:
    """cobalt's rate through the Ray executor, and the seconds its agent took to attach."""
    from cobalt_bench import stop

    import cobalt as ct
    from cobalt._embedded import start_controller

    @ct.electron(executor="cluster")
    def f(i: int) -> int:
        return i + 1

    @ct.lattice
    def fanout(n: int) -> list[int]:
        return [f(i) for i in range(n)]

    with tempfile.TemporaryDirectory(prefix="cobalt-ray-bench-") as folder:
        home = Path(folder)
        (home / "config.toml").write_text(config)
        os.environ["COBALT_HOME"] = str(home)
        for variable in ("COBALT_CONTROLLER_ADDRESS", "COBALT_CONTROLLER_TOKEN"):
            os.environ.pop(variable, None)
        began = time.perf_counter()
        pid = start_controller(home).pid
        try:
            first = ct.dispatch_sync(fanout)(1)
            attach_s = time.perf_counter() - began
            assert first.result == [1], first.error
            ct.dispatch_sync(fanout)(min(tasks, 200))
            rates = []
            for _ in range(repeats):
                began = time.perf_counter()
                result = ct.dispatch_sync(fanout)(tasks)
                took = time.perf_counter() - began
                assert result.result == [i + 1 for i in range(tasks)], result.error
                rates.append(tasks / took)
        finally:
            stop(pid)
    return statistics.median(rates), attach_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/ray.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per round (2000)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds measured, median (3)")
    args = parser.parse_args(argv)

    from service_ray import ray_config, running_ray_cluster, why_ray_cannot_start

    why = why_ray_cannot_start()
    if why:
        raise SystemExit(f"bench/ray.py: {why}")
    with running_ray_cluster() as cluster:
        os.environ.update(cluster.driver_env)
        env = cluster.env
        log(f"plain Ray: {args.tasks} tasks x {args.repeats}")
        plain = measure_plain(env, cluster.address, args.tasks, args.repeats)
        log(f"cobalt's Ray executor: {args.tasks} tasks x {args.repeats}")
        cobalt, attach_s = measure_cobalt(ray_config(cluster), args.tasks, args.repeats)
    print(f"plain Ray            {plain:10.0f} tasks/s")
    print(f"cobalt (ray executor){cobalt:10.0f} tasks/s")
    print(f"first task back      {attach_s:10.1f} s after the controller started")
    print(f"cobalt / plain Ray   {cobalt / plain:10.2f}x  (target >= 0.8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
