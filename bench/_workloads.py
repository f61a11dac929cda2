"""The workflows cobalt's benchmarks dispatch: trivial tasks, so that what is
measured is the system, not the work."""

from __future__ import annotations

import cobalt as ct


@ct.electron
def inc(x: int) -> int:
    return x + 1


@ct.electron
def total(xs: list[int]) -> int:
    return sum(xs)


@ct.lattice
def fanout(n: int) -> int:
    """n independent tasks and one reduce over all of them."""
    return total([inc(i) for i in range(n)])


@ct.lattice
def one(x: int) -> int:
    """A one-task workflow, for round trips."""
    return inc(x)
