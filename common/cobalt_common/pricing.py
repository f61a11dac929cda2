"""Prices of hardware and the cost of a task.

Every executor carries a :class:`PriceTable`: US dollars per GPU-hour for each
GPU type, per CPU-core-hour and per GB-hour of memory. A task's cost is its
billed seconds times the hourly rate of the hardware it was given, billed per
started second.

Executors that rent hardware default to :data:`LIST_PRICES`; on-premises ones
(the local executor) default to zero. Either can be set per executor, in
``config.toml`` or on an executor descriptor::

    [executors.gpu-box]
    type = "local"
    prices = { base = "list", gpu_hour = { h100 = 2.10 } }

Example:
    >>> table = parse_prices({"gpu_hour": {"H100": 3.0}, "cpu_core_hour": 0.05})
    >>> table.rate_usd_per_hour(cpus=4, memory_mb=0, gpu="h100", gpus=2)
    6.2
    >>> billed_seconds(0.2), billed_seconds(61.5), billed_seconds(90.0, time_limit_s=60)
    (1.0, 62.0, 60.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal
from types import MappingProxyType
from typing import Any

from cobalt_common.errors import SpecError
from cobalt_common.hardware import GPU_TYPES, parse_gpu_type

LIST_PRICES_SOURCE = (
    "Modal's published on-demand prices (modal.com/pricing), per second, converted to "
    "per hour; V100, which Modal does not offer, from Google Cloud's on-demand GPU price "
    "list (cloud.google.com/compute/gpus-pricing, us-central1)."
)
LIST_PRICES_AS_OF = "2025-06"
"""The month the list prices are from; they have not been re-checked since, and
cloud prices change: override them in config.toml."""

_LIST_GPU_HOUR: Mapping[str, float] = MappingProxyType(
    {
        "b200": 6.25,  # $0.001736/s
        "h200": 4.54,  # $0.001261/s
        "h100": 3.95,  # $0.001097/s
        "a100-80gb": 2.50,  # $0.000694/s
        "a100-40gb": 2.10,  # $0.000583/s
        "l40s": 1.95,  # $0.000542/s
        "a10g": 1.10,  # $0.000306/s
        "l4": 0.80,  # $0.000222/s
        "t4": 0.59,  # $0.000164/s
        "v100": 2.48,  # Google Cloud, per GPU
    }
)


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Hourly prices in US dollars.

    Attributes:
        gpu_hour: per GPU-hour, by canonical GPU type; a type not listed costs 0.
        cpu_core_hour: per CPU core-hour.
        memory_gb_hour: per GB-hour of memory (1 GB = 1024 MB).
        source: where the prices come from, shown with estimates.
    """

    gpu_hour: Mapping[str, float] = field(default_factory=dict)
    cpu_core_hour: float = 0.0
    memory_gb_hour: float = 0.0
    source: str = "zero"

    @property
    def is_free(self) -> bool:
        return (
            not any(self.gpu_hour.values()) and not self.cpu_core_hour and not self.memory_gb_hour
        )

    def rate_usd_per_hour(
        self, *, cpus: float, memory_mb: int, gpu: str | None, gpus: int
    ) -> float:
        """The hourly rate of this much hardware."""
        rate = cpus * self.cpu_core_hour + memory_mb / 1024 * self.memory_gb_hour
        if gpu and gpus:
            rate += gpus * self.gpu_hour.get(gpu, 0.0)
        return round(rate, 10)


ZERO_PRICES = PriceTable()
"""On-premises hardware that the user has not priced."""

LIST_PRICES = PriceTable(
    gpu_hour=_LIST_GPU_HOUR,
    cpu_core_hour=0.0472,  # $0.0000131 per physical core per second
    memory_gb_hour=0.0080,  # $0.00000222 per GiB per second
    source=f"list prices as of {LIST_PRICES_AS_OF}",
)
"""Published on-demand list prices; see :data:`LIST_PRICES_SOURCE`."""

_BASES = {"zero": ZERO_PRICES, "list": LIST_PRICES}
_KEYS = ("base", "gpu_hour", "cpu_core_hour", "memory_gb_hour")


def billed_seconds(run_s: float, time_limit_s: float | None = None) -> float:
    """Whole seconds billed for a run: every started second, at least one.

    A task is never billed past its time limit: the time it takes the
    controller to stop an overrunning task is not the user's to pay.

    A run time or limit that is not a finite number (a clock gone wrong, a
    limit no intake should have let through) never raises: an unknown run
    bills its limit when it has one, else one second.
    """
    limit = time_limit_s if time_limit_s and math.isfinite(time_limit_s) and time_limit_s > 0 else 0
    if not math.isfinite(run_s):
        run_s = limit if run_s > 0 and limit else 0.0
    billed = float(max(1, math.ceil(run_s - 1e-9)))
    if limit:
        billed = min(billed, float(math.ceil(limit)))
    return billed


