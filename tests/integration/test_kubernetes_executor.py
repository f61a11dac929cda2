"""The Kubernetes executor end to end, on the fake API server of
``tests/service_kubernetes.py`` (the real ``kubernetes`` client over HTTP; each pod's
container runs as a local process), with a real controller started by the CLI.

Covered: GPU tasks in pilot pods while a CPU task runs locally, every manifest valid
in strict mode, each pilot's Secret deleted with it; a task beyond the largest node
refused at dispatch; a pod Pending while no node has room waits, and runs once a node
is added (as an autoscaler would); a quota refusal, an image that cannot be pulled and
a pod that ends before its agent attached each fail the task at once with the
cluster's reason; an evicted pod's task is retried on a new pod and completes; in
job-per-task mode each task gets a Job, deleted with ``propagationPolicy=Background``;
a Job whose pod the quota refuses fails its task with the ``FailedCreate`` message; a
deployment's replica answers from a pod through the gateway; a controller killed
while a pod runs a task takes the pod back and the task runs once.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from kube_fake import FakeKubernetes
from service_kubernetes import NAMESPACE, kube, kube_options  # noqa: F401
from support import wait_for

import cobalt as ct

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration


@ct.electron(gpu="l4")
def on_gpu(x: int) -> tuple[int, str, str]:
    return x * x, os.environ.get("HOSTNAME", ""), os.environ.get("COBALT_GPU_TYPE", "")


@ct.electron
def on_cpu(values: list[tuple[int, str, str]]) -> tuple[int, str]:
    return sum(v[0] for v in values), os.environ.get("HOSTNAME", "")


@ct.lattice
def gpu_then_cpu(n: int) -> tuple[tuple[int, str], list[tuple[int, str, str]]]:
    squares = [on_gpu(i) for i in range(n)]
    return on_cpu(squares), squares


@ct.electron(executor="k8s", cpus=1)
def where() -> str:
    return os.environ.get("HOSTNAME", "")


@ct.lattice
def one_task() -> str:
    return where()


@ct.lattice
def two_tasks() -> list[str]:
    return [where(), where()]


@ct.electron(executor="k8s", cpus=3)
def big() -> str:
    return os.environ.get("HOSTNAME", "")


@ct.lattice
def one_big() -> str:
    return big()


@ct.electron(executor="k8s", retries=1)
def held(gate: str, log: str) -> str:
    with open(log, "a") as f:
        f.write(f"{os.environ.get('HOSTNAME', '')}\n")
    while not os.path.exists(gate):
        time.sleep(0.02)
    return os.environ.get("HOSTNAME", "")


@ct.lattice
def one_held(gate: str, log: str) -> str:
    return held(gate, log)


@ct.service(name="in-pod", executor="k8s", cpus=1, min_replicas=1, max_replicas=1)
def in_pod() -> dict[str, Any]:
    return {"started_in": os.getpid()}


@in_pod.endpoint("/where")
def pod_where(started_in: int) -> dict[str, Any]:
    return {"pod": os.environ.get("HOSTNAME", ""), "pid": os.getpid(), "started": started_in}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_value(v)}' for k, v in value.items()) + " }"
    return str(value)


def _home(
    make: Callable[..., ControllerHome],
    fake: FakeKubernetes,
    tmp_path: Path,
    *,
    gateway: bool = False,
    **options: Any,
) -> ControllerHome:
    table = kube_options(fake, tmp_path, idle_timeout_s=1, **options)
    front = (
        'gateway_address = "127.0.0.1:0"\nautoscale_interval_s = 0.2'
        if gateway
        else ('gateway_address = ""')
    )
    home = make(
        f"""\
[controller]
address = "127.0.0.1:{_free_port()}"
dashboard_address = ""
{front}
retry_backoff_s = 0.05

[executors.local]
type = "local"
workers = 1

