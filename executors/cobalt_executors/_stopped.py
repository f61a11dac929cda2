"""How a task that an executor stopped is reported: one wording for every executor.

The controller stops a task with :meth:`~cobalt_executors.base.Executor.cancel`
and a reason; every executor reports it with the status and words below, so a
user reads the same message whichever executor ran the task.
"""

from __future__ import annotations

from cobalt_common.hardware import HardwareSpec
from cobalt_common.status import OutcomeStatus, Status

STOP_STATUS: dict[str, OutcomeStatus] = {
    "cancelled": Status.CANCELLED,
    "time_limit": Status.TIMED_OUT,
}
"""The status of a task stopped for each reason :meth:`Executor.cancel` is given."""


def stopped(name: str, hardware: HardwareSpec, reason: str) -> tuple[OutcomeStatus, str, str]:
    """Status, reason and error message of a task stopped for ``reason``.

    A reason other than ``cancelled`` or ``time_limit`` reads as the task
    being killed (status ``FAILED``, reason ``killed``).

    Example:
        >>> status, reason, error = stopped("train", HardwareSpec(time_limit_s=60), "time_limit")
        >>> status, reason
        (<Status.TIMED_OUT: 'TIMED_OUT'>, 'time_limit')
        >>> error
        'train exceeded its time limit of 60s and was killed.'
    """
    if reason == "time_limit":
        limit = hardware.time_limit_s or 0
        return (
            Status.TIMED_OUT,
            reason,
            f"{name} exceeded its time limit of {limit:g}s and was killed.",
        )
    if reason == "cancelled":
        return Status.CANCELLED, reason, f"{name} was cancelled."
    return Status.FAILED, "killed", f"{name} was stopped ({reason or 'no reason given'})."
