"""One SSH host, behind a synchronous, typed API.

:class:`SshHost` holds one ``asyncssh`` connection, which runs on the event
loop of a :class:`~cobalt_executors.ssh._loop.LoopRunner` (its own, or one its
owner shares among hosts). Every method waits a bounded time, and every
failure is a :class:`~cobalt_common.errors.HostError` that names the host and
says what to do.

Example (not run: it needs a host)::

    host = SshHost(parse_hosts([{"host": "gpu1", "user": "alice"}], executor="lab")[0])
    print(host.check_python(cobalt_version="0.1.0").version)
    agent = host.start(["python3", "-m", "cobalt_executors.agent"], env={"A": "1"})
    host.kill_group(agent.pid)
    host.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
import signal
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from cobalt_common.errors import HostError
from cobalt_executors.ssh import _failures
from cobalt_executors.ssh._hosts import HostSpec
from cobalt_executors.ssh._loop import LoopRunner
from cobalt_executors.ssh._process import RemoteProcess, group_leader_command, shell_path

T = TypeVar("T")

log = logging.getLogger(__name__)

_MIN_PYTHON = (3, 11)
_KEEPALIVE_S = 15.0

# Runs on the host's interpreter, whatever its version: no f-strings.
_PROBE = """\
import json, sys
try:
    from cobalt_common.version import __version__ as v
    import cobalt_executors
except Exception:
    v = None
