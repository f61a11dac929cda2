"""Hostile numbers from the wire: NaN, infinities and huge values are refused where
they enter, naming the field, and what bills and schedules never raises on them."""

from __future__ import annotations

import heapq
import json
import math
from typing import Any

import pytest

from cobalt_common.deploy import Autoscaling, Batch, Manifest, Route
from cobalt_common.errors import SpecError
from cobalt_common.hardware import MAX_RETRIES, MAX_TIME_LIMIT_S, HardwareSpec
from cobalt_common.pricing import billed_seconds
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.wire import spec_from_pb
from cobalt_controller import _numbers
from cobalt_controller._convert import stored_spec_to_pb

pytestmark = pytest.mark.unit

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"time_limit_s": NAN}, "time_limit_s"),
        ({"time_limit_s": INF}, "time_limit_s"),
        ({"time_limit_s": -INF}, "time_limit_s"),
        ({"time_limit_s": MAX_TIME_LIMIT_S * 2}, "time_limit_s"),
        ({"cpus": NAN}, "cpus"),
        ({"cpus": INF}, "cpus"),
        ({"cpus": -1.0}, "cpus"),
        ({"memory_mb": 2**64 - 1}, "memory_mb"),
        ({"gpu": "h100", "gpus": 2**32 - 1}, "gpus"),
    ],
)
def test_a_hardware_spec_refuses_non_finite_and_out_of_range_numbers(
    fields: dict[str, Any], named: str
) -> None:
    with pytest.raises(SpecError, match=named):
        HardwareSpec(**fields)


def test_a_spec_message_with_nan_is_refused_when_read_off_the_wire() -> None:
    with pytest.raises(SpecError, match="time_limit_s=nan"):
        spec_from_pb(pb.HardwareSpec(time_limit_s=NAN))


def test_intake_names_the_node_and_field_of_a_bad_number() -> None:
    with pytest.raises(SpecError, match=r"node 3 \(train\): .*cpus=nan"):
        _numbers.hardware(pb.HardwareSpec(cpus=NAN), "node 3 (train)")
    with pytest.raises(SpecError, match=r"node 3 \(train\): retries="):
        _numbers.retries(2**32 - 1, "node 3 (train)")
    assert _numbers.retries(MAX_RETRIES, "node 3 (train)") == MAX_RETRIES


@pytest.mark.parametrize("value", [NAN, INF, -1.0, 1e300])
def test_a_wait_that_is_not_a_finite_number_of_seconds_is_refused(value: float) -> None:
    with pytest.raises(SpecError, match="wait_s="):
        _numbers.wait_seconds(value, "wait_s")


@pytest.mark.parametrize("value", [NAN, INF, -1.0, 1e300, 1e18])
def test_a_cost_summary_since_outside_the_calendar_is_refused(value: float) -> None:
    with pytest.raises(SpecError, match="since="):
        _numbers.since_time(value)


def test_a_cost_summary_since_within_the_calendar_is_accepted() -> None:
    assert _numbers.since_time(1_700_000_000.0) == 1_700_000_000.0


@pytest.mark.parametrize(
    ("run_s", "limit", "billed"),
    [
        (NAN, None, 1.0),
        (INF, None, 1.0),
        (-INF, None, 1.0),
        (INF, 60.0, 60.0),
        (NAN, 60.0, 1.0),
        (5.5, NAN, 6.0),
        (5.5, INF, 6.0),
        (5.5, -3.0, 6.0),
        (120.0, 60.0, 60.0),
    ],
)
def test_billing_never_raises_on_odd_run_times_or_limits(
    run_s: float, limit: float | None, billed: float
) -> None:
    assert billed_seconds(run_s, limit) == billed


def test_a_stored_spec_that_no_longer_validates_is_listed_empty_rather_than_failing() -> None:
    assert stored_spec_to_pb('{"time_limit_s": NaN}') == pb.HardwareSpec()
    assert stored_spec_to_pb('{"cpus": 2}').cpus == 2


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_replicas": 10**30}, "max_replicas"),
        ({"max_queue": 10**30}, "max_queue"),
        ({"target_concurrency": NAN}, "target_concurrency"),
        ({"target_concurrency": INF}, "target_concurrency"),
        ({"requests_per_second": 1e300}, "requests_per_second"),
        ({"queue_timeout": INF}, "queue_timeout"),
        ({"downscale_delay": 1e300}, "downscale_delay"),
    ],
)
def test_autoscaling_refuses_non_finite_and_huge_numbers(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(SpecError, match=named):
        Autoscaling(**options)


@pytest.mark.parametrize(
    ("key", "value"),
    [("target_concurrency", NAN), ("max_replicas", 10**30), ("queue_timeout", INF)],
)
def test_a_manifest_from_the_wire_with_nan_or_huge_numbers_is_refused(
    key: str, value: float
) -> None:
    data = json.loads(Manifest("svc", (Route("predict", "/predict"),)).to_json())
    data["autoscaling"][key] = value

    with pytest.raises(SpecError, match=key):
        Manifest.from_json(json.dumps(data))


def test_a_batch_of_a_huge_size_is_refused() -> None:
    with pytest.raises(SpecError, match="max_size"):
        Batch(max_size=10**30)


def test_the_deadline_heap_never_takes_a_nan_deadline() -> None:
    """Why intake refuses NaN limits: one NaN in a heap hides the deadlines behind it."""
    heap: list[tuple[float, str]] = []
    for deadline, key in [(NAN, "poison"), (5.0, "a"), (1.0, "b")]:
        heapq.heappush(heap, (deadline, key))
    assert heap[0][1] == "poison"  # never <= now, so nothing behind it ever fires
    with pytest.raises(SpecError):
        HardwareSpec(time_limit_s=NAN)
