"""Target concurrency: enough replicas for ``target_concurrency`` ongoing
requests each (default 8). Always set."""

from __future__ import annotations

import math

from cobalt_common.deploy import Autoscaling
from cobalt_controller.deploy.policies.base import Decision, Metrics, Policy


class TargetConcurrency(Policy):
    """Wants ``ceil(ongoing / target)`` replicas, ongoing counting queued requests."""

    name = "target_concurrency"

    def __init__(self, target: float) -> None:
        self.target = target

    @classmethod
    def from_settings(cls, settings: Autoscaling) -> TargetConcurrency:
        return cls(float(settings.target_concurrency))

    async def decide(self, metrics: Metrics) -> Decision:
        wanted = math.ceil(metrics.ongoing / self.target)
        return Decision(
            wanted,
            f"{metrics.ongoing} ongoing request(s) at a target of {self.target:g} per replica",
            {"ongoing": metrics.ongoing, "target_concurrency": self.target},
        )
