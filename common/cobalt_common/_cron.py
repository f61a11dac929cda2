"""Cron expressions for autoscaling schedules, read with croniter.

Example:
    >>> from datetime import datetime
    >>> last_fire("0 9 * * 1-5", datetime(2026, 11, 23, 10, 30)).isoformat()
    '2026-11-23T09:00:00'
"""

from __future__ import annotations

from datetime import datetime

from croniter import croniter

from cobalt_common.errors import SpecError


def validate_cron(expr: str, *, option: str = "cron") -> str:
    """Accepts five-field cron expressions (minute hour day month weekday)."""
    if not isinstance(expr, str) or len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise SpecError(
            f"{option}: {expr!r} is not a five-field cron expression "
            "(minute hour day month weekday), for example '0 9 * * 1-5' for 9:00 on weekdays."
        )
    return expr


def last_fire(expr: str, now: datetime) -> datetime:
    """When ``expr`` last fired at or before ``now`` (same time zone as ``now``)."""
    it = croniter(expr, now)
    if croniter.match(expr, now.replace(second=0, microsecond=0)):
        return now.replace(second=0, microsecond=0)
    fired: datetime = it.get_prev(datetime)
    return fired
