"""Trivial tasks through Slurm: cobalt's pilots against its job-per-task mode, its
local executor, submitit and dask-jobqueue, on one cluster, in one run.

    .venv/bin/python bench/slurm.py           # about 7 minutes on 2 cores
    .venv/bin/python bench/slurm.py --quick   # small counts, under a minute
    .venv/bin/python bench/slurm.py --peers   # cobalt alone

It starts a throwaway single-node Slurm cluster (2 CPUs, as the integration
tests do; needs root and Debian's munge, slurmctld, slurmd and slurm-client from
``scripts/services``) and a cobalt controller whose ``config.toml`` names four
executors: ``local`` (2 workers), ``pilot`` and ``cold`` (Slurm pilots of 2 CPUs,
so that one pilot uses the node as the local executor does; ``cold`` releases its
pilot after 1 s idle) and ``jobs`` (Slurm, one job per task). The tasks name their
executor and ask for no GPU. Measured, in this order:

- **start from an idle cluster** (5 times): with no pilot, no worker and no job,
  one task dispatched at a random moment; seconds until it runs (it returns its
  own clock) and until its result is back. cobalt's ``cold`` executor, submitit's
  ``submit``, and dask-jobqueue's ``scale(jobs=1)`` with one task submitted at once.
- **fan-out**: 500 tasks dispatched at once, until every result is back (tasks/s;
  no reduce task). cobalt: one workflow of 500 tasks (median of 3); submitit: one
  job array (``map_array``); dask-jobqueue: ``client.map`` and ``gather`` on 2
  running workers (median of 3). One job per task runs 20 tasks (about 2 jobs/s).
- **round trip**: one task, dispatch to result, median of 30 after a warm-up;
  of 10 where each is a Slurm job (job per task, submitit), each of cobalt's
  job-per-task ones from an idle cluster.

Peers are installed in their own virtual environments under a temporary folder
(bench/_peers.py). Prints a table of figures and ratios (how many times cobalt's
pilots beat each); these are measurements, not pass/fail tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cobalt as ct

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _peers import run_peer  # noqa: E402
from cobalt_bench import stop  # noqa: E402
from service_slurm import SlurmCluster, running_slurm_cluster, why_slurm_cannot_start  # noqa: E402

from cobalt._embedded import start_controller  # noqa: E402

PEERS = ("submitit", "dask-jobqueue")
IDLE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Counts:
    fanout: int
    roundtrip: int
    jobs: int
    job_roundtrip: int
    cold: int


FULL = Counts(fanout=500, roundtrip=30, jobs=20, job_roundtrip=10, cold=5)
QUICK = Counts(fanout=10, roundtrip=3, jobs=2, job_roundtrip=1, cold=1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def controller_config(conf: Path, job_logs: Path) -> str:
    slurm = f"""type = "slurm"
slurm_conf = "{conf}"
pilot_log_dir = "{job_logs}\""""
    pilots = f"""{slurm}
pilot_cpus = 2
pilot_memory = "2GB"
pilot_time = "30min\""""
    return f"""\
[controller]
address = "127.0.0.1:{_free_port()}"
dashboard_address = ""
gateway_address = ""

[executors.local]
type = "local"
workers = 2

[executors.pilot]
{pilots}
idle_timeout_s = 2

[executors.cold]
{pilots}
idle_timeout_s = 1

[executors.jobs]
{slurm}
mode = "job_per_task"
pilot_memory = "1GB"
pilot_time = "10min"
"""


# -- the workflows, one set per executor (defined here so that they travel by value) --


@dataclass(frozen=True)
class Workflows:
    fanout: Any
    one: Any
    first: Any


def workflows(executor: str) -> Workflows:
    @ct.electron(executor=executor)
    def inc(x: int) -> tuple[int, str]:
        return x + 1, os.environ.get("SLURM_JOB_ID", "")

    @ct.electron(executor=executor)
    def stamp() -> float:
        return time.time()

    @ct.lattice
    def fanout(n: int) -> list[tuple[int, str]]:
        return [inc(i) for i in range(n)]

    @ct.lattice
    def one(x: int) -> tuple[int, str]:
        return inc(x)

    @ct.lattice
    def first() -> float:
        return stamp()

    return Workflows(fanout, one, first)


