"""Schedules: while a cron window is open, keep at least its ``min_replicas``.

A window opens each time its cron expression fires, in the schedule's time
zone (the controller's local time when it names none), and stays open for
its ``duration``.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from cobalt_common._cron import last_fire
from cobalt_common.deploy import Autoscaling, Schedule
from cobalt_controller.deploy.policies.base import Decision, Metrics, Policy


def is_open(schedule: Schedule, now: float) -> bool:
    """Whether ``schedule``'s window is open at Unix time ``now``."""
    tz = ZoneInfo(schedule.timezone) if schedule.timezone else None
    local = datetime.fromtimestamp(now, tz)
    if tz is None:
        local = local.replace(tzinfo=None)
    opened = last_fire(schedule.cron, local)
    opened_at = opened.timestamp()
    return opened_at <= now < opened_at + schedule.duration_s


class Schedules(Policy):
    """Wants the largest ``min_replicas`` of the open windows; also a floor."""

    name = "schedules"

    def __init__(self, schedules: tuple[Schedule, ...]) -> None:
        self.schedules = schedules

    @classmethod
    def from_settings(cls, settings: Autoscaling) -> Schedules | None:
        return cls(tuple(settings.schedules)) if settings.schedules else None

    def _open(self, now: float) -> list[Schedule]:
        return [s for s in self.schedules if is_open(s, now)]

    def floor(self, metrics: Metrics) -> int:
        return max((s.min_replicas for s in self._open(metrics.now)), default=0)

    async def decide(self, metrics: Metrics) -> Decision:
        opened = self._open(metrics.now)
        if not opened:
            return Decision(0, "no schedule window is open", {"open": []})
        top = max(opened, key=lambda s: s.min_replicas)
        where = top.timezone or "local time"
        return Decision(
            top.min_replicas,
            f"schedule {top.cron!r} ({where}) holds {top.min_replicas} replica(s) for "
            f"{top.duration_s:g} s",
            {"open": [s.cron for s in opened]},
        )
