"""What a run on an executor costs: the one place tasks and replicas are billed.

Tasks and replicas are billed alike: every started second (at least one) of
the run, at the executor's price for the hardware it gave, from the moment
the run started to the moment it ended. A task is never billed past its time
limit (see :func:`cobalt_common.pricing.billed_seconds`); a replica has none.

The scheduler and the deployment manager keep their own totals (a dispatch's
cost rolls up its sublattices', a deployment's sums its replicas'), but every
figure they add comes from :func:`charge`.
"""

from __future__ import annotations

from typing import NamedTuple

from cobalt_common.hardware import HardwareGiven
from cobalt_common.pricing import billed_seconds
from cobalt_executors import Executor


class Charge(NamedTuple):
    """The bill of one run."""

    billed_s: float
    """Whole seconds billed."""
    cost_usd: float
    """``billed_s`` at the run's rate."""


NO_CHARGE = Charge(0.0, 0.0)
_charge = tuple.__new__
"""Makes a :class:`Charge` without ``NamedTuple.__new__``'s keyword handling: this runs
once per task, and costs a third as much."""


def rate_usd_per_hour(executor: Executor, given: HardwareGiven) -> float:
    """What the hardware ``executor`` gave a run costs per hour (its price table's)."""
    return executor.given_rate_usd_per_hour(given)


def charge(
    started_at: float | None,
    ended_at: float,
    rate_usd_per_hour: float,
    time_limit_s: float | None = None,
) -> Charge:
    """The bill of a run from ``started_at`` to ``ended_at``; nothing if it never started.

    Example:
        >>> charge(100.0, 102.5, 3.6)
        Charge(billed_s=3.0, cost_usd=0.003)
        >>> charge(100.0, 200.0, 3.6, time_limit_s=10).billed_s
        10.0
    """
    if started_at is None:
        return NO_CHARGE
    billed = billed_seconds(max(0.0, ended_at - started_at), time_limit_s)
    cost = billed * rate_usd_per_hour / 3600 if rate_usd_per_hour else 0.0
    return _charge(Charge, (billed, cost))


def accrued_usd(started_at: float | None, now: float, rate_usd_per_hour: float) -> float:
    """What a run that still goes on would cost if it ended ``now`` (a live figure)."""
    if started_at is None or not rate_usd_per_hour:
        return 0.0
    return charge(started_at, now, rate_usd_per_hour).cost_usd
