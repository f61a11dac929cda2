"""How money reads: one table of amounts and their text, for every formatter of dollars.

``format_usd`` (Python: the command line, notebooks, results and estimates)
and ``usd()`` (the dashboard's JavaScript) must both turn each amount into
exactly its text; tests/unit/test_pricing.py checks the first and
tests/e2e/test_dashboard.py the second, in a real browser.
"""

from __future__ import annotations

import math

USD_CASES: tuple[tuple[float, str], ...] = (
    (0.0, "$0.00"),
    (-0.0, "$0.00"),
    (1.0, "$1.00"),
    (12.3456, "$12.35"),
    (1234.5, "$1,234.50"),
    (1_000_000.0, "$1,000,000.00"),
    (999.995, "$1,000.00"),
    (1.125, "$1.13"),  # a tie: away from zero
    (1.005, "$1.01"),  # the decimal people see, not the float's 1.00499999...
    (2.675, "$2.68"),
    (0.9996, "$1.00"),  # rounds up to a dollar: then cents
    (0.999, "$0.999"),
    (0.5, "$0.500"),
    (0.3125, "$0.313"),  # a tie: away from zero
    (0.1235, "$0.124"),  # the decimal people see, not the float's 0.12349999...
    (0.09996, "$0.100"),  # rounds up a decade: still three digits
    (0.0123456, "$0.0123"),
    (0.0111, "$0.0111"),
    (0.004454, "$0.00445"),
    (1.3e-05, "$0.0000130"),
    (3e-07, "$0.000000300"),
    (1e30, "$1,000,000,000,000,000,000,000,000,000,000.00"),
    (-0.5, "-$0.500"),
    (-1234.5, "-$1,234.50"),
    (math.inf, "unbounded"),
    (-math.inf, "unbounded"),
    (math.nan, "unknown"),
)
"""Each amount and how it reads; three significant digits under a dollar."""
