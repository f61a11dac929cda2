"""What went wrong with a host, as cobalt's errors: each names the host and says what to do.

asyncssh's and the operating system's exceptions never leave the SSH package
raw; :func:`connect_failure` translates them.
"""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import asyncssh

from cobalt_common.errors import (
    HostAuthenticationError,
    HostError,
    HostKeyError,
    HostUnreachableError,
    RemoteCobaltError,
    RemotePythonError,
)
from cobalt_executors.ssh._hosts import HostSpec


def _ssh_command(spec: HostSpec) -> str:
    return shlex.join(["ssh", "-p", str(spec.port), f"{spec.user}@{spec.host}"])


def lost_connection(host: str, when: str) -> HostUnreachableError:
    """The connection to ``host`` closed ``when`` (``"before process 12 exited"``)."""
    return HostUnreachableError(
        f"the SSH connection to {host} closed {when}; check that the host is up and "
        "reachable, then connect again (a process started there may still run).",
        host=host,
    )


def no_answer(host: str, what: str, timeout_s: float) -> HostUnreachableError:
    """``host`` did not finish ``what`` within ``timeout_s`` seconds."""
    return HostUnreachableError(
        f"{host} did not {what} within {timeout_s:g} s; check that the host is up and not "
        "overloaded, and that the network to it works.",
        host=host,
    )


def connect_failure(spec: HostSpec, exc: BaseException, timeout_s: float) -> HostError:
    """The error for a connection to ``spec`` that failed with ``exc``."""
    host = spec.address
    if isinstance(exc, asyncssh.PermissionDenied):
        offered = (
            f"the key in {spec.key_file}" if spec.key_file else "the default keys and ssh-agent"
        )
        return HostAuthenticationError(
            f"{host} refused {offered}: add the public key to ~/.ssh/authorized_keys of "
            f"{spec.user!r} there, or set key_file to a key it accepts ({exc.reason}).",
            host=host,
        )
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return HostKeyError(
            f"the key {host} presented is not in {spec.known_hosts}, or differs from the "
            "one recorded there. If the machine is new or was reinstalled, compare its key's "
            f"fingerprint with the one its administrator gives, then record it (run "
            f"`{_ssh_command(spec)}` once and accept it, or set known_hosts to a file that "
            "holds it). If nothing changed there, someone may be impersonating the host.",
            host=host,
        )
    if isinstance(exc, TimeoutError):
        return no_answer(host, "answer an SSH connection", timeout_s)
    if isinstance(exc, socket.gaierror):
        return HostUnreachableError(
            f"the name {spec.host!r} of {host} does not resolve ({exc.strerror}); check the "
            "host field, or use the machine's address.",
            host=host,
        )
    if isinstance(exc, ConnectionRefusedError):
        return HostUnreachableError(
            f"{host} refused the connection: no SSH server listens on port {spec.port} "
            "there. Check the port field and that sshd runs on the host.",
            host=host,
        )
    if isinstance(exc, OSError):
        return HostUnreachableError(
            f"cannot reach {host}: {exc.strerror or exc}; check the address and the network.",
            host=host,
        )
    if isinstance(exc, asyncssh.Error):
        return HostUnreachableError(
            f"{host} closed the SSH connection: {exc.reason}; check sshd's log there.",
            host=host,
        )
    return HostError(f"connecting to {host} failed: {exc!r}", host=host)


def unreadable_key(spec: HostSpec, path: Path, exc: Exception) -> HostAuthenticationError:
    """The key file ``path`` of ``spec`` cannot be used."""
    if isinstance(exc, OSError):
        problem = f"cannot be read ({exc.strerror or exc})"
    else:
        problem = (
            f"is not a private key cobalt can use ({exc}); a key with a passphrase must be "
            "loaded into ssh-agent instead, with key_file left out"
        )
    return HostAuthenticationError(
        f"the key_file {path} of {spec.address} {problem}.", host=spec.address
    )


def missing_known_hosts(spec: HostSpec) -> HostKeyError:
    """The known_hosts file of ``spec`` does not exist, so its key cannot be checked."""
    return HostKeyError(
        f"cannot check the key of {spec.address}: its known_hosts file {spec.known_hosts} "
        f"does not exist. Run `{_ssh_command(spec)}` once and accept the key after comparing "
        "its fingerprint, or set known_hosts to a file that holds it.",
        host=spec.address,
    )


def python_missing(spec: HostSpec, status: int | None, stderr: str) -> RemotePythonError:
    """``spec``'s interpreter did not run (``status`` 126 or 127, or output cobalt cannot read)."""
    detail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {status}"
    problem = {127: "there is no", 126: "cannot run the"}.get(status or 0, "did not run the")
    return RemotePythonError(
        f"{spec.address}: {problem} Python interpreter {spec.python!r} ({detail}). Install "
        "Python 3.11 or later with cobalt there, and set the host's python field to its "
        "path.",
        host=spec.address,
    )


def python_too_old(spec: HostSpec, version: str, executable: str) -> RemotePythonError:
    """``spec``'s interpreter is older than cobalt supports."""
    return RemotePythonError(
        f"{spec.address}: {executable} is Python {version}, and cobalt needs 3.11 or later. "
        "Set the host's python field to a newer interpreter that has cobalt installed.",
        host=spec.address,
    )


def cobalt_mismatch(
    spec: HostSpec, executable: str, found: str | None, expected: str
) -> RemoteCobaltError:
    """cobalt ``expected`` is not what ``executable`` on ``spec`` has (``found``)."""
    has = f"has cobalt {found}" if found else "cannot import cobalt"
    return RemoteCobaltError(
        f"{spec.address}: {executable} {has}, and this is cobalt {expected}. Install the "
        f"same version there (`{executable} -m pip install cobalt=={expected}`), or set the "
        "host's python field to an interpreter that has it.",
        host=spec.address,
    )
