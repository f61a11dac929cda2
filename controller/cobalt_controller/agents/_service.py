"""The agent service: one stream per agent (``protos/cobalt/v1/agent.proto``).

It checks the agent's credential and hello, hands the stream to the executor
the agent joins as an :class:`~cobalt_executors.remote.AgentLink`, feeds it
the agent's outcomes, and tells it when the stream closes: that is how a lost
agent is noticed, within about a second, with no polling.

Everything in a hello is checked where it enters: names, counts, GPU types,
and the protocol version; a bad one ends the call with a message that says
what to change.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from cobalt_common.errors import ExecutorError, ProtocolError, SpecError
from cobalt_common.executor_types import EXECUTOR_TYPES
from cobalt_common.hardware import parse_gpu_type
from cobalt_common.v1 import agent_pb2, controller_pb2
from cobalt_common.v1 import agent_pb2_grpc as agent_grpc
from cobalt_common.version import __version__
from cobalt_controller.agents._tokens import (
    DEFAULT_TTL_S,
    MAX_TTL_S,
    AgentKeys,
    AgentScope,
    valid_name,
)
from cobalt_executors._inventory import GpuDevice
from cobalt_executors.base import Executor
from cobalt_executors.remote import AgentInfo, AgentLink, RemoteExecutor
from cobalt_executors.remote._protocol import BATCH, PROTOCOL, batch_commands

log = logging.getLogger("cobalt.controller")

MAX_CPUS = 1 << 16
MAX_MEMORY_MB = 1 << 34
MAX_GPUS = 1024
MAX_RUNNING = 100_000

_CLOSE = object()
_ACKS = object()
UNKNOWN_AGENT_CREDENTIAL = (
    "missing, wrong or expired agent credential; `cobalt agent-token --executor NAME` on the "
    "controller's machine prints a new one."
)


ACK_DELAY_S = 0.05
"""How long an acknowledgement waits to go with other traffic before it goes alone."""


class _StreamLink(AgentLink):
    def __init__(self) -> None:
        self.outgoing: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.closing = ""
        self._acks: list[int] = []
        self._acks_lock = threading.Lock()

    def send(self, command: agent_pb2.AgentCommand) -> None:
        self.outgoing.put(command)

    def acknowledge(self, seq: int) -> None:
        with self._acks_lock:
            self._acks.append(seq)
            first = len(self._acks) == 1
        if first:
            self.outgoing.put(_ACKS)  # wakes the sender, which waits a little for company

    def take_acks(self) -> list[int]:
        with self._acks_lock:
            acks, self._acks = self._acks, []
        return acks

    def close(self, message: str) -> None:
        self.closing = message
        self.outgoing.put(_CLOSE)


def _bearer(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return ""


def agent_info(hello: agent_pb2.AgentHello) -> AgentInfo:
    """The hello's facts, checked; raises ProtocolError naming the bad one."""
    if not valid_name(hello.agent_id):
        raise ProtocolError(f"agent id {hello.agent_id[:80]!r} is not a plain name")
    if hello.allocation and not valid_name(hello.allocation):
        raise ProtocolError(f"allocation {hello.allocation[:80]!r} is not a plain name")
    if len(hello.hostname) > 255 or any(c in hello.hostname for c in "\n\r\x00"):
        raise ProtocolError("the hostname is not a host name")
    if not math.isfinite(hello.cpus) or not 0 < hello.cpus <= MAX_CPUS:
        raise ProtocolError(f"{hello.cpus} CPUs is not a count from 1 to {MAX_CPUS}")
    if hello.memory_mb > MAX_MEMORY_MB:
        raise ProtocolError(f"{hello.memory_mb} MB of memory is more than any machine has")
    if not math.isfinite(hello.expires_at) or hello.expires_at < 0:
        raise ProtocolError(f"expires_at {hello.expires_at} is not a time")
    if len(hello.gpus) > MAX_GPUS or len(hello.running) > MAX_RUNNING:
        raise ProtocolError("the hello lists more GPUs or running tasks than allowed")
    gpus = []
    seen = set()
    for gpu in hello.gpus:
        try:
            gpu_type = parse_gpu_type(gpu.type, option="agent GPU")
        except SpecError as exc:
            raise ProtocolError(str(exc)) from None
        if gpu.index in seen or gpu.index >= MAX_GPUS:
            raise ProtocolError(f"GPU index {gpu.index} is repeated or out of range")
        seen.add(gpu.index)
        gpus.append(GpuDevice(gpu.index, gpu_type, gpu.emulated))
    for key in hello.running:
        if len(key) > 200:
            raise ProtocolError("a running task key is longer than any task key")
    info = AgentInfo.from_hello(hello)
    info.gpus = tuple(gpus)
    info.hostname = hello.hostname or "an unnamed host"
    return info


