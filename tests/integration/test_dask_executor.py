"""The Dask executor on a real Dask cluster on loopback (``dask scheduler`` and one
``dask worker`` of 2 threads, 4 GiB and ``GPU=2`` under its nanny;
``tests/service_dask.py``), with a real controller started by the CLI.

Covered: a workflow whose GPU tasks run in the agent on the Dask worker (its GPU
resources as emulated H100s) and CPU tasks locally; a GPU count beyond any
worker, refused at dispatch; cancel and a time limit, which stop the running
process; and a Dask worker killed mid-task: its task is reported lost and retried
on the worker that its nanny starts in its place.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from agent_support import ServedRig
from executor_contract import Reports
from service_dask import GPU_RESOURCE, DaskCluster, dask_cluster, dask_config  # noqa: F401
from support import wait_for
from test_local_executor_contract import _contract_task, _payload

import cobalt as ct
from cobalt_common.hardware import HardwareSpec
from cobalt_executors.base import TaskSubmission
from cobalt_executors.dask import DaskExecutor

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration


def _ancestors() -> list[int]:
    """This process's parents, nearest first."""
    pids, pid = [], os.getppid()
    while pid > 1:
        pids.append(pid)
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    return pids


@ct.electron(gpu="h100")
def on_gpu(x: int) -> tuple[int, list[int], str]:
    return x * x, _ancestors(), os.environ.get("COBALT_GPU_TYPE", "")


@ct.electron
def on_cpu(
    values: list[tuple[int, list[int], str]],
) -> tuple[int, list[int], list[list[int]]]:
    return sum(v[0] for v in values), _ancestors(), [v[1] for v in values]


@ct.lattice
def gpu_then_cpu(n: int) -> tuple[int, list[int], list[list[int]]]:
    return on_cpu([on_gpu(i) for i in range(n)])


@ct.electron(gpu="h100", retries=1)
def held(gate: str, log: str) -> list[int]:
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {' '.join(map(str, _ancestors()))}\n")
    while not os.path.exists(gate):
        time.sleep(0.02)
    return _ancestors()


@ct.lattice
def one_held(gate: str, log: str) -> list[int]:
    return held(gate, log)


@ct.electron(gpu="h100", time_limit="2s")
def too_slow(log: str) -> None:
    with open(log, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)


@ct.lattice
def slow(log: str) -> None:
    return too_slow(log)


def _runs(log: Path) -> list[list[int]]:
    if not log.exists():
        return []
    return [[int(p) for p in line.split()] for line in log.read_text().splitlines()]


