"""The agent process: one stream to the controller, warm workers, kept outcomes."""

from __future__ import annotations

import logging
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from cobalt_common.channel import open_channel
from cobalt_common.errors import ControllerUnavailableError, ExecutorError, ProtocolError
from cobalt_common.payloads import BlobLocation
from cobalt_common.runtime import runtime_versions, version_mismatch
from cobalt_common.status import Status
from cobalt_common.v1 import agent_pb2
from cobalt_common.v1 import agent_pb2_grpc as agent_grpc
from cobalt_common.version import __version__
from cobalt_executors._machine import Machine
from cobalt_executors.agent._staging import Stager
from cobalt_executors.base import ExecutorContext, TaskOutcome, TaskSubmission
from cobalt_executors.local import LocalExecutor
from cobalt_executors.remote._protocol import (
    BATCH,
    PROTOCOL,
    coalesce_messages,
    outcome_to_wire,
    task_from_wire,
)

log = logging.getLogger("cobalt.agent")

REFUSED = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
"""Answers that reconnecting cannot change: the agent stops and says why."""
BACKOFF_S = (0.05, 5.0)
LINGER_S = 0.005
"""How long an outcome waits for those of tasks still running, to travel with them."""
DEFAULT_INLINE_LIMIT = 64 * 1024
"""Outputs inlined before the controller says its own limit (no task runs before)."""
"""The first and the longest wait before reconnecting."""


@dataclass(slots=True)
class AgentConfig:
    """How one agent reaches its controller and what it offers.

    Attributes:
        controller: the controller's ``host:port``.
        credential: the agent's own credential (``cobalt agent-token`` prints one).
        executor: the executor it joins.
        work_dir: its own folder (workers' logs, fetched payloads).
        fingerprint: the SHA-256 fingerprint of the controller's certificate;
            empty: plain text, which only a loopback address allows.
        options: the local executor's options (cpus, memory, workers, emulate_gpus).
        allocation: where it runs, in its executor's words (a job id, a host).
        expires_at: when its allocation ends (unix seconds); 0: never.
    """

    controller: str
    credential: str
    executor: str
    work_dir: Path
    fingerprint: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    allocation: str = ""
    expires_at: float = 0.0
    stream_payloads: bool = False
    """Fetch and send payloads through the controller even where its blob directory
    is visible (a shared filesystem)."""
    agent_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


class _Connection:
    """One open stream: its outgoing queue.

    An outcome that leaves while other tasks still run waits up to
    :data:`LINGER_S` for theirs, so that a fan-out's outcomes travel in batches (one
    message, and one scheduling round at the controller, for several). It waits only
    while ``busy`` (tasks queued here for a worker), so that no worker idles for it.
    """

    def __init__(self, busy: Callable[[], bool]) -> None:
        self.outgoing: queue.SimpleQueue[agent_pb2.AgentMessage | None] = queue.SimpleQueue()
        self._busy = busy

    def send(self, message: agent_pb2.AgentMessage) -> None:
        self.outgoing.put(message)

    def messages(self, hello: agent_pb2.AgentMessage) -> Iterator[agent_pb2.AgentMessage]:
        yield hello
        outgoing = self.outgoing
        while True:
            first = outgoing.get()
            if first is None:
                return
            queued = [first]
            ended = False
            deadline = time.monotonic() + LINGER_S
            while len(queued) < BATCH:
                try:
                    message = outgoing.get_nowait()
                except queue.Empty:
                    wait = deadline - time.monotonic()
                    if wait <= 0 or not self._busy():
                        break
                    try:
                        message = outgoing.get(timeout=wait)
                    except queue.Empty:
                        break
                if message is None:
                    ended = True
                    break
                queued.append(message)
            yield from coalesce_messages(queued)
            if ended:
                return


