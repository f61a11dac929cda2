"""The autoscaling policy seam.

A policy looks at a deployment's :class:`Metrics` and answers how many
replicas it wants, with a reason in words and the inputs it used. The
autoscaler asks every policy a deployment sets and takes the largest answer
(see :mod:`cobalt_controller.deploy._autoscaler`). Built-ins, one per file:

- :mod:`.target_concurrency`: ceil(ongoing / target_concurrency), always set.
- :mod:`.requests_per_second`: ceil(rps / requests_per_second).
- :mod:`.utilization`: one more replica above the utilization target, one
  fewer below half of it (reads each replica's ``/_cobalt/metrics``).
- :mod:`.schedules`: the floor of every open cron window.
- :mod:`.custom`: the user's ``policy(metrics)``, run inside a replica.

A policy that abstains (it has nothing to go on, e.g. no replica to ask)
returns ``None``; one that fails raises, and the autoscaler records the error
and decides without it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cobalt_common.deploy import Autoscaling

__all__ = ["Decision", "Metrics", "Policy", "ReplicaProbe"]

METRICS_PATH = "/_cobalt/metrics"
"""Where a replica answers its utilization, request counts and models' metrics."""

ReplicaProbe = Callable[[str, dict[str, Any] | None], Awaitable[list[dict[str, Any]]]]
"""``probe(path, body)``: GET (body None) or POST ``path`` on ready replicas and
return their JSON answers. The gateway provides it; tests fake it."""


@dataclass(slots=True)
class Metrics:
    """What the autoscaler knows about one deployment at one tick.

    Attributes:
        replicas: replicas ready to serve now.
        current: the replica count the autoscaler last decided.
        ongoing: requests in flight plus requests waiting in the queue.
        queued: requests waiting in the queue.
        rps: requests per second over the gateway's sliding window.
        p50_ms: median latency over the window, in milliseconds.
        p99_ms: 99th percentile latency over the window.
        idle_s: seconds since the last request arrived (or since the
            deployment started, when none ever did).
        now: wall-clock time (Unix seconds) of the tick.
        probe: reaches the ready replicas (utilization and custom policies).
    """

    replicas: int = 0
    current: int = 0
    ongoing: int = 0
    queued: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    idle_s: float = 0.0
    now: float = 0.0
    probe: ReplicaProbe | None = field(default=None, repr=False, compare=False)
    _reports: list[dict[str, Any]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    async def replica_reports(self) -> list[dict[str, Any]]:
        """The ready replicas' ``GET /_cobalt/metrics`` answers, asked once per tick:
        the utilization policy and the deployment's metrics share one reading
        (each reading restarts a replica's CPU utilization window)."""
        if self._reports is None:
            if self.probe is None or self.replicas == 0:
                return []
            self._reports = await self.probe(METRICS_PATH, None)
        return self._reports

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able numbers: recorded with decisions, sent to custom policies."""
        return {
            "replicas": self.replicas,
            "current": self.current,
            "ongoing": self.ongoing,
            "queued": self.queued,
            "rps": round(self.rps, 3),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "idle_s": round(self.idle_s, 3),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's answer.

    Attributes:
        replicas: how many replicas the policy wants (before min/max clamps).
        reason: one sentence, e.g. "20 ongoing requests at a target of 8 per replica".
        inputs: the numbers it decided from, recorded with the event.
    """

    replicas: int
    reason: str
    inputs: dict[str, Any] = field(default_factory=dict)


class Policy(ABC):
    """One autoscaling rule; subclasses set ``name`` and implement the methods."""

    name: ClassVar[str] = ""

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Autoscaling) -> Policy | None:
        """The policy a deployment's settings ask for, or None when it is not set."""

    @abstractmethod
    async def decide(self, metrics: Metrics) -> Decision | None:
        """The replicas wanted now; None to abstain. Raises when it fails."""

    def floor(self, metrics: Metrics) -> int:
        """A count the result may not go under (schedules); 0 for most policies."""
        return 0
