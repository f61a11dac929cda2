"""Agents that dial in, end to end: a real controller (started with the CLI), real
agent processes (``python -m cobalt_executors.agent``) and real workflows.

Covered: tasks run on an agent attached by hand; an agent killed with SIGKILL has
its task reported ``agent_lost`` within about a second and retried elsewhere; a
controller killed while an agent runs a task loses no result and records none
twice; a client whose versions differ from the agent's gets a message naming both;
credentials that are wrong or for another executor are refused.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from agent_process import (  # noqa: F401
    AgentProcess,
    agents,
    agents_config,
    connected,
    free_port,
    machine_address,
)
from service_s3 import S3Server, s3_server_fixture  # noqa: F401
from support import wait_for

import cobalt as ct
from cobalt import _submit
from cobalt_common.processes import pid_running

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration


@ct.electron(executor="remote", retries=1)
def held(gate: str, log: str) -> str:
    """Appends this run to ``log``, then waits for ``gate`` to exist."""
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    while not os.path.exists(gate):
        time.sleep(0.02)
    return socket.gethostname()


@ct.lattice
def one_held(gate: str, log: str) -> str:
    return held(gate, log)


@ct.lattice
def held_after(first_gate: str, gate: str, log: str) -> str:
    """:func:`held` once a first task, held at ``first_gate``, has ended."""
    first = held(first_gate, log)
    second = held(gate, f"{log}.second")
    ct.wait(second, [first])
    return second


@ct.electron(executor="remote")
def held_then_asks(gate: str, log: str) -> str:
    """As :func:`held`, then asks the controller, with the attempt's own credential,
    how its own dispatch stands."""
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    while not os.path.exists(gate):
        time.sleep(0.02)
    return str(ct.get_result(os.environ["COBALT_DISPATCH_ID"]).status)


@ct.lattice
def one_asking(gate: str, log: str) -> str:
    return held_then_asks(gate, log)


@ct.electron(executor="remote")
def double(x: int) -> tuple[int, str]:
    return 2 * x, os.environ.get("COBALT_GPU_TYPE", "")


@ct.electron(executor="remote", gpu="h100")
def on_gpu(x: int) -> tuple[int, str]:
    return x, os.environ.get("COBALT_GPU_TYPE", "")


@ct.lattice
def just_double(x: int) -> tuple[int, str]:
    return double(x)


@ct.electron
def big(n: int) -> bytes:
    return b"b" * n


@ct.electron(executor="remote")
def length(data: bytes) -> tuple[int, bytes]:
    return len(data), b"r" * 300_000


@ct.lattice
def mixed(x: int) -> tuple[object, ...]:
    return double(x), on_gpu(x), length(big(400_000))


def _task(dispatch_id: str, name: str) -> ct.TaskRecord:
    return next(t for t in ct.get_result(dispatch_id).tasks if t.name == name)


@pytest.mark.parametrize("payloads", ["shared", "streamed"])
def test_a_workflow_runs_on_an_agent_attached_by_hand_with_payloads_shared_or_streamed(
    make_controller_home: Callable[..., ControllerHome],
    agents: Callable[..., AgentProcess],  # noqa: F811
    payloads: str,
) -> None:
    home = make_controller_home(agents_config(free_port()))
    home.start()
    args = ["--emulate-gpus", '{"h100": 1}']
    if payloads == "streamed":
        args.append("--stream-payloads")
    agent = agents(home, *args)
    wait_for(connected(home, 1), timeout=30, what=f"the agent to attach: {agent.output()}")
    result = ct.dispatch_sync(mixed)(21)
    assert result.status == ct.Status.COMPLETED, result.error
    (doubled, _), (x, gpu), (n, reply) = result.result
    assert (doubled, x, gpu, n, len(reply)) == (42, 21, "h100", 400_000, 300_000)
    assert {t.executor for t in result.tasks if t.name != "big"} == {"remote"}
    fetched = [p for p in (agent.log.parent / "blobs").rglob("*") if p.is_file()]
    if payloads == "streamed":
        assert fetched, "the agent fetched the large argument through the controller"
    else:
        assert not fetched, "the agent read the controller's blob directory itself"


@pytest.mark.parametrize(("how", "within_s"), [("killed", 1.5), ("frozen", 12.0)])
def test_an_agent_killed_or_gone_silent_has_its_task_reported_lost_and_retried_elsewhere(
    make_controller_home: Callable[..., ControllerHome],
    agents: Callable[..., AgentProcess],  # noqa: F811
    tmp_path: Path,
    how: str,
    within_s: float,
) -> None:
    """Killed, an agent's stream closes at once. A machine that vanishes (switched off,
    cut off) closes nothing: its stream looks open until pings go unanswered;
    SIGSTOP does the same to an agent."""
    home = make_controller_home(agents_config(free_port()))
    home.start()
    first = agents(home)
    wait_for(connected(home, 1), timeout=30, what="the first agent to attach")
    gate, log = tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(one_held)(str(gate), str(log))
    wait_for(lambda: log.exists(), timeout=30, what="the task to start on the agent")
    os.killpg(first.proc.pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
    gone = time.monotonic()
    try:
        wait_for(
            lambda: _task(dispatch_id, "held").reason == "agent_lost",
            timeout=within_s + 10,
            interval=0.02,
            what="the task to be reported lost",
        )
        noticed = time.monotonic() - gone
        assert noticed < within_s, f"the lost agent was noticed after {noticed:.2f}s"
    finally:
        if how == "frozen":
            os.killpg(first.proc.pid, signal.SIGKILL)
            os.killpg(first.proc.pid, signal.SIGCONT)
    orphan = int(log.read_text().split()[0])
    wait_for(
        lambda: not pid_running(orphan),
        timeout=10,
        what="the lost agent's worker to end its task: it runs again elsewhere",
    )
    agents(home)
    gate.touch()
    result = ct.get_result(dispatch_id, wait=60)
    assert result.status == ct.Status.COMPLETED, result.error
    record = _task(dispatch_id, "held")
    assert record.attempts == 2
    assert len(log.read_text().split()) == 2
    print(f"\nagent {how}: its task was reported agent_lost {noticed * 1000:.0f} ms later")


def test_a_controller_killed_while_an_agent_runs_a_task_loses_no_result_and_records_none_twice(
    make_controller_home: Callable[..., ControllerHome],
    agents: Callable[..., AgentProcess],  # noqa: F811
    tmp_path: Path,
) -> None:
    home = make_controller_home(agents_config(free_port()))
    home.start()
    agent = agents(home)
    wait_for(connected(home, 1), timeout=30, what="the agent to attach")
    gate, log = tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(one_held)(str(gate), str(log))
    wait_for(lambda: log.exists(), timeout=30, what="the task to start on the agent")
    os.kill(home.pid, signal.SIGKILL)
    gate.touch()  # the task ends while no controller listens: the agent keeps its outcome
    time.sleep(0.5)
    home.start()
    result = ct.get_result(dispatch_id, wait=60)
    assert result.status == ct.Status.COMPLETED, f"{result.error}\n{agent.output()}"
    assert result.result == socket.gethostname()
    record = _task(dispatch_id, "held")
    assert record.attempts == 1, "the task was taken back, not run again"
    assert len(log.read_text().split()) == 1, "the task ran once"


def test_a_task_started_by_a_controller_killed_before_storing_that_is_not_started_twice(
    make_controller_home: Callable[..., ControllerHome],
    agents: Callable[..., AgentProcess],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The controller sends a task, then dies before it stores that the task started:
    the restarted controller starts the same attempt again, and the agent that runs
    it is asked for its outcome instead of running it a second time."""
    home = make_controller_home(agents_config(free_port()))
    home.start()
    agent = agents(home)
    wait_for(connected(home, 1), timeout=30, what="the agent to attach")
    first_gate, gate, log = tmp_path / "first", tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(held_after)(str(first_gate), str(gate), str(log))
    wait_for(lambda: log.exists(), timeout=30, what="the first task to start on the agent")
    # The store is locked, so the round that starts the second task cannot store it.
    store = sqlite3.connect(home.path / "cobalt.db", timeout=10, isolation_level=None)
    try:
        store.execute("BEGIN IMMEDIATE")
        first_gate.touch()
        second = Path(f"{log}.second")
        wait_for(second.exists, timeout=30, what="the second task to start on the agent")
        os.kill(home.pid, signal.SIGKILL)
    finally:
        store.close()
    gate.touch()  # it ends while no controller listens
    time.sleep(0.5)
    home.start()
    result = ct.get_result(dispatch_id, wait=60)
    assert result.status == ct.Status.COMPLETED, f"{result.error}\n{agent.output()}"
    assert len(second.read_text().split()) == 1, "the second task ran once"
    assert [t.attempts for t in result.tasks if t.name == "held"] == [1, 1]
    assert "taken back, not started again" in (home.path / "controller.log").read_text()