print(json.dumps({"python": list(sys.version_info[:3]), "executable": sys.executable, "cobalt": v}))
"""


@dataclass(frozen=True, slots=True)
class RemoteResult:
    """What a command run with :meth:`SshHost.run` did.

    Attributes:
        status: its exit status (128+N when killed by signal N).
        stdout: its output.
        stderr: its error output.
    """

    status: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class RemotePython:
    """A host's Python interpreter, as :meth:`SshHost.check_python` found it.

    Attributes:
        version: ``(major, minor, micro)``.
        executable: its full path on the host.
        cobalt_version: the version of cobalt it imports, or ``None`` when it cannot.
    """

    version: tuple[int, int, int]
    executable: str
    cobalt_version: str | None

    @property
    def has_cobalt(self) -> bool:
        """Whether the interpreter imports cobalt."""
        return self.cobalt_version is not None


class SshHost:
    """One host reached over SSH.

    Args:
        spec: the host, as the ``hosts`` option configured it.
        runner: the event loop to run on; ``None`` for one of its own, closed
            with the host.
        connect_timeout_s: the most a connection may take, key exchange and
            login included.

    The connection opens on :meth:`connect` or on first use. Processes started
    here keep running when the connection closes: stop them with
    :meth:`kill_group` first.
    """

    def __init__(
        self,
        spec: HostSpec,
        *,
        runner: LoopRunner | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.spec = spec
        self._owns_runner = runner is None
        self._runner = runner or LoopRunner(f"cobalt-ssh {spec.address}")
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._conn: asyncssh.SSHClientConnection | None = None
        self._listeners: list[asyncssh.SSHListener] = []

    @property
    def address(self) -> str:
        """``user@host:port``."""
        return self.spec.address

    def __enter__(self) -> SshHost:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def connect(self) -> None:
        """Opens the connection, if it is not open (again, if it was lost).

        Raises:
            HostUnreachableError: the host refused, did not answer in time, or
                its name does not resolve.
            HostAuthenticationError: it refused the key, or the key file cannot be used.
            HostKeyError: its key is not in the known_hosts file, or differs.
        """
        with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return
            self._conn = None
            spec = self.spec
            options: dict[str, Any] = {}
            if spec.key_file is not None:
                try:
                    options["client_keys"] = [asyncssh.read_private_key(spec.key_file)]
                except (OSError, asyncssh.KeyImportError) as exc:
                    raise _failures.unreadable_key(spec, spec.key_file, exc) from None
            if isinstance(spec.known_hosts, Path):
                if not spec.known_hosts.is_file():
                    raise _failures.missing_known_hosts(spec)
                options["known_hosts"] = str(spec.known_hosts)
            else:
                log.warning(
                    "host key checking is off for %s (known_hosts = %r): any machine that "
                    "answers at that address receives its tasks.",
                    spec.address,
                    spec.known_hosts,
                )
                options["known_hosts"] = None

            async def connect() -> asyncssh.SSHClientConnection:
                return await asyncssh.connect(
                    spec.host,
                    spec.port,
                    username=spec.user,
                    config=[],
                    connect_timeout=self._connect_timeout_s,
                    keepalive_interval=_KEEPALIVE_S,
                    **options,
                )

            try:
                self._conn = self._runner.call(connect(), self._connect_timeout_s + 1.0)
            except (OSError, asyncssh.Error) as exc:
                raise _failures.connect_failure(spec, exc, self._connect_timeout_s) from None

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout_s: float = 30.0
    ) -> RemoteResult:
        """Runs ``argv`` on the host through the login shell and waits for it to exit.

        Raises:
            HostUnreachableError: the connection failed, or the command did not
                finish within ``timeout_s`` seconds.
        """
        if not argv:
            raise ValueError("run() needs a command")
        return self._run(shlex.join(argv), input, timeout_s, f"run {argv[0]}")

    def check_python(
        self, *, cobalt_version: str | None = None, timeout_s: float = 30.0
    ) -> RemotePython:
        """Asks the host's interpreter its version and cobalt's, in one command.

        Args:
            cobalt_version: the version cobalt must have there; ``None`` to
                only report it.

        Raises:
            RemotePythonError: there is no interpreter at the host's ``python``
                path, or it is older than 3.11.
            RemoteCobaltError: ``cobalt_version`` is given and the interpreter
                cannot import cobalt, or has another version.
        """
        spec = self.spec
        command = f"exec {shell_path(spec.python)} -c {shlex.quote(_PROBE)}"
        result = self._run(command, None, timeout_s, "run its Python interpreter")
        try:
            found = json.loads(result.stdout.strip().splitlines()[-1])
            version = tuple(int(part) for part in found["python"][:3])
            python = RemotePython(
                (version[0], version[1], version[2]), str(found["executable"]), found["cobalt"]
            )
        except (ValueError, LookupError, TypeError):
            raise _failures.python_missing(spec, result.status, result.stderr) from None
        if python.version[:2] < _MIN_PYTHON:
            raise _failures.python_too_old(
                spec, ".".join(map(str, python.version)), python.executable
            )
        if cobalt_version is not None and python.cobalt_version != cobalt_version:
            raise _failures.cobalt_mismatch(
                spec, python.executable, python.cobalt_version, cobalt_version
            )
        return python

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        interactive: bool = False,
        timeout_s: float = 30.0,
    ) -> RemoteProcess:
        """Starts ``argv`` on the host as the leader of a new process group.

        Args:
            argv: the program and its arguments, looked up on the host's ``PATH``.
            env: variables to add to the login environment.
            cwd: the folder to start in; relative and ``~/`` paths are under the
                home folder. ``None`` for the home folder.
            interactive: the caller reads stdout and writes stdin; otherwise
                stdout is collected like stderr.
            timeout_s: the most the start may take (not the process's run time).

        Returns:
            The process; its ``pid`` is its process-group id on the host.

        Raises:
            HostError: it did not start (the message holds its error output).
            HostUnreachableError: the connection failed or timed out.
        """
        command = group_leader_command(argv, env, cwd)

        async def start(conn: asyncssh.SSHClientConnection) -> RemoteProcess:
            process = await conn.create_process(command, encoding=None)
            first = await process.stdout.readline()
            if not first.strip().isdigit():
                process.close()
                stderr = b""
                with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
                    stderr = await asyncio.wait_for(process.stderr.read(), 2.0)
                raise HostError(
                    f"{self.address} did not start {shlex.join(argv)}: "
                    f"{stderr.decode(errors='replace').strip() or 'no output'}. Check cwd "
                    f"{cwd!r} and that setsid (util-linux) is installed there.",
                    host=self.address,
                )
            return RemoteProcess(
                process,
                pid=int(first),
                host=self.address,
                runner=self._runner,
                interactive=interactive,
            )

        return self._call(start, timeout_s, f"start {argv[0]}")

    def kill_group(
        self, pgid: int, sig: signal.Signals = signal.SIGTERM, *, timeout_s: float = 10.0
    ) -> bool:
        """Sends ``sig`` to every process of group ``pgid`` on the host, from a second exec.

        Returns:
            Whether the group still existed to receive it.
        """
        if isinstance(pgid, bool) or not isinstance(pgid, int) or pgid < 2:
            raise ValueError(f"{pgid!r} is not the process-group id of a process cobalt started")
        name = signal.Signals(sig).name.removeprefix("SIG")
        result = self._run(f"kill -s {name} -- -{pgid}", None, timeout_s, "kill a process group")
        return result.status == 0

    def forward_remote_port(
        self, remote_port: int, local_host: str, local_port: int, *, timeout_s: float = 10.0
    ) -> int:
        """Tunnels connections to ``127.0.0.1:remote_port`` on the host to ``local_host:local_port``
        as seen from here, until :meth:`close`.

        The tunnel lives as long as the connection: when that is lost, so is
        the tunnel, and the next call here opens a new connection without it.

        Args:
            remote_port: the port to listen on there; 0 for any free one.

        Returns:
            The port it listens on there.

        Raises:
            HostError: the host refused to listen (taken port, or forwarding
                turned off there).
        """

        async def forward(conn: asyncssh.SSHClientConnection) -> int:
            try:
                listener = await conn.forward_remote_port(
                    "127.0.0.1", remote_port, local_host, local_port
                )
            except asyncssh.ChannelListenError as exc:
                raise HostError(
                    f"{self.address} refused to listen on 127.0.0.1:{remote_port} for a "
                    f"tunnel to {local_host}:{local_port} ({exc}): pick a free port, "
                    "and check that sshd allows it there (AllowTcpForwarding yes).",
                    host=self.address,
                ) from None
            self._listeners.append(listener)
            return listener.get_port()

        return self._call(forward, timeout_s, "open a tunnel")

    def forward_local_port(
        self, remote_host: str, remote_port: int, *, timeout_s: float = 10.0
    ) -> int:
        """Tunnels connections to a port on 127.0.0.1 here to ``remote_host:remote_port``
        as the host sees it (a replica listening on the host's loopback), until
        :meth:`close` or :meth:`stop_forward`.

        Returns:
            The port it listens on here.

        Raises:
            HostError: the connection failed.
        """

        async def forward(conn: asyncssh.SSHClientConnection) -> int:
            listener = await conn.forward_local_port("127.0.0.1", 0, remote_host, remote_port)
            self._listeners.append(listener)
            return listener.get_port()

        return self._call(forward, timeout_s, "open a tunnel to a replica")

    def stop_forward(self, local_port: int) -> None:
        """Closes the tunnel :meth:`forward_local_port` opened on ``local_port``."""
        with self._lock:
            found = [x for x in self._listeners if x.get_port() == local_port]
            self._listeners = [x for x in self._listeners if x not in found]

        async def close() -> None:
            for listener in found:
                listener.close()

        if found:
            with contextlib.suppress(TimeoutError, RuntimeError, OSError, asyncssh.Error):
                self._runner.call(close(), 5.0)

    def close(self) -> None:
        """Closes the tunnels and the connection (processes started here keep running)."""
        with self._lock:
            conn, self._conn = self._conn, None
            listeners, self._listeners = self._listeners, []

        async def close() -> None:
            for listener in listeners:
                listener.close()
            if conn is not None:
                conn.close()
                await conn.wait_closed()

        with contextlib.suppress(TimeoutError, RuntimeError, OSError, asyncssh.Error):
            self._runner.call(close(), 5.0)
        if self._owns_runner:
            self._runner.close()

    def _run(self, command: str, input: bytes | None, timeout_s: float, what: str) -> RemoteResult:
        async def run(conn: asyncssh.SSHClientConnection) -> RemoteResult:
            done = await conn.run(command, input=input, encoding=None, check=False)
            status = done.returncode
            if status is None:
                raise _failures.lost_connection(self.address, f"while trying to {what}")
            if status < 0:
                status = 128 - status
            return RemoteResult(
                status,
                _decoded(done.stdout),
                _decoded(done.stderr),
            )

        return self._call(run, timeout_s, what)

    def _call(
        self,
        operation: Callable[[asyncssh.SSHClientConnection], Coroutine[Any, Any, T]],
        timeout_s: float,
        what: str,
    ) -> T:
        """Runs ``operation(connection)`` on the loop, connecting first if needed."""
        self.connect()
        conn = self._conn
        if conn is None:
            raise _failures.lost_connection(self.address, f"before it could {what}")
        try:
            return self._runner.call(operation(conn), timeout_s)
        except TimeoutError:
            raise _failures.no_answer(self.address, what, timeout_s) from None
        except (OSError, asyncssh.Error) as exc:
            with self._lock:
                if self._conn is conn:
                    self._conn = None
            raise _failures.lost_connection(self.address, f"while trying to {what}") from exc


def _decoded(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""