def _price(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{where} must be a number of US dollars per hour, got {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise SpecError(f"{where} must be a finite price of 0 or more, got {value!r}.")
    return float(value)


def parse_prices(value: Any, *, where: str = "prices", default: str = "zero") -> PriceTable:
    """Reads a price table: ``"list"``, ``"zero"`` or a table of overrides.

    A table may name a ``base`` ("list" or "zero", default ``default``) and
    override ``gpu_hour`` (a table of GPU type to price), ``cpu_core_hour``
    and ``memory_gb_hour``. Errors name ``where`` and the key.

    Raises:
        SpecError: a price is negative or not a number, a GPU type is
            unknown, or a key is not one of the above.
    """
    if value is None:
        return _BASES[default]
    if isinstance(value, PriceTable):
        return value
    if isinstance(value, str):
        if value not in _BASES:
            raise SpecError(f'{where} must be "list", "zero" or a table of prices, got {value!r}.')
        return _BASES[value]
    if not isinstance(value, Mapping):
        raise SpecError(f'{where} must be "list", "zero" or a table of prices, got {value!r}.')
    unknown = sorted(str(k) for k in value if k not in _KEYS)
    if unknown:
        raise SpecError(
            f"{where} has unknown key(s) {', '.join(unknown)}; known keys are: {', '.join(_KEYS)}."
        )
    base_name = value.get("base", default)
    if base_name not in _BASES:
        raise SpecError(f'{where}.base must be "list" or "zero", got {base_name!r}.')
    base = _BASES[base_name]
    gpu_hour = dict(base.gpu_hour)
    overrides = value.get("gpu_hour", {})
    if not isinstance(overrides, Mapping):
        raise SpecError(
            f"{where}.gpu_hour must be a table of GPU type to price, such as {{h100 = 3.0}}, "
            f"got {overrides!r}."
        )
    for gpu, price in overrides.items():
        canonical = parse_gpu_type(str(gpu), option=f"{where}.gpu_hour")
        gpu_hour[canonical] = _price(price, f"{where}.gpu_hour.{gpu}")
    return PriceTable(
        gpu_hour=MappingProxyType(gpu_hour),
        cpu_core_hour=_price(
            value.get("cpu_core_hour", base.cpu_core_hour), f"{where}.cpu_core_hour"
        ),
        memory_gb_hour=_price(
            value.get("memory_gb_hour", base.memory_gb_hour), f"{where}.memory_gb_hour"
        ),
        source=f"{base.source}, with overrides" if base is LIST_PRICES else "set by the user",
    )


def describe_prices(table: PriceTable) -> str:
    """A price table in a few words, for status displays.

    Example:
        >>> describe_prices(parse_prices({"gpu_hour": {"h100": 2.5}, "cpu_core_hour": 0.04}))
        'H100 $2.50/h, CPU $0.0400/core-h'
    """
    if table.is_free:
        return "free"
    parts = [
        f"{GPU_TYPES[gpu].label if gpu in GPU_TYPES else gpu} {format_usd(price)}/h"
        for gpu, price in table.gpu_hour.items()
        if price
    ]
    if len(parts) > 3:
        parts = [*parts[:3], f"{len(parts) - 3} more GPU types"]
    if table.cpu_core_hour:
        parts.append(f"CPU {format_usd(table.cpu_core_hour)}/core-h")
    if table.memory_gb_hour:
        parts.append(f"memory {format_usd(table.memory_gb_hour)}/GB-h")
    return ", ".join(parts)


USD_SIGNIFICANT_DIGITS = 3
"""Digits shown of an amount under a dollar; the dashboard's ``usd()`` uses the same."""

_CENT = Decimal("0.01")
_WIDE = Context(prec=320)  # cents of the largest float, 1.8e308, need 311 digits
_SIGNIFICANT = Context(prec=USD_SIGNIFICANT_DIGITS, rounding=ROUND_HALF_UP)


def format_usd(amount: float) -> str:
    """Dollars as people write them, never in scientific notation.

    The one rule for money, wherever cobalt shows it (the dashboard's
    ``usd()`` in ``static/util.js`` implements the same): $1 and more with
    cents and thousands separators, less than $1 with
    :data:`USD_SIGNIFICANT_DIGITS` significant digits so small task costs are
    not shown as zero, zero as ``$0.00`` and infinity as ``unbounded``. It
    rounds the decimal a person sees for the float (``repr`` in Python,
    ``String`` in JavaScript), ties away from zero: $1.005 reads "$1.01".

    Example:
        >>> format_usd(1234.5), format_usd(0.0123456), format_usd(1.3e-05), format_usd(0.0)
        ('$1,234.50', '$0.0123', '$0.0000130', '$0.00')
        >>> format_usd(float("inf"))
        'unbounded'
    """
    if math.isnan(amount):
        return "unknown"
    if math.isinf(amount):
        return "unbounded"
    if amount == 0:
        return "$0.00"
    sign = "-" if amount < 0 else ""
    shortest = Decimal(repr(float(abs(amount))))
    rounded = _SIGNIFICANT.plus(shortest)
    if rounded < 1:
        shown = rounded.quantize(Decimal(1).scaleb(rounded.adjusted() - USD_SIGNIFICANT_DIGITS + 1))
        return f"{sign}${shown:f}"
    return f"{sign}${shortest.quantize(_CENT, rounding=ROUND_HALF_UP, context=_WIDE):,.2f}"


__all__ = [
    "LIST_PRICES",
    "LIST_PRICES_AS_OF",
    "LIST_PRICES_SOURCE",
    "USD_SIGNIFICANT_DIGITS",
    "ZERO_PRICES",
    "PriceTable",
    "billed_seconds",
    "describe_prices",
    "format_usd",
    "parse_prices",
]
