"""Spend summed by day, executor or GPU type: one grouping for the CLI and the dashboard.

Example:
    >>> from types import SimpleNamespace as Row
    >>> rows = [Row(day="d1", tasks=2, billed_s=4.0, cost_usd=1.0, emulated=False),
    ...         Row(day="d1", tasks=1, billed_s=1.0, cost_usd=0.5, emulated=True)]
    >>> spend_by(rows, lambda r: r.day)
    [('d1', Spend(tasks=3, billed_s=5.0, cost_usd=1.5, emulated=True))]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar


class SpendRow(Protocol):
    """A row of a cost summary: the state store's ``CostRow`` or its wire message."""

    @property
    def tasks(self) -> int: ...
    @property
    def billed_s(self) -> float: ...
    @property
    def cost_usd(self) -> float: ...
    @property
    def emulated(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Spend:
    tasks: int = 0
    billed_s: float = 0.0
    cost_usd: float = 0.0
    emulated: bool = False
    """Some of the cost is for emulated GPUs."""


R = TypeVar("R", bound=SpendRow)


def total(rows: Iterable[SpendRow]) -> Spend:
    items = list(rows)
    return Spend(
        tasks=sum(r.tasks for r in items),
        billed_s=sum(r.billed_s for r in items),
        cost_usd=sum(r.cost_usd for r in items),
        emulated=any(r.emulated for r in items),
    )


def spend_by(
    rows: Iterable[R], key: Callable[[R], str], *, most_first: bool = False
) -> list[tuple[str, Spend]]:
    """Totals per key, in key order, or the most spent first."""
    groups: dict[str, list[R]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    summed = [(k, total(g)) for k, g in groups.items()]
    if most_first:
        return sorted(summed, key=lambda kv: (-kv[1].cost_usd, kv[0]))
    return sorted(summed)