def _fanout(flows: Workflows, n: int, jobs: set[str]) -> float:
    started = time.perf_counter()
    result = ct.dispatch_sync(flows.fanout)(n)
    elapsed = time.perf_counter() - started
    values = result.result
    if result.status != ct.Status.COMPLETED or sum(v for v, _ in values) != n * (n + 1) // 2:
        raise RuntimeError(f"a fan-out of {n} did not complete: {result.status} {result.error}")
    jobs.update(job for _, job in values)
    return elapsed


def _roundtrips(flows: Workflows, runs: int, jobs: set[str]) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        result = ct.dispatch_sync(flows.one)(1)
        samples.append(time.perf_counter() - started)
        if result.status != ct.Status.COMPLETED or result.result[0] != 2:
            raise RuntimeError(f"a round trip did not complete: {result.status} {result.error}")
        jobs.add(result.result[1])
    return samples


def _report(
    n: int, fanout_s: float, samples: list[float], jobs: set[str], **extra: Any
) -> dict[str, Any]:
    return {
        "fanout_n": n,
        "fanout_s": fanout_s,
        "fanout_tasks_per_s": n / fanout_s,
        "roundtrip_runs": len(samples),
        "roundtrip_p50_ms": statistics.median(samples) * 1000,
        "slurm_jobs_used": len(jobs - {""}),
        **extra,
    }


def wait_idle(cluster: SlurmCluster, timeout_s: float = 90.0) -> None:
    """Waits (bounded) until the cluster runs no job: the pilots were released."""
    deadline = time.monotonic() + timeout_s
    while cluster.job_ids():
        if time.monotonic() > deadline:
            raise RuntimeError(f"Slurm jobs still there after {timeout_s:g} s: {cluster.job_ids()}")
        time.sleep(0.1)


def measure_cold(cluster: SlurmCluster, samples: int) -> dict[str, Any]:
    flows = workflows("cold")
    dispatched, to_running, to_result = [], [], []
    for _ in range(samples):
        wait_idle(cluster)
        time.sleep(random.uniform(0, 1))
        wall, started = time.time(), time.perf_counter()
        result = ct.dispatch_sync(flows.first)()
        to_result.append(time.perf_counter() - started)
        if result.status != ct.Status.COMPLETED:
            raise RuntimeError(f"a start from idle did not complete: {result.error}")
        dispatched.append(wall)
        to_running.append(result.result - wall)
    return {
        "cold_to_running_s": to_running,
        "cold_to_result_s": to_result,
        "cold_dispatched_at": dispatched,
    }


def jobs_submitted(log_file: Path, executor: str) -> int:
    """How many ``sbatch`` jobs an executor submitted, from the controller's log."""
    mark = f"executor {executor}: pilot "
    lines = log_file.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if mark in line and " is Slurm job " in line)


LOG_LINE = re.compile(
    r"^(\S+ \S+) INFO cobalt\.executors: executor cold: pilot (\S+) "
    r"(?:is Slurm job|attached (\S+) s after sbatch)"
)


def cold_timeline(log_file: Path, cold: dict[str, Any]) -> dict[str, list[float]]:
    """Where a start from idle went, from the controller's log: dispatch to ``sbatch``,
    ``sbatch`` to the agent's attaching, and attaching to the task running."""
    submitted: list[float] = []
    attached: list[float] = []
    for line in log_file.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if match is None:
            continue
        at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        (submitted if match[3] is None else attached).append(at)
    if len(submitted) != len(cold["cold_dispatched_at"]) or len(attached) != len(submitted):
        return {}  # a pilot more than one per start: no clean split
    dispatched = cold["cold_dispatched_at"]
    running = [d + r for d, r in zip(dispatched, cold["cold_to_running_s"], strict=True)]
    return {
        "dispatch_to_sbatch_s": [s - d for s, d in zip(submitted, dispatched, strict=True)],
        "sbatch_to_attach_s": [a - s for a, s in zip(attached, submitted, strict=True)],
        "attach_to_running_s": [r - a for r, a in zip(running, attached, strict=True)],
    }


def measure_warm(name: str, fanout_n: int, runs: int, repeats: int) -> dict[str, Any]:
    flows = workflows(name)
    jobs: set[str] = set()
    _fanout(flows, min(fanout_n, 50), jobs)  # starts the pilot (or the local workers)
    fanout_s = statistics.median(_fanout(flows, fanout_n, jobs) for _ in range(repeats))
    _roundtrips(flows, min(runs, 10), jobs)
    return _report(fanout_n, fanout_s, _roundtrips(flows, runs, jobs), jobs)


