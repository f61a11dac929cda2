"""The SSH executor end to end: a real controller (started with the CLI) logs in to a
real sshd on loopback, starts an agent there, and runs workflows through it.

The host is this machine, so a process "on the host" is a process here: tests
read its command line and check its death with local system calls.

Covered: a workflow runs through a host whose agent reaches the controller only
through a reverse tunnel; a host that refuses the key, one whose port is closed
and one without the configured Python each get an error naming the host, in
``cobalt controller status`` and in a refused dispatch, and tasks still run on the
good host of an executor that has a bad one; a task placed while every host has
failed fails at once instead of waiting; cancel and a time limit kill the task's
process on the host; a deployment's replica runs on the host and answers through
the gateway, which still asks for the deployment's token; an agent killed, or
whose SSH connection drops, is started again or taken back, and the log says why;
a controller killed while a host's agent runs a task takes the agent back when it
starts again, and the task's result is kept, not run twice.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from executor_contract import Reports
from service_sshd import SshdServer, sshd_server  # noqa: F401
from ssh_support import SshRig, host_table
from support import wait_for
from test_local_executor_contract import _contract_task, _payload

import cobalt as ct
from cobalt_common.hardware import HardwareSpec
from cobalt_common.processes import pid_running
from cobalt_common.status import Status
from cobalt_executors import TaskArg, TaskSubmission

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="sshd and process groups of Linux"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml(value: Any) -> str:
    """``value`` as a TOML inline value (JSON's strings, numbers and lists are TOML's)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def ssh_config(port: int, executors: dict[str, dict[str, Any]]) -> str:
    tables = "".join(
        f'\n[executors.{name}]\ntype = "ssh"\n'
        + "".join(f"{key} = {_toml(value)}\n" for key, value in options.items())
        for name, options in executors.items()
    )
    return f"""\
[controller]
address = "127.0.0.1:{port}"
dashboard_address = ""
gateway_address = ""
retry_backoff_s = 0.05

[executors.local]
type = "local"
workers = 1
{tables}"""


def _status(home: ControllerHome) -> str:
    return home.cli("controller", "status").stdout


def _host_line(status: str, address: str) -> str:
    """What the status says of host ``address``: its state and the start of its message."""
    found = re.search(re.escape(address) + r": (ready|starting|failed)[^;|]*", status)
    return found[0] if found else ""


def _wrong_key(tmp_path: Path) -> Path:
    key = tmp_path / "stranger_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return key


@ct.electron(executor="lab")
def where(x: int) -> tuple[int, int, str]:
    """``x`` doubled, and the agent that ran it: the worker's parent and its command line."""
    agent = os.getppid()
    with open(f"/proc/{agent}/cmdline", "rb") as f:
        cmdline = f.read().replace(b"\0", b" ").decode()
    return 2 * x, agent, cmdline


@ct.lattice
def fan(n: int) -> list[tuple[int, int, str]]:
    return [where(i) for i in range(n)]


@ct.electron(executor="lab")
def trivial() -> int:
    return 1


@ct.electron
def trivial_local() -> int:
    return 1


@ct.lattice
def one_trivial() -> int:
    return trivial()


@ct.lattice
def one_trivial_local() -> int:
    return trivial_local()


def _round_trips(lattice: Any, n: int) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        result = ct.dispatch_sync(lattice)()
        times.append(time.perf_counter() - started)
        assert result.status == ct.Status.COMPLETED, result.error
    return statistics.median(times)


