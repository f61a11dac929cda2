"""The per-task overhead of the Kubernetes executor's pilot pods against one Job per
task, on the fake API server of the tests, in one run.

    .venv/bin/python bench/kubernetes_pilots.py           # about a minute on 2 cores
    .venv/bin/python bench/kubernetes_pilots.py --quick   # small counts

**This is not a claim about real clusters.** The fake API server
(``tests/kube_fake``) starts a pod's container as a local process the moment it is
scheduled: no image pull, no container runtime, no kubelet sync period, no Job
controller back-off. On a real cluster a new pod costs seconds more, so the gap
between the modes measured here is the smallest it can be.

A controller gets three executors: ``local`` (2 workers), ``pilot`` (the kubernetes
executor's pilot pods, which stay while tasks come) and ``jobs`` (one Job per
task). Measured:

- **round trip**: one trivial task, dispatch to result, one after another (median
  after a warm-up); each of ``jobs``' tasks makes, starts and deletes a Job;
- **fan-out**: tasks dispatched at once in one workflow until every result is back
  (tasks/s), on ``pilot`` and ``local``.

Prints a table and the ratios.
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
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from cobalt_bench import stop  # noqa: E402
from kube_fake import FakeKubernetes, NodeShape  # noqa: E402
from service_kubernetes import IMAGE, kube_options  # noqa: E402

from cobalt._embedded import start_controller  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + " }"
    return str(value)


def _table(options: dict[str, Any]) -> str:
    return "".join(f"{k} = {_toml(v)}\n" for k, v in options.items())


def controller_config(fake: FakeKubernetes, home: Path) -> str:
    base = kube_options(fake, home, pilot_cpus=2, pilot_memory="2GB", gpu_types={})
    base.pop("largest_node")
    return f"""\
[controller]
address = "127.0.0.1:{_free_port()}"
dashboard_address = ""
gateway_address = ""

[executors.local]
type = "local"
workers = 2

[executors.pilot]
type = "kubernetes"
{_table({**base, "idle_timeout_s": 600})}
[executors.jobs]
type = "kubernetes"
{_table({**base, "mode": "job_per_task", "max_pilots": 2})}"""


def workflows(executor: str) -> tuple[Any, Any]:
    @ct.electron(executor=executor)
    def inc(x: int) -> int:
        return x + 1

    @ct.lattice
    def one() -> int:
        return inc(1)

    @ct.lattice
    def fanout(n: int) -> list[int]:
        return [inc(i) for i in range(n)]

    return one, fanout


def round_trips(executor: str, count: int) -> list[float]:
    one, _ = workflows(executor)
    ct.dispatch_sync(one)()  # warm-up: the pilot starts, or the first Job
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        result = ct.dispatch_sync(one)()
        samples.append(time.perf_counter() - started)
        assert result.result == 2
    return samples


def fanout_rate(executor: str, count: int) -> float:
    _, fanout = workflows(executor)
    ct.dispatch_sync(fanout)(4)
    started = time.perf_counter()
    result = ct.dispatch_sync(fanout)(count)
    elapsed = time.perf_counter() - started
    assert result.result == [i + 1 for i in range(count)]
    return count / elapsed


@contextlib.contextmanager
def controller(fake: FakeKubernetes, home: Path) -> Iterator[None]:
    home.mkdir()
    (home / "config.toml").write_text(controller_config(fake, home))
    os.environ["COBALT_HOME"] = str(home)
    for variable in ("COBALT_CONTROLLER_ADDRESS", "COBALT_CONTROLLER_TOKEN"):
        os.environ.pop(variable, None)
    pid = start_controller(home).pid
    try:
        yield
    finally:
        stop(pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts")
    args = parser.parse_args()
    rt_pilot, rt_jobs, fan = (5, 2, 20) if args.quick else (30, 10, 300)
    with tempfile.TemporaryDirectory(prefix="cobalt-kube-bench-") as tmp:
        node = NodeShape("node-1", cpus=64, memory_mb=262144)
        with (
            FakeKubernetes(node=node, images={IMAGE}, root=Path(tmp) / "cluster") as fake,
            controller(fake, Path(tmp) / "home"),
        ):
            pilot = round_trips("pilot", rt_pilot)
            jobs = round_trips("jobs", rt_jobs)
            local = round_trips("local", rt_pilot)
            fan_pilot = fanout_rate("pilot", fan)
            fan_local = fanout_rate("local", fan)
            job_posts = sum(
                1 for r in fake.requests if r.method == "POST" and r.path.endswith("/jobs")
            )
    p50 = {
        name: statistics.median(s) * 1000
        for name, s in (("pilot", pilot), ("jobs", jobs), ("local", local))
    }
    print("\nKubernetes executor on the fake API server (not a real cluster; see the docstring)")
    print("| | round trip p50 | fan-out, tasks/s |")
    print("|---|---|---|")
    print(f"| pilot pods | {p50['pilot']:.1f} ms | {fan_pilot:.0f} ({fan} tasks) |")
    print(f"| one Job per task | {p50['jobs']:.1f} ms ({job_posts} Jobs) | |")
    print(f"| local executor | {p50['local']:.1f} ms | {fan_local:.0f} |")
    print(
        f"\nper-task overhead, Job per task vs pilot pods: {p50['jobs'] - p50['pilot']:.0f} ms "
        f"more; round trip {p50['jobs'] / p50['pilot']:.1f}x longer"
    )
    print(
        f"pilot pods vs the local executor: round trip {p50['pilot'] / p50['local']:.2f}x, "
        f"fan-out {fan_pilot / fan_local:.2f}x"
    )


if __name__ == "__main__":
    main()