def test_a_task_taken_back_after_a_restart_still_reaches_the_controller_with_its_credential(
    make_controller_home: Callable[..., ControllerHome],
    agents: Callable[..., AgentProcess],  # noqa: F811
    tmp_path: Path,
) -> None:
    home = make_controller_home(agents_config(free_port()))
    home.start()
    agents(home)
    wait_for(connected(home, 1), timeout=30, what="the agent to attach")
    gate, log = tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(one_asking)(str(gate), str(log))
    wait_for(lambda: log.exists(), timeout=30, what="the task to start on the agent")
    os.kill(home.pid, signal.SIGKILL)
    home.start()
    wait_for(connected(home, 1), timeout=30, what="the agent to come back")
    gate.touch()  # now the task calls the new controller with the old one's credential
    result = ct.get_result(dispatch_id, wait=60)
    assert result.status == ct.Status.COMPLETED, result.error
    assert result.result == "RUNNING"
    assert _task(dispatch_id, "held_then_asks").attempts == 1, "taken back, not run again"


def test_a_client_with_other_versions_gets_a_message_naming_both_sides(
    make_controller_home: Callable[..., ControllerHome],
    agents: Callable[..., AgentProcess],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = make_controller_home(agents_config(free_port()))
    home.start()
    agents(home)
    wait_for(connected(home, 1), timeout=30, what="the agent to attach")
    real = _submit.runtime_versions()
    monkeypatch.setattr(
        _submit, "runtime_versions", lambda: {**real, "python": "3.99", "cloudpickle": "0.1"}
    )
    result = ct.get_result(ct.dispatch(just_double)(1), wait=60)
    assert result.status == ct.Status.FAILED
    record = _task(result.dispatch_id, "double")
    assert record.reason == "version_mismatch"
    assert f"the client runs Python 3.99 but this agent runs Python {real['python']}" in (
        record.error
    )
    assert f"cloudpickle 0.1 but this agent runs cloudpickle {real['cloudpickle']}" in record.error


def test_wrong_credentials_and_credentials_for_another_executor_are_refused(
    make_controller_home: Callable[..., ControllerHome],
    agents: Callable[..., AgentProcess],  # noqa: F811
) -> None:
    home = make_controller_home(
        agents_config(free_port(), '\n[executors.other]\ntype = "agents"\n')
    )
    home.start()
    good = home.cli("agent-token", "--executor", "remote", "--quiet").stdout.strip()
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    other = home.cli("agent-token", "--executor", "other", "--quiet").stdout.strip()
    bound = home.cli(
        "agent-token", "--executor", "remote", "--allocation", "job-7", "--quiet"
    ).stdout.strip()
    for token, expected in [
        (bound, "this credential belongs to allocation 'job-7', not ''"),
        (forged, "missing, wrong or expired agent credential"),
        (other, "this credential attaches agents to executor 'other', not 'remote'"),
        ("nonsense", "missing, wrong or expired"),
    ]:
        agent = agents(home, token=token)
        assert agent.proc.wait(timeout=30) == 3, agent.output()
        assert expected in agent.output(), agent.output()
    refused = home.cli("agent-token", "--executor", "local", check=False)
    assert refused.returncode == 1
    assert (
        "no executor named 'local' takes agents; those that do: other, remote" in (refused.stderr)
        or "those that do: remote, other" in refused.stderr
    )


def test_an_agent_beyond_max_agents_is_refused_and_attaches_once_another_leaves(
    make_controller_home: Callable[..., ControllerHome],
    agents: Callable[..., AgentProcess],  # noqa: F811
) -> None:
    home = make_controller_home(
        agents_config(free_port()).replace("retry_backoff_s", "max_agents = 1\nretry_backoff_s")
    )
    home.start()
    first = agents(home)
    wait_for(connected(home, 1), timeout=30, what=f"the first agent: {first.output()}")
    second = agents(home)
    wait_for(
        lambda: "its max_agents" in second.output(),
        timeout=30,
        what=f"the second agent to be refused: {second.output()}",
    )
    assert second.proc.poll() is None, "a full controller is no reason to give up"
    assert "the controller holds 1 agents, its max_agents" in second.output()
    result = ct.dispatch_sync(just_double)(4)  # clients' calls still have their threads
    assert result.status == ct.Status.COMPLETED and result.result[0] == 8, result.error
    first.stop()
    wait_for(
        lambda: "joined executor remote" in second.output(),
        timeout=30,
        what=f"the second agent to attach once the first left: {second.output()}",
    )


def test_beyond_loopback_the_controller_speaks_only_tls_and_agents_pin_its_certificate(
    make_controller_home: Callable[..., ControllerHome],
    agents: Callable[..., AgentProcess],  # noqa: F811
) -> None:
    import re

    import grpc

    from cobalt_common.v1 import controller_pb2, controller_pb2_grpc

    host = machine_address()
    port = free_port()
    home = make_controller_home(
        agents_config(port).replace(f'address = "127.0.0.1:{port}"', f'address = "{host}:{port}"')
    )
    home.start()
    assert home.address.startswith("127.0.0.1:"), "local clients use a loopback port"
    printed = home.cli("agent-token", "--executor", "remote").stdout
    assert f"--controller {host}:{port}" in printed
    match = re.search(r"--fingerprint ([0-9a-f]{64})", printed)
    assert match, printed
    fingerprint = match[1]
    token = home.cli("agent-token", "--executor", "remote", "--quiet").stdout.strip()
    external = f"{host}:{port}"

    with grpc.insecure_channel(external) as plain, pytest.raises(grpc.RpcError) as refused:
        controller_pb2_grpc.ControllerStub(plain).ControllerStatus(
            controller_pb2.ControllerStatusRequest(), timeout=5
        )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, "no plain text beyond loopback"

    wrong = "0" * 64
    for args, expected in [
        (("--fingerprint", wrong), f"not the pinned {wrong}: refusing to connect"),
        ((), "is not on loopback, so the agent needs its certificate's fingerprint"),
    ]:
        bad = agents(home, *args, token=token, controller=external)
        assert bad.proc.wait(timeout=30) == 3, bad.output()
        assert expected in bad.output(), bad.output()
    good = agents(home, "--fingerprint", fingerprint, token=token, controller=external)
    wait_for(connected(home, 1), timeout=30, what=f"the agent to attach: {good.output()}")
    result = ct.dispatch_sync(just_double)(5)
    assert result.result == (10, "")
    info = home.info()
    assert info is not None
    remote_client = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cobalt._client import get_client; print(get_client().status())",
        ],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("COBALT_")},
            "COBALT_CONTROLLER_ADDRESS": external,
            "COBALT_CONTROLLER_TOKEN": info["token"],
            "COBALT_CONTROLLER_FINGERPRINT": fingerprint,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert remote_client.returncode == 0, remote_client.stderr
    assert "remote" in remote_client.stdout, "a client elsewhere reaches it over pinned TLS"


