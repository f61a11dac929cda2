"""The ``ssh`` executor: the user's own machines, one agent on each, started over SSH.

In ``config.toml``::

    [executors.lab]
    type = "ssh"
    tunnel = false          # true: agents reach the controller through a reverse tunnel
    workers = 4             # warm workers per host (default: one per CPU)
    hosts = [
        { host = "gpu1.lab.example", user = "alice", gpus = { h100 = 2 } },
        { host = "10.0.0.7", port = 2222, python = "/opt/py311/bin/python", tunnel = true },
    ]

At setup each host gets a thread of its own (:class:`~._supervisor.HostAgent`)
that connects, checks the host's cobalt, and starts the agent, which dials the
controller like any other. Tasks go to the hosts whose agent is attached; they
wait while hosts are still starting, and fail at once, with each host's
problem, when every host has failed.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit

from cobalt_common.errors import ExecutorError, SpecError
from cobalt_common.executor_types import SSH
from cobalt_common.hardware import HardwareSpec
from cobalt_common.v1 import agent_pb2
from cobalt_executors._inventory import Inventory
from cobalt_executors.base import ExecutorContext
from cobalt_executors.remote import AgentInfo, AgentLink, RemoteExecutor
from cobalt_executors.ssh._hosts import HostSpec, parse_hosts
from cobalt_executors.ssh._loop import LoopRunner
from cobalt_executors.ssh._supervisor import AgentLaunch, HostAgent, HostState

HOSTS_FAILED = "host_unreachable"
"""The reason of a task failed because no host of its executor can be used."""


class SshExecutor(RemoteExecutor):
    """Runs tasks on agents it starts over SSH, one per configured host.

    Options (config only):
        hosts: the machines, one table each (:mod:`cobalt_executors.ssh._hosts`).
        tunnel: agents reach the controller through a reverse SSH tunnel from
            their host (default false; a host's own ``tunnel`` wins).
        workers: warm workers per agent (default: one per CPU of its host).
        reconnect_grace_s, blob_dir: as for every remote executor.
    """

    type_name = SSH.name
    accepted_options = SSH.options | SSH.config_only
    unavailable_reason = HOSTS_FAILED

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self.hosts: tuple[HostSpec, ...] = parse_hosts(self.options.get("hosts"), executor=name)
        tunnel = self.options.get("tunnel", False)
        if not isinstance(tunnel, bool):
            raise SpecError(f"executor {name!r}: tunnel must be true or false, not {tunnel!r}.")
        workers = self.options.get("workers", 0)
        if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= 1024:
            raise SpecError(
                f"executor {name!r}: workers must be a whole number from 1 to 1024 (0 or "
                f"unset: one per CPU), not {workers!r}."
            )
        self._tunnel = tunnel
        self._workers = workers
        self._runner: LoopRunner | None = None
        self._agents: list[HostAgent] = []
        self._forwards: dict[str, tuple[HostAgent, int]] = {}
        """The tunnel to each replica on a host behind a reverse tunnel, by task key."""
        self._forwards_lock = threading.Lock()

    def setup(self, context: ExecutorContext) -> None:
        super().setup(context)
        quiet = logging.getLogger("asyncssh")
        if quiet.level == logging.NOTSET:  # a line per command otherwise; a user's level wins
            quiet.setLevel(logging.WARNING)
        if context.agents is None:
            raise SpecError(
                f"executor {self.name!r}: this controller serves no agents, so hosts cannot "
                "attach; run it with a controller (cobalt controller start)."
            )
        launch = AgentLaunch(self.name, context.agents, self._tunnel, self._workers)
        self._runner = LoopRunner(f"cobalt-ssh {self.name}")
        self._agents = [HostAgent(s, launch, self._runner, self._is_attached) for s in self.hosts]
        by_label = {a.label: a for a in self._agents}

        def attached(info: AgentInfo) -> None:
            agent = by_label.get(info.allocation)
            if agent is not None:
                agent.attached()

        self.pool.on_attach(attached)
        for agent in self._agents:
            agent.start()

    @property
    def host_agents(self) -> tuple[HostAgent, ...]:
        """Each host's agent keeper, in the order of ``hosts``."""
        return tuple(self._agents)

    def _attached(self) -> dict[str, AgentInfo]:
        return {info.allocation: info for info in self.pool.agents()}

    def _is_attached(self, label: str) -> bool:
        return label in self._attached()

    def unavailable(self) -> str:
        """Each host's problem when every host has failed; "" while one works or starts."""
        problems = []
        for agent in self._agents:
            state, message = agent.state()
            if state is not HostState.FAILED:
                return ""
            problems.append(message)
        if not problems:
            return ""
        return (
            f"no host of executor {self.name!r} can run tasks: {'; '.join(problems)}. Fix "
            "the hosts' problems; the executor keeps trying them."
        )

    # -- the executor interface ----------------------------------------------------------

    def can_ever_run(self, spec: HardwareSpec) -> bool:
        attached = self._attached()
        for agent in self._agents:
            info = attached.get(agent.label)
            if info is not None:
                if Inventory(info.cpus, info.memory_mb, info.gpus).can_ever_fit(spec):
                    return True
            elif agent.state()[0] is not HostState.FAILED and _declared_fits(agent.spec, spec):
                return True
        return self.pool.can_ever_run(spec)

    def capacity_words(self, spec: HardwareSpec) -> str:
        why = self.unavailable()
        return f"{super().capacity_words(spec)}: {why}" if why else super().capacity_words(spec)

    def reachable_url(self, task_key: str, url: str) -> str:
        """A replica on a host behind a reverse tunnel advertises the host's loopback,
        which only the host reaches: the controller reaches it through a tunnel of
        its own over the same SSH connection, closed when the replica's task ends."""
        info = self.pool.agent_of(task_key)
        agent = next((a for a in self._agents if info and a.label == info.allocation), None)
        if agent is None or not agent.tunnel:
            return url
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ExecutorError(f"replica {task_key} reported {url!r}, not http://host:port")
        local = agent.forward_to(parts.hostname, parts.port)
        with self._forwards_lock:
            old = self._forwards.pop(task_key, None)
            self._forwards[task_key] = (agent, local)
        if old is not None:
            old[0].stop_forward(old[1])
        return f"http://127.0.0.1:{local}"

    def outcome(self, link: AgentLink, msg: agent_pb2.AgentOutcome) -> None:
        super().outcome(link, msg)
        self._close_forwards()

    def detach(self, link: AgentLink, why: str) -> None:
        super().detach(link, why)
        self._close_forwards()

    def _close_forwards(self) -> None:
        """Closes the tunnels of replicas that no agent runs any more."""
        with self._forwards_lock:
            if not self._forwards:
                return
            ended = [k for k in self._forwards if self.pool.agent_of(k) is None]
            closing = [self._forwards.pop(k) for k in ended]
        for agent, port in closing:
            agent.stop_forward(port)

    def describe(self) -> tuple[str, str]:
        total, free = super().describe()
        hosts = "; ".join(f"{a.spec.address}: {_state_line(a)}" for a in self._agents)
        return f"hosts: {hosts} | {total}", free

    def teardown(self) -> None:
        super().teardown()
        for agent in self._agents:
            agent.request_stop()
        for agent in self._agents:
            agent.stop()
        if self._runner is not None:
            self._runner.close()
            self._runner = None


def _state_line(agent: HostAgent) -> str:
    state, message = agent.state()
    return f"{state.value} ({message})"


def _declared_fits(host: HostSpec, spec: HardwareSpec) -> bool:
    """Whether what ``host`` declares leaves room for ``spec``; what it leaves out
    (detected by its agent) counts as room until the agent says otherwise."""
    if host.cpus is not None and spec.cpus > host.cpus:
        return False
    if host.memory_mb is not None and spec.memory_mb > host.memory_mb:
        return False
    if spec.gpus and host.gpus:
        offered = dict(host.gpus)
        if spec.gpu:
            return offered.get(spec.gpu, 0) >= spec.gpus
        return max(offered.values()) >= spec.gpus
    return True
