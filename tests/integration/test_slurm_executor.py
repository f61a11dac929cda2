"""The Slurm executor on a real single-node Slurm cluster (munge, slurmctld and
slurmd from Debian; 2 CPUs, 8000 MB, two H100s declared as gres on dummy devices),
with a real controller started by the CLI.

Covered: a workflow whose GPU tasks run in Slurm pilots and CPU tasks locally; a
GPU count or CPU count beyond any node, refused at dispatch; cancel; a time limit;
``scancel`` of a pilot from outside (its task reported lost and retried on a new
pilot); and a controller killed mid-workflow (no result lost, none run twice).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from service_slurm import SlurmCluster, slurm_cluster, slurm_config  # noqa: F401
from support import wait_for

import cobalt as ct

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration


@ct.electron(gpu="h100")
def on_gpu(x: int) -> tuple[int, str, str]:
    return x * x, os.environ.get("SLURM_JOB_ID", ""), os.environ.get("COBALT_GPU_TYPE", "")


@ct.electron
def on_cpu(values: list[tuple[int, str, str]]) -> tuple[int, str]:
    return sum(v[0] for v in values), os.environ.get("SLURM_JOB_ID", "")


@ct.lattice
def gpu_then_cpu(n: int) -> tuple[int, str]:
    return on_cpu([on_gpu(i) for i in range(n)])


@ct.electron(gpu="h100", retries=1)
def held(gate: str, log: str) -> str:
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {os.environ.get('SLURM_JOB_ID', '')}\n")
    while not os.path.exists(gate):
        time.sleep(0.02)
    return os.environ.get("SLURM_JOB_ID", "")


@ct.lattice
def one_held(gate: str, log: str) -> str:
    return held(gate, log)


@ct.electron(gpu="h100", time_limit="2s")
def too_slow() -> None:
    time.sleep(60)


@ct.lattice
def slow() -> None:
    return too_slow()


def _runs(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def _task(dispatch_id: str, name: str) -> ct.TaskRecord:
    return next(t for t in ct.get_result(dispatch_id).tasks if t.name == name)


def test_gpu_tasks_run_in_slurm_pilots_and_cpu_tasks_locally(
    make_controller_home: Callable[..., ControllerHome],
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    home = make_controller_home(slurm_config(slurm_cluster))
    home.start()
    began = time.monotonic()
    result = ct.dispatch_sync(gpu_then_cpu)(4)
    took = time.monotonic() - began
    total, cpu_job = result.result
    assert total == sum(i * i for i in range(4))
    assert cpu_job == "", "the CPU task ran locally, outside Slurm"
    gpu_tasks = [t for t in result.tasks if t.name == "on_gpu"]
    assert {t.executor for t in gpu_tasks} == {"hpc"}
    assert all(t.hardware_given.gpu == "h100" for t in gpu_tasks)
    logs = list(slurm_cluster.tmp.glob("cobalt-pilot-*.out"))
    assert logs, "each pilot's own output goes to pilot_log_dir"
    assert not list(Path.cwd().glob("slurm-*.out")), "and never to the working directory"
    print(f"\n4 GPU tasks through Slurm pilots and one local task: {took:.1f} s")


def test_what_no_node_could_ever_run_is_refused_at_dispatch(
    make_controller_home: Callable[..., ControllerHome],
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    home = make_controller_home(slurm_config(slurm_cluster))
    home.start()
    jobs_before = slurm_cluster.job_ids()

    @ct.electron(gpu="h100", gpus=3, executor="hpc")
    def three_gpus() -> None: ...

    @ct.electron(cpus=3, executor="hpc")
    def three_cpus() -> None: ...

    @ct.lattice
    def too_big_gpu() -> None:
        return three_gpus()

    @ct.lattice
    def too_big_cpu() -> None:
        return three_cpus()

    with pytest.raises(ct.UnsatisfiableError, match="3 GPUs of gres type 'h100'"):
        ct.dispatch(too_big_gpu)()
    with pytest.raises(ct.UnsatisfiableError, match="no node has 3 CPUs"):
        ct.dispatch(too_big_cpu)()
    assert slurm_cluster.job_ids() == jobs_before, "nothing was submitted to Slurm"


def test_a_cancelled_task_and_one_past_its_time_limit_are_stopped_in_their_pilot(
    make_controller_home: Callable[..., ControllerHome],
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    home = make_controller_home(slurm_config(slurm_cluster))
    home.start()
    gate, log = tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(one_held)(str(gate), str(log))
    wait_for(lambda: _runs(log), timeout=60, what="the task to start in a pilot")
    pid = int(_runs(log)[0][0])
    ct.cancel(dispatch_id)
    result = ct.get_result(dispatch_id, wait=30)
    assert result.status == ct.Status.CANCELLED
    wait_for(lambda: not _alive(pid), timeout=10, what="the cancelled task's process to end")
    timed = ct.get_result(ct.dispatch(slow)(), wait=60)
    assert _task(timed.dispatch_id, "too_slow").status == ct.Status.TIMED_OUT


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_pilot_cancelled_from_outside_has_its_task_reported_lost_and_retried(
    make_controller_home: Callable[..., ControllerHome],
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    home = make_controller_home(slurm_config(slurm_cluster))
    home.start()
    gate, log = tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(one_held)(str(gate), str(log))
    wait_for(lambda: _runs(log), timeout=60, what="the task to start in a pilot")
    first_job = _runs(log)[0][1]
    slurm_cluster.run("scancel", first_job)
    wait_for(
        lambda: _task(dispatch_id, "held").reason == "agent_lost" or len(_runs(log)) > 1,
        timeout=15,
        what="the task to be reported lost",
    )
    wait_for(lambda: len(_runs(log)) > 1, timeout=60, what="the retry to start on a new pilot")
    gate.touch()
    result = ct.get_result(dispatch_id, wait=60)
    assert result.status == ct.Status.COMPLETED, result.error
    second_job = _runs(log)[1][1]
    assert second_job != first_job and result.result == second_job
    assert _task(dispatch_id, "held").attempts == 2


def test_a_controller_killed_mid_workflow_loses_no_result_and_runs_nothing_twice(
    make_controller_home: Callable[..., ControllerHome],
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    home = make_controller_home(slurm_config(slurm_cluster))
    home.start()
    gate, log = tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(one_held)(str(gate), str(log))
    wait_for(lambda: _runs(log), timeout=60, what="the task to start in a pilot")
    os.kill(home.pid, signal.SIGKILL)
    gate.touch()
    time.sleep(0.5)
    home.start()
    result = ct.get_result(dispatch_id, wait=60)
    assert result.status == ct.Status.COMPLETED, result.error
    assert len(_runs(log)) == 1, "the task ran once"
    assert _task(dispatch_id, "held").attempts == 1


def test_in_job_per_task_mode_each_task_gets_a_job_of_its_own_that_ends_with_it(
    make_controller_home: Callable[..., ControllerHome],
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    config = slurm_config(slurm_cluster, mode="job_per_task", idle_timeout_s=5)
    home = make_controller_home(config)
    home.start()
    result = ct.dispatch_sync(gpu_then_cpu)(2)
    assert result.result[0] == 1
    gpu_tasks = [t for t in result.tasks if t.name == "on_gpu"]
    assert {t.executor for t in gpu_tasks} == {"hpc"}
    wait_for(
        lambda: not slurm_cluster.job_ids(),
        timeout=30,
        what="each task's job to end with its task",
    )
