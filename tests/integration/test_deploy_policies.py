"""Autoscaling policies on the real stack: SDK services, a controller, replicas on loopback.

The policy logic itself is unit-tested against fakes (test_autoscaler.py);
these tests check that a user's own policy really runs inside a replica and
that a schedule's floor and the bounds really hold on running replicas.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from conftest import DEPLOY_CONFIG_TOML
from support import wait_for

import cobalt as ct

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration

CONFIG = DEPLOY_CONFIG_TOML


@pytest.fixture
def home(make_controller_home: Callable[..., ControllerHome]) -> ControllerHome:
    h = make_controller_home(CONFIG)
    h.start()
    return h


def wait_for_replicas(dep: ct.Deployment, replicas: int, timeout: float = 20) -> None:
    seen: list[int] = []

    def ready() -> bool:
        seen.append(dep.replicas)
        return seen[-1] == replicas

    try:
        wait_for(ready, timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(
            f"{dep.name} has {seen[-1]} ready replicas, not {replicas}, after {timeout:g} s"
        ) from None


def three_unless_told(metrics: dict[str, Any]) -> int:
    """A user's policy: three replicas whenever at least one runs."""
    assert {"replicas", "ongoing", "rps"} <= set(metrics)
    return 3


def test_a_custom_policy_runs_inside_a_replica_and_sets_the_count(home: ControllerHome) -> None:
    @ct.service(
        name="custom",
        cpus=0.25,
        autoscaling=ct.Autoscaling(min_replicas=1, max_replicas=5, policy=three_unless_told),
    )
    def custom() -> dict[str, Any]:
        return {}

    @custom.endpoint("/ping")
    def ping() -> str:
        return "pong"

    with ct.deploy(custom)() as dep:
        wait_for_replicas(dep, 3)
        assert dep.ping() == "pong"
        events = dep.events(100)
        up = [e for e in events if e.kind == "scale_up"]
        assert up, [e.message for e in events]
        assert "custom" in up[0].message or "policy" in up[0].message, up[0].message


def raises(metrics: dict[str, Any]) -> int:
    raise RuntimeError("my policy is broken")


def test_a_policy_that_raises_is_recorded_and_the_others_still_decide(
    home: ControllerHome,
) -> None:
    @ct.service(
        name="broken-policy",
        cpus=0.25,
        autoscaling=ct.Autoscaling(min_replicas=1, max_replicas=2, policy=raises),
    )
    def svc() -> dict[str, Any]:
        return {}

    @svc.endpoint("/ping")
    def ping() -> str:
        return "pong"

    with ct.deploy(svc)() as dep:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            messages = [e.message for e in dep.events(100)]
            if any("my policy is broken" in m for m in messages):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no event names the policy's error: {messages}")
        assert dep.ping() == "pong"
        assert dep.replicas == 1


def test_an_open_schedule_window_holds_its_floor_and_max_replicas_caps_it(
    home: ControllerHome,
) -> None:
    every_minute = ct.Schedule(cron="* * * * *", min_replicas=9, duration="1h")

    @ct.service(
        name="scheduled",
        cpus=0.25,
        autoscaling=ct.Autoscaling(min_replicas=0, max_replicas=2, schedules=[every_minute]),
    )
    def svc() -> dict[str, Any]:
        return {}

    @svc.endpoint("/ping")
    def ping() -> str:
        return "pong"

    with ct.deploy(svc)() as dep:
        wait_for_replicas(dep, 2)
        time.sleep(1.0)  # several ticks: the floor of 9 never lifts it past max_replicas
        assert dep.replicas == 2
        deployed = next(e for e in dep.events(100) if e.kind == "deployed")
        assert "starting 2 replica(s)" in deployed.message, deployed.message
        assert "an open schedule's floor of 9" in deployed.message, deployed.message
        assert "max_replicas 2" in deployed.message, deployed.message
