"""The controller's side of the agents of one remote executor.

:class:`AgentPool` keeps the agents connected to one executor, a mirror of
each one's inventory, and which task runs on which. The controller's agent
service hands it each stream as an :class:`AgentLink`; the pool sends tasks
and cancels down the link and turns outcomes into reports. When a link
closes, every task it held is reported at once as lost (reason
``agent_lost``), and the scheduler retries it per its policy.

An agent keeps each outcome until the controller acknowledges it, after the
outcome is stored (:attr:`TaskOutcome.on_stored`). After a controller
restart, tasks that were running on agents are *reclaimed*: the pool waits up
to ``reconnect_grace_s`` for an agent to come back and claim them in its
hello, and reports each unclaimed one lost then. An outcome for a task the
pool no longer knows (a duplicate, or one reported lost meanwhile) is
acknowledged and dropped, so none is recorded twice.

A task an agent claims that the controller did not reclaim is held as an
*orphan* for the same grace. The previous controller may have sent it and died
before it stored that it had: the restarted scheduler then starts the same
attempt (the same task key) again, and the pool takes the orphan back, with its
outcome if it has ended, instead of running it a second time. An orphan nobody
asks for within the grace is stopped, and its outcome dropped.

A deployment's replica that outlived the controller is *adopted* (see
:meth:`AgentPool.adopt`): the agent that claims it keeps it running and holds its
hardware, whether it attached before the adoption or comes back after it.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from cobalt_common.errors import ExecutorError
from cobalt_common.hardware import HardwareGiven, HardwareSpec
from cobalt_common.status import Status
from cobalt_common.v1 import agent_pb2
from cobalt_executors._inventory import Allocation, GpuDevice, Inventory
from cobalt_executors.base import TaskOutcome, TaskSubmission
from cobalt_executors.remote._protocol import AGENT_LOST, outcome_from_wire, task_to_wire

log = logging.getLogger("cobalt.executors")

WALLTIME_MARGIN_S = 10.0
"""A task goes to an agent whose allocation ends at least this long after the
task's time limit would."""
PREFETCH_WINDOW_S = 0.02
"""About how much of an agent's work its queue holds: tasks queued ahead wait at
most about this long for a worker, however short or long they run."""
PREFETCH_UNKNOWN = 2
"""Tasks queued ahead on an agent none of whose tasks has ended yet."""


class AgentLink(ABC):
    """The controller's end of one agent's stream."""

    @abstractmethod
    def send(self, command: agent_pb2.AgentCommand) -> None:
        """Queues ``command`` for the agent; never blocks."""

    @abstractmethod
    def close(self, message: str) -> None:
        """Ends the stream (the agent reconnects unless the message refused it)."""

    def acknowledge(self, seq: int) -> None:
        """Tells the agent that outcome ``seq`` is stored; a link may hold it
        briefly to send it with the next message."""
        self.send(agent_pb2.AgentCommand(ack=agent_pb2.AgentAck(seqs=[seq])))


@dataclass(slots=True)
class AgentInfo:
    """What an agent said about itself in its hello."""

    agent_id: str
    hostname: str
    allocation: str
    cpus: float
    memory_mb: int
    gpus: tuple[GpuDevice, ...]
    expires_at: float = 0.0
    running: tuple[str, ...] = ()

    @staticmethod
    def from_hello(hello: agent_pb2.AgentHello) -> AgentInfo:
        return AgentInfo(
            agent_id=hello.agent_id,
            hostname=hello.hostname,
            allocation=hello.allocation,
            cpus=hello.cpus,
            memory_mb=hello.memory_mb,
            gpus=tuple(GpuDevice(g.index, g.type, g.emulated) for g in hello.gpus),
            expires_at=hello.expires_at,
            running=tuple(hello.running),
        )

    def where(self) -> str:
        place = f"{self.hostname} ({self.allocation})" if self.allocation else self.hostname
        return f"agent {self.agent_id} on {place}"


