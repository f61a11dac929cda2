"""The agent protocol's messages, from and to the executor interface's types.

Both ends use these functions: the controller's side of a remote executor
turns a :class:`~cobalt_executors.base.TaskSubmission` into an ``AgentTask``,
and the agent turns it back; outcomes go the other way. Everything that
arrives from the wire is checked here before it becomes a typed value.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from cobalt_common.checks import validate_sha256
from cobalt_common.errors import ProtocolError
from cobalt_common.hardware import HardwareGiven, HardwareSpec
from cobalt_common.status import OUTCOME_STATUSES, OutcomeStatus, Status
from cobalt_common.v1 import agent_pb2, worker_pb2
from cobalt_executors._runtime.payloads import from_wire, to_wire
from cobalt_executors.base import PayloadRef, TaskArg, TaskOutcome, TaskSubmission

PROTOCOL = 1
"""The agent protocol's version: a controller refuses an agent that speaks another."""

AGENT_LOST = "agent_lost"
"""The reason of a task whose agent went away while it ran."""


# -- payloads ---------------------------------------------------------------------------


def payload_to_wire(ref: PayloadRef) -> agent_pb2.AgentPayload:
    msg = agent_pb2.AgentPayload(sha256=ref.sha256, size=ref.size)
    if ref.data is not None:
        msg.data = ref.data
    elif ref.location is not None:
        msg.location.CopyFrom(to_wire(ref.location))
    return msg


def payload_from_wire(msg: agent_pb2.AgentPayload, what: str) -> PayloadRef:
    try:
        validate_sha256(msg.sha256)
    except ValueError as exc:
        raise ProtocolError(f"{what}: {exc}") from None
    kind = msg.location.kind
    if kind == worker_pb2.BlobLocation.KIND_UNSPECIFIED:
        if msg.size and msg.size != len(msg.data):
            raise ProtocolError(f"{what}: {len(msg.data)} bytes inline, but size says {msg.size}")
        return PayloadRef(msg.sha256, msg.data, len(msg.data))
    location = from_wire(msg.location)
    if location is None:
        raise ProtocolError(f"{what}: unknown payload location kind {kind}")
    return PayloadRef(msg.sha256, None, msg.size, location)


# -- tasks ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _hardware_json(spec: HardwareSpec) -> str:
    return json.dumps(spec.to_dict())