def test_an_agent_reads_and_writes_large_payloads_in_s3_through_presigned_urls(
    make_controller_home: Callable[..., ControllerHome],
    agents: Callable[..., AgentProcess],  # noqa: F811
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uuid

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    prefix = f"agents/{uuid.uuid4().hex}"
    blobs = (
        f'[blobs]\ntype = "s3"\nbucket = "{s3_server.bucket}"\nprefix = "{prefix}"\n'
        f'endpoint_url = "{s3_server.endpoint_url}"\nregion = "us-east-1"\n\n'
    )
    home = make_controller_home(blobs + agents_config(free_port()))
    home.start()
    agent_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    monkeypatch.setattr(os, "environ", agent_env)  # the agent holds no cloud credentials
    agent = agents(home)
    monkeypatch.undo()
    wait_for(connected(home, 1), timeout=30, what=f"the agent to attach: {agent.output()}")
    result = ct.dispatch_sync(s3_flow)(os.urandom(400_000))
    assert result.result == (400_000, 300_000)
    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix)
    sizes = sorted(o["Size"] for o in listed["Contents"])
    assert any(size > 400_000 for size in sizes), f"the argument went to the bucket: {sizes}"
    assert any(300_000 < size < 400_000 for size in sizes), f"and the output too: {sizes}"
    fetched = [p for p in (agent.log.parent / "blobs").rglob("*") if p.is_file()]
    assert not fetched, "the worker read the argument from its URL, not through the controller"
    assert "bytes) went straight to the object store" in agent.output(), (
        "the agent uploaded the output with a presigned PUT, not through the controller"
    )


