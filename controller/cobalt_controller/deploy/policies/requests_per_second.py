"""Requests per second: at most ``requests_per_second`` per replica, over the
gateway's sliding window (10 s). Set only when the option is."""

from __future__ import annotations

import math

from cobalt_common.deploy import Autoscaling
from cobalt_controller.deploy.policies.base import Decision, Metrics, Policy


class RequestsPerSecond(Policy):
    """Wants ``ceil(rps / requests_per_second)`` replicas."""

    name = "requests_per_second"

    def __init__(self, per_replica: float) -> None:
        self.per_replica = per_replica

    @classmethod
    def from_settings(cls, settings: Autoscaling) -> RequestsPerSecond | None:
        rps = settings.requests_per_second
        return cls(float(rps)) if rps else None

    async def decide(self, metrics: Metrics) -> Decision:
        # A hair under a whole multiple is noise of the window, not a need.
        wanted = math.ceil(metrics.rps / self.per_replica - 1e-9)
        return Decision(
            wanted,
            f"{metrics.rps:.1f} requests/s at {self.per_replica:g} per replica",
            {"rps": round(metrics.rps, 3), "requests_per_second": self.per_replica},
        )
