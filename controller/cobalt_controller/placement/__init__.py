"""Placement: the one owner of executor capacity, and the one place runs are billed.

- :mod:`._owner`: :class:`Placement` starts task attempts and replicas on
  executors, holds room for replicas that wait (the priority rule is in its
  docstring), counts adopted replicas, and routes each outcome by its
  :class:`WorkKind`.
- :mod:`._billing`: what a run costs, for tasks and replicas alike.
"""

from cobalt_controller.placement._billing import (
    Charge,
    accrued_usd,
    charge,
    rate_usd_per_hour,
)
from cobalt_controller.placement._owner import HOLD_S, Placement, WorkKind, holds_back

__all__ = [
    "HOLD_S",
    "Charge",
    "Placement",
    "WorkKind",
    "accrued_usd",
    "charge",
    "holds_back",
    "rate_usd_per_hour",
]
