"""The status of a dispatch or a task, written once for the SDK, the controller
and the executors.

:class:`Status` is a :class:`~enum.StrEnum`: each member is its own upper-case
name as a string, so it compares equal to, and hashes as, the strings stored
in the state store and shown to users (``Status.COMPLETED == "COMPLETED"``).
On the wire it travels as the ``cobalt.v1.Status`` proto enum; the one
mapping between the two is :func:`cobalt_common.wire.status_to_pb` and
:func:`cobalt_common.wire.status_from_pb`.

An executor reports how a task ended with an :data:`OutcomeStatus`, a subset
of :class:`Status`.

Example:
    >>> Status.TIMED_OUT == "TIMED_OUT", Status.TIMED_OUT.ended
    (True, True)
    >>> Status("RUNNING") is Status.RUNNING
    True
"""

from __future__ import annotations

import enum
from typing import Literal, get_args


class Status(enum.StrEnum):
    """The status of a dispatch or a task."""

    NEW = "NEW"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    SKIPPED = "SKIPPED"
    """Not run: a task it depends on did not complete, or the budget ran out."""
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    """A dispatch stopped because its next task could have overspent its budget."""

    @property
    def ended(self) -> bool:
        """Whether a task or dispatch in this status has ended for good."""
        return self in ENDED


TASK_ENDED = frozenset(
    {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT, Status.SKIPPED}
)
"""Statuses in which a task has ended."""
DISPATCH_ENDED = frozenset(
    {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT, Status.BUDGET_EXCEEDED}
)
"""Statuses in which a dispatch has ended."""
ENDED = TASK_ENDED | DISPATCH_ENDED
"""Statuses in which a task or a dispatch has ended."""

OutcomeStatus = Literal[Status.COMPLETED, Status.FAILED, Status.TIMED_OUT, Status.CANCELLED]
"""How an executor reports that a task ended: the subset of :class:`Status` an
executor may report (skipping and budgets are the controller's to decide)."""
OUTCOME_STATUSES: frozenset[OutcomeStatus] = frozenset(get_args(OutcomeStatus))
