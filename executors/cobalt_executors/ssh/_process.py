"""A process started on a host over SSH, leading its own process group there.

The command line the host runs is built by :func:`group_leader_command`: the
login shell hands it to ``/bin/sh``, which starts the program through
``setsid`` in the background (a background job of a shell without job control
is never a process-group leader, so ``setsid`` makes the program's process the
leader of a new session and process group without forking), prints that
process's PID (which is then also its process-group id) as the first line of
stdout, and waits for it, so the SSH channel reports its exit status. The
program keeps the channel's stdin through an explicit redirection: a
background job otherwise reads ``/dev/null``.

Killing the group takes a second exec on the same connection
(:meth:`~cobalt_executors.ssh._remote.SshHost.kill_group`): sshd refuses
signals sent over a channel for root, and closing a channel leaves the
process running.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
from collections import deque
from collections.abc import Mapping, Sequence

import asyncssh

from cobalt_common.errors import SpecError
from cobalt_executors.ssh._failures import lost_connection
from cobalt_executors.ssh._loop import LoopRunner

_TAIL_BYTES = 64 * 1024
_EXIT_POLL_S = 0.05
_LAST_OUTPUT_S = 0.5
"""After the exit status comes, how long to wait for output that follows it."""
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_LAUNCH = (
    "exec 3<&0; "
    '{env}setsid -w /bin/sh -c \'echo $$; exec "$@"\' sh "$@" 0<&3 3<&- & '
    "exec 3<&-; wait $!"
)


def shell_path(path: str) -> str:
    """``path`` quoted for a host's shell; ``~`` and ``~/...`` are under the home folder there.

    Example:
        >>> print(shell_path("~/my env/bin/python"), shell_path("/usr/bin/python3"))
        "$HOME"/'my env/bin/python' /usr/bin/python3
    """
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def group_leader_command(
    argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None
) -> str:
    """The command line that runs ``argv`` on a host as the leader of a new process group.

    The first line the command writes to stdout is the program's PID, equal to
    its process-group id; the command exits with the program's status (128+N
    when signal N killed it).

    Raises:
        SpecError: ``argv`` is empty, or an environment variable's name is invalid.

    Example:
        >>> command = group_leader_command(["python3", "-V"], {"A": "1 2"}, "~/w")
        >>> print(command)  # doctest: +ELLIPSIS
        exec /bin/sh -c 'cd "$HOME"/w || exit 1; exec 3<&0; env '"'"'A=1 2'"'"' ... sh python3 -V
    """
    if not argv or not all(isinstance(arg, str) for arg in argv):
        raise SpecError(f"the command to run must be a non-empty list of strings, not {argv!r}.")
    for name in env or {}:
        if not _ENV_NAME.fullmatch(name):
            raise SpecError(f"{name!r} is not an environment variable name.")
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in (env or {}).items())
    script = _LAUNCH.format(env=f"env {assignments} " if assignments else "")
    if cwd is not None:
        script = f"cd {shell_path(cwd)} || exit 1; {script}"
    return f"exec /bin/sh -c {shlex.quote(script)} sh {shlex.join(argv)}"


class _Tail:
    """The last bytes of a stream, at most ``_TAIL_BYTES`` of them."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def add(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        while self._size - len(self._chunks[0]) >= _TAIL_BYTES:
            self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        return b"".join(self._chunks)[-_TAIL_BYTES:].decode(errors="replace")


class RemoteProcess:
    """A process running on a host, started by :meth:`SshHost.start`.

    Its stderr is always collected (the last 64 KB). Its stdout is collected
    the same way, unless it was started ``interactive``: then the caller reads
    it with :meth:`readline` and :meth:`readexactly`, and writes its stdin with
    :meth:`write`.

    Attributes:
        pid: the process's PID on the host, also its process-group id.
        host: the host, as ``user@name:port``.
    """

    def __init__(  # called on the runner's loop: it starts the tasks that collect output
        self,
        process: asyncssh.SSHClientProcess[bytes],
        *,
        pid: int,
        host: str,
        runner: LoopRunner,
        interactive: bool,
    ) -> None:
        self.pid = pid
        self.host = host
        self._process = process
        self._runner = runner
        self._interactive = interactive
        self._stdout = _Tail()
        self._stderr = _Tail()
        self._drains = [asyncio.ensure_future(self._drain(process.stderr, self._stderr))]
        if not interactive:
            self._drains.append(asyncio.ensure_future(self._drain(process.stdout, self._stdout)))

    @staticmethod
    async def _drain(reader: asyncssh.SSHReader[bytes], tail: _Tail) -> None:
        while data := await reader.read(65536):
            tail.add(data)

    @property
    def returncode(self) -> int | None:
        """The exit status (128+N when killed by signal N), or ``None`` while it runs."""
        if self._process.exit_status is None and self._process.exit_signal is None:
            return None
        return self._process.returncode

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Waits for the exit and returns its status; ``None`` if it still runs after ``timeout_s``.

        A child the process left running does not hold this up; it still
        belongs to the process group.

        Raises:
            HostUnreachableError: the connection closed before the exit was
                reported; the process may still run there.
        """

        async def wait() -> int | None:
            # The channel closes only when nothing there holds its output open any
            # more; a child left in the background may, after the exit is reported.
            closed = asyncio.ensure_future(self._process.wait_closed())
            while not closed.done() and self.returncode is None:
                await asyncio.wait([closed], timeout=_EXIT_POLL_S)
            drained = [closed, *self._drains]
            await asyncio.wait(drained, timeout=None if closed.done() else _LAST_OUTPUT_S)
            return self.returncode

        try:
            status = self._runner.call(wait(), timeout_s)
        except TimeoutError:
            return None
        if status is None:
            raise lost_connection(self.host, f"before process {self.pid} exited")
        return status

    def write(self, data: bytes) -> None:
        """Writes ``data`` to the process's stdin (queued; sent in order)."""
        self._runner.loop.call_soon_threadsafe(self._send, data)

    def close_stdin(self) -> None:
        """Sends end-of-file to the process's stdin."""
        self._runner.loop.call_soon_threadsafe(self._send, None)

    def _send(self, data: bytes | None) -> None:
        """On the loop: writes ``data`` (end-of-file for ``None``); a closed channel drops it,
        and the reader sees the end of stdout."""
        with contextlib.suppress(OSError, asyncssh.Error):
            if data is None:
                self._process.stdin.write_eof()
            else:
                self._process.stdin.write(data)

    def readline(self, timeout_s: float | None = None) -> bytes:
        """The next line of stdout, ``b""`` at its end (``interactive`` processes only).

        Raises:
            TimeoutError: no whole line came within ``timeout_s`` seconds.
        """
        self._require_interactive()
        return self._runner.call(self._process.stdout.readline(), timeout_s)

    def readexactly(self, n: int, timeout_s: float | None = None) -> bytes:
        """The next ``n`` bytes of stdout (``interactive`` processes only).

        Raises:
            TimeoutError: they did not all come within ``timeout_s`` seconds.
            asyncio.IncompleteReadError: stdout ended first.
        """
        self._require_interactive()
        return self._runner.call(self._process.stdout.readexactly(n), timeout_s)

    def stdout_tail(self) -> str:
        """The last 64 KB of stdout so far (empty for ``interactive`` processes)."""
        return self._stdout.text()

    def stderr_tail(self) -> str:
        """The last 64 KB of stderr so far."""
        return self._stderr.text()

    def _require_interactive(self) -> None:
        if not self._interactive:
            raise RuntimeError(
                f"process {self.pid} on {self.host} was not started interactive=True: "
                "its stdout is collected, read it with stdout_tail()."
            )