@functools.lru_cache(maxsize=1024)
def _hardware(text: str) -> HardwareSpec:
    """A task's hardware from the wire, checked once per distinct text."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise TypeError(f"{type(data).__name__}, not an object")
    return HardwareSpec.from_dict(data)


def task_to_wire(task: TaskSubmission) -> agent_pb2.AgentTask:
    msg = agent_pb2.AgentTask(
        task_key=task.task_key,
        dispatch_id=task.dispatch_id,
        node_id=task.node_id,
        name=task.name,
        hardware_json=_hardware_json(task.hardware),
        function=payload_to_wire(task.function),
        env=task.env,
        long_running=task.long_running,
        client_runtime=task.client_runtime,
    )
    for arg in task.args:
        msg.args.append(
            agent_pb2.AgentArg(
                position=arg.position, keyword=arg.keyword, payload=payload_to_wire(arg.payload)
            )
        )
    return msg


def task_from_wire(msg: agent_pb2.AgentTask) -> TaskSubmission:
    what = f"task {msg.task_key!r}"
    try:
        hardware = _hardware(msg.hardware_json)
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise ProtocolError(f"{what}: unreadable hardware: {exc}") from None
    args = [
        TaskArg(a.position, a.keyword, payload_from_wire(a.payload, f"{what} argument"))
        for a in msg.args
    ]
    return TaskSubmission(
        task_key=msg.task_key,
        dispatch_id=msg.dispatch_id,
        node_id=msg.node_id,
        name=msg.name,
        hardware=hardware,
        function=payload_from_wire(msg.function, f"{what} function"),
        args=args,
        env=dict(msg.env),
        long_running=msg.long_running,
        client_runtime=dict(msg.client_runtime),
    )


# -- outcomes ---------------------------------------------------------------------------


def given_from_dict(data: Mapping[str, Any]) -> HardwareGiven:
    gpu = data.get("gpu")
    indices = data.get("gpu_indices") or []
    cpus, memory = data.get("cpus", 0.0), data.get("memory_mb", 0)
    if not isinstance(cpus, int | float) or not isinstance(memory, int) or cpus < 0 or memory < 0:
        raise ProtocolError(f"hardware given {dict(data)!r} is not a count of CPUs and memory")
    if not isinstance(indices, list) or not all(
        isinstance(i, int) and 0 <= i < 1024 for i in indices
    ):
        raise ProtocolError(f"hardware given {dict(data)!r} has bad GPU indices")
    return HardwareGiven(
        cpus=float(cpus),
        memory_mb=memory,
        gpu=str(gpu) if gpu else None,
        gpu_indices=tuple(indices),
        emulated=bool(data.get("emulated", False)),
    )


def outcome_to_wire(outcome: TaskOutcome, seq: int) -> agent_pb2.AgentOutcome:
    msg = agent_pb2.AgentOutcome(
        seq=seq,
        task_key=outcome.task_key,
        status=str(outcome.status),
        error=outcome.error,
        stdout=outcome.stdout,
        stderr=outcome.stderr,
        started_at=outcome.started_at,
        ended_at=outcome.ended_at,
        reason=outcome.reason,
        given_json=json.dumps(outcome.hardware_given.to_dict()),
    )
    if outcome.output is not None:
        msg.output.CopyFrom(payload_to_wire(outcome.output))
    return msg


def outcome_from_wire(msg: agent_pb2.AgentOutcome) -> TaskOutcome:
    what = f"outcome of {msg.task_key!r}"
    try:
        status = Status(msg.status)
    except ValueError:
        raise ProtocolError(f"{what}: unknown status {msg.status!r}") from None
    if status not in OUTCOME_STATUSES:
        raise ProtocolError(f"{what}: status {msg.status!r} is not an outcome")
    try:
        data = json.loads(msg.given_json or "{}")
        if not isinstance(data, dict):
            raise TypeError(f"{type(data).__name__}, not an object")
        given = given_from_dict(data)
    except (ValueError, TypeError, RecursionError) as exc:
        raise ProtocolError(f"{what}: unreadable hardware given: {exc}") from None
    output = payload_from_wire(msg.output, what) if msg.HasField("output") else None
    typed: OutcomeStatus = status
    return TaskOutcome(
        task_key=msg.task_key,
        status=typed,
        output=output,
        error=msg.error,
        stdout=msg.stdout,
        stderr=msg.stderr,
        started_at=msg.started_at,
        ended_at=msg.ended_at,
        reason=msg.reason,
        hardware_given=given,
    )


# -- batching ---------------------------------------------------------------------------

BATCH = 512
"""The most queued messages one send coalesces."""


def batch_commands(
    queued: list[agent_pb2.AgentCommand], acks: list[int]
) -> agent_pb2.AgentCommand | None:
    """``queued`` commands and pending acknowledgements as one message (None: nothing
    to send); a lone command goes as it is."""
    if len(queued) == 1 and not acks:
        return queued[0]
    if not queued and not acks:
        return None
    batch = agent_pb2.AgentBatch(acks=acks)
    for command in queued:
        which = command.WhichOneof("command")
        if which == "task":
            batch.tasks.append(command.task)
        elif which == "cancel":
            batch.cancels.append(command.cancel)
        elif which == "ack":
            batch.acks.extend(command.ack.seqs)
        else:
            raise ValueError(f"a {which} command is not batched")
    return agent_pb2.AgentCommand(batch=batch)


def coalesce_messages(queued: list[agent_pb2.AgentMessage]) -> list[agent_pb2.AgentMessage]:
    """``queued`` with each run of outcomes as one ``AgentOutcomes``, in order."""
    out: list[agent_pb2.AgentMessage] = []
    for message in queued:
        if message.WhichOneof("message") != "outcome":
            out.append(message)
            continue
        last = out[-1] if out else None
        if last is not None and last.WhichOneof("message") == "outcomes":
            last.outcomes.outcomes.append(message.outcome)
        else:
            out.append(
                agent_pb2.AgentMessage(outcomes=agent_pb2.AgentOutcomes(outcomes=[message.outcome]))
            )
    return out
