"""A real OpenSSH server on a loopback port, for tests of cobalt's SSH code.

Debian's ``sshd`` runs in the foreground (``-D``) from a temporary folder that
holds its configuration, its own ed25519 host key, the authorized_keys file
with a client key made for the session, a known_hosts file with the host key,
and its log. It listens on a free port of 127.0.0.1 only, and is stopped by
its PID at the end of the session.

Test modules import the fixture by name::

    from service_sshd import sshd_server  # noqa: F401
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
_READY_S = 10.0

_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {folder}/host_ed25519
PidFile {folder}/sshd.pid
AuthorizedKeysFile {folder}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
Subsystem sftp internal-sftp
"""


@dataclass(frozen=True)
class SshdServer:
    """A running sshd and what a client needs to log in to it.

    Attributes:
        host: the address it listens on (127.0.0.1).
        port: its port.
        user: the login name (the user running the tests).
        client_key: the private key its authorized_keys accepts.
        known_hosts: a known_hosts file that holds its host key.
        folder: its temporary folder (configuration, keys, log).
        pid: the sshd process.
    """

    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    folder: Path
    pid: int

    def log(self) -> str:
        """The server's log so far, for failure messages."""
        with contextlib.suppress(OSError):
            return (self.folder / "sshd.log").read_text(errors="replace")
        return ""


def sshd_missing() -> str:
    """Why this machine cannot run the test server, or ``""`` when it can."""
    if not SSHD.exists() or shutil.which("ssh-keygen") is None:
        return "install Debian's openssh-server, as scripts/services does"
    if os.geteuid() != 0:
        return "the test server logs in as the current user only when it runs as root"
    return ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _keygen(path: Path) -> str:
    """Makes an ed25519 key pair at ``path`` and returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cobalt-test", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path.with_suffix(".pub").read_text().strip()


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def running_sshd(folder: Path) -> Iterator[SshdServer]:
    """Starts sshd from ``folder`` (made if needed), yields it, and stops it by PID.

    Raises:
        RuntimeError: sshd exited, or did not accept connections within 10 s;
            the message holds its log.
    """
    folder.mkdir(parents=True, exist_ok=True)
    host_key = folder / "host_ed25519"
    host_public = _keygen(host_key)
    client_public = _keygen(folder / "client_ed25519")
    (folder / "authorized_keys").write_text(client_public + "\n")
    port = _free_port()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_public}\n")
    config = folder / "sshd_config"
    config.write_text(_CONFIG.format(port=port, folder=folder))
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [str(SSHD), "-D", "-f", str(config), "-E", str(folder / "sshd.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = SshdServer(
        host="127.0.0.1",
        port=port,
        user=getpass.getuser(),
        client_key=folder / "client_ed25519",
        known_hosts=folder / "known_hosts",
        folder=folder,
        pid=process.pid,
    )
    try:
        deadline = time.monotonic() + _READY_S
        while not _accepts(port):
            if process.poll() is not None:
                raise RuntimeError(f"sshd exited with {process.returncode}:\n{server.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"sshd did not accept on port {port} in {_READY_S:g} s:\n{server.log()}"
                )
            time.sleep(0.02)
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def sshd_server(requires_service: Callable[..., None]) -> Iterator[SshdServer]:
    """A real sshd on a loopback port for the whole test session."""
    missing = sshd_missing()
    requires_service("OpenSSH server", not missing, missing)
    with (
        tempfile.TemporaryDirectory(prefix="cobalt-sshd-") as folder,
        running_sshd(Path(folder)) as server,
    ):
        yield server
