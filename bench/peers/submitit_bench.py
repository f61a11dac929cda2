"""submitit on a Slurm cluster: fan-out, round trip and start from an idle cluster;
prints one JSON line on stdout.

Each task is a Slurm job, as submitit runs them: the fan-out is one job array
(``map_array``, how submitit's users fan out), a round trip one ``submit`` and
``result``. ``result`` looks for the job's result file once a second.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import submitit
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


def inc(x: int) -> int:
    return x + 1


def stamp() -> float:
    """When the task started, by the wall clock (the jobs run on this machine)."""
    return time.time()


def main() -> int:
    args = parse_slurm_args(__doc__.splitlines()[0])
    exit_on_sigterm()
    # Without slurmdbd, submitit's sacct calls fail and it warns on each; it still
    # finds results by their files.
    logging.getLogger("submitit").setLevel(logging.ERROR)
    executor = submitit.SlurmExecutor(folder=Path(args.folder) / "%j")
    executor.update_parameters(time=10, cpus_per_task=1, mem="1GB", array_parallelism=args.fanout)

    def fanout(n: int) -> list[int]:
        return [job.result() for job in executor.map_array(inc, range(n))]

    def roundtrip() -> int:
        return executor.submit(inc, 1).result()

    try:
        log("submitit", submitit.__version__, f"{args.cold} starts from an idle cluster")
        cold = time_cold(lambda: executor.submit(stamp).result(), args.cold, wait_no_jobs)
        wait_no_jobs()
        log("warm-up and", args.roundtrip, "round trips")
        time_roundtrips(roundtrip, 1)
        samples = time_roundtrips(roundtrip, args.roundtrip)
        wait_no_jobs()
        log(f"fan-out of {args.fanout} (one job array)")
        fanout_s = time_fanout_values(fanout, args.fanout)
    finally:
        cancel_jobs()
    slurm_report(
        "submitit",
        submitit.__version__,
        args.fanout,
        fanout_s,
        samples,
        how="map_array: one Slurm job array, one array task per task",
        **cold,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
