"""cobalt's Slurm building blocks against a real single-node Slurm cluster
(2 CPUs, 8000 MB, gres gpu:h100:2 on dummy devices; ``tests/service_slurm.py``).

Jobs here are short: they sleep, and each test cancels what it started.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_slurm import SlurmCluster, slurm_cluster  # noqa: F401
from support import wait_for

from cobalt_common.errors import ConfigError, UnsatisfiableError
from cobalt_common.hardware import HardwareSpec
from cobalt_common.processes import pid_running
from cobalt_executors.slurm._capacity import Capacity
from cobalt_executors.slurm._cli import SlurmCli
from cobalt_executors.slurm._parse import JobState, parse_fields
from cobalt_executors.slurm._sbatch import SbatchOptions

pytestmark = pytest.mark.integration

GPU = HardwareSpec(gpu="h100", gpus=1, cpus=1, memory_mb=100, time_limit_s=120)
CPU = HardwareSpec(cpus=1, memory_mb=100, time_limit_s=120)


@pytest.fixture
def cli(slurm_cluster: SlurmCluster) -> SlurmCli:  # noqa: F811
    return SlurmCli(slurm_cluster.conf, timeout_s=20)


@pytest.fixture
def capacity(cli: SlurmCli, slurm_cluster: SlurmCluster) -> Capacity:  # noqa: F811
    options = SbatchOptions.from_options(
        {"sbatch_options": [f"--output={slurm_cluster.tmp}/job-%j.out"]}
    )
    return Capacity.of(cli.nodes(), cli.partitions(), options)


@pytest.fixture
def jobs(cli: SlurmCli) -> Iterator[list[str]]:
    """Ids of the jobs a test submits; whatever still runs is cancelled after it."""
    submitted: list[str] = []
    yield submitted
    for job_id in submitted:
        cli.cancel(job_id)
    wait_for(
        lambda: all(state.ended for state in cli.jobs(submitted).values()),
        timeout=10,
        what="the test's jobs to end",
    )


def _file(cluster: SlurmCluster, stem: str) -> Path:
    return cluster.tmp / f"{stem}-{uuid.uuid4().hex[:8]}"


def _state(cli: SlurmCli, job_id: str) -> JobState | None:
    return cli.jobs([job_id]).get(job_id)


def _ended(cli: SlurmCli, job_id: str) -> JobState | None:
    """The job's state once it has ended (``GONE`` once Slurm forgot it), else None."""
    state = _state(cli, job_id)
    if state is None:
        return JobState("GONE")
    return state if state.ended else None


def _scheduled(cli: SlurmCli, job_id: str) -> JobState:
    """The job's state once a scheduling pass has considered it (a new job waits
    with reason ``None`` until then)."""

    def considered() -> JobState | None:
        state = _state(cli, job_id)
        return (
            state if state is not None and (state.reason != "None" or not state.pending) else None
        )

    return wait_for(
        considered,
        timeout=10,
        what=f"a scheduling pass to consider job {job_id}",
    )


def _running(cli: SlurmCli, *job_ids: str) -> bool:
    states = cli.jobs(job_ids)
    return all(job_id in states and states[job_id].running for job_id in job_ids)


def test_nodes_show_the_clusters_cpus_memory_and_typed_gpus(cli: SlurmCli) -> None:
    [node] = cli.nodes()
    assert node.cpus == 2
    assert node.real_memory_mb == 8000
    assert dict(node.gres) == {"h100": 2}
    assert node.partitions == ("debug",)
    assert node.usable
    [partition] = cli.partitions()
    assert (partition.name, partition.default, partition.max_time_s) == ("debug", True, None)


