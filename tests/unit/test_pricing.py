"""Price tables, billing and money formatting."""

from __future__ import annotations

import doctest
import math

import pytest
from money_cases import USD_CASES

from cobalt_common import pricing
from cobalt_common.errors import SpecError
from cobalt_common.hardware import GPU_TYPES
from cobalt_common.pricing import (
    LIST_PRICES,
    LIST_PRICES_AS_OF,
    ZERO_PRICES,
    billed_seconds,
    describe_prices,
    format_usd,
    parse_prices,
)

pytestmark = pytest.mark.unit


def test_list_prices_cover_every_gpu_type_and_say_where_they_come_from() -> None:
    assert set(LIST_PRICES.gpu_hour) == set(GPU_TYPES)
    assert all(price > 0 for price in LIST_PRICES.gpu_hour.values())
    assert (
        LIST_PRICES.gpu_hour["h100"]
        > LIST_PRICES.gpu_hour["a100-80gb"]
        > LIST_PRICES.gpu_hour["t4"]
    )
    assert LIST_PRICES_AS_OF in LIST_PRICES.source


def test_on_premises_defaults_to_free_and_list_is_chosen_by_name() -> None:
    assert parse_prices(None) is ZERO_PRICES and ZERO_PRICES.is_free
    assert parse_prices(None, default="list") is LIST_PRICES
    assert parse_prices("list") is LIST_PRICES


def test_overrides_start_from_a_base_and_accept_gpu_aliases() -> None:
    table = parse_prices({"base": "list", "gpu_hour": {"H100_80GB": 2.0}, "cpu_core_hour": 0})
    assert table.gpu_hour["h100"] == 2.0
    assert table.gpu_hour["t4"] == LIST_PRICES.gpu_hour["t4"]
    assert table.cpu_core_hour == 0.0
    assert table.memory_gb_hour == LIST_PRICES.memory_gb_hour
    own = parse_prices({"gpu_hour": {"l4": 0.5}})
    assert dict(own.gpu_hour) == {"l4": 0.5} and own.cpu_core_hour == 0.0


def test_the_rate_adds_gpus_cores_and_memory() -> None:
    table = parse_prices({"gpu_hour": {"h100": 3.0}, "cpu_core_hour": 0.05, "memory_gb_hour": 0.01})
    rate = table.rate_usd_per_hour(cpus=4, memory_mb=2048, gpu="h100", gpus=2)
    assert rate == pytest.approx(2 * 3.0 + 4 * 0.05 + 2 * 0.01)
    assert table.rate_usd_per_hour(cpus=1, memory_mb=0, gpu="t4", gpus=1) == 0.05, "unpriced GPU"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"cpu_core_hour": -1}, r"where.cpu_core_hour must be a finite price of 0 or more"),
        ({"memory_gb_hour": "cheap"}, r"where.memory_gb_hour must be a number"),
        ({"cpu_core_hour": True}, r"where.cpu_core_hour must be a number"),
        ({"cpu_core_hour": math.nan}, r"where.cpu_core_hour must be a finite price"),
        ({"gpu_hour": {"h999": 1.0}}, r"where.gpu_hour='h999' is not a known GPU type"),
        ({"gpu_hour": {"h100": -2}}, r"where.gpu_hour.h100 must be a finite price"),
        ({"gpu_hour": 3.0}, r"where.gpu_hour must be a table of GPU type to price"),
        ({"per_hour": 1.0}, r"where has unknown key\(s\) per_hour"),
        ({"base": "aws"}, r'where.base must be "list" or "zero"'),
        ("cheap", r'where must be "list", "zero" or a table of prices'),
        (3.5, r'where must be "list", "zero" or a table of prices'),
    ],
)
def test_bad_prices_are_refused_naming_the_key(value: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_prices(value, where="where")


def test_billing_is_per_started_second_and_never_past_the_time_limit() -> None:
    assert billed_seconds(0.0) == 1.0
    assert billed_seconds(1.0) == 1.0
    assert billed_seconds(1.001) == 2.0
    assert billed_seconds(75.2, time_limit_s=60) == 60.0
    assert billed_seconds(59.5, time_limit_s=60) == 60.0


@pytest.mark.parametrize(("amount", "text"), USD_CASES, ids=[text for _, text in USD_CASES])
def test_money_reads_like_money_and_keeps_small_costs_visible(amount: float, text: str) -> None:
    assert format_usd(amount) == text


def test_money_is_never_in_scientific_notation() -> None:
    for exponent in range(-12, 16):
        for mantissa in (1.0, 1.3, 4.454, 9.9996):
            assert "e" not in format_usd(mantissa * 10.0**exponent)


def test_price_tables_are_described_with_the_same_money() -> None:
    assert describe_prices(ZERO_PRICES) == "free"
    assert describe_prices(LIST_PRICES).startswith("B200 $6.25/h")
    assert describe_prices(LIST_PRICES).endswith("CPU $0.0472/core-h, memory $0.00800/GB-h")


def test_the_pricing_docstring_examples_hold() -> None:
    assert doctest.testmod(pricing).failed == 0


def test_an_executor_descriptor_checks_its_prices_when_written() -> None:
    import cobalt as ct

    with pytest.raises(ct.SpecError, match=r"LocalExecutor prices.cpu_core_hour must be a finite"):
        ct.LocalExecutor(prices={"cpu_core_hour": -1})
    box = ct.LocalExecutor(prices="list", emulate_gpus={"h100": 1})
    assert box.options["prices"] == "list"