[executors.k8s]
type = "kubernetes"
"""
        + "".join(f"{k} = {_value(v)}\n" for k, v in table.items())
    )
    home.start()
    return home


def _gone(fake: FakeKubernetes) -> bool:
    return not fake.pods(NAMESPACE) and not fake.processes() and not _secrets(fake)


def _secrets(fake: FakeKubernetes) -> list[str]:
    created = {
        r.body["metadata"]["name"]
        for r in fake.requests
        if r.method == "POST" and r.path.endswith("/secrets") and isinstance(r.body, dict)
    }
    deleted = {
        r.path.rsplit("/", 1)[-1]
        for r in fake.requests
        if r.method == "DELETE" and "/secrets/" in r.path
    }
    return sorted(created - deleted)


def _failed(result: ct.Result) -> ct.TaskRecord:
    (task,) = [t for t in result.tasks if t.status == ct.Status.FAILED]
    return task


def test_gpu_tasks_run_in_pilot_pods_and_their_secrets_go_with_them(
    make_controller_home: Callable[..., ControllerHome],
    kube: FakeKubernetes,  # noqa: F811
    tmp_path: Path,
) -> None:
    _home(make_controller_home, kube, tmp_path)
    result = ct.dispatch_sync(gpu_then_cpu)(4)
    assert result.status == ct.Status.COMPLETED, result.error
    (total, cpu_host), squares = result.result
    assert total == 14
    gpu_tasks = [t for t in result.tasks if t.name == "on_gpu"]
    assert {t.executor for t in gpu_tasks} == {"k8s"}
    created = [r.body for r in kube.requests if r.method == "POST" and r.path.endswith("/pods")]
    assert created, "pilot pods were created"
    names = set()
    for pod in created:
        container = pod["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
        assert "COBALT_AGENT_TOKEN" not in " ".join(container["command"])
        names.add(pod["metadata"]["name"])
    assert {pod for _, pod, _ in squares} <= names, "each GPU task ran in a pilot pod"
    assert {gpu for _, _, gpu in squares} == {"l4"}
    assert cpu_host not in names, "the CPU task ran on the local executor"
    wait_for(lambda: _gone(kube), timeout=20, what="the idle pilot and its Secret to go")


def test_a_pod_pending_for_a_node_waits_and_runs_once_a_node_is_added(
    make_controller_home: Callable[..., ControllerHome],
    kube: FakeKubernetes,  # noqa: F811
    tmp_path: Path,
) -> None:
    _home(make_controller_home, kube, tmp_path, largest_node={"cpus": 16, "memory": "64GB"})
    dispatch_id = ct.dispatch(one_big)()
    wait_for(
        lambda: any(
            (c.get("reason") == "Unschedulable")
            for p in kube.pods(NAMESPACE)
            for c in p["status"].get("conditions", [])
        ),
        timeout=20,
        what="the pilot pod to wait for a node",
    )
    time.sleep(2)
    status = ct.get_result(dispatch_id).status
    assert status in (ct.Status.PENDING, ct.Status.RUNNING), f"waiting, not {status}"
    kube.add_node("cpu-node-2", cpus=8, memory_mb=16384)  # as an autoscaler would
    result = ct.get_result(dispatch_id, wait=True)
    assert result.status == ct.Status.COMPLETED, result.error
    (pod,) = kube.pods(NAMESPACE)
    assert pod["spec"]["nodeName"] == "cpu-node-2"


def test_a_task_beyond_the_largest_node_is_refused_at_dispatch(
    make_controller_home: Callable[..., ControllerHome],
    kube: FakeKubernetes,  # noqa: F811
    tmp_path: Path,
) -> None:
    _home(make_controller_home, kube, tmp_path, largest_node={"cpus": 2, "memory": "8GB"})
    with pytest.raises(ct.UnsatisfiableError, match="3 CPUs is more than the largest node"):
        ct.dispatch(one_big)()
    assert not kube.pods(NAMESPACE), "nothing was asked of the cluster"


@pytest.mark.parametrize("mode", ["pilot", "job_per_task"])
def test_a_quota_refusal_fails_the_task_at_once_with_the_api_servers_reason(
    mode: str,
    make_controller_home: Callable[..., ControllerHome],
    kube: FakeKubernetes,  # noqa: F811
    tmp_path: Path,
) -> None:
    kube.set_quota(NAMESPACE, cpus=0.5)
    _home(make_controller_home, kube, tmp_path, mode=mode)
    started = time.monotonic()
    result = ct.dispatch_sync(one_task, raise_on_failure=False)()
    assert result.status == ct.Status.FAILED
    task = _failed(result)
    assert "exceeded quota" in (task.error or ""), task.error
    if mode == "job_per_task":
        assert "could not create its pod" in (task.error or ""), "the Job's FailedCreate"
    assert time.monotonic() - started < 20, "at once, not after a timeout"
    wait_for(lambda: _gone(kube), timeout=20, what="the refused pilot's Secret and Job to go")


def test_an_image_that_cannot_be_pulled_fails_the_task_with_the_pull_error(
    make_controller_home: Callable[..., ControllerHome],
    kube: FakeKubernetes,  # noqa: F811
    tmp_path: Path,
) -> None:
    _home(make_controller_home, kube, tmp_path, image="registry.example/cobalt-worker:typo")
    result = ct.dispatch_sync(one_task, raise_on_failure=False)()
    task = _failed(result)
    assert "image could not be pulled" in (task.error or ""), task.error
    assert "ErrImagePull" in (task.error or "") or "ImagePullBackOff" in (task.error or "")
    wait_for(lambda: _gone(kube), timeout=20, what="the pod that could not pull to go")


def test_a_pod_that_ends_before_its_agent_attached_fails_the_task_with_its_exit(
    make_controller_home: Callable[..., ControllerHome],
    kube: FakeKubernetes,  # noqa: F811
    tmp_path: Path,
) -> None:
    _home(make_controller_home, kube, tmp_path, python="/bin/false")
    result = ct.dispatch_sync(one_task, raise_on_failure=False)()
    task = _failed(result)
    assert "ended before its agent attached" in (task.error or ""), task.error
    assert "exit code 1" in (task.error or ""), task.error


def test_an_evicted_pods_task_is_retried_on_a_new_pod_and_completes(
    make_controller_home: Callable[..., ControllerHome],
    kube: FakeKubernetes,  # noqa: F811
    tmp_path: Path,
) -> None:
    _home(make_controller_home, kube, tmp_path)
    gate, log = tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(one_held)(str(gate), str(log))
    wait_for(lambda: log.exists(), timeout=30, what="the task to start in a pod")
    (first,) = log.read_text().split()
    kube.evict(first)
    wait_for(lambda: len(log.read_text().split()) == 2, timeout=30, what="the retry on a new pod")
    gate.touch()
    result = ct.get_result(dispatch_id, wait=True)
    assert result.status == ct.Status.COMPLETED, result.error
    second = result.result
    assert second != first, "the retry ran in a new pod"
    (task,) = result.tasks
    assert task.attempts == 2
    evicted = kube.get("pods", NAMESPACE, first)
    assert evicted is None or evicted["status"]["reason"] == "Evicted"


def test_in_job_per_task_mode_each_task_gets_a_job_deleted_in_the_background(
    make_controller_home: Callable[..., ControllerHome],
    kube: FakeKubernetes,  # noqa: F811
    tmp_path: Path,
) -> None:
    _home(make_controller_home, kube, tmp_path, mode="job_per_task")
    result = ct.dispatch_sync(two_tasks)()
    first, second = result.result
    assert first != second, "each task in a pod of its own"
    jobs = [r for r in kube.requests if r.method == "POST" and r.path.endswith("/jobs")]
    assert len(jobs) == 2
    assert all(j.body["spec"]["backoffLimit"] == 0 for j in jobs)
    wait_for(lambda: _gone(kube) and not kube.jobs(NAMESPACE), timeout=20, what="the Jobs to go")
    deletes = [r for r in kube.requests if r.method == "DELETE" and "/jobs/" in r.path]
    assert deletes and all(
        "Background" in (r.query.get("propagationPolicy", "") + str(r.body)) for r in deletes
    )


def test_a_replica_runs_in_a_pod_and_answers_through_the_gateway(
    make_controller_home: Callable[..., ControllerHome],
    kube: FakeKubernetes,  # noqa: F811
    tmp_path: Path,
) -> None:
    _home(make_controller_home, kube, tmp_path, gateway=True)
    with ct.deploy(in_pod)() as deployment:
        answer = deployment.pod_where()
        assert answer["pid"] == answer["started"]
        assert kube.get("pods", NAMESPACE, answer["pod"]) is not None, "it runs in a pod"
        with httpx.Client(timeout=30, trust_env=False) as http:
            refused = http.post(f"{deployment.url}/where", json={})
        assert refused.status_code == 401, "the gateway still asks for the deployment's token"
        time.sleep(3)  # three idle timeouts
        assert kube.get("pods", NAMESPACE, answer["pod"]) is not None, "a replica is not idle"
    wait_for(lambda: _gone(kube), timeout=30, what="the replica's pod to go with it")


def test_a_gpu_type_with_no_gpu_types_entry_is_refused_with_what_to_add(
    make_controller_home: Callable[..., ControllerHome],
    kube: FakeKubernetes,  # noqa: F811
    tmp_path: Path,
) -> None:
    _home(make_controller_home, kube, tmp_path, gpu_types={"h100": "NVIDIA-H100"})
    with pytest.raises(ct.UnsatisfiableError, match="no gpu_types entry for 'l4'"):
        ct.dispatch(gpu_then_cpu)(1)


def test_a_controller_killed_while_a_pod_runs_a_task_takes_the_pod_back_and_loses_nothing(
    make_controller_home: Callable[..., ControllerHome],
    kube: FakeKubernetes,  # noqa: F811
    tmp_path: Path,
) -> None:
    home = _home(make_controller_home, kube, tmp_path)
    gate, log = tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(one_held)(str(gate), str(log))
    wait_for(lambda: log.exists(), timeout=30, what="the task to start in a pod")
    os.kill(home.pid, signal.SIGKILL)
    gate.touch()
    time.sleep(0.5)
    home.start()
    result = ct.get_result(dispatch_id, wait=60)
    assert result.status == ct.Status.COMPLETED, result.error
    (pod,) = log.read_text().split()
    assert result.result == pod, "the task ran once, in the pod it started in"
    (task,) = result.tasks
    assert task.attempts == 1
    wait_for(lambda: _gone(kube), timeout=30, what="the adopted pod to be released when idle")