def test_a_job_with_the_mapped_gres_sees_its_gpu(
    cli: SlurmCli,
    capacity: Capacity,
    jobs: list[str],
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    seen = _file(slurm_cluster, "cuda")
    options = capacity.sbatch_arguments(GPU, name="sees its gpu")
    assert "--gres=gpu:h100:1" in options
    jobs.append(cli.submit(options, f'#!/bin/sh\necho "$CUDA_VISIBLE_DEVICES" > {seen}\n'))
    wait_for(seen.exists, timeout=10, what="the job to write CUDA_VISIBLE_DEVICES")
    assert wait_for(lambda: seen.read_text(), timeout=2) == "0\n"
    state = wait_for(lambda: _state(cli, jobs[0]), timeout=5)
    assert state.state in ("RUNNING", "COMPLETING", "COMPLETED")


def test_the_submitting_processs_environment_stays_out_of_the_job(
    capacity: Capacity,
    jobs: list[str],
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    cli = SlurmCli(slurm_cluster.conf, env={"COBALT_TEST_SECRET": "s3cret"}, timeout_s=20)
    seen = _file(slurm_cluster, "env")
    script = f"#!/bin/sh\nenv > {seen}.tmp && mv {seen}.tmp {seen}\n"
    jobs.append(cli.submit(capacity.sbatch_arguments(CPU), script))
    wait_for(seen.exists, timeout=10, what="the job to write its environment")
    env = seen.read_text()
    assert "SLURM_JOB_ID=" in env
    assert "PATH=" in env
    assert "s3cret" not in env


def test_a_third_gpu_job_waits_for_resources_while_two_hold_both_gpus(
    cli: SlurmCli,
    capacity: Capacity,
    jobs: list[str],
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    held = [_file(slurm_cluster, "gpus"), _file(slurm_cluster, "gpus")]
    options = capacity.sbatch_arguments(GPU, name="holds a gpu")
    for path in held:
        script = f'#!/bin/sh\necho "$SLURM_JOB_GPUS" > {path}\nexec sleep 60\n'
        jobs.append(cli.submit(options, script))
    wait_for(lambda: _running(cli, *jobs), timeout=10, what="two GPU jobs to run")
    wait_for(lambda: all(path.exists() for path in held), timeout=5)
    assert sorted(path.read_text().strip() for path in held) == ["0", "1"]

    jobs.append(cli.submit(options, "#!/bin/sh\ntrue\n"))
    third = _scheduled(cli, jobs[2])
    assert (third.state, third.reason) == ("PENDING", "Resources")


def test_a_gpu_job_waits_for_a_gpu_while_a_cpu_is_free(
    cli: SlurmCli,
    capacity: Capacity,
    jobs: list[str],
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    both = HardwareSpec(gpu="h100", gpus=2, cpus=1, memory_mb=100)
    jobs.append(cli.submit(capacity.sbatch_arguments(both), "#!/bin/sh\nexec sleep 60\n"))
    wait_for(lambda: _running(cli, jobs[0]), timeout=10, what="the 2-GPU job to run")
    jobs.append(cli.submit(capacity.sbatch_arguments(GPU), "#!/bin/sh\ntrue\n"))
    gpu_job = _scheduled(cli, jobs[1])
    assert (gpu_job.state, gpu_job.reason) == ("PENDING", "Resources")
    node = parse_fields(slurm_cluster.run("scontrol", "show", "node", "-o").strip())
    assert (node["CPUAlloc"], node["CPUEfctv"]) == ("1", "2")


def test_cancel_stops_a_running_job_and_its_processes(
    cli: SlurmCli,
    capacity: Capacity,
    jobs: list[str],
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    pid_file = _file(slurm_cluster, "pid")
    script = f"#!/bin/sh\necho $$ > {pid_file}\nsleep 60\n"
    jobs.append(cli.submit(capacity.sbatch_arguments(CPU), script))
    wait_for(pid_file.exists, timeout=10, what="the job to start")
    pid = int(wait_for(lambda: pid_file.read_text().strip(), timeout=2))
    assert pid_running(pid)
    started = time.monotonic()
    cli.cancel(jobs[0])
    state = wait_for(lambda: _ended(cli, jobs[0]), timeout=5, what="the cancelled job to end")
    assert time.monotonic() - started < 5
    assert state.state == "CANCELLED"
    wait_for(lambda: not pid_running(pid), timeout=5, what="the job's shell to exit")
    cli.cancel(jobs[0])  # cancelling an ended job does nothing


def test_a_signal_reaches_the_batch_script(
    cli: SlurmCli,
    capacity: Capacity,
    jobs: list[str],
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    ready, got = _file(slurm_cluster, "ready"), _file(slurm_cluster, "got")
    script = (
        f"#!/bin/sh\ntrap 'echo usr1 > {got}; exit 0' USR1\ntouch {ready}\n"
        "while true; do sleep 0.05; done\n"
    )
    jobs.append(cli.submit(capacity.sbatch_arguments(CPU), script))
    wait_for(ready.exists, timeout=10, what="the job to start")
    cli.cancel(jobs[0], signal="USR1")
    wait_for(got.exists, timeout=5, what="the batch script to get SIGUSR1")
    state = wait_for(lambda: _ended(cli, jobs[0]), timeout=5, what="the job to end")
    assert state.state == "COMPLETED"


@pytest.mark.parametrize(
    ("spec", "short"),
    [
        (HardwareSpec(cpus=3), "3 CPUs"),
        (HardwareSpec(gpu="h100", gpus=3), "3 GPUs of gres type 'h100'"),
        (HardwareSpec(gpu="a100-40gb", gpus=1), "1 GPUs of gres type 'a100-40gb'"),
        (HardwareSpec(memory_mb=9000), "8.8 GB of memory"),
    ],
)
def test_an_impossible_spec_is_refused_and_never_submitted(
    cli: SlurmCli,
    capacity: Capacity,
    slurm_cluster: SlurmCluster,  # noqa: F811
    spec: HardwareSpec,
    short: str,
) -> None:
    known = slurm_cluster.run("squeue", "-h", "-t", "all", "-o", "%i").split()
    assert not capacity.can_ever_run(spec)
    with pytest.raises(UnsatisfiableError) as caught:
        capacity.sbatch_arguments(spec)
    assert short in str(caught.value)
    assert f"node {slurm_cluster.host}: 2 CPUs, 7.8 GB, GPUs h100:2" in str(caught.value)
    assert slurm_cluster.run("squeue", "-h", "-t", "all", "-o", "%i").split() == known


def test_slurm_itself_leaves_an_impossible_cpu_count_pending_forever(
    cli: SlurmCli, jobs: list[str]
) -> None:
    """Why cobalt checks capacity itself: Slurm accepts -c 3 on a 2-CPU node."""
    jobs.append(cli.submit(["--cpus-per-task=3", "--output=/dev/null"], "#!/bin/sh\ntrue\n"))
    state = wait_for(lambda: _state(cli, jobs[0]), timeout=5)
    assert (state.state, state.reason) == ("PENDING", "PartitionConfig")


def test_sbatch_refusals_and_a_wrong_configuration_become_cobalt_errors(
    cli: SlurmCli,
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    with pytest.raises(UnsatisfiableError, match="can never run this job"):
        cli.submit(["--gres=gpu:a100:1", "--output=/dev/null"], "#!/bin/sh\ntrue\n")
    with pytest.raises(UnsatisfiableError, match="partition"):
        cli.submit(["--partition=nope", "--output=/dev/null"], "#!/bin/sh\ntrue\n")
    with pytest.raises(ConfigError, match=r"missing\.conf does not exist"):
        SlurmCli(slurm_cluster.tmp / "missing.conf", timeout_s=10).nodes()
    unreadable = slurm_cluster.tmp / "unreadable.conf"
    unreadable.write_text("ClusterName=x\nNoSuchKey=1\n")
    with pytest.raises(ConfigError, match=r"Unable to process configuration file.*slurm_conf"):
        SlurmCli(unreadable, timeout_s=10).nodes()
    assert cli.jobs(["999999"]) == {}
    cli.cancel("999999")
