"""The autoscaler and its policies, with a fake clock and fake metrics."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cobalt_common.deploy import Autoscaling, Schedule
from cobalt_controller.deploy import Autoscaler
from cobalt_controller.deploy.policies import (
    BUILT_IN,
    Custom,
    Decision,
    Metrics,
    Policy,
    RequestsPerSecond,
    Schedules,
    TargetConcurrency,
    Utilization,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=ZoneInfo("UTC")).timestamp()
"""Monday 2026-11-23 08:00 UTC."""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def probe_answering(metrics: list[dict[str, Any]] | None = None, policy: Any = None) -> Any:
    calls: list[tuple[str, Any]] = []

    async def probe(path: str, body: dict[str, Any] | None) -> list[dict[str, Any]]:
        calls.append((path, body))
        if path == "/_cobalt/metrics":
            return metrics or []
        if isinstance(policy, Exception):
            raise policy
        return [{"replicas": policy}]

    probe.calls = calls  # type: ignore[attr-defined]
    return probe


def settings_for(policy: type[Policy]) -> Autoscaling:
    """Settings that switch ``policy`` on."""
    extra: dict[str, Any] = {
        RequestsPerSecond: {"requests_per_second": 5},
        Utilization: {"utilization": 0.6},
        Schedules: {"schedules": [Schedule("0 9 * * *", 3, "1h", "UTC")]},
        Custom: {"policy": lambda m: 2},
    }.get(policy, {})
    return Autoscaling(max_replicas=10, **extra)


# -- the policy contract --------------------------------------------------------------


@pytest.mark.parametrize("policy_cls", BUILT_IN, ids=lambda c: c.name)
def test_every_policy_is_off_unless_its_settings_ask_for_it(policy_cls: type[Policy]) -> None:
    on = policy_cls.from_settings(settings_for(policy_cls))
    assert isinstance(on, Policy) and on.name == policy_cls.name
    off = policy_cls.from_settings(Autoscaling())
    assert off is None or policy_cls is TargetConcurrency


@pytest.mark.parametrize("policy_cls", BUILT_IN, ids=lambda c: c.name)
def test_every_policy_answers_a_decision_with_a_reason_or_abstains(
    policy_cls: type[Policy],
) -> None:
    policy = policy_cls.from_settings(settings_for(policy_cls))
    assert policy is not None
    metrics = Metrics(
        replicas=2,
        current=2,
        ongoing=20,
        rps=12.0,
        now=T0 + 3600 + 60,
        probe=probe_answering([{"cpu_utilization": 0.9, "gpu_utilization": None}], policy=4),
    )
    decision = run(policy.decide(metrics))
    assert isinstance(decision, Decision)
    assert decision.replicas >= 0 and decision.reason and isinstance(decision.inputs, dict)
    idle = Metrics(replicas=0, current=0, now=T0)
    quiet = run(policy.decide(idle))
    assert quiet is None or quiet.replicas == 0


# -- each built-in ----------------------------------------------------------------------


def test_target_concurrency_wants_ongoing_over_target_rounded_up() -> None:
    p = TargetConcurrency(8)
    assert [run(p.decide(Metrics(ongoing=n))).replicas for n in (0, 1, 8, 9, 20)] == [
        0,
        1,
        1,
        2,
        3,
    ]


def test_requests_per_second_wants_rate_over_per_replica_rate() -> None:
    p = RequestsPerSecond(5)
    assert [run(p.decide(Metrics(rps=r))).replicas for r in (0, 4.9, 5, 12)] == [0, 1, 1, 3]


def test_utilization_adds_above_target_removes_under_half_and_prefers_gpu() -> None:
    p = Utilization(0.6)

    def decide(reports: list[dict[str, Any]]) -> Decision | None:
        result: Decision | None = run(
            p.decide(Metrics(replicas=2, current=2, probe=probe_answering(reports)))
        )
        return result

    hot = decide([{"cpu_utilization": 0.9}, {"cpu_utilization": 0.8}])
    assert hot is not None and hot.replicas == 3 and "CPU" in hot.reason
    cold = decide([{"cpu_utilization": 0.1}, {"cpu_utilization": 0.2}])
    assert cold is not None and cold.replicas == 1
    steady = decide([{"cpu_utilization": 0.5}])
    assert steady is not None and steady.replicas == 2
    gpu = decide([{"cpu_utilization": 0.05, "gpu_utilization": 0.95}])
    assert gpu is not None and gpu.replicas == 3 and "GPU" in gpu.reason
    assert decide([]) is None


def test_schedules_hold_a_floor_inside_the_window_in_its_time_zone() -> None:
    paris = Schedules((Schedule("0 9 * * 1-5", 4, "2h", "Europe/Paris"),))
    at = lambda h, m=0: datetime(2026, 11, 23, h, m, tzinfo=ZoneInfo("Europe/Paris")).timestamp()  # noqa: E731
    assert paris.floor(Metrics(now=at(8, 59))) == 0
    assert paris.floor(Metrics(now=at(9, 0))) == 4
    assert paris.floor(Metrics(now=at(10, 59))) == 4
    assert paris.floor(Metrics(now=at(11, 0))) == 0
    saturday = datetime(2026, 11, 28, 9, 30, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    assert paris.floor(Metrics(now=saturday)) == 0
    # 9:30 in Paris is 8:30 UTC: the same instant is outside a UTC 9:00 window.
    utc = Schedules((Schedule("0 9 * * *", 2, "1h", "UTC"),))
    assert utc.floor(Metrics(now=at(9, 30))) == 0


def test_schedules_without_a_time_zone_use_local_time() -> None:
    local = Schedules((Schedule("0 9 * * *", 2, "1h"),))
    nine_thirty = datetime(2026, 11, 23, 9, 30).timestamp()
    assert local.floor(Metrics(now=nine_thirty)) == 2
    assert local.floor(Metrics(now=nine_thirty + 3600)) == 0


def test_the_custom_policy_asks_one_replica_and_checks_the_answer() -> None:
    probe = probe_answering(policy=5)
    d = run(Custom().decide(Metrics(replicas=1, ongoing=3, probe=probe)))
    assert d is not None and d.replicas == 5
    assert probe.calls == [("/_cobalt/policy", Metrics(replicas=1, ongoing=3).as_dict())]
    with pytest.raises(ValueError, match="whole number"):
        run(Custom().decide(Metrics(replicas=1, probe=probe_answering(policy=-1))))
    assert run(Custom().decide(Metrics(replicas=0, probe=probe))) is None


# -- the autoscaler ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def metrics(self, **values: Any) -> Metrics:
        values.setdefault("idle_s", 0.0)
        return Metrics(now=self.now, **values)


def tick(scaler: Autoscaler, clock: Clock, **values: Any) -> tuple[int | None, list[Any]]:
    result: tuple[int | None, list[Any]] = run(scaler.tick(clock.metrics(**values)))
    return result


def test_policies_combine_by_the_largest_answer() -> None:
    scaler = Autoscaler(
        Autoscaling(max_replicas=10, target_concurrency=10, requests_per_second=2), current=1
    )
    new, events = tick(scaler, Clock(), ongoing=10, rps=7.0, replicas=1)
    assert new == 4
    (event,) = events
    assert event.kind == "scale_up" and "requests_per_second" in event.message
    assert event.inputs["decisions"]["target_concurrency"]["replicas"] == 1
    assert event.inputs["decisions"]["requests_per_second"]["replicas"] == 4
    assert event.inputs["metrics"]["rps"] == 7.0 and event.inputs["settings"]["max_replicas"] == 10


def test_min_and_max_replicas_always_hold() -> None:
    scaler = Autoscaler(Autoscaling(min_replicas=2, max_replicas=3, downscale_delay=0), 2)
    clock = Clock()
    new, events = tick(scaler, clock, ongoing=100)
    assert new == 3 and "capped at max_replicas=3" in events[0].message
    new, events = tick(scaler, clock, ongoing=0, idle_s=1000)
    assert new == 2 and "floor of 2" in events[0].message


def test_a_higher_count_waits_for_the_upscale_delay() -> None:
    scaler = Autoscaler(Autoscaling(upscale_delay=10, max_replicas=8), current=1)
    clock = Clock()
    assert tick(scaler, clock, ongoing=24)[0] is None
    clock.now += 5
    assert tick(scaler, clock, ongoing=24)[0] is None
    clock.now += 5
    assert tick(scaler, clock, ongoing=24)[0] == 3


def test_a_lower_count_waits_for_the_downscale_delay_and_keeps_the_peak() -> None:
    scaler = Autoscaler(Autoscaling(downscale_delay=30, max_replicas=8), current=4)
    clock = Clock()
    assert tick(scaler, clock, ongoing=8)[0] is None  # wants 1
    clock.now += 10
    assert tick(scaler, clock, ongoing=16)[0] is None  # wants 2
    clock.now += 20
    new, events = tick(scaler, clock, ongoing=8)
    assert new == 2 and events[0].kind == "scale_down"


def test_a_dip_shorter_than_the_downscale_delay_changes_nothing() -> None:
    scaler = Autoscaler(Autoscaling(downscale_delay=30, max_replicas=8), current=3)
    clock = Clock()
    assert tick(scaler, clock, ongoing=0)[0] is None
    clock.now += 20
    assert tick(scaler, clock, ongoing=24)[0] is None
    clock.now += 20
    assert tick(scaler, clock, ongoing=0)[0] is None
    assert scaler.current == 3


def test_scale_to_zero_waits_for_the_scaledown_window_without_requests() -> None:
    scaler = Autoscaler(Autoscaling(min_replicas=0, scaledown_window=60), current=1)
    clock = Clock()
    assert tick(scaler, clock, ongoing=0, idle_s=30, replicas=1)[0] is None
    clock.now += 29
    assert tick(scaler, clock, ongoing=0, idle_s=59, replicas=1)[0] is None
    assert scaler.current == 1
    clock.now += 2
    new, events = tick(scaler, clock, ongoing=0, idle_s=61, replicas=1)
    assert new == 0 and "no request for 61 s" in events[0].message


def test_a_replica_still_starting_is_not_scaled_to_zero_however_long_it_takes() -> None:
    scaler = Autoscaler(Autoscaling(min_replicas=0, scaledown_window=1), current=1)
    new, _ = tick(scaler, Clock(), ongoing=0, idle_s=600, replicas=0)
    assert new is None and scaler.current == 1


def test_a_replica_woken_from_zero_is_kept_and_not_scaled_away_at_once() -> None:
    scaler = Autoscaler(Autoscaling(min_replicas=0, scaledown_window=60), current=0)
    scaler.woke()
    assert scaler.current == 1
    assert tick(scaler, Clock(), ongoing=0, idle_s=1)[0] is None


def test_an_open_schedule_raises_the_floor() -> None:
    schedule = Schedule("0 8 * * *", 5, "1h", "UTC")
    scaler = Autoscaler(Autoscaling(max_replicas=10, schedules=[schedule]), current=1)
    clock = Clock()
    new, events = tick(scaler, clock, ongoing=0)
    assert new == 5 and "schedule" in events[0].message
    clock.now += 3600 + 60
    scaler.configure(Autoscaling(max_replicas=10, schedules=[schedule], downscale_delay=0))
    new, _ = tick(scaler, clock, ongoing=0, idle_s=10)
    assert new == 1


def test_a_failing_custom_policy_is_recorded_and_left_out() -> None:
    scaler = Autoscaler(Autoscaling(policy=lambda m: 1, max_replicas=5), current=1)
    probe = probe_answering(policy=RuntimeError("policy exploded"))
    clock = Clock()
    new, events = tick(scaler, clock, ongoing=24, replicas=1, probe=probe)
    assert new == 3
    kinds = [e.kind for e in events]
    assert kinds == ["policy_error", "scale_up"]
    assert "policy exploded" in events[0].message and events[0].inputs["policy"] == "custom"
    # The same error again is not recorded again at once.
    clock.now += 1
    assert tick(scaler, clock, ongoing=24, replicas=1, probe=probe)[1] == []


def test_an_unchanged_count_records_nothing() -> None:
    scaler = Autoscaler(Autoscaling(), current=1)
    assert tick(scaler, Clock(), ongoing=3) == (None, [])


def test_decision_inputs_are_json() -> None:
    import json

    scaler = Autoscaler(Autoscaling(max_replicas=4), current=1)
    _, (event,) = tick(scaler, Clock(), ongoing=17)
    data = json.loads(event.inputs_json())
    assert data["target"] == 3 and data["wanted"] == math.ceil(17 / 8)
