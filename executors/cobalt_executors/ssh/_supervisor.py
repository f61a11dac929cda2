"""One host's agent, kept running by a thread of its own.

:class:`HostAgent` connects to its host, checks that the host's interpreter
has this very version of cobalt, opens a reverse tunnel to the controller when
asked, writes the agent's credential to a file only its user may read (a
variable on the command line would show in the host's process list), and
starts ``python -m cobalt_executors.agent`` there under ``setsid``. When the
agent exits or the connection drops, it says why and, after a backoff that
doubles up to :data:`BACKOFF_S`'s bound, connects again. An agent that still
runs there (the connection dropped, or the controller was restarted) is taken
back, tunnel port and all, so that the tasks it runs are not lost; one that
exited is started again. :meth:`HostAgent.stop` kills the agent's process group
from a second exec.

Nothing here blocks the executor: each host's start, however slow or failed,
runs on the host's own thread, and its state (:class:`HostState`) is what the
executor reads.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cobalt_common.errors import Error, ExecutorError, HostError
from cobalt_common.version import __version__
from cobalt_executors.base import AgentEndpoint
from cobalt_executors.ssh._hosts import HostSpec
from cobalt_executors.ssh._loop import LoopRunner

if TYPE_CHECKING:  # asyncssh loads only once an SSH executor starts hosts
    from cobalt_executors.ssh._process import RemoteProcess
    from cobalt_executors.ssh._remote import SshHost

log = logging.getLogger("cobalt.executors")

BACKOFF_S = (1.0, 60.0)
"""The first and the longest wait before a host's agent is started again."""
TOKEN_TTL_S = 30 * 86400.0
"""How long an agent's credential lasts; each start mints a new one."""
TOKEN_FILE = "agent.token"
PID_FILE = "agent.pid"
"""The agent's process group on the host, so that the next start (after a dropped
connection, or by a restarted controller) takes back an agent that still runs."""
_POLL_S = 1.0
"""How often an agent taken back, whose exit no channel reports, is checked on."""
_WATCH_S = 0.5
"""How often the watching thread looks up from the agent's process to check for stop."""
_STOP_GRACE_S = 5.0


class HostState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AgentLaunch:
    """What every agent of one executor is started with.

    Attributes:
        executor: the executor's name, which agents join.
        endpoint: how agents reach the controller.
        tunnel: whether hosts that do not say otherwise reach it through a reverse tunnel.
        workers: warm workers per agent; 0 for the agent's default (one per CPU).
    """

    executor: str
    endpoint: AgentEndpoint
    tunnel: bool = False
    workers: int = 0


def host_label(spec: HostSpec) -> str:
    """The allocation an agent on ``spec`` names in its hello: ``user@host:port``
    without brackets, so that it is a plain name in a credential."""
    return f"{spec.user}@{spec.host}:{spec.port}"


def split_address(address: str) -> tuple[str, int]:
    """``("127.0.0.1", 50051)`` from ``"127.0.0.1:50051"`` (``[::1]:50051`` for IPv6).

    Example:
        >>> split_address("[::1]:7")
        ('::1', 7)
    """
    host, _, port = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


