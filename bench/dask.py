"""Trivial tasks on one Dask cluster: through cobalt's Dask executor against plain
Dask (``client.map`` and ``gather``), in one run.

    .venv/bin/python bench/dask.py                 # 2,000 tasks, median of 3
    .venv/bin/python bench/dask.py --tasks 200 --repeats 1   # under a minute

It starts a throwaway Dask cluster on loopback (``dask scheduler`` and one
``dask worker`` of ``--threads`` threads, from this environment's ``dask``
extra; tests/service_dask.py) and a cobalt controller whose ``config.toml``
names a ``dask`` executor on it. Measured, each after a warm-up of 20 tasks:

- **cobalt**: one workflow of N tasks on the Dask executor (its agent on the
  worker runs them in warm processes), until every result is back.
- **plain Dask**: ``client.map`` of the same function over N inputs
  (``pure=False``) and ``client.gather``, on the same worker.

Prints each system's tasks per second and cobalt's share of plain Dask's rate
(target at least 0.8). These are measurements, not pass/fail tests.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cobalt as ct

HERE = Path(__file__).resolve().parent
# This file shares its name with Dask's package: its folder goes last on the path,
# so that `import dask` (which distributed does) finds the real one.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path += [str(HERE), str(HERE.parent / "tests")]
with contextlib.suppress(ImportError):  # now, before cobalt_bench puts this folder first
    import distributed  # noqa: F401
from cobalt_bench import stop  # noqa: E402
from service_dask import DaskCluster, dask_missing, running_dask  # noqa: E402

from cobalt._embedded import start_controller  # noqa: E402

WARM_UP = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def controller_config(address: str) -> str:
    return f"""\
[controller]
address = "127.0.0.1:{_free_port()}"
dashboard_address = ""
gateway_address = ""

[executors.local]
type = "local"
workers = 1

[executors.cluster]
type = "dask"
address = "{address}"
"""


def inc(x: int) -> int:
    return x + 1


@ct.electron(executor="cluster")
def inc_task(x: int) -> int:
    return x + 1


@ct.lattice
def fanout(n: int) -> list[int]:
    return [inc_task(i) for i in range(n)]


def _cobalt_once(n: int) -> float:
    started = time.perf_counter()
    result = ct.dispatch_sync(fanout)(n)
    elapsed = time.perf_counter() - started
    if result.status != ct.Status.COMPLETED or sum(result.result) != n * (n + 1) // 2:
        raise RuntimeError(f"a fan-out of {n} did not complete: {result.status} {result.error}")
    return elapsed


def _dask_once(client: Any, n: int) -> float:
    started = time.perf_counter()
    values = client.gather(client.map(inc, range(n), pure=False))
    elapsed = time.perf_counter() - started
    if sum(values) != n * (n + 1) // 2:
        raise RuntimeError(f"plain Dask's map of {n} returned wrong values")
    return elapsed


@contextlib.contextmanager
def controller(home: Path, address: str) -> Iterator[None]:
    """A controller with a Dask executor on ``address``, stopped by pid afterwards."""
    home.mkdir()
    (home / "config.toml").write_text(controller_config(address))
    os.environ["COBALT_HOME"] = str(home)
    for variable in ("COBALT_CONTROLLER_ADDRESS", "COBALT_CONTROLLER_TOKEN"):
        os.environ.pop(variable, None)
    pid = start_controller(home).pid
    try:
        yield
    finally:
        stop(pid)


def measure(cluster: DaskCluster, home: Path, n: int, repeats: int) -> dict[str, list[float]]:
    from distributed import Client

    results: dict[str, list[float]] = {"cobalt": [], "plain Dask": []}
    with controller(home, cluster.address):
        _cobalt_once(WARM_UP)
        for _ in range(repeats):
            results["cobalt"].append(n / _cobalt_once(n))
    with Client(cluster.address, set_as_default=False) as client:
        _dask_once(client, WARM_UP)
        for _ in range(repeats):
            results["plain Dask"].append(n / _dask_once(client, n))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="cobalt's Dask executor against plain Dask on one loopback cluster",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per fan-out (2000)")
    parser.add_argument("--repeats", type=int, default=3, help="fan-outs per system (3)")
    parser.add_argument("--threads", type=int, default=2, help="the Dask worker's threads (2)")
    args = parser.parse_args(argv)
    missing = dask_missing()
    if missing:
        print(f"bench/dask.py: {missing}", file=sys.stderr)
        return 2
    with (
        tempfile.TemporaryDirectory(prefix="cobalt-bench-dask-") as tmp,
        running_dask(Path(tmp)) as cluster,
    ):
        cluster.add_worker(nthreads=args.threads, memory="4GiB", resources="GPU=2")
        rates = measure(cluster, Path(tmp) / "home", args.tasks, args.repeats)
    print(f"{'system':<12} {'tasks':>6} {'tasks/s (median)':>17} {'each run':>24}")
    for name, values in rates.items():
        each = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:<12} {args.tasks:>6} {statistics.median(values):>17.0f} {each:>24}")
    share = statistics.median(rates["cobalt"]) / statistics.median(rates["plain Dask"])
    print(f"\ncobalt / plain Dask: {share:.2f}x (target >= 0.8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
