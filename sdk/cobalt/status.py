"""``ct.status``: the statuses a dispatch or task can be in, by Covalent's names too.

Each is a :class:`cobalt.Status` member, a string equal to its own name, so
``result.status == ct.status.COMPLETED`` and ``result.status == "COMPLETED"``
both hold. ``NEW_OBJECT`` is Covalent's name for ``NEW``. The three
post-processing statuses are Covalent's too and are never reached: cobalt
assembles a lattice's output in the graph, with no post-processing step.

Example:
    >>> import cobalt as ct
    >>> ct.status.COMPLETED == "COMPLETED", ct.status.NEW_OBJECT is ct.Status.NEW
    (True, True)
"""

from __future__ import annotations

from typing import Final

from cobalt_common.status import Status

NEW: Final = Status.NEW
NEW_OBJECT: Final = Status.NEW
PENDING: Final = Status.PENDING
RUNNING: Final = Status.RUNNING
COMPLETED: Final = Status.COMPLETED
FAILED: Final = Status.FAILED
CANCELLED: Final = Status.CANCELLED
TIMED_OUT: Final = Status.TIMED_OUT
SKIPPED: Final = Status.SKIPPED
BUDGET_EXCEEDED: Final = Status.BUDGET_EXCEEDED
PENDING_POSTPROCESSING: Final = "PENDING_POSTPROCESSING"
POSTPROCESSING: Final = "POSTPROCESSING"
POSTPROCESSING_FAILED: Final = "POSTPROCESSING_FAILED"

__all__ = [
    "BUDGET_EXCEEDED",
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "NEW",
    "NEW_OBJECT",
    "PENDING",
    "PENDING_POSTPROCESSING",
    "POSTPROCESSING",
    "POSTPROCESSING_FAILED",
    "RUNNING",
    "SKIPPED",
    "TIMED_OUT",
]
