"""dask-jobqueue on a Slurm cluster: fan-out, round trip and start from an idle
cluster; prints one JSON line on stdout.

``SLURMCluster`` starts its scheduler in this process, on loopback, and its
workers in ``sbatch`` jobs that dial it: one job of 2 cores holding 2 worker
processes of one thread each, as ``LocalCluster(n_workers=2,
threads_per_worker=1)`` on the same 2 cores. The fan-out is ``client.map`` and
``gather``, a round trip ``submit`` and ``result``, both on running workers; a
start from idle is ``scale(jobs=1)`` with one task submitted at once, from no
worker, until its result. The scheduler's start-up is reported on its own.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import dask_jobqueue
import distributed
from _common import (
    cancel_jobs,
    exit_on_sigterm,
    log,
    parse_slurm_args,
    slurm_report,
    time_cold,
    time_fanout_values,
    time_roundtrips,
    wait_no_jobs,
)

WORKERS = 2
READY_TIMEOUT_S = 120


def inc(x: int) -> int:
    return x + 1


def stamp() -> float:
    """When the task started, by the wall clock (the jobs run on this machine)."""
    return time.time()


def main() -> int:
    args = parse_slurm_args(__doc__.splitlines()[0])
    exit_on_sigterm()
    folder = Path(args.folder)
    started = time.perf_counter()
    cluster = dask_jobqueue.SLURMCluster(
        cores=WORKERS,
        processes=WORKERS,
        memory="2GB",
        walltime="00:30:00",
        python=sys.executable,
        scheduler_options={"host": "127.0.0.1", "dashboard_address": None},
        log_directory=str(folder / "logs"),
        local_directory=str(folder / "work"),
        job_extra_directives=["--output=" + str(folder / "logs" / "%j.out")],
    )
    client = distributed.Client(cluster)
    cluster_start_s = time.perf_counter() - started

    def cold_one() -> float:
        cluster.scale(jobs=1)
        value: float = client.submit(stamp, pure=False).result(timeout=READY_TIMEOUT_S)
        return value

    def to_idle() -> None:
        cluster.scale(0)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while client.scheduler_info()["workers"]:
            if time.monotonic() > deadline:
                raise TimeoutError("dask workers did not leave after scale(0)")
            time.sleep(0.1)
        wait_no_jobs()

    def fanout(n: int) -> list[int]:
        values: list[int] = client.gather(client.map(inc, range(n), pure=False))
        return values

    def roundtrip() -> int:
        value: int = client.submit(inc, 1, pure=False).result()
        return value

    try:
        log("dask-jobqueue", dask_jobqueue.__version__, f"{args.cold} starts from idle")
        cold = time_cold(cold_one, args.cold, to_idle)
        ready = time.perf_counter()
        client.wait_for_workers(WORKERS, timeout=READY_TIMEOUT_S)
        workers_ready_s = time.perf_counter() - ready
        log("warm-up")
        time_fanout_values(fanout, min(args.fanout, 100))
        time_roundtrips(roundtrip, 10)
        log(f"fan-out of {args.fanout}, three times")
        fanout_s = statistics.median(time_fanout_values(fanout, args.fanout) for _ in range(3))
        log(f"{args.roundtrip} round trips")
        samples = time_roundtrips(roundtrip, args.roundtrip)
    finally:
        client.close()
        cluster.close()
        cancel_jobs()
    slurm_report(
        "dask-jobqueue",
        dask_jobqueue.__version__,
        args.fanout,
        fanout_s,
        samples,
        how=f"client.map on {WORKERS} workers in one sbatch job",
        cluster_start_s=cluster_start_s,
        more_workers_ready_s=workers_ready_s,
        distributed=distributed.__version__,
        **cold,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
