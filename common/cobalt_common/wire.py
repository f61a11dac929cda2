"""Hardware specs on the wire: one conversion, shared by the SDK and the controller.

In messages, 0 and "" stand for unset; in :class:`HardwareSpec`, ``None`` does.

Example:
    >>> spec = HardwareSpec(gpu="h100", gpus=1, time_limit_s=60)
    >>> spec_from_pb(spec_to_pb(spec)) == spec
    True
"""

from __future__ import annotations

from cobalt_common.hardware import HardwareSpec
from cobalt_common.v1 import controller_pb2 as pb


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