@dataclass(slots=True)
class _Agent:
    link: AgentLink
    info: AgentInfo
    inventory: Inventory
    running: dict[str, Allocation] = field(default_factory=dict)
    idle_since: float = 0.0
    """When it last became idle (see :meth:`is_idle`), or attached; 0 while it runs tasks."""
    ran: int = 0
    """Tasks it has been given."""
    queued: dict[str, HardwareSpec] = field(default_factory=dict)
    """Tasks sent ahead to wait in the agent's own queue (see ``prefetch``), in order."""
    mean_run_s: float = 0.0
    """How long its tasks run, a moving average; 0 before the first ends."""
    adopted: int = 0
    """Replicas that outlived a controller and hold hardware here (see ``adopt``)."""
    orphans: set[str] = field(default_factory=set)
    """Tasks it claimed that nobody has asked for yet (see :class:`_Orphan`)."""

    def is_idle(self) -> bool:
        """Whether nothing runs here: no task, none queued, no adopted replica, no
        orphan."""
        return not self.running and not self.queued and not self.adopted and not self.orphans

    def queue_depth(self, prefetch: int) -> int:
        """How many tasks it may hold queued ahead: enough to keep its workers busy
        for :data:`PREFETCH_WINDOW_S`, at most ``prefetch``."""
        if not self.mean_run_s:
            return min(prefetch, PREFETCH_UNKNOWN)
        busy = max(len(self.running), 1)
        wanted = busy * PREFETCH_WINDOW_S / self.mean_run_s
        return min(prefetch, max(1, math.ceil(wanted - 1e-9)))

    def ran_for(self, seconds: float) -> None:
        """A task of its ran ``seconds`` (from its outcome; nonsense is ignored)."""
        if not 0.0 <= seconds < 1e7:
            return
        seconds = max(seconds, 1e-4)
        self.mean_run_s = seconds if not self.mean_run_s else 0.8 * self.mean_run_s + 0.2 * seconds


@dataclass(slots=True)
class _Reclaimed:
    given: HardwareGiven
    deadline: float


@dataclass(slots=True)
class _Orphan:
    """A task an agent claims in its hello that this controller did not reclaim."""

    agent: _Agent
    deadline: float
    outcome: agent_pb2.AgentOutcome | None = None
    """Its outcome, held unacknowledged until the task is asked for or expires."""


def fits_walltime(
    expires_at: float, spec: HardwareSpec, now: float, *, at_least_s: float = 0.0
) -> bool:
    """Whether an allocation ending at ``expires_at`` (0: never) leaves room for ``spec``'s
    time limit, and for ``at_least_s`` (what a replica, which has no limit, asks),
    with :data:`WALLTIME_MARGIN_S` to spare.

    Example:
        >>> fits_walltime(0, HardwareSpec(time_limit_s=60), now=100)
        True
        >>> fits_walltime(150, HardwareSpec(time_limit_s=60), now=100)
        False
        >>> fits_walltime(1000, HardwareSpec(), now=100, at_least_s=3600)
        False
    """
    if not expires_at:
        return True
    return expires_at - now >= max(spec.time_limit_s or 0.0, at_least_s) + WALLTIME_MARGIN_S


