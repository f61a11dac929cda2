"""What one Slurm job per task costs, through cobalt's Slurm commands.

    .venv/bin/python bench/slurm_jobs.py [--latency-jobs 10] [--rate-jobs 20]
        [--slurm-conf PATH --work-dir SHARED_FOLDER]

Without ``--slurm-conf`` it starts a throwaway single-node cluster (2 CPUs,
gres gpu:h100:2) as the integration tests do, which needs root and Debian's
munge, slurmctld, slurmd and slurm-client (``scripts/services``).

- **sbatch to running**: one job at a time, the time from calling ``sbatch``
  until the batch script's first line runs (the script writes its own clock).
  slurmctld starts batch jobs on a scheduling pass about once a second, so a
  job submitted just after the previous one ended waits nearly a full second:
  measured both back to back and at a random moment of the second.
- **Jobs per second**: ``--rate-jobs`` trivial 1-CPU jobs submitted at once,
  from the first ``sbatch`` until the last job's script has finished, as an
  executor that runs one job per task would see them.

These are measurements, not pass/fail tests.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cobalt_common.hardware import HardwareSpec
from cobalt_executors.slurm._capacity import Capacity
from cobalt_executors.slurm._cli import SlurmCli

TASK = HardwareSpec(cpus=1, memory_mb=100, time_limit_s=60)


@contextlib.contextmanager
def cluster_conf(conf: str | None) -> Iterator[Path]:
    """The given ``slurm.conf``, or that of a throwaway cluster started for the run."""
    if conf is not None:
        yield Path(conf)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from service_slurm import running_slurm_cluster, why_slurm_cannot_start

    missing = why_slurm_cannot_start()
    if missing:
        raise SystemExit(f"cannot start a Slurm cluster: {missing}")
    with (
        tempfile.TemporaryDirectory(prefix="cobalt-slurm-bench-") as tmp,
        running_slurm_cluster(Path(tmp)) as cluster,
    ):
        yield cluster.conf


def wait_files(paths: list[Path], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(path.exists() for path in paths):
        if time.monotonic() > deadline:
            raise SystemExit(f"jobs did not finish within {timeout_s:g} s")
        time.sleep(0.002)


def sbatch_to_running(
    cli: SlurmCli, options: list[str], folder: Path, jobs: int, *, spread: bool
) -> list[float]:
    """Seconds from ``sbatch`` to the script's first line, one job at a time;
    ``spread``: each submitted after a random pause of up to a second."""
    delays = []
    for index in range(jobs):
        if spread:
            time.sleep(random.uniform(0, 1))
        stamp = folder / f"started-{spread}-{index}"
        script = f"#!/bin/sh\ndate +%s.%N > {stamp}.tmp && mv {stamp}.tmp {stamp}\n"
        submitted = time.time()
        cli.submit(options, script)
        wait_files([stamp])
        delays.append(float(stamp.read_text()) - submitted)
    return delays


def jobs_per_second(cli: SlurmCli, options: list[str], folder: Path, jobs: int) -> float:
    """Trivial jobs submitted at once, from the first ``sbatch`` to the last one done."""
    done = [folder / f"done-{index}" for index in range(jobs)]
    started = time.monotonic()
    for path in done:
        cli.submit(options, f"#!/bin/sh\ntouch {path}\n")
    wait_files(done)
    return jobs / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-jobs", type=int, default=10)
    parser.add_argument("--rate-jobs", type=int, default=20)
    parser.add_argument("--slurm-conf", help="an existing cluster's slurm.conf")
    parser.add_argument(
        "--work-dir", help="a folder the compute nodes share (default: the system's temp)"
    )
    args = parser.parse_args()
    with (
        cluster_conf(args.slurm_conf) as conf,
        tempfile.TemporaryDirectory(prefix="cobalt-slurm-jobs-", dir=args.work_dir) as tmp,
    ):
        folder = Path(tmp)
        cli = SlurmCli(conf)
        capacity = Capacity.of(cli.nodes(), cli.partitions())
        options = [*capacity.sbatch_arguments(TASK, name="bench"), "--output=/dev/null"]
        delays = {
            how: sbatch_to_running(cli, options, folder, args.latency_jobs, spread=spread)
            for how, spread in (("back to back", False), ("at random moments", True))
        }
        rate = jobs_per_second(cli, options, folder, args.rate_jobs)
    print(f"cluster: {capacity.describe_largest()}")
    for how, seconds in delays.items():
        print(
            f"sbatch to running, {len(seconds)} jobs one at a time, {how}: median "
            f"{statistics.median(seconds) * 1000:.0f} ms, min {min(seconds) * 1000:.0f} ms, "
            f"max {max(seconds) * 1000:.0f} ms"
        )
    print(f"{args.rate_jobs} trivial one-job-per-task jobs: {rate:.2f} jobs/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