class AgentsServicer(agent_grpc.AgentsServicer):
    """Serves ``AgentConnect`` for the controller's remote executors.

    Args:
        executors: every executor the controller has now (looked up per call).
        keys: checks agent credentials.
        user_token: the user's token, which may attach agents to any executor.
        max_agents: streams held at once; one more is refused, and its agent retries.
    """

    def __init__(
        self,
        executors: Callable[[], list[Executor]],
        keys: AgentKeys,
        user_token: str,
        *,
        max_agents: int = 256,
    ) -> None:
        self._executors = executors
        self._keys = keys
        self._user = user_token
        self._max_agents = max_agents
        self._open = 0
        self._open_lock = threading.Lock()

    def _hold_slot(self, context: grpc.ServicerContext) -> None:
        """Counts this stream among those held, until it ends; refuses it when
        ``max_agents`` are held already."""
        with self._open_lock:
            full = self._open >= self._max_agents
            if not full:
                self._open += 1
        if full:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the controller holds {self._max_agents} agents, its max_agents; this "
                "agent retries until one leaves. Raise max_agents in [controller] of "
                "config.toml to hold more.",
            )
        released = threading.Lock()

        def release() -> None:
            if released.acquire(blocking=False):
                with self._open_lock:
                    self._open -= 1

        context.add_callback(release)

    def _remote(self, name: str) -> RemoteExecutor | None:
        for ex in self._executors():
            if ex.name == name and isinstance(ex, RemoteExecutor):
                return ex
        return None

    def AgentConnect(
        self, request_iterator: Iterator[agent_pb2.AgentMessage], context: grpc.ServicerContext
    ) -> Iterator[agent_pb2.AgentCommand]:
        credential = _bearer(context)
        scope = self._keys.scope(credential)
        user = bool(self._user) and credential == self._user
        if scope is None and not user:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, UNKNOWN_AGENT_CREDENTIAL)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("message") != "hello":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an agent's first message is its hello")
        assert first is not None
        hello = first.hello
        if hello.protocol != PROTOCOL:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this agent speaks agent protocol {hello.protocol} (cobalt "
                f"{hello.cobalt_version[:40]}) and the controller {PROTOCOL} (cobalt "
                f"{__version__}): install cobalt {__version__} on the agent's machine.",
            )
        if isinstance(scope, AgentScope) and scope.executor != hello.executor:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this credential attaches agents to executor {scope.executor!r}, not "
                f"{hello.executor[:80]!r}.",
            )
        bound = isinstance(scope, AgentScope) and scope.allocation
        if bound and isinstance(scope, AgentScope) and scope.allocation != hello.allocation:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this credential belongs to allocation {scope.allocation!r}, not "
                f"{hello.allocation[:80]!r}.",
            )
        executor = self._remote(hello.executor)
        if executor is None:
            names = [ex.name for ex in self._executors() if isinstance(ex, RemoteExecutor)]
            types = " or ".join(t for t in EXECUTOR_TYPES if t != "local")
            known = ", ".join(names) or f"(none: add one of type {types} to config.toml)"
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no executor named {hello.executor[:80]!r} takes agents; those that do: {known}.",
            )
        assert executor is not None
        self._hold_slot(context)
        try:
            info = agent_info(hello)
        except ProtocolError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad agent hello: {exc}")
            raise
        link = _StreamLink()
        once = threading.Lock()

        def on_end() -> None:
            if once.acquire(blocking=False):
                link.outgoing.put(_CLOSE)
                executor.detach(link, link.closing or "its stream closed")

        try:
            forget = executor.attach(link, info)
        except ExecutorError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise
        context.add_callback(on_end)
        welcome = executor.welcome()
        welcome.controller_version = __version__
        welcome.forget.extend(forget)
        threading.Thread(
            target=self._read,
            args=(request_iterator, executor, link, on_end),
            name=f"cobalt-agent-{info.agent_id}",
            daemon=True,
        ).start()
        yield agent_pb2.AgentCommand(welcome=welcome)
        outgoing = link.outgoing
        while True:
            first = outgoing.get()
            queued = [first]
            if first is _ACKS:
                # Only acknowledgements: give a task a moment to come and carry them.
                with contextlib.suppress(queue.Empty):
                    queued.append(outgoing.get(timeout=ACK_DELAY_S))
            while queued[-1] is not _CLOSE and len(queued) < BATCH:
                try:
                    queued.append(outgoing.get_nowait())
                except queue.Empty:
                    break
            closing = queued[-1] is _CLOSE
            commands = [c for c in queued if c is not _CLOSE and c is not _ACKS]
            command = batch_commands(commands, link.take_acks())
            if command is not None:
                yield command
            if closing:
                if link.closing:
                    context.abort(grpc.StatusCode.UNAVAILABLE, link.closing)
                return

    @staticmethod
    def _read(
        messages: Iterator[agent_pb2.AgentMessage],
        executor: RemoteExecutor,
        link: _StreamLink,
        on_end: Callable[[], None],
    ) -> None:
        try:
            for message in messages:
                which = message.WhichOneof("message")
                if which == "outcome":
                    outcomes = [message.outcome]
                elif which == "outcomes":
                    outcomes = list(message.outcomes.outcomes)
                else:
                    link.close("an agent sends its hello once, then only outcomes")
                    break
                try:
                    for outcome in outcomes:
                        executor.outcome(link, outcome)
                except ProtocolError as exc:
                    log.warning("executor %s: refused an agent's outcome: %s", executor.name, exc)
                    link.close(f"malformed outcome: {exc}")
                    break
        except grpc.RpcError:
            pass
        except Exception:
            log.exception("executor %s: reading an agent's stream failed", executor.name)
        finally:
            on_end()