class HostAgent:
    """Keeps one agent running on one host until :meth:`stop`.

    Args:
        spec: the host.
        launch: what the executor's agents are started with.
        runner: the event loop shared by the executor's hosts.
        is_attached: whether this host's agent is connected to the controller now.
    """

    def __init__(
        self,
        spec: HostSpec,
        launch: AgentLaunch,
        runner: LoopRunner,
        is_attached: Callable[[str], bool],
    ) -> None:
        self.spec = spec
        self.label = host_label(spec)
        digest = hashlib.sha256(f"{launch.executor}/{self.label}".encode()).hexdigest()
        self.agent_id = f"ssh-{digest[:12]}"
        """Stable per executor and host, so that restarts name the same agent."""
        self._launch = launch
        self._is_attached = is_attached
        self._host = _ssh_host(spec, runner)
        self._lock = threading.Lock()
        self._state = HostState.STARTING
        self._message = "connecting"
        self._process: RemoteProcess | None = None
        """The agent started by this executor's connection; None for one taken back."""
        self._pgid: int | None = None
        """The agent's process group there, started or taken back."""
        self._stopping = threading.Event()
        self._attached = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"cobalt-ssh-agent {spec.address}", daemon=True
        )
        self.controller = ""
        """The address the agent was last told to dial (the tunnel's, with a tunnel)."""
        self.starts = 0

    @property
    def tunnel(self) -> bool:
        return self._launch.tunnel if self.spec.tunnel is None else self.spec.tunnel

    def start(self) -> None:
        self._thread.start()

    def state(self) -> tuple[HostState, str]:
        """The host's state and what it last did or what went wrong."""
        if self._is_attached(self.label):
            return HostState.READY, self._ready_message()
        with self._lock:
            state, message = self._state, self._message
        if state is HostState.READY:  # its stream closed; the agent dials again by itself
            return HostState.STARTING, f"agent {self.agent_id} is reconnecting to the controller"
        return state, message

    def _ready_message(self) -> str:
        if self.tunnel:
            return f"agent {self.agent_id} attached through a reverse tunnel ({self.controller})"
        return f"agent {self.agent_id} attached, dialling {self.controller}"

    def attached(self) -> None:
        """The agent this host started said hello to the controller."""
        self._attached.set()
        with self._lock:
            self._state, self._message = HostState.READY, self._ready_message()

    def pid(self) -> int | None:
        """The agent's process (and process group) on the host."""
        return self._pgid

    # -- the host's thread -----------------------------------------------------------------

    def _run(self) -> None:
        delay = BACKOFF_S[0]
        while not self._stopping.is_set():
            self._attached.clear()
            try:
                process = self._start()
            except Error as exc:
                self._failed(str(exc))
            except Exception as exc:  # an unforeseen failure must not end the thread
                if self._stopping.is_set():
                    return
                log.exception("executor %s: starting the agent on %s", self._launch.executor, self)
                self._failed(f"{self.spec.address}: starting the agent failed: {exc!r}")
            else:
                why = self._watch(process)
                if self._stopping.is_set():
                    return
                if self._attached.is_set():
                    delay = BACKOFF_S[0]
                log.warning(
                    "executor %s: lost the agent on %s (%s); in %g s it is taken back if it "
                    "still runs there, or started again",
                    self._launch.executor,
                    self.spec.address,
                    why,
                    delay,
                )
                with self._lock:
                    failed = self._state is HostState.FAILED or not self._attached.is_set()
                    self._state = HostState.FAILED if failed else HostState.STARTING
                    self._message = why
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, BACKOFF_S[1])

    def _failed(self, message: str) -> None:
        log.warning("executor %s: %s", self._launch.executor, message)
        with self._lock:
            self._state, self._message = HostState.FAILED, message

    def _start(self) -> RemoteProcess | None:
        """Starts the agent, or takes back one that still runs there (returns None)."""
        host, spec, launch = self._host, self.spec, self._launch
        with self._lock:
            self._process = None
        host.connect()
        python = host.check_python(cobalt_version=__version__)
        work_dir = spec.work_dir or f"~/.cobalt/ssh-{launch.executor}"
        from cobalt_executors.ssh._process import shell_path

        folder = shell_path(work_dir)
        if self._take_back(folder):
            return None
        controller = launch.endpoint.address
        if self.tunnel:
            controller = self._open_tunnel(0)
        self.controller = controller
        token = launch.endpoint.mint(launch.executor, self.label, TOKEN_TTL_S)
        stored = host.run(
            ["/bin/sh", "-c", f"umask 077 && mkdir -p {folder} && cat > {folder}/{TOKEN_FILE}"],
            input=token.encode(),
        )
        if stored.status != 0:
            raise HostError(
                f"{spec.address}: cannot write the agent's files in {work_dir} "
                f"({stored.stderr.strip() or f'exit status {stored.status}'}); set the "
                "host's work_dir to a folder its user may write.",
                host=spec.address,
            )
        with self._lock:
            if self._state is not HostState.FAILED:
                self._state, self._message = HostState.STARTING, "starting the agent"
        process = host.start(self._argv(python.executable, controller), cwd=work_dir)
        self.starts += 1
        held = self._hold(process.pid, process)
        host.run(["/bin/sh", "-c", f"echo {process.pid} > {folder}/{PID_FILE}"])
        if held:
            log.info(
                "executor %s: started agent %s on %s (process group %d, dialling %s)",
                launch.executor,
                self.agent_id,
                spec.address,
                process.pid,
                controller,
            )
        return process

    def _argv(self, python: str, controller: str) -> list[str]:
        spec, launch = self.spec, self._launch
        argv = [python, "-m", "cobalt_executors.agent"]
        argv += ["--controller", controller, "--executor", launch.executor]
        argv += ["--token-file", TOKEN_FILE, "--work-dir", "."]
        argv += ["--allocation", self.label, "--agent-id", self.agent_id]
        if launch.endpoint.fingerprint:
            argv += ["--fingerprint", launch.endpoint.fingerprint]
        if launch.workers:
            argv += ["--workers", str(launch.workers)]
        if spec.cpus is not None:
            argv += ["--cpus", f"{spec.cpus:g}"]
        if spec.memory_mb is not None:
            argv += ["--memory", f"{spec.memory_mb}MB"]
        if spec.gpus:
            argv += ["--emulate-gpus", json.dumps(dict(spec.gpus))]
        return argv

    def forward_to(self, host: str, port: int) -> int:
        """A port on the controller's loopback that tunnels to ``host:port`` as this
        host sees it (see :meth:`~._remote.SshHost.forward_local_port`)."""
        return self._host.forward_local_port(host, port)

    def stop_forward(self, local_port: int) -> None:
        self._host.stop_forward(local_port)

    def _open_tunnel(self, port: int) -> str:
        """Listens on ``port`` (0: any) of the host's loopback for the controller."""
        target_host, target_port = split_address(self._launch.endpoint.address)
        return f"127.0.0.1:{self._host.forward_remote_port(port, target_host, target_port)}"

    def _hold(self, pgid: int, process: RemoteProcess | None) -> bool:
        """Records the agent's group; False (and kills it) when :meth:`stop` came meanwhile
        and found nothing to kill."""
        with self._lock:
            self._process, self._pgid = process, pgid
            stopping = self._stopping.is_set()
        if stopping:
            with contextlib.suppress(HostError):
                self._host.kill_group(pgid, signal.SIGKILL)
        return not stopping

    def _take_back(self, folder: str) -> bool:
        """Takes back the agent this executor left running on the host (its connection
        dropped, or its controller restarted); True when one runs and dials here again."""
        host = self._host
        found = host.run(["/bin/sh", "-c", f"cat {folder}/{PID_FILE} 2>/dev/null || true"])
        text = found.stdout.strip()
        if not text.isdigit() or int(text) < 2:
            return False
        pgid = int(text)
        args = host.run(["ps", "-o", "args=", "-p", str(pgid)]).stdout
        if f"--agent-id {self.agent_id}" not in args:
            return False  # gone, or the number now belongs to another process
        dialled = re.search(r"--controller (\S+)", args)
        controller = dialled[1] if dialled else ""
        try:
            if self.tunnel and controller.startswith("127.0.0.1:"):
                self._open_tunnel(int(controller.rpartition(":")[2]))
            elif self.tunnel or controller != self._launch.endpoint.address:
                raise HostError(f"it dials {controller}", host=self.spec.address)
        except HostError as exc:
            log.warning(
                "executor %s: the agent left running on %s cannot be taken back (%s); "
                "starting a new one",
                self._launch.executor,
                self.spec.address,
                exc,
            )
            host.kill_group(pgid, signal.SIGKILL)
            return False
        self.controller = controller
        if self._hold(pgid, None):
            log.info(
                "executor %s: took back agent %s still running on %s (process group %d)",
                self._launch.executor,
                self.agent_id,
                self.spec.address,
                pgid,
            )
        return True

    def _watch(self, process: RemoteProcess | None) -> str:
        """Waits for the agent's exit, or :meth:`stop`; returns why it stopped."""
        pgid = self._pgid
        try:
            while not self._stopping.is_set():
                if process is not None:
                    status = process.wait(_WATCH_S)
                    if status is not None:
                        return f"{self.spec.address}: the agent exited with status {status}: " + (
                            _last_lines(process.stderr_tail()) or "no output"
                        )
                elif not self._alive(pgid):
                    return f"{self.spec.address}: the agent (process group {pgid}) exited"
                else:
                    self._stopping.wait(_POLL_S)
        except HostError as exc:
            return str(exc)
        return "stopping"

    def _alive(self, pgid: int | None) -> bool:
        return pgid is not None and self._host.run(["kill", "-0", "--", f"-{pgid}"]).status == 0

    # -- stopping ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Tells the host's thread to start nothing more (see :meth:`stop`)."""
        self._stopping.set()

    def stop(self) -> None:
        """Kills the agent's process group there, and closes the connection."""
        with self._lock:
            self._stopping.set()
            process, pgid = self._process, self._pgid
        if pgid is not None:
            with contextlib.suppress(HostError, RuntimeError):
                if self._host.kill_group(pgid, signal.SIGTERM):
                    deadline = time.monotonic() + _STOP_GRACE_S
                    while time.monotonic() < deadline and (
                        process.returncode is None if process is not None else self._alive(pgid)
                    ):
                        time.sleep(0.05)
                    self._host.kill_group(pgid, signal.SIGKILL)
        if self._thread.ident is not None:
            self._thread.join(timeout=_STOP_GRACE_S)
        self._host.close()

    def __str__(self) -> str:
        return self.spec.address


def _ssh_host(spec: HostSpec, runner: LoopRunner) -> SshHost:
    try:
        from cobalt_executors.ssh._remote import SshHost
    except ImportError as exc:
        raise ExecutorError(
            f"the ssh executor needs the asyncssh package ({exc}); install cobalt with its "
            "remote extra: pip install 'cobalt[remote]'."
        ) from None
    return SshHost(spec, runner=runner)


def _last_lines(text: str, n: int = 5) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])