def settle(cluster: SlurmCluster, timeout_s: float) -> list[str]:
    """Waits up to ``timeout_s`` for the executor to release its jobs, then cancels
    those left (bounded); returns their ids."""
    with contextlib.suppress(RuntimeError):
        wait_idle(cluster, timeout_s)
        return []
    left = cluster.job_ids()
    cluster.run("scancel", *left)
    wait_idle(cluster, 30)
    return left


def measure_jobs(cluster: SlurmCluster, counts: Counts) -> dict[str, Any]:
    """One job per task: a fan-out, then round trips each from an idle cluster (a task
    dispatched just after another may otherwise run in that one's job, which is
    still there for up to half a second). Jobs the executor leaves after the
    fan-out are cancelled after 3 s, and counted."""
    flows = workflows("jobs")
    fanout_jobs: set[str] = set()
    fanout_s = _fanout(flows, counts.jobs, fanout_jobs)
    left = settle(cluster, 3)
    rt_jobs: set[str] = set()
    samples = []
    for _ in range(counts.job_roundtrip + 1):
        left += settle(cluster, 3)
        samples += _roundtrips(flows, 1, rt_jobs)
    left += settle(cluster, 3)
    return _report(
        counts.jobs,
        fanout_s,
        samples[1:],
        fanout_jobs | rt_jobs,
        fanout_jobs=len(fanout_jobs - {""}),
        roundtrip_jobs=len(rt_jobs - {""}),
        jobs_left=left,
    )


@contextlib.contextmanager
def controller(home: Path, conf: Path) -> Iterator[float]:
    """A controller for the cluster, stopped by pid when the block ends; yields its
    start-up time."""
    home.mkdir()
    (home / "job-logs").mkdir()
    (home / "config.toml").write_text(controller_config(conf, home / "job-logs"))
    os.environ["COBALT_HOME"] = str(home)
    for variable in ("COBALT_CONTROLLER_ADDRESS", "COBALT_CONTROLLER_TOKEN"):
        os.environ.pop(variable, None)
    started = time.perf_counter()
    pid = start_controller(home).pid
    try:
        yield time.perf_counter() - started
    finally:
        stop(pid)


def measure_cobalt(cluster: SlurmCluster, home: Path, counts: Counts) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with controller(home, cluster.conf) as start_s:
        log(f"cobalt: {counts.cold} starts from an idle cluster")
        cold = measure_cold(cluster, counts.cold)
        wait_idle(cluster)
        log(f"cobalt local: fan-out of {counts.fanout}, {counts.roundtrip} round trips")
        results["cobalt local"] = measure_warm("local", counts.fanout, counts.roundtrip, 3)
        log(f"cobalt pilot: fan-out of {counts.fanout}, {counts.roundtrip} round trips")
        pilot = measure_warm("pilot", counts.fanout, counts.roundtrip, 3)
        timeline = cold_timeline(home / "controller.log", cold)
        results["cobalt pilot"] = {**pilot, **cold, **timeline, "controller_start_s": start_s}
        wait_idle(cluster)
        log(f"cobalt job per task: fan-out of {counts.jobs}, {counts.job_roundtrip} round trips")
        results["cobalt job/task"] = measure_jobs(cluster, counts)
        for name, executor in (("cobalt pilot", "pilot"), ("cobalt job/task", "jobs")):
            results[name]["jobs_submitted"] = jobs_submitted(home / "controller.log", executor)
    wait_idle(cluster)
    return results


def measure_peers(
    cluster: SlurmCluster, tmp: Path, counts: Counts, peers: list[str]
) -> dict[str, Any]:
    results = {}
    for name in peers:
        folder = tmp / name
        folder.mkdir()
        log(f"{name}: {counts.cold} starts from idle, fan-out of {counts.fanout}, ...")
        args = [
            f"--slurm-conf={cluster.conf}",
            f"--folder={folder}",
            f"--fanout={counts.fanout}",
            f"--roundtrip={counts.job_roundtrip if name == 'submitit' else counts.roundtrip}",
            f"--cold={counts.cold}",
        ]
        results[name] = run_peer(name, args, timeout_s=1200)
        wait_idle(cluster)
    return results


