"""The Ray executor on a real single-node Ray cluster (``ray start --head`` confined
to loopback; 4 CPUs, 8192 MB, two L4s as the custom resource ``GPU_L4``), with a
real controller started by the CLI.

Covered: a workflow whose GPU tasks run through an agent in a Ray actor and CPU
task locally; a GPU or CPU count beyond the node, refused at dispatch; cancel; a
time limit; and an agent's Ray actor killed from outside (its task reported lost
and retried on the agent started in its place).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest
from agent_support import ServedRig
from executor_contract import Reports
from service_ray import RayCluster, ray_cluster, ray_config, why_ray_cannot_start  # noqa: F401
from support import wait_for

import cobalt as ct
from cobalt_common.hardware import HardwareSpec
from cobalt_executors.ray import _executor
from cobalt_executors.ray._executor import RayExecutor

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration


def _ray_actor() -> int:
    """The pid of the Ray worker this process runs under (the agent's actor), or 0."""
    import psutil

    for parent in psutil.Process().parents():
        if parent.name().startswith("ray::") or " ".join(parent.cmdline()).startswith("ray::"):
            return parent.pid
    return 0


@ct.electron(gpu="l4")
def on_gpu(x: int) -> tuple[int, int, str]:
    return x * x, _ray_actor(), os.environ.get("COBALT_GPU_TYPE", "")


@ct.electron
def on_cpu(values: list[tuple[int, int, str]]) -> tuple[int, int]:
    return sum(v[0] for v in values), _ray_actor()


@ct.lattice
def gpu_then_cpu(n: int) -> tuple[int, int]:
    return on_cpu([on_gpu(i) for i in range(n)])


@ct.electron(gpu="l4", retries=1)
def held(gate: str, log: str) -> int:
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {_ray_actor()}\n")
    while not os.path.exists(gate):
        time.sleep(0.02)
    return _ray_actor()


@ct.lattice
def one_held(gate: str, log: str) -> int:
    return held(gate, log)


@ct.electron(gpu="l4", time_limit="2s")
def too_slow() -> None:
    time.sleep(60)


@ct.lattice
def slow() -> None:
    return too_slow()


@pytest.fixture
def on_loopback(ray_cluster: RayCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[RayCluster]:  # noqa: F811
    """The cluster, with the controller's Ray driver kept on loopback too."""
    for key, value in ray_cluster.driver_env.items():
        monkeypatch.setenv(key, value)
    yield ray_cluster


def _runs(log: Path) -> list[list[int]]:
    if not log.exists():
        return []
    return [[int(word) for word in line.split()] for line in log.read_text().splitlines()]


def _task(dispatch_id: str, name: str) -> ct.TaskRecord:
    return next(t for t in ct.get_result(dispatch_id).tasks if t.name == name)


def _alive(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def test_gpu_tasks_run_through_an_agent_in_a_ray_actor_and_cpu_tasks_locally(
    make_controller_home: Callable[..., ControllerHome],
    on_loopback: RayCluster,
) -> None:
    home = make_controller_home(ray_config(on_loopback))
    home.start()
    began = time.monotonic()
    result = ct.dispatch_sync(gpu_then_cpu)(4)
    took = time.monotonic() - began
    assert result.status == ct.Status.COMPLETED, result.error
    total, cpu_actor = result.result
    assert total == sum(i * i for i in range(4))
    assert cpu_actor == 0, "the CPU task ran locally, outside Ray"
    gpu_tasks = [t for t in result.tasks if t.name == "on_gpu"]
    assert {t.executor for t in gpu_tasks} == {"cluster"}
    assert all(t.hardware_given.gpu == "l4" for t in gpu_tasks)
    print(f"\n4 GPU tasks through a Ray actor's agent and one local task: {took:.1f} s")


def test_gpu_tasks_run_under_the_ray_actor_with_their_emulated_gpu(
    make_controller_home: Callable[..., ControllerHome],
    on_loopback: RayCluster,
) -> None:
    home = make_controller_home(ray_config(on_loopback))
    home.start()

    @ct.lattice
    def one(x: int) -> tuple[int, int, str]:
        return on_gpu(x)

    result = ct.dispatch_sync(one)(3)
    assert result.status == ct.Status.COMPLETED, result.error
    square, actor, gpu_type = result.result
    assert square == 9
    assert actor != 0, "the task's process descends from a Ray worker (the agent's actor)"
    assert gpu_type == "l4"


def test_what_no_ray_node_could_ever_run_is_refused_at_dispatch(
    make_controller_home: Callable[..., ControllerHome],
    on_loopback: RayCluster,
) -> None:
    home = make_controller_home(ray_config(on_loopback))
    home.start()

    @ct.electron(gpu="l4", gpus=3, executor="cluster")
    def three_gpus() -> None: ...

    @ct.electron(cpus=5, executor="cluster")
    def five_cpus() -> None: ...

    @ct.lattice
    def too_big_gpu() -> None:
        return three_gpus()

    @ct.lattice
    def too_big_cpu() -> None:
        return five_cpus()

    with pytest.raises(ct.UnsatisfiableError, match=r"Ray nodes: 4 CPUs, 8192 MB, 2 x l4"):
        ct.dispatch(too_big_gpu)()
    with pytest.raises(ct.UnsatisfiableError, match=r"Ray nodes: 4 CPUs"):
        ct.dispatch(too_big_cpu)()


def test_a_cancelled_task_and_one_past_its_time_limit_are_stopped_in_their_agent(
    make_controller_home: Callable[..., ControllerHome],
    on_loopback: RayCluster,
    tmp_path: Path,
) -> None:
    home = make_controller_home(ray_config(on_loopback))
    home.start()
    gate, log = tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(one_held)(str(gate), str(log))
    wait_for(lambda: _runs(log), timeout=60, what="the task to start on a Ray node")
    pid, actor = _runs(log)[0]
    assert actor != 0, "it runs under the agent's Ray actor"
    ct.cancel(dispatch_id)
    result = ct.get_result(dispatch_id, wait=30)
    assert result.status == ct.Status.CANCELLED
    wait_for(lambda: not _alive(pid), timeout=10, what="the cancelled task's process to end")
    timed = ct.get_result(ct.dispatch(slow)(), wait=60)
    assert _task(timed.dispatch_id, "too_slow").status == ct.Status.TIMED_OUT


def test_an_agent_whose_ray_actor_is_killed_has_its_task_reported_lost_and_retried(
    make_controller_home: Callable[..., ControllerHome],
    on_loopback: RayCluster,
    tmp_path: Path,
) -> None:
    home = make_controller_home(ray_config(on_loopback))
    home.start()
    gate, log = tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(one_held)(str(gate), str(log))
    wait_for(lambda: _runs(log), timeout=60, what="the task to start on a Ray node")
    first_pid, first_actor = _runs(log)[0]
    os.kill(first_actor, signal.SIGKILL)
    wait_for(lambda: not _alive(first_pid), timeout=15, what="the task to die with its actor")
    wait_for(
        lambda: _task(dispatch_id, "held").reason == "agent_lost" or len(_runs(log)) > 1,
        timeout=15,
        what="the task to be reported lost",
    )
    wait_for(lambda: len(_runs(log)) > 1, timeout=60, what="the retry to start on a new agent")
    gate.touch()
    result = ct.get_result(dispatch_id, wait=60)
    assert result.status == ct.Status.COMPLETED, result.error
    second_actor = _runs(log)[1][1]
    assert second_actor not in (0, first_actor) and result.result == second_actor
    assert _task(dispatch_id, "held").attempts == 2


def test_a_cluster_that_does_not_answer_leaves_tasks_refused_with_the_reason(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    requires_service: Callable[..., None],
) -> None:
    why = why_ray_cannot_start()
    requires_service("Ray", not why, why)
    monkeypatch.setattr(_executor, "CONNECT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(_executor, "_STOP_DRIVER_S", 2.0)
    with socket.socket() as sock:  # a loopback port where nothing listens
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        executor = RayExecutor("cluster", {"address": address})
        began = time.monotonic()
        rig = ServedRig(tmp_path, executor, Reports())
        try:
            assert time.monotonic() - began < 10, "setup does not wait for Ray's own timeout"
            spec = HardwareSpec(cpus=1)
            assert not executor.can_ever_run(spec)
            assert executor.capacity_words(spec) == (
                f"the Ray cluster at {address} cannot be read: "
                f"still connecting to the Ray cluster at {address}"
            )
        finally:
            rig.close()
    assert executor._driver is not None and executor._driver.poll() is not None, "driver ended"
