"""Hardware specs and statuses on the wire: one conversion of each, shared by
the SDK and the controller.

In messages, 0 and "" stand for unset; in :class:`HardwareSpec`, ``None`` does.
A :class:`~cobalt_common.status.Status` travels as the proto enum value
``STATUS_<name>``.

Example:
    >>> spec = HardwareSpec(gpu="h100", gpus=1, time_limit_s=60)
    >>> spec_from_pb(spec_to_pb(spec)) == spec
    True
    >>> status_from_pb(status_to_pb(Status.SKIPPED)) is Status.SKIPPED
    True
"""

from __future__ import annotations

from cobalt_common.hardware import HardwareSpec
from cobalt_common.status import Status
from cobalt_common.v1 import controller_pb2 as pb

STATUS_TO_PB: dict[str, pb.Status.ValueType] = {s: getattr(pb, f"STATUS_{s.value}") for s in Status}
"""Each status's proto enum value; keyed by string, so stored rows' plain strings look up too."""
_PB_TO_STATUS: dict[int, Status] = {v: Status(k) for k, v in STATUS_TO_PB.items()}


def status_to_pb(status: str) -> pb.Status.ValueType:
    """The proto enum value of a status (a :class:`Status` or its string)."""
    return STATUS_TO_PB[status]


def status_from_pb(value: int) -> Status:
    """The status a proto enum value stands for; unset or unknown values read as NEW."""
    return _PB_TO_STATUS.get(value, Status.NEW)


def spec_from_pb(msg: pb.HardwareSpec) -> HardwareSpec:
    return HardwareSpec(
        gpu=msg.gpu or None,
        gpus=msg.gpus,
        cpus=msg.cpus,
        memory_mb=msg.memory_mb,
        time_limit_s=msg.time_limit_s or None,
    )


def spec_to_pb(spec: HardwareSpec) -> pb.HardwareSpec:
    return pb.HardwareSpec(
        gpu=spec.gpu or "",
        gpus=spec.gpus,
        cpus=spec.cpus,
        memory_mb=spec.memory_mb,
        time_limit_s=spec.time_limit_s or 0.0,
    )
