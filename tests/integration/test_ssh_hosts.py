"""cobalt's SSH building blocks against a real OpenSSH server on a loopback port.

The server runs on this machine, so a process started "on the host" is a
process here: the tests check its process group and its death with local
system calls.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from service_sshd import SshdServer, sshd_server  # noqa: F401
from support import wait_for

from cobalt_common.errors import (
    HostAuthenticationError,
    HostError,
    HostKeyError,
    HostUnreachableError,
    RemoteCobaltError,
    RemotePythonError,
)
from cobalt_common.processes import pid_running
from cobalt_common.version import __version__
from cobalt_executors.ssh._hosts import HostSpec, parse_hosts
from cobalt_executors.ssh._remote import SshHost

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="sshd and process groups of Linux"),
]


def spec_for(server: SshdServer, **fields: Any) -> HostSpec:
    """The host table a user would write for ``server``, with ``fields`` changed."""
    table: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "key_file": str(server.client_key),
        "known_hosts": str(server.known_hosts),
        **fields,
    }
    return parse_hosts([table], executor="lab")[0]


@pytest.fixture(scope="module")
def host(sshd_server: SshdServer) -> Iterator[SshHost]:  # noqa: F811
    with SshHost(spec_for(sshd_server)) as connected:
        connected.connect()
        yield connected


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_command_runs_on_the_host_as_the_configured_user(host: SshHost) -> None:
    result = host.run(["sh", "-c", 'id -un; echo "$1" >&2; exit 3', "sh", "to stderr"])
    assert (result.status, result.stdout, result.stderr) == (
        3,
        f"{host.spec.user}\n",
        "to stderr\n",
    )


def test_a_started_process_leads_its_own_group_and_kill_group_kills_its_children(
    host: SshHost,
) -> None:
    process = host.start(["sh", "-c", "sleep 60 & echo $!; wait"], interactive=True)
    try:
        child = int(process.readline(timeout_s=10))
        assert os.getpgid(process.pid) == process.pid == os.getsid(process.pid)
        assert os.getpgid(child) == process.pid
        started = time.monotonic()
        assert host.kill_group(process.pid)
        wait_for(
            lambda: not pid_running(process.pid) and not pid_running(child),
            timeout=5,
            what="the process and its child to die",
        )
        assert time.monotonic() - started < 5
        assert process.wait(timeout_s=5) == 128 + signal.SIGTERM
        wait_for(lambda: not host.kill_group(process.pid), timeout=5, what="the group to be gone")
    finally:
        for pid in (process.pid,):
            if pid_running(pid):
                os.killpg(pid, signal.SIGKILL)


def test_a_started_process_gets_its_environment_folder_and_exit_status(
    host: SshHost, tmp_path: Path
) -> None:
    process = host.start(
        ["sh", "-c", 'echo "$COBALT_X"; pwd; echo oops >&2; exit 7'],
        env={"COBALT_X": "a 'b' $c"},
        cwd=str(tmp_path),
    )
    assert process.wait(timeout_s=10) == 7
    assert process.stdout_tail() == f"a 'b' $c\n{tmp_path}\n"
    assert process.stderr_tail() == "oops\n"


def test_the_exit_is_reported_while_a_child_left_behind_holds_the_output_open(
    host: SshHost,
) -> None:
    process = host.start(["sh", "-c", "sleep 60 & echo started; exit 4"])
    try:
        assert process.wait(timeout_s=5) == 4
        assert process.stdout_tail() == "started\n"
    finally:
        assert host.kill_group(process.pid)


def test_stdin_and_stdout_of_an_interactive_process_carry_frames_both_ways(
    host: SshHost,
) -> None:
    process = host.start(["cat"], interactive=True)
    for frame in (b"one\n", b"\x00\x01binary\n"):
        process.write(frame)
        assert process.readline(timeout_s=10) == frame
    process.close_stdin()
    assert process.wait(timeout_s=10) == 0


def test_a_key_the_host_refuses_gets_an_error_naming_host_and_port(
    sshd_server: SshdServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    wrong = tmp_path / "wrong_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(wrong)
    with (
        SshHost(spec_for(sshd_server, key_file=str(wrong))) as host,
        pytest.raises(HostAuthenticationError) as caught,
    ):
        host.connect()
    address = f"{sshd_server.user}@127.0.0.1:{sshd_server.port}"
    assert caught.value.host == address
    assert f"{address} refused the key in {wrong}" in str(caught.value)
    assert "authorized_keys" in str(caught.value)


def test_a_closed_port_is_reported_unreachable_at_once(
    sshd_server: SshdServer,  # noqa: F811
) -> None:
    port = _free_port()
    started = time.monotonic()
    with (
        SshHost(spec_for(sshd_server, port=port)) as host,
        pytest.raises(HostUnreachableError, match=rf"127\.0\.0\.1:{port} refused the connection"),
    ):
        host.connect()
    assert time.monotonic() - started < 2


def test_a_host_that_never_answers_is_reported_unreachable_after_the_timeout(
    sshd_server: SshdServer,  # noqa: F811
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        with (
            SshHost(spec_for(sshd_server, port=port), connect_timeout_s=0.5) as host,
            pytest.raises(HostUnreachableError, match=r"did not answer an SSH connection within"),
        ):
            host.connect()
        assert time.monotonic() - started < 3


def test_a_host_key_that_differs_from_known_hosts_is_refused(
    sshd_server: SshdServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd_server.port} {other}\n")
    with (
        SshHost(spec_for(sshd_server, known_hosts=str(known))) as host,
        pytest.raises(
            HostKeyError, match=rf"127\.0\.0\.1:{sshd_server.port} presented is not in {known}"
        ),
    ):
        host.connect()
    with (
        SshHost(spec_for(sshd_server, known_hosts=str(tmp_path / "absent"))) as host,
        pytest.raises(HostKeyError, match="does not exist"),
    ):
        host.connect()


def test_a_missing_interpreter_gets_the_python_error_naming_host_and_path(
    sshd_server: SshdServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    missing = str(tmp_path / "no" / "python3")
    with (
        SshHost(spec_for(sshd_server, python=missing)) as host,
        pytest.raises(RemotePythonError) as caught,
    ):
        host.check_python()
    assert caught.value.host == host.address
    assert f"{host.address}: there is no Python interpreter {missing!r}" in str(caught.value)


def test_check_python_reports_the_interpreter_and_its_cobalt_version(
    sshd_server: SshdServer,  # noqa: F811
) -> None:
    with SshHost(spec_for(sshd_server, python=sys.executable)) as host:
        found = host.check_python(cobalt_version=__version__)
        assert found.version == tuple(sys.version_info[:3])
        assert found.executable == sys.executable
        assert found.cobalt_version == __version__
        with pytest.raises(RemoteCobaltError, match=f"has cobalt {__version__}, and this is"):
            host.check_python(cobalt_version="0.0.1")


def test_an_interpreter_without_cobalt_is_refused_when_a_version_is_required(
    sshd_server: SshdServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    bare = tmp_path / "bare"
    os.symlink(Path(sys.base_prefix) / "bin" / "python3", bare)  # outside the venv
    with SshHost(spec_for(sshd_server, python=str(bare))) as host:
        assert host.check_python().cobalt_version is None
        with pytest.raises(RemoteCobaltError, match="cannot import cobalt"):
            host.check_python(cobalt_version=__version__)


def test_a_reverse_tunnel_lets_a_process_on_the_host_reach_a_loopback_service_here(
    host: SshHost,
) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def echo_once() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(conn.recv(64).upper())

        threading.Thread(target=echo_once, daemon=True).start()
        remote_port = host.forward_remote_port(0, "127.0.0.1", server.getsockname()[1])
        assert remote_port != server.getsockname()[1]
        client = (
            "import socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), 5);"
            " s.sendall(b'ping'); print(s.recv(64).decode())"
        )
        result = host.run(["python3", "-c", client, str(remote_port)], timeout_s=15)
    assert (result.status, result.stdout, result.stderr) == (0, "PING\n", "")


def test_a_lost_connection_is_opened_again_on_next_use(
    sshd_server: SshdServer,  # noqa: F811
) -> None:
    with SshHost(spec_for(sshd_server)) as host:
        host.connect()
        lost = host._conn  # the connection itself, to break it as a network would
        assert lost is not None
        host._runner.loop.call_soon_threadsafe(lost.abort)
        wait_for(lost.is_closed, timeout=5, what="the connection to close")
        assert host.run(["echo", "again"]).stdout == "again\n"
        assert host._conn is not lost


def test_a_failed_start_is_a_host_error_with_the_shell_message(host: SshHost) -> None:
    with pytest.raises(
        HostError, match=r"did not start true: [^\n]*/nonexistent/folder[^\n]*\. Check"
    ):
        host.start(["true"], cwd="/nonexistent/folder")