class Agent:
    """Runs until :meth:`stop`, or until the controller refuses it for good."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        config.work_dir.mkdir(parents=True, exist_ok=True)
        self._versions = runtime_versions()
        self._local = LocalExecutor(f"agent-{config.agent_id}", dict(config.options))
        self._started = False
        self._stager: Stager | None = None
        self._lock = threading.Lock()
        self._kept: dict[int, agent_pb2.AgentOutcome] = {}
        """Outcomes not yet acknowledged, by sequence number."""
        self._seq = 0
        self._running: set[str] = set()
        self._waiting: list[TaskSubmission] = []
        """Tasks the local executor had no room for yet (it shares warm workers)."""
        self._connection: _Connection | None = None
        self._stopping = threading.Event()
        self._channel: grpc.Channel | None = None
        self._call: Any = None
        self.connected = threading.Event()
        self._fetchers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cobalt-fetch")
        """Fetch payloads through the controller, off the stream's thread."""
        self._starting = threading.RLock()
        """Held while waiting tasks are handed to the local executor, and while one is
        cancelled: a task is handed over once, and never after its cancel."""
        # Warm workers start now, while the agent connects; where outputs go is
        # settled when the controller says (see _welcomed).
        self._local.setup(
            ExecutorContext(
                inline_limit=DEFAULT_INLINE_LIMIT,
                report=self._finished,
                output_location=BlobLocation.directory(config.work_dir / "blobs"),
                env=self._task_env(),
                machine=Machine(),
                work_dir=config.work_dir / "workers",
            )
        )

    # -- the connection loop ---------------------------------------------------------------

    def run(self) -> None:
        """Connects, serves, and reconnects with backoff until stopped or refused."""
        delay = BACKOFF_S[0]
        try:
            while not self._stopping.is_set():
                welcomed = self._serve_once()
                if welcomed:
                    delay = BACKOFF_S[0]
                if self._stopping.wait(delay * (0.5 + random.random())):
                    break
                delay = min(delay * 2, BACKOFF_S[1])
        finally:
            self._shutdown()

    def stop(self) -> None:
        self._stopping.set()
        call = self._call
        if call is not None:
            call.cancel()

    def _serve_once(self) -> bool:
        """One stream, from hello to its end; True if the controller welcomed it."""
        if self._channel is None:
            try:
                self._channel = open_channel(self.config.controller, self.config.fingerprint)
            except ControllerUnavailableError as exc:
                log.warning("%s; trying again", exc)
                return False
        stub = agent_grpc.AgentsStub(self._channel)
        connection = _Connection(self._busy)
        welcomed = False
        try:
            call = stub.AgentConnect(
                connection.messages(self._hello()),
                metadata=(("authorization", f"Bearer {self.config.credential}"),),
            )
            self._call = call
            for command in call:
                which = command.WhichOneof("command")
                if which == "welcome":
                    welcomed = True
                    self._welcomed(command.welcome, connection)
                elif which == "batch":
                    self._batch(command.batch)
                elif which == "task":
                    self._task(command.task)
                elif which == "cancel":
                    self._local_cancel(command.cancel.task_key, command.cancel.reason)
                elif which == "ack":
                    with self._lock:
                        for seq in command.ack.seqs:
                            self._kept.pop(seq, None)
        except grpc.RpcError as exc:
            code = exc.code()
            if code in REFUSED:
                raise ExecutorError(
                    f"the controller at {self.config.controller} refused this agent: "
                    f"{exc.details()}"
                ) from None
            if not self._stopping.is_set():
                log.warning(
                    "lost the controller at %s (%s); reconnecting",
                    self.config.controller,
                    exc.details() or code.name,
                )
        finally:
            with self._lock:
                if self._connection is connection:
                    self._connection = None
            self.connected.clear()
            connection.outgoing.put(None)
            self._call = None
        return welcomed

    def _batch(self, batch: agent_pb2.AgentBatch) -> None:
        for task in batch.tasks:
            self._task(task)
        for cancel in batch.cancels:
            self._local_cancel(cancel.task_key, cancel.reason)
        if batch.acks:
            with self._lock:
                for seq in batch.acks:
                    self._kept.pop(seq, None)

    def _hello(self) -> agent_pb2.AgentMessage:
        inv = self._local.inventory()
        with self._lock:
            # Tasks whose outcomes wait for an acknowledgement are claimed too.
            running = sorted(self._running | {o.task_key for o in self._kept.values()})
        hello = agent_pb2.AgentHello(
            protocol=PROTOCOL,
            agent_id=self.config.agent_id,
            executor=self.config.executor,
            cobalt_version=__version__,
            python_version=self._versions["python"],
            cloudpickle_version=self._versions["cloudpickle"],
            hostname=socket.gethostname(),
            cpus=inv.cpus,
            memory_mb=inv.memory_mb,
            running=running,
            expires_at=self.config.expires_at,
            allocation=self.config.allocation,
            slots=int(self.config.options.get("workers") or inv.cpus or 1),
        )
        for gpu in inv.gpus:
            hello.gpus.append(
                agent_pb2.AgentGpu(index=gpu.index, type=gpu.type, emulated=gpu.emulated)
            )
        return agent_pb2.AgentMessage(hello=hello)

    def _welcomed(self, welcome: agent_pb2.AgentWelcome, connection: _Connection) -> None:
        if not self._started:
            assert self._channel is not None
            self._stager = Stager(
                self._channel,
                self.config.credential,
                welcome,
                self.config.work_dir / "blobs",
                stream=self.config.stream_payloads,
            )
            self._local.set_outputs(welcome.inline_limit, self._stager.output_location)
            self._started = True
        for key in welcome.forget:
            self._local_cancel(key, "cancelled")
        with self._lock:
            self._connection = connection
            kept = [self._kept[seq] for seq in sorted(self._kept)]
        for outcome in kept:
            connection.send(agent_pb2.AgentMessage(outcome=outcome))
        self.connected.set()
        log.info(
            "agent %s joined executor %s at %s",
            self.config.agent_id,
            self.config.executor,
            self.config.controller,
        )

    def _task_env(self) -> dict[str, str]:
        """What every task and replica on this agent is told about reaching the
        controller, and the address a replica advertises to the gateway."""
        env = {
            "COBALT_CONTROLLER_ADDRESS": self.config.controller,
            "COBALT_REPLICA_ADVERTISE": address_toward(self.config.controller),
        }
        if self.config.fingerprint:
            env["COBALT_CONTROLLER_FINGERPRINT"] = self.config.fingerprint
        return env

    # -- tasks -----------------------------------------------------------------------------

    def _task(self, msg: agent_pb2.AgentTask) -> None:
        try:
            task = task_from_wire(msg)
        except ProtocolError as exc:
            self._finished(TaskOutcome(msg.task_key, Status.FAILED, error=str(exc), reason="lost"))
            return
        with self._lock:
            self._running.add(task.task_key)
        why = version_mismatch(task.client_runtime, self._versions)
        if why:
            now = time.time()
            self._finished(
                TaskOutcome(
                    task.task_key,
                    Status.FAILED,
                    error=f"version mismatch: {why}",
                    started_at=now,
                    ended_at=now,
                    reason="version_mismatch",
                )
            )
            return
        assert self._stager is not None
        if self._stager.needs_fetch(task):
            self._fetchers.submit(self._start, task)
        else:
            self._start(task)

    def _start(self, task: TaskSubmission) -> None:
        """Stages the task's payloads, then starts it or queues it until room frees."""
        assert self._stager is not None
        try:
            staged = self._stager.prepare(task)
        except Exception as exc:  # the payload could not be fetched: the task fails
            now = time.time()
            self._finished(
                TaskOutcome(
                    task.task_key,
                    Status.FAILED,
                    error=f"could not fetch the task's payloads from the controller: {exc}",
                    started_at=now,
                    ended_at=now,
                    reason="lost",
                )
            )
            return
        with self._lock:
            if task.task_key not in self._running:
                return  # cancelled while its payloads were fetched
            self._waiting.append(staged)
        self._start_waiting()

    def _start_waiting(self) -> None:
        """Hands waiting tasks, in order, to the local executor while it has room.

        One thread at a time does this (``_starting``): a task leaves the queue in
        the same step that hands it over, so no two threads start it twice. A
        thread that finds no room returns; whoever frees room next calls this again.
        """
        with self._starting:
            while True:
                with self._lock:
                    if not self._waiting:
                        return
                    task = self._waiting[0]
                if self._local.try_submit(task) is None:
                    return
                with self._lock:
                    self._waiting.pop(0)

    def _local_cancel(self, task_key: str, reason: str) -> None:
        with self._starting:
            with self._lock:
                waiting = next((t for t in self._waiting if t.task_key == task_key), None)
                if waiting is not None:
                    self._waiting.remove(waiting)
            if waiting is None:
                self._local.cancel(task_key, reason)
                return
        status = Status.TIMED_OUT if reason == "time_limit" else Status.CANCELLED
        self._finished(TaskOutcome(task_key, status, ended_at=time.time(), reason=reason))  # type: ignore[arg-type]

    def _finished(self, outcome: TaskOutcome) -> None:
        """An outcome of this agent's: kept until the controller acknowledges it."""
        if self._stager is not None:
            try:
                outcome = self._stager.finish(outcome)
            except Exception as exc:
                outcome = TaskOutcome(
                    outcome.task_key,
                    Status.FAILED,
                    error=f"could not send the task's output to the controller: {exc}",
                    started_at=outcome.started_at,
                    ended_at=outcome.ended_at,
                    reason="lost",
                    hardware_given=outcome.hardware_given,
                )
        with self._lock:
            self._running.discard(outcome.task_key)
            self._seq += 1
            msg = outcome_to_wire(outcome, self._seq)
            self._kept[self._seq] = msg
            connection = self._connection
        if connection is not None:
            connection.send(agent_pb2.AgentMessage(outcome=msg))
        self._start_waiting()

    def _shutdown(self) -> None:
        self._fetchers.shutdown(wait=False, cancel_futures=True)
        self._local.teardown()
        if self._channel is not None:
            self._channel.close()

    def _busy(self) -> bool:
        """Whether tasks wait here for a worker: then every worker is busy, and an
        outcome held back a moment leaves none idle."""
        with self._lock:
            return bool(self._waiting)

    def kept(self) -> int:
        """Outcomes not yet acknowledged."""
        with self._lock:
            return len(self._kept)


def address_toward(controller: str) -> str:
    """This machine's address on the route to ``controller``: where the controller's
    gateway can reach a replica running here."""
    host, _, port = controller.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, int(port or 9)))  # no packet is sent
            return str(s.getsockname()[0])
    except (OSError, ValueError):
        return socket.gethostname()