@ct.electron(executor="remote")
def s3_length(data: bytes) -> tuple[int, bytes]:
    return len(data), b"s" * 300_000


@ct.lattice
def s3_flow(data: bytes) -> tuple[int, int]:
    size, reply = s3_length(data)
    return size, _len(reply)


@ct.electron
def _len(data: bytes) -> int:
    return len(data)


@ct.electron(executor="remote", cpus=0.25)
def quarter(i: int, log: str) -> int:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.environ['COBALT_ATTEMPT_ID']}\n".encode())
    finally:
        os.close(fd)
    return i


@ct.electron(executor="remote")
def whole(i: int) -> int:
    return i


@ct.lattice
def quarters(n: int, log: str) -> list[int]:
    return [quarter(i, log) for i in range(n)]


@ct.lattice
def wholes(n: int) -> list[int]:
    return [whole(i) for i in range(n)]


def test_a_fan_out_of_small_tasks_on_an_agent_runs_each_once_and_leaks_no_room(
    make_controller_home: Callable[..., ControllerHome],
    agents: Callable[..., AgentProcess],  # noqa: F811
    tmp_path: Path,
) -> None:
    home = make_controller_home(agents_config(free_port()))
    home.start()
    agents(home, "--cpus", "2", "--workers", "2")
    wait_for(connected(home, 1), timeout=30, what="the agent to attach")
    log = tmp_path / "runs"
    assert ct.dispatch_sync(quarters)(300, str(log)).result == list(range(300))
    runs = log.read_text().split()
    assert len(runs) == len(set(runs)) == 300, "every task ran exactly once"
    assert ct.get_result(ct.dispatch(wholes)(50), wait=60).result == list(range(50)), (
        "whole-CPU tasks still find all the room the small ones used"
    )