class AgentTokens:
    """Issues agent credentials (``cobalt agent-token``) with how agents reach the
    controller: its address for agents and its certificate's fingerprint."""

    def __init__(self, keys: AgentKeys, address: str, fingerprint: str) -> None:
        self.keys = keys
        self.address = address
        self.fingerprint = fingerprint

    def create(
        self, request: controller_pb2.AgentTokenCreateRequest, executors: list[Executor]
    ) -> controller_pb2.AgentTokenCreateResponse:
        remote = [ex.name for ex in executors if isinstance(ex, RemoteExecutor)]
        if request.executor not in remote:
            raise SpecError(
                f"no executor named {request.executor[:80]!r} takes agents; those that do: "
                f"{', '.join(remote) or '(none)'}. Add one to config.toml, for example "
                '[executors.mine] with type = "agents", and restart the controller.'
            )
        ttl = request.ttl_s or DEFAULT_TTL_S
        if not math.isfinite(ttl) or not 0 < ttl <= MAX_TTL_S:
            raise SpecError(f"ttl must be more than 0 s and at most {MAX_TTL_S:g} s, not {ttl}.")
        if request.allocation and not valid_name(request.allocation):
            raise SpecError(f"allocation {request.allocation[:80]!r} is not a plain name.")
        token = self.keys.mint(request.executor, request.allocation, ttl)
        scope = self.keys.scope(token)
        assert scope is not None
        return controller_pb2.AgentTokenCreateResponse(
            token=token,
            address=self.address,
            fingerprint=self.fingerprint,
            expires_at=scope.expires_at,
        )