def test_a_workflow_runs_on_a_host_whose_agent_reaches_the_controller_only_by_a_tunnel(
    make_controller_home: Callable[..., ControllerHome],
    sshd_server: SshdServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    port = _free_port()
    table = host_table(sshd_server, tmp_path / "host", tunnel=True)
    home = make_controller_home(ssh_config(port, {"lab": {"hosts": [table], "workers": 2}}))
    started = time.monotonic()
    home.start()
    address = f"{sshd_server.user}@127.0.0.1:{sshd_server.port}"
    wait_for(
        lambda: "ready" in _host_line(_status(home), address),
        timeout=60,
        interval=0.02,
        what=f"the agent to attach over SSH: {_status(home)}\n{home.log_tail()}",
    )
    attached_s = time.monotonic() - started
    line = _host_line(_status(home), address)
    assert "through a reverse tunnel" in line, line

    result = ct.dispatch_sync(fan)(4)
    assert result.status == ct.Status.COMPLETED, result.error
    assert [r[0] for r in result.result] == [0, 2, 4, 6]
    assert {t.executor for t in result.tasks} == {"lab"}
    cmdlines = {r[2] for r in result.result}
    assert len(cmdlines) == 1, "one agent ran every task"
    argv = cmdlines.pop().split()
    dialled = argv[argv.index("--controller") + 1]
    assert dialled.startswith("127.0.0.1:") and dialled != f"127.0.0.1:{port}", (
        f"the agent dials {dialled}, the tunnel's end on the host, not the controller's port"
    )
    assert dialled in line
    assert argv[argv.index("--allocation") + 1] == address
    assert "COBALT_AGENT_TOKEN" not in " ".join(argv) and "--token-file" in argv

    ssh = _round_trips(one_trivial, 50)
    local = _round_trips(one_trivial_local, 50)
    print(
        f"\ncontroller start to SSH agent attached: {attached_s:.2f} s; round trip of a "
        f"trivial task (median of 50): ssh {ssh * 1000:.1f} ms, local {local * 1000:.1f} ms "
        f"({ssh / local:.2f}x)"
    )


def test_bad_hosts_each_get_an_error_naming_them_and_a_good_host_beside_one_still_runs_tasks(
    make_controller_home: Callable[..., ControllerHome],
    sshd_server: SshdServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    good = host_table(sshd_server, tmp_path / "good")
    closed = _free_port()
    bad = {
        "nokey": host_table(sshd_server, tmp_path / "a", key_file=str(_wrong_key(tmp_path))),
        "closed": host_table(sshd_server, tmp_path / "b", port=closed),
        "nopython": host_table(sshd_server, tmp_path / "c", python="/nonexistent/python3"),
    }
    executors = {name: {"hosts": [table]} for name, table in bad.items()}
    executors["mixed"] = {"hosts": [bad["closed"], good], "workers": 1}
    home = make_controller_home(ssh_config(_free_port(), executors))
    home.start()
    user = sshd_server.user
    expected = {
        "nokey": (f"{user}@127.0.0.1:{sshd_server.port}", "refused the key in"),
        "closed": (f"{user}@127.0.0.1:{closed}", "refused the connection"),
        "nopython": (
            f"{user}@127.0.0.1:{sshd_server.port}",
            "there is no Python interpreter '/nonexistent/python3'",
        ),
    }

    def described(status: str, executor: str) -> str:
        lines = status.splitlines()
        at = next(i for i, text in enumerate(lines) if text.strip().startswith(executor))
        return " ".join(lines[at : at + 3])

    def all_failed() -> bool:
        status = _status(home)
        return all(
            "failed" in described(status, name) and problem in described(status, name)
            for name, (_, problem) in expected.items()
        ) and "ready" in described(status, "mixed")

    wait_for(all_failed, timeout=60, what=f"every bad host to fail: {_status(home)}")
    status = _status(home)
    for name, (address, problem) in expected.items():
        assert f"{address}: failed" in described(status, name), (name, status)
        assert problem in described(status, name), (name, status)

    for name, (address, problem) in expected.items():

        @ct.electron(executor=name)
        def refused() -> int:
            return 1

        @ct.lattice
        def flow() -> int:
            return refused()

        with pytest.raises(ct.UnsatisfiableError) as info:
            ct.dispatch(flow)()
        assert f"no host of executor {name!r} can run tasks" in str(info.value)
        assert address in str(info.value) and problem in str(info.value)

    @ct.electron(executor="mixed")
    def on_mixed(x: int) -> int:
        return x + 1

    @ct.lattice
    def mixed_flow(n: int) -> list[int]:
        return [on_mixed(i) for i in range(n)]

    result = ct.dispatch_sync(mixed_flow)(3)
    assert result.status == ct.Status.COMPLETED, result.error
    assert result.result == [1, 2, 3]


@ct.electron(executor="lab")
def sleeper(pidfile: str) -> None:
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(300)


@ct.electron(executor="lab", time_limit=1.5)
def limited(pidfile: str) -> None:
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(300)


@ct.lattice
def sleeps(pidfile: str) -> None:
    return sleeper(pidfile)


@ct.lattice
def times_out(pidfile: str) -> None:
    return limited(pidfile)


def test_cancel_and_a_time_limit_kill_the_task_s_process_on_the_host(
    make_controller_home: Callable[..., ControllerHome],
    sshd_server: SshdServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    table = host_table(sshd_server, tmp_path / "host")
    home = make_controller_home(ssh_config(_free_port(), {"lab": {"hosts": [table]}}))
    home.start()
    address = f"{sshd_server.user}@127.0.0.1:{sshd_server.port}"
    wait_for(lambda: "ready" in _host_line(_status(home), address), timeout=60)

    cancelled = tmp_path / "cancelled.pid"
    dispatch_id = ct.dispatch(sleeps)(str(cancelled))
    wait_for(lambda: cancelled.exists() and cancelled.read_text(), timeout=30)
    pid = int(cancelled.read_text())
    assert pid_running(pid)
    ct.cancel(dispatch_id)
    wait_for(lambda: not pid_running(pid), timeout=10, what=f"the cancelled task's pid {pid}")
    assert ct.get_result(dispatch_id, wait=30).status == ct.Status.CANCELLED

    timed = tmp_path / "timed.pid"
    result = ct.get_result(ct.dispatch(times_out)(str(timed)), wait=60)
    assert result.status == ct.Status.TIMED_OUT, result.error
    pid = int(timed.read_text())
    wait_for(lambda: not pid_running(pid), timeout=10, what=f"the timed-out task's pid {pid}")


def test_a_task_waits_while_its_host_starts_and_fails_at_once_when_every_host_has_failed(
    tmp_path: Path,
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    reports = Reports()
    table = {"host": "127.0.0.1", "port": port, "known_hosts": "insecure-accept-any"}
    rig = SshRig(tmp_path, reports, {"hosts": [table]})
    try:
        task = TaskSubmission(
            "t/1/1", "t", 1, "t", HardwareSpec(), _payload(_contract_task), args=[]
        )
        assert rig.executor.can_ever_run(HardwareSpec(cpus=64)), "capacity unknown: it waits"
        assert rig.executor.try_submit(task) is None, "the host still starts: the task waits"
        assert "starting" in rig.executor.describe()[0]
        wait_for(lambda: rig.executor.unavailable(), timeout=30, what="the silent host to fail")
        assert not rig.executor.can_ever_run(HardwareSpec())
        assert rig.executor.try_submit(task) is not None
        outcome = reports.wait("t/1/1")["t/1/1"]
        assert outcome.status == Status.FAILED
        assert outcome.reason == "host_unreachable"
        assert f"127.0.0.1:{port} did not answer an SSH connection" in outcome.error
        assert f"127.0.0.1:{port}: failed" in rig.executor.describe()[0]
    finally:
        rig.close()
        silent.close()


@ct.service(name="over-ssh", cpus=0.25, min_replicas=1, max_replicas=1, executor="lab")
def over_ssh() -> dict[str, Any]:
    return {"started_in": os.getpid()}


@over_ssh.endpoint("/whoami")
def whoami(started_in: int) -> dict[str, Any]:
    agent = os.getppid()
    with open(f"/proc/{agent}/cmdline", "rb") as f:
        cmdline = f.read().replace(b"\0", b" ").decode()
    advertised = os.environ.get("COBALT_REPLICA_ADVERTISE", "")
    return {"pid": os.getpid(), "started_in": started_in, "agent": cmdline, "at": advertised}


def _listener_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` of 127.0.0.1 here, if any (from /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.rpartition(":")[2], 16) == port:  # 0A: LISTEN
            inodes.add(f"socket:[{inode}]")
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                return int(fd_dir.parent.name)
        except OSError:
            continue
    return None


@pytest.mark.parametrize("tunnel", [False, True], ids=["direct", "tunnel"])
def test_a_deployment_s_replica_runs_on_a_host_and_answers_through_the_gateway(
    make_controller_home: Callable[..., ControllerHome],
    sshd_server: SshdServer,  # noqa: F811
    tmp_path: Path,
    tunnel: bool,
) -> None:
    """The replica advertises the host's address on its route to the controller (here
    loopback, the host being this machine) and the gateway reaches it there. Behind a
    reverse tunnel that route is the host's own loopback, which only the host reaches:
    the controller reaches the replica through a tunnel of its own, over the same SSH
    connection, and closes it when the replica stops."""
    import httpx

    table = host_table(sshd_server, tmp_path / "host", tunnel=tunnel)
    config = ssh_config(_free_port(), {"lab": {"hosts": [table], "workers": 1}})
    home = make_controller_home(config.replace('gateway_address = ""\n', ""))
    home.start()
    address = f"{sshd_server.user}@127.0.0.1:{sshd_server.port}"
    wait_for(lambda: "ready" in _host_line(_status(home), address), timeout=60)
    with ct.deploy(over_ssh)() as deployment:
        answer = deployment.whoami()
        assert answer["pid"] == answer["started_in"], "the replica's own process answered"
        assert "cobalt_executors.agent" in answer["agent"]
        assert f"--allocation {address}" in answer["agent"]
        assert answer["at"] == "127.0.0.1"
        with httpx.Client(timeout=30, trust_env=False) as http:
            refused = http.post(f"{deployment.url}/whoami", json={})
        assert refused.status_code == 401, "the gateway still asks for the deployment's token"
        events = home.cli("deployments", "events", "over-ssh").stdout
        found = re.search(r"is ready at http://127\.0\.0\.1:(\d+)", events)
        assert found, events
        port = int(found.group(1))
        holder = _listener_pid(port)
        expected = home.pid if tunnel else answer["pid"]
        assert holder == expected, f"port {port} is held by {holder}, not {expected}"
    if tunnel:
        wait_for(
            lambda: _listener_pid(port) is None,
            timeout=30,
            what="the tunnel to the stopped replica to close",
        )


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _one_task_runs(rig: SshRig, reports: Reports, key: str) -> None:
    args = [TaskArg(i, "", _payload(value)) for i, value in enumerate((key, "", ""))]
    task = TaskSubmission(key, "d", 0, key, HardwareSpec(), _payload(_contract_task), args)
    assert rig.executor.try_submit(task) is not None
    outcome = reports.wait(key)[key]
    assert outcome.status == Status.COMPLETED, outcome.error


def test_a_killed_agent_is_started_again_and_one_cut_off_from_ssh_is_taken_back(
    sshd_server: SshdServer,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cobalt.executors")
    reports = Reports()
    rig = SshRig(tmp_path, reports, {"hosts": [host_table(sshd_server, tmp_path / "host")]})
    try:
        rig.wait_attached()
        (keeper,) = rig.executor.host_agents
        first = keeper.pid()
        assert first is not None and pid_running(first)
        _one_task_runs(rig, reports, "before")

        os.killpg(first, 9)
        wait_for(
            lambda: keeper.pid() not in (None, first) and rig.executor.pool.agents(),
            timeout=30,
            what=f"the killed agent to be started again: {rig.executor.describe()[0]}",
        )
        _one_task_runs(rig, reports, "after-kill")

        second = keeper.pid()
        assert second is not None
        session = _parent(_parent(second))  # the sshd process of the executor's connection
        with open(f"/proc/{session}/cmdline", "rb") as f:
            assert b"sshd" in f.read(), "the agent's grandparent is the SSH session"
        os.kill(session, 9)
        wait_for(
            lambda: sum("took back agent" in r.getMessage() for r in caplog.records) == 1,
            timeout=60,
            what=f"the agent to be taken back: {rig.executor.describe()[0]}",
        )
        assert keeper.pid() == second and pid_running(second), "the same agent goes on"
        _one_task_runs(rig, reports, "after-drop")
        assert keeper.starts == 2
        restarts = [r.getMessage() for r in caplog.records if "lost the agent" in r.getMessage()]
        assert len(restarts) == 2, restarts
        assert "the agent exited with status 137" in restarts[0], restarts
        assert "SSH connection" in restarts[1] and "closed" in restarts[1], restarts
    finally:
        rig.close()
    assert keeper.pid() is not None and not pid_running(keeper.pid() or 0)


@ct.electron(executor="tls_direct")
def on_direct() -> str:
    return os.environ.get("COBALT_CONTROLLER_FINGERPRINT", "")


@ct.electron(executor="tls_tunnel")
def on_tunnel() -> str:
    return os.environ.get("COBALT_CONTROLLER_FINGERPRINT", "")


@ct.lattice
def both_tls() -> tuple[str, str]:
    return on_direct(), on_tunnel()


def test_beyond_loopback_agents_pin_the_controller_s_certificate_directly_and_through_a_tunnel(
    make_controller_home: Callable[..., ControllerHome],
    sshd_server: SshdServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    from agent_process import machine_address

    machine = machine_address()
    port = _free_port()
    executors = {
        "tls_direct": {"hosts": [host_table(sshd_server, tmp_path / "d")], "workers": 1},
        "tls_tunnel": {"hosts": [host_table(sshd_server, tmp_path / "t", tunnel=True)]},
    }
    config = ssh_config(port, executors).replace(
        f'address = "127.0.0.1:{port}"', f'address = "{machine}:{port}"'
    )
    home = make_controller_home(config)
    home.start()
    printed = home.cli("agent-token", "--executor", "tls_direct").stdout
    fingerprint = re.search(r"--fingerprint ([0-9a-f]{64})", printed)
    assert fingerprint, printed

    def lines() -> dict[str, str]:
        status = _status(home)
        return {
            name: next((text for text in status.splitlines() if text.startswith(name)), "")
            for name in executors
        }

    wait_for(
        lambda: all("ready (" in text for text in lines().values()),
        timeout=60,
        what=f"both agents to attach over TLS: {_status(home)}",
    )
    direct, tunnel = lines()["tls_direct"], lines()["tls_tunnel"]
    assert f"dialling {machine}:{port}" in direct, direct
    assert "through a reverse tunnel (127.0.0.1:" in tunnel, tunnel
    result = ct.dispatch_sync(both_tls)()
    assert result.status == ct.Status.COMPLETED, result.error
    assert result.result == (fingerprint[1], fingerprint[1])


@ct.electron(executor="lab", retries=1)
def held(gate: str, log: str) -> int:
    """Appends this run to ``log``, then waits for ``gate`` to exist."""
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    while not os.path.exists(gate):
        time.sleep(0.02)
    return os.getppid()


@ct.lattice
def one_held(gate: str, log: str) -> int:
    return held(gate, log)


def _ancestors(pid: int) -> list[int]:
    found = []
    while pid > 1:
        found.append(pid)
        pid = _parent(pid)
    return found


def _agents_of(work_dir: Path) -> list[int]:
    """The agent processes running with ``work_dir`` as their folder (not their workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"cobalt_executors.agent" in cmdline and cwd == str(work_dir):
            found.append(int(entry.name))
    return [pid for pid in found if _parent(pid) not in found]  # not its forked workers


@pytest.mark.parametrize("tunnel", [False, True], ids=["direct", "tunnel"])
def test_a_controller_killed_while_a_host_runs_a_task_takes_the_agent_back_and_loses_nothing(
    make_controller_home: Callable[..., ControllerHome],
    sshd_server: SshdServer,  # noqa: F811
    tmp_path: Path,
    tunnel: bool,
) -> None:
    work_dir = tmp_path / "host"
    table = host_table(sshd_server, work_dir, tunnel=tunnel)
    config = ssh_config(_free_port(), {"lab": {"hosts": [table], "reconnect_grace_s": 30}})
    home = make_controller_home(config)
    home.start()
    address = f"{sshd_server.user}@127.0.0.1:{sshd_server.port}"
    wait_for(lambda: "ready" in _host_line(_status(home), address), timeout=60)
    (agent,) = _agents_of(work_dir)
    gate, log = tmp_path / "gate", tmp_path / "runs"
    dispatch_id = ct.dispatch(one_held)(str(gate), str(log))
    wait_for(lambda: log.exists(), timeout=30, what="the task to start on the host")
    os.kill(home.pid, signal.SIGKILL)
    gate.touch()  # the task ends while no controller listens: the agent keeps its outcome
    time.sleep(0.5)
    home.start()
    result = ct.get_result(dispatch_id, wait=60)
    assert result.status == ct.Status.COMPLETED, f"{result.error}\n{home.log_tail()}"
    assert agent in _ancestors(result.result), "the agent that ran it reported it"
    record = next(t for t in result.tasks if t.name == "held")
    assert record.attempts == 1, "the task was taken back, not run again"
    assert len(log.read_text().split()) == 1, "the task ran once"
    assert _agents_of(work_dir) == [agent], "the agent was taken back, no second one started"
    # The supervisor takes the agent back over SSH while the agent redials by itself, so
    # the task can complete before the supervisor has logged it.
    wait_for(
        lambda: "took back agent" in (home.path / "controller.log").read_text(),
        timeout=30,
        what="the supervisor to take the agent back",
    )