def _task(dispatch_id: str, name: str) -> ct.TaskRecord:
    return next(t for t in ct.get_result(dispatch_id).tasks if t.name == name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _worker_pids(cluster: DaskCluster) -> set[int]:
    return set(cluster.worker_pids().values())


def test_gpu_tasks_run_on_the_dask_worker_and_cpu_tasks_locally(
    make_controller_home: Callable[..., ControllerHome],
    dask_cluster: DaskCluster,  # noqa: F811
) -> None:
    home = make_controller_home(dask_config(dask_cluster))
    home.start()
    workers = _worker_pids(dask_cluster)
    began = time.monotonic()
    result = ct.dispatch_sync(gpu_then_cpu)(4)
    took = time.monotonic() - began
    assert result.status == ct.Status.COMPLETED, result.error
    total, cpu_parents, gpu_parents = result.result
    assert total == sum(i * i for i in range(4))
    assert not workers & set(cpu_parents), "the CPU task ran locally, outside Dask"
    gpu_tasks = [t for t in result.tasks if t.name == "on_gpu"]
    assert {t.executor for t in gpu_tasks} == {"gpus"}
    assert all(t.hardware_given.gpu == "h100" and t.hardware_given.emulated for t in gpu_tasks)
    assert all(workers & set(p) for p in gpu_parents), "each ran under the Dask worker"
    print(f"\n4 GPU tasks through the Dask executor and one local task: {took:.1f} s")


def test_more_gpus_than_any_worker_has_are_refused_at_dispatch(
    make_controller_home: Callable[..., ControllerHome],
    dask_cluster: DaskCluster,  # noqa: F811
) -> None:
    home = make_controller_home(dask_config(dask_cluster))
    home.start()

    @ct.electron(gpu="h100", gpus=3, executor="gpus")
    def three_gpus() -> None: ...

    @ct.lattice
    def too_big() -> None:
        return three_gpus()

    with pytest.raises(ct.UnsatisfiableError, match="2x h100"):
        ct.dispatch(too_big)()


def test_a_cancelled_task_and_one_past_its_time_limit_are_stopped_on_the_worker(
    make_controller_home: Callable[..., ControllerHome],
    dask_cluster: DaskCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    home = make_controller_home(dask_config(dask_cluster))
    home.start()
    gate, log = tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(one_held)(str(gate), str(log))
    wait_for(lambda: _runs(log), timeout=60, what="the task to start on the Dask worker")
    pid = _runs(log)[0][0]
    ct.cancel(dispatch_id)
    result = ct.get_result(dispatch_id, wait=30)
    assert result.status == ct.Status.CANCELLED
    wait_for(lambda: not _alive(pid), timeout=10, what="the cancelled task's process to end")
    slow_log = tmp_path / "slow"
    timed = ct.get_result(ct.dispatch(slow)(str(slow_log)), wait=60)
    assert _task(timed.dispatch_id, "too_slow").status == ct.Status.TIMED_OUT
    slow_pid = int(slow_log.read_text())
    wait_for(lambda: not _alive(slow_pid), timeout=10, what="the timed-out process to end")


def test_a_dask_worker_killed_mid_task_has_its_task_reported_lost_and_retried(
    make_controller_home: Callable[..., ControllerHome],
    dask_cluster: DaskCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    home = make_controller_home(dask_config(dask_cluster))
    home.start()
    gate, log = tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(one_held)(str(gate), str(log))
    wait_for(lambda: _runs(log), timeout=60, what="the task to start on the Dask worker")
    first_pid, *first_parents = _runs(log)[0]
    (killed,) = _worker_pids(dask_cluster) & set(first_parents)
    os.kill(killed, signal.SIGKILL)
    wait_for(
        lambda: _task(dispatch_id, "held").reason == "agent_lost" or len(_runs(log)) > 1,
        timeout=30,
        what="the task to be reported lost",
    )
    wait_for(lambda: not _alive(first_pid), timeout=15, what="the first attempt's process to end")
    wait_for(
        lambda: len(_runs(log)) > 1, timeout=60, what="the retry to start on the new Dask worker"
    )
    gate.touch()
    result = ct.get_result(dispatch_id, wait=60)
    assert result.status == ct.Status.COMPLETED, result.error
    assert killed not in result.result, "the retry ran under the worker the nanny restarted"
    assert _worker_pids(dask_cluster) & set(result.result)
    assert _task(dispatch_id, "held").attempts == 2


def _agent_of(parents: list[int]) -> int:
    """The cobalt agent among a task process's parents."""
    for pid in parents:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"cobalt_executors.agent" in f.read():
                return pid
    raise AssertionError(f"no cobalt agent among {parents}")


def test_a_killed_controller_leaves_no_agent_behind_and_its_task_is_retried_after_restart(
    make_controller_home: Callable[..., ControllerHome],
    dask_cluster: DaskCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    home = make_controller_home(dask_config(dask_cluster, "reconnect_grace_s = 1\n"))
    home.start()
    gate, log = tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(one_held)(str(gate), str(log))
    wait_for(lambda: _runs(log), timeout=60, what="the task to start on the Dask worker")
    first_pid, *first_parents = _runs(log)[0]
    agent = _agent_of(first_parents)
    os.kill(home.pid, signal.SIGKILL)
    wait_for(lambda: not _alive(agent), timeout=30, what="the orphaned agent to stop")
    wait_for(lambda: not _alive(first_pid), timeout=10, what="and its task's process with it")
    home.start()
    wait_for(lambda: len(_runs(log)) > 1, timeout=60, what="the retry to start on a new agent")
    gate.touch()
    result = ct.get_result(dispatch_id, wait=60)
    assert result.status == ct.Status.COMPLETED, result.error
    assert agent not in result.result
    assert _task(dispatch_id, "held").attempts == 2


def test_workers_whose_agent_cannot_start_refuse_tasks_with_the_reason(
    dask_cluster: DaskCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    options = {
        "address": dask_cluster.address,
        "gpu_resources": {"h100": GPU_RESOURCE},
        "python": str(tmp_path / "no-such-python"),
    }
    reports = Reports()
    rig = ServedRig(tmp_path, DaskExecutor("broken", options), reports)
    executor = rig.executor
    reports.executor = executor
    try:
        wait_for(executor.unavailable, timeout=30, what="the agent's failure to be noticed")
        spec = HardwareSpec(cpus=1)
        assert not executor.can_ever_run(spec)
        assert "no-such-python" in executor.capacity_words(spec)
        task = TaskSubmission(
            task_key="t1",
            dispatch_id="d",
            node_id=0,
            name="t1",
            hardware=spec,
            function=_payload(_contract_task),
            args=[],
        )
        assert executor.try_submit(task) is not None, "taken, to be failed at once"
        outcome = reports.wait("t1")["t1"]
        assert outcome.status == ct.Status.FAILED and outcome.reason == "agent_failed"
        assert "see that worker's log" in outcome.error
    finally:
        rig.close()
