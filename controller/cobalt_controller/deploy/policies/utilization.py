"""Utilization: one more replica while the replicas' mean utilization is above
the target, one fewer while it is under half of it.

Each ready replica reports at ``GET /_cobalt/metrics``: its GPU utilization
(from ``nvidia-smi``) when it has real GPUs, else its CPU utilization. Set
only when ``Autoscaling(utilization=...)`` is.
"""

from __future__ import annotations

from typing import Any

from cobalt_common.deploy import Autoscaling
from cobalt_controller.deploy.policies.base import Decision, Metrics, Policy


def replica_utilization(report: dict[str, Any]) -> float | None:
    """GPU utilization when the replica has real GPUs, else CPU utilization."""
    gpu = report.get("gpu_utilization")
    value = gpu if gpu is not None else report.get("cpu_utilization")
    return float(value) if isinstance(value, int | float) else None


class Utilization(Policy):
    """Steps the replica count by one toward keeping utilization under ``target``."""

    name = "utilization"

    def __init__(self, target: float) -> None:
        self.target = target

    @classmethod
    def from_settings(cls, settings: Autoscaling) -> Utilization | None:
        return cls(float(settings.utilization)) if settings.utilization else None

    async def decide(self, metrics: Metrics) -> Decision | None:
        if metrics.probe is None or metrics.replicas == 0:
            return None
        reports = await metrics.replica_reports()
        values = [v for v in map(replica_utilization, reports) if v is not None]
        if not values:
            return None
        kind = "GPU" if any(r.get("gpu_utilization") is not None for r in reports) else "CPU"
        mean = sum(values) / len(values)
        base = max(metrics.current, metrics.replicas)
        inputs = {"utilization": round(mean, 4), "target": self.target, "kind": kind}
        if mean > self.target:
            return Decision(
                base + 1,
                f"mean {kind} utilization {mean:.0%} is above the target {self.target:.0%}",
                inputs,
            )
        if mean < self.target / 2:
            return Decision(
                max(base - 1, 0),
                f"mean {kind} utilization {mean:.0%} is under half the target {self.target:.0%}",
                inputs,
            )
        return Decision(
            base, f"mean {kind} utilization {mean:.0%} is near the target {self.target:.0%}", inputs
        )