# -- the table -------------------------------------------------------------------------


_BEGAN = time.monotonic()


def log(*parts: object) -> None:
    print(f"[{time.monotonic() - _BEGAN:4.0f} s]", *parts, file=sys.stderr, flush=True)


def _median(values: list[float] | None) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def table(results: dict[str, dict[str, Any]]) -> str:
    me = results["cobalt pilot"]
    header = (
        f"{'system':<16} {'fan-out':>7} {'tasks/s':>9} {'pilot x':>8} {'rt p50 ms':>10} "
        f"{'pilot x':>8} {'idle->running s':>16} {'idle->result s':>15}"
    )
    lines = [header]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"{name:<16} not measured: {r['error']}")
            continue
        speed = me["fanout_tasks_per_s"] / r["fanout_tasks_per_s"]
        latency = r["roundtrip_p50_ms"] / me["roundtrip_p50_ms"]
        lines.append(
            f"{name:<16} {r['fanout_n']:>7} {r['fanout_tasks_per_s']:>9.1f} {speed:>7.2f}x "
            f"{r['roundtrip_p50_ms']:>10.2f} {latency:>7.2f}x "
            f"{_median(r.get('cold_to_running_s')):>16} {_median(r.get('cold_to_result_s')):>15}"
        )
    local = results.get("cobalt local", {})
    if "fanout_tasks_per_s" in local:
        share = me["fanout_tasks_per_s"] / local["fanout_tasks_per_s"]
        lines.append(f"\npilot fan-out / local fan-out: {share:.2f} (target >= 0.8)")
    lines.append(
        f"pilot dispatch to first task running on an idle cluster: median "
        f"{_median(me.get('cold_to_running_s'))} s of {len(me.get('cold_to_running_s', []))}"
        " (target <= 2 s)"
    )
    if me.get("sbatch_to_attach_s"):
        lines.append(
            f"  of which: dispatch to sbatch {_median(me['dispatch_to_sbatch_s'])} s, sbatch to "
            f"the agent attached {_median(me['sbatch_to_attach_s'])} s, attached to the task "
            f"running {_median(me['attach_to_running_s'])} s"
        )
    lines.append(
        f"pilots: {me['slurm_jobs_used']} ran the tasks, {me['jobs_submitted']} submitted in all"
    )
    jobs = results.get("cobalt job/task", {})
    if "fanout_jobs" in jobs:
        lines.append(
            f"job per task: its fan-out of {jobs['fanout_n']} tasks ran in {jobs['fanout_jobs']} "
            f"Slurm jobs; each round trip started from an idle cluster "
            f"({jobs['roundtrip_jobs']} jobs for {jobs['roundtrip_runs'] + 1} tasks); "
            f"{jobs['jobs_submitted']} jobs submitted in all"
        )
        if jobs["jobs_left"]:
            lines.append(
                f"  {len(jobs['jobs_left'])} jobs it submitted were still there 3 s after "
                "the last task (never given a task): the benchmark cancelled them"
            )
    for name in PEERS:
        peer = results.get(name, {})
        if "how" in peer:
            started = peer.get("cluster_start_s")
            extra = f"; its scheduler started in {started:.2f} s" if started is not None else ""
            lines.append(f"{name} {peer['version']}: {peer['how']}{extra}")
    lines.append("'pilot x': how many times faster cobalt's pilots are (rate; round-trip p50).")
    lines.append("idle->running / idle->result: medians, from no worker and no job.")
    return "\n".join(lines)


# -- running it ------------------------------------------------------------------------


def _exit_on_sigterm() -> None:
    """SIGTERM and Ctrl-C (even where a shell started this with SIGINT ignored)
    unwind, so that every process and job it started is stopped."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, under a minute")
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=PEERS)
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    missing = why_slurm_cannot_start()
    if missing:
        raise SystemExit(f"cannot start a Slurm cluster: {missing}")
    _exit_on_sigterm()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cobalt-slurm-bench-")))
        (tmp / "slurm").mkdir()
        cluster = stack.enter_context(running_slurm_cluster(tmp / "slurm"))
        results = measure_cobalt(cluster, tmp / "home", counts)
        results.update(measure_peers(cluster, tmp, counts, args.peers))
    log(f"took {time.monotonic() - started:.0f} s")
    print(table(results))
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