class AgentPool:
    """Agents of one executor, what each has free, and what each runs.

    Args:
        name: the executor's name, for messages.
        report: the executor context's ``report``.
        reconnect_grace_s: how long a task reclaimed after a controller restart
            waits for its agent to come back before it is reported lost.
    """

    def __init__(
        self,
        name: str,
        report: Callable[[TaskOutcome], None],
        *,
        reconnect_grace_s: float = 30.0,
        prefetch: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._report = report
        self._grace = reconnect_grace_s
        self.prefetch = prefetch
        """CPU tasks an agent may hold queued beyond its room, at most, so that the
        next one starts the moment a worker frees instead of a round trip later; 0:
        none. How many it holds follows how long its tasks run (see
        :meth:`_Agent.queue_depth`). A queued task counts as started (its outcome
        says when it really ran)."""
        self._clock = clock
        self._lock = threading.Lock()
        self._agents: dict[AgentLink, _Agent] = {}
        self._where: dict[str, _Agent] = {}
        """The agent of each task it runs, by task key."""
        self._reclaimed: dict[str, _Reclaimed] = {}
        self._orphans: dict[str, _Orphan] = {}
        self._awaited: dict[str, HardwareGiven] = {}
        """Replicas adopted while no agent was attached, until their agent claims them or
        they are released."""
        self._adopted: dict[str, tuple[_Agent, Allocation]] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self._on_attach: list[Callable[[AgentInfo], None]] = []
        self.task_limit: Callable[[AgentInfo], int | None] = lambda info: None
        """How many tasks an agent may be given in its life (None: no limit); an
        executor that runs one job per task limits its agents to one."""
        self.replica_time_left_s: Callable[[], float] = lambda: 0.0
        """The walltime an agent must have left to be given a deployment's replica,
        which has no time limit but serves until stopped (0: any agent that has not
        expired). An executor whose allocations end sets it, so that a replica does
        not start on one about to end."""
        self._timer = threading.Thread(
            target=self._expire_reclaimed, name=f"cobalt-agents-{name}", daemon=True
        )
        self._timer.start()

    # -- agents that come and go ------------------------------------------------------

    def on_attach(self, callback: Callable[[AgentInfo], None]) -> None:
        """Calls ``callback`` after each agent attaches (room may have freed)."""
        self._on_attach.append(callback)

    def attach(self, link: AgentLink, info: AgentInfo) -> list[str]:
        """Takes a newly connected agent; returns the tasks it runs that nobody wants
        any more (it stops them)."""
        inventory = Inventory(info.cpus, info.memory_mb, info.gpus)
        now = self._clock()
        agent = _Agent(link, info, inventory, idle_since=now)
        forget: list[str] = []
        with self._lock:
            if self._closed:
                raise ExecutorError(f"executor {self.name!r} is stopping; try again later.")
            for key in info.running:
                awaited = self._awaited.pop(key, None)
                if awaited is not None:
                    held = inventory.reserve(awaited) or Allocation(0.0, 0)
                    self._hold_adopted(key, agent, held)
                    continue
                reclaimed = self._reclaimed.pop(key, None)
                if reclaimed is not None:
                    allocation = inventory.reserve(reclaimed.given)
                    agent.running[key] = allocation or Allocation(0.0, 0)
                    self._where[key] = agent
                elif key in self._where or self._grace <= 0:
                    forget.append(key)  # another agent runs it, or no grace is given
                else:
                    self._hold_orphan(key, agent, now + self._grace)
            self._agents[link] = agent
        log.info("executor %s: %s attached with %s", self.name, info.where(), inventory.describe())
        for callback in self._on_attach:
            callback(info)
        return forget

    def detach(self, link: AgentLink, why: str) -> None:
        """The agent's stream closed: every task it held is reported lost, now."""
        with self._lock:
            agent = self._agents.pop(link, None)
            if agent is None:
                return
            lost = [*agent.running, *agent.queued]
            for key in lost:
                self._where.pop(key, None)
            for key in agent.orphans:  # claimed again if the agent comes back
                self._orphans.pop(key, None)
            agent.running.clear()
            agent.queued.clear()
            agent.orphans.clear()
        log.warning("executor %s: %s went away (%s)", self.name, agent.info.where(), why)
        now = self._clock()
        for key in lost:
            self._report(
                TaskOutcome(
                    task_key=key,
                    status=Status.FAILED,
                    error=(
                        f"the {agent.info.where()} of executor {self.name!r} went away while "
                        f"the task ran ({why}); the task is retried if it has retries left."
                    ),
                    ended_at=now,
                    reason=AGENT_LOST,
                )
            )

    def drop(self, allocation: str, why: str) -> None:
        """Detaches the agents of ``allocation`` at once and closes their streams: their
        machine is known to be gone, so their tasks are reported lost now rather than
        when the stream times out."""
        with self._lock:
            links = [link for link, a in self._agents.items() if a.info.allocation == allocation]
        for link in links:
            self.detach(link, why)
            link.close(why)

    def agents(self) -> list[AgentInfo]:
        with self._lock:
            return [a.info for a in self._agents.values()]

    def agent_of(self, task_key: str) -> AgentInfo | None:
        """The agent that runs ``task_key`` now; None when none does."""
        with self._lock:
            agent = self._where.get(task_key)
            return agent.info if agent is not None else None

    def idle(self) -> list[tuple[AgentInfo, int, float]]:
        """Agents running nothing (no task, and no adopted replica holding hardware):
        each with how many tasks it ran, and for how long (seconds) it has been idle."""
        now = self._clock()
        with self._lock:
            return [
                (a.info, a.ran, now - a.idle_since)
                for a in self._agents.values()
                if a.is_idle() and a.idle_since
            ]

    # -- tasks ------------------------------------------------------------------------

    def submit(self, task: TaskSubmission) -> HardwareGiven | None:
        """Starts ``task`` on the first agent with room (and walltime) for it."""
        now = self._clock()
        least = self.replica_time_left_s() if task.replica else 0.0
        with self._lock:
            if self._closed:
                return None
            orphan = self._orphans.pop(task.task_key, None) if self._orphans else None
            if orphan is not None:
                given = self._take_orphan(task, orphan)
        if orphan is not None:
            if orphan.outcome is not None:
                self.outcome(orphan.agent.link, orphan.outcome)
            return given
        with self._lock:
            for agent in self._agents.values():
                if not fits_walltime(agent.info.expires_at, task.hardware, now, at_least_s=least):
                    continue
                limit = self.task_limit(agent.info)
                if limit is not None and agent.ran >= limit:
                    continue
                allocation = agent.inventory.allocate(task.hardware)
                if allocation is None:
                    continue
                agent.running[task.task_key] = allocation
                given = allocation.given()
                break
            else:
                ahead = self._queue_ahead(task, now)
                if ahead is None:
                    return None
                agent = ahead
                spec = task.hardware
                given = HardwareGiven(cpus=spec.cpus, memory_mb=spec.memory_mb)
            agent.idle_since = 0.0
            agent.ran += 1
            self._where[task.task_key] = agent
        agent.link.send(agent_pb2.AgentCommand(task=task_to_wire(task)))
        return given

    def _queue_ahead(self, task: TaskSubmission, now: float) -> _Agent | None:
        """The agent whose queue takes ``task`` ahead of room (under the lock).

        Only short CPU work queues ahead. A long-running task (a replica, a
        sublattice) would wait there behind tasks of any length, counted as started,
        while an agent with room, or a new one, could run it now."""
        spec = task.hardware
        if not self.prefetch or spec.gpu or task.long_running:
            return None
        best = None
        for agent in self._agents.values():
            limit = self.task_limit(agent.info)
            if (
                len(agent.queued) < agent.queue_depth(self.prefetch)
                and (limit is None or agent.ran < limit)
                and agent.inventory.can_ever_fit(spec)
                and fits_walltime(agent.info.expires_at, spec, now)
                and (best is None or len(agent.queued) < len(best.queued))
            ):
                best = agent
        if best is not None:
            best.queued[task.task_key] = spec
        return best

    def _promote(self, agent: _Agent) -> None:
        """Queued tasks that fit now take their room, in order (under the lock)."""
        for key, spec in list(agent.queued.items()):
            allocation = agent.inventory.allocate(spec)
            if allocation is None:
                return
            del agent.queued[key]
            agent.running[key] = allocation

    def cancel(self, task_key: str, reason: str) -> None:
        with self._lock:
            agent = self._where.get(task_key)
            reclaimed = self._reclaimed.pop(task_key, None) if agent is None else None
        if agent is not None:
            agent.link.send(
                agent_pb2.AgentCommand(
                    cancel=agent_pb2.AgentCancel(task_key=task_key, reason=reason)
                )
            )
        elif reclaimed is not None:
            status = Status.TIMED_OUT if reason == "time_limit" else Status.CANCELLED
            self._report(
                TaskOutcome(task_key, status, ended_at=self._clock(), reason=reason)  # type: ignore[arg-type]
            )

    def outcome(self, link: AgentLink, msg: agent_pb2.AgentOutcome) -> None:
        """An outcome from an agent: reported once, acknowledged once stored."""
        seq = msg.seq

        def acknowledge() -> None:
            link.acknowledge(seq)

        with self._lock:
            agent = self._where.get(msg.task_key)
            known = agent is not None and agent.link is link
            if known and agent is not None:
                del self._where[msg.task_key]
                if msg.started_at and msg.ended_at:
                    agent.ran_for(msg.ended_at - msg.started_at)
                allocation = agent.running.pop(msg.task_key, None)
                agent.queued.pop(msg.task_key, None)
                if allocation is not None:
                    agent.inventory.release(allocation)
                if agent.queued:
                    self._promote(agent)
                if agent.is_idle():
                    agent.idle_since = self._clock()
            elif agent is None:
                orphan = self._orphans.get(msg.task_key)
                if orphan is not None and orphan.agent.link is link:
                    earlier, orphan.outcome = orphan.outcome, msg
                    if earlier is None or earlier.seq == seq:
                        return  # held until the task is asked for, or expires
                    seq = earlier.seq  # sent again after a reconnect: the older is dropped
        if not known:
            if agent is not None:
                log.warning(
                    "executor %s: an agent reported %s, which another agent runs; dropped",
                    self.name,
                    msg.task_key,
                )
            acknowledge()  # a duplicate, a task reported lost meanwhile, or not its own
            return
        outcome = outcome_from_wire(msg)
        outcome.on_stored = acknowledge
        self._report(outcome)

    # -- tasks that outlived a controller ---------------------------------------------

    def reclaim(self, task_key: str, given: HardwareGiven) -> None:
        """``task_key`` ran here under the previous controller: the agent that claims
        it in its hello takes it back; unclaimed after the grace, it is lost."""
        deadline = self._clock() + self._grace
        with self._lock:
            orphan = self._orphans.pop(task_key, None)
            if orphan is None:
                self._reclaimed[task_key] = _Reclaimed(given, deadline)
                heapq.heappush(self._deadlines, (deadline, task_key))
                self._changed.notify()
                return
            agent = orphan.agent
            agent.orphans.discard(task_key)
            allocation = agent.inventory.reserve(given)
            agent.running[task_key] = allocation or Allocation(0.0, 0)
            self._where[task_key] = agent
            agent.idle_since = 0.0
        if orphan.outcome is not None:
            self.outcome(agent.link, orphan.outcome)

    # -- tasks an agent claims that nobody reclaimed ------------------------------------

    def _hold_orphan(self, key: str, agent: _Agent, deadline: float) -> None:
        """Holds ``key``, which ``agent`` claims, until ``deadline`` (under the lock)."""
        self._orphans[key] = _Orphan(agent, deadline)
        agent.orphans.add(key)
        agent.idle_since = 0.0
        heapq.heappush(self._deadlines, (deadline, key))
        self._changed.notify()

    def _take_orphan(self, task: TaskSubmission, orphan: _Orphan) -> HardwareGiven:
        """``task`` is the attempt ``orphan`` is: it runs, or ran, on the agent that
        claims it, so that agent keeps it and nothing is sent (under the lock; the
        caller reports the orphan's held outcome, if any, after it)."""
        key = task.task_key
        agent = orphan.agent
        agent.orphans.discard(key)
        allocation = agent.inventory.allocate(task.hardware)
        if allocation is None:  # it runs there already, beside what was placed since
            spec = task.hardware
            allocation = Allocation(0.0, 0)
            given = HardwareGiven(cpus=spec.cpus, memory_mb=spec.memory_mb)
        else:
            given = allocation.given()
        agent.running[key] = allocation
        agent.ran += 1
        agent.idle_since = 0.0
        self._where[key] = agent
        log.info(
            "executor %s: %s already %s task %s; taken back, not started again",
            self.name,
            agent.info.where(),
            "ran" if orphan.outcome is not None else "runs",
            key,
        )
        return given

    def _expire_reclaimed(self) -> None:
        while True:
            with self._lock:
                while not self._closed:
                    wait = self._deadlines[0][0] - self._clock() if self._deadlines else None
                    if wait is not None and wait <= 0:
                        break
                    self._changed.wait(timeout=wait)
                if self._closed:
                    return
                deadline, key = heapq.heappop(self._deadlines)
                reclaimed = self._reclaimed.pop(key, None)
                orphan = self._orphans.get(key)
                if orphan is not None and orphan.deadline <= deadline:
                    del self._orphans[key]
                    self._drop_orphan(key, orphan)
            if reclaimed is not None:
                self._report(
                    TaskOutcome(
                        task_key=key,
                        status=Status.FAILED,
                        error=(
                            f"no agent of executor {self.name!r} claimed this task within "
                            f"{self._grace:g} s of the controller's restart; it is retried "
                            "if it has retries left."
                        ),
                        ended_at=self._clock(),
                        reason=AGENT_LOST,
                    )
                )

    def _drop_orphan(self, key: str, orphan: _Orphan) -> None:
        """Nobody asked for ``key`` within the grace: its agent stops it, or forgets its
        outcome (under the lock)."""
        agent = orphan.agent
        agent.orphans.discard(key)
        if agent.is_idle():
            agent.idle_since = self._clock()
        if orphan.outcome is not None:
            agent.link.acknowledge(orphan.outcome.seq)
        else:
            cancel = agent_pb2.AgentCancel(task_key=key, reason="cancelled")
            agent.link.send(agent_pb2.AgentCommand(cancel=cancel))
        log.info(
            "executor %s: %s claimed task %s, which nobody asked for; stopped",
            self.name,
            agent.info.where(),
            key,
        )

    # -- capacity ---------------------------------------------------------------------

    def can_ever_run(self, spec: HardwareSpec) -> bool:
        with self._lock:
            agents = list(self._agents.values())
        return any(a.inventory.can_ever_fit(spec) for a in agents)

    def summary(self) -> Inventory:
        """All agents' capacity and free room as one inventory (a snapshot)."""
        with self._lock:
            parts = [a.inventory for a in self._agents.values()]
        return Inventory.combined(parts)

    def adopt(self, task_key: str, given: HardwareGiven) -> bool:
        """Holds ``given`` for a replica that outlived the controller; that agent is
        not idle until it is released, and the replica is not stopped as an orphan.

        The agent that claims the replica holds it. While no agent is attached (a
        restarted controller adopts before its agents are back), the replica waits
        for its agent to claim it, however long the agent takes to reconnect, until
        it is released (the deployment stops it, or finds it gone). Otherwise the
        first agent with ``given`` free holds it; False when none has."""
        with self._lock:
            orphan = self._orphans.pop(task_key, None)
            if orphan is not None:
                agent = orphan.agent
                agent.orphans.discard(task_key)
                if orphan.outcome is not None:  # it has ended after all
                    agent.link.acknowledge(orphan.outcome.seq)
                    return False
                allocation = agent.inventory.reserve(given) or Allocation(0.0, 0)
                self._hold_adopted(task_key, agent, allocation)
                return True
            if not self._agents and not self._closed:
                self._awaited[task_key] = given
                return True
            for agent in self._agents.values():
                free = agent.inventory.reserve(given)
                if free is not None:
                    self._hold_adopted(task_key, agent, free)
                    return True
        return False

    def _hold_adopted(self, task_key: str, agent: _Agent, allocation: Allocation) -> None:
        """``agent`` holds ``allocation`` for the adopted ``task_key`` (under the lock)."""
        self._unhold(task_key)
        self._adopted[task_key] = (agent, allocation)
        agent.adopted += 1
        agent.idle_since = 0.0

    def release(self, task_key: str) -> None:
        with self._lock:
            self._awaited.pop(task_key, None)
            self._unhold(task_key)

    def _unhold(self, task_key: str) -> None:
        """Frees what ``task_key`` holds by :meth:`adopt`, if anything (under the lock)."""
        held = self._adopted.pop(task_key, None)
        if held is None:
            return
        agent, allocation = held
        agent.inventory.release(allocation)
        agent.adopted -= 1
        if agent.is_idle():
            agent.idle_since = self._clock()

    def describe(self) -> tuple[str, str]:
        with self._lock:
            agents = list(self._agents.values())
        if not agents:
            return "no agent connected", "no agent connected"
        total = "; ".join(f"{a.info.where()}: {a.inventory.describe()}" for a in agents)
        free = "; ".join(f"{a.info.where()}: {a.inventory.describe(free=True)}" for a in agents)
        return total, free

    def close(self, message: str) -> None:
        with self._lock:
            self._closed = True
            links = list(self._agents)
            self._changed.notify()
        for link in links:
            link.close(message)
