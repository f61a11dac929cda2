"""Deployments under stress, end to end: dying replicas, bursts of load, controller restarts.

The real SDK against a real controller, with replicas as real worker
processes; load is real concurrent HTTP on loopback. Autoscaling ticks every
0.2 s here, so scaling decisions take a fraction of a second.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from conftest import DEPLOY_CONFIG_TOML
from support import wait_for

import cobalt as ct
from cobalt._client import get_client
from cobalt_common.v1 import controller_pb2 as pb

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration

CONFIG = DEPLOY_CONFIG_TOML


def rpc_get(name: str) -> pb.Deployment:
    client = get_client()
    reply: pb.Deployment = client.call(
        client.stub.DeploymentGet, pb.DeploymentGetRequest(name=name)
    )
    return reply


def ready_ids(name: str) -> set[str]:
    return {r.replica_id for r in rpc_get(name).replicas if r.status == "ready"}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerHome]:
    from conftest import ControllerHome

    with ControllerHome(tmp_path_factory.mktemp("cobalt-deploy-faults"), CONFIG).serving() as h:
        yield h


# -- a replica dies with requests in flight --------------------------------------------


@ct.service(name="sturdy", cpus=0.25, min_replicas=2, max_replicas=2)
def sturdy() -> dict[str, Any]:
    return {}


@sturdy.endpoint("/slow")
def slow(i: int) -> dict[str, Any]:
    time.sleep(0.5)
    return {"i": i, "pid": os.getpid(), "replica": os.environ.get("COBALT_REPLICA_ID")}


@sturdy.endpoint("/whoami")
def whoami() -> dict[str, Any]:
    return {"pid": os.getpid(), "replica": os.environ.get("COBALT_REPLICA_ID")}


def test_requests_in_flight_on_a_killed_replica_are_retried_and_the_replica_replaced(
    home: ControllerHome,
) -> None:
    with ct.deploy(sturdy)() as dep:
        before = wait_for(lambda: len(ids := ready_ids("sturdy")) == 2 and ids, what="2 replicas")
        pids = {a["replica"]: a["pid"] for a in (dep.whoami() for _ in range(6))}
        assert set(pids) == before, "requests go to both replicas"
        victim = sorted(pids)[0]

        with ThreadPoolExecutor(8) as pool:
            calls = [pool.submit(dep.slow, i=i) for i in range(8)]
            wait_for(
                lambda: sum(r.in_flight for r in rpc_get("sturdy").replicas) == 8,
                timeout=5,
                what="8 requests in flight on the two replicas",
            )
            in_flight = {r.replica_id: r.in_flight for r in rpc_get("sturdy").replicas}
            assert in_flight[victim] > 0, in_flight
            os.kill(pids[victim], signal.SIGKILL)
            answers = [c.result(timeout=30) for c in calls]

        assert sorted(a["i"] for a in answers) == list(range(8))
        # All 8 were in flight when it died: the victim's were answered by another replica.
        assert victim not in {a["replica"] for a in answers}
        replaced = wait_for(
            lambda: len(ids := ready_ids("sturdy")) == 2 and victim not in ids and ids,
            what="a replacement replica",
        )
        assert len(replaced - before) == 1
        assert dep.whoami()["pid"] != pids[victim]
        kinds = {e.kind: e for e in dep.events()}
        assert "replica_failed" in kinds or "replica_lost" in kinds
        failed = [e for e in dep.events() if e.kind in ("replica_failed", "replica_lost")]
        assert any(victim in e.message for e in failed)


# -- autoscaling -----------------------------------------------------------------------


@ct.service(
    name="elastic",
    cpus=0.25,
    autoscaling=ct.Autoscaling(
        min_replicas=0,
        max_replicas=3,
        target_concurrency=2,
        scaledown_window=2,
        downscale_delay=0,
    ),
)
def elastic() -> dict[str, Any]:
    return {}


@elastic.endpoint("/work")
def work(ms: int) -> str:
    time.sleep(ms / 1000)
    return os.environ.get("COBALT_REPLICA_ID", "")


def test_a_burst_scales_up_within_max_replicas_and_idleness_scales_back_to_zero(
    home: ControllerHome,
) -> None:
    stop = threading.Event()
    seen: list[int] = []
    served: set[str] = set()
    errors: list[BaseException] = []

    def client() -> None:
        with httpx.Client(timeout=30, trust_env=False) as http:
            headers = {"Authorization": f"Bearer {dep.token}"}
            while not stop.is_set():
                try:
                    r = http.post(f"{dep.url}/work", json={"ms": 200}, headers=headers)
                    r.raise_for_status()
                    served.add(r.json())
                except BaseException as exc:  # any failure fails the test
                    errors.append(exc)
                    return

    with ct.deploy(elastic)() as dep:
        try:
            threads = [threading.Thread(target=client, daemon=True) for _ in range(16)]
            for t in threads:
                t.start()

            def scaled_up() -> bool:
                d = rpc_get("elastic")
                seen.append(d.desired_replicas)
                seen.append(len([r for r in d.replicas if r.version == d.version]))
                return d.ready_replicas > 1

            wait_for(scaled_up, timeout=20, what="more than one ready replica under load")
            time.sleep(1.0)  # the burst goes on: the count must still hold under max
            seen.append(rpc_get("elastic").desired_replicas)
            stop.set()
            for t in threads:
                t.join(timeout=30)
            assert not errors, errors[:3]
            assert max(seen) <= 3, seen
            assert len(served) > 1, "the load was spread over the new replicas"

            scale_ups = [e for e in dep.events(limit=200) if e.kind == "scale_up"]
            inputs = next(e.inputs for e in scale_ups if "metrics" in e.inputs)
            assert inputs["metrics"]["ongoing"] > 2
            assert inputs["settings"]["target_concurrency"] == 2
            assert inputs["settings"]["max_replicas"] == 3
            assert "target_concurrency" in inputs["decisions"]

            idle = time.monotonic()
            wait_for(
                lambda: (d := rpc_get("elastic")).desired_replicas == 0 and not d.replicas,
                timeout=15,
                what="the deployment to scale to zero",
            )
            assert time.monotonic() - idle >= 1.5  # not before the scaledown window
            down = [e for e in dep.events(limit=200) if e.kind == "scale_down"]
            assert any(e.inputs.get("target") == 0 for e in down)
            assert dep.status == "active"
            assert dep.work(ms=1)  # a cold start answers
        finally:
            stop.set()


# -- the controller restarts -----------------------------------------------------------


@ct.service(name="durable", cpus=0.25, min_replicas=1)
def durable(greeting: str) -> dict[str, Any]:
    return {"greeting": greeting}


@durable.endpoint("/greet")
def greet(greeting: str, name: str) -> dict[str, Any]:
    return {"text": f"{greeting}, {name}", "pid": os.getpid()}


def test_after_a_controller_restart_the_deployment_serves_again_at_the_same_url(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    home = make_controller_home(CONFIG)
    home.start()
    with ct.deploy(durable)("hello") as dep:
        first = dep.greet(name="Ada")
        assert first["text"] == "hello, Ada"

        home.stop()
        home.start()

        listed = {d.name: d for d in ct.list_deployments()}
        assert "durable" in listed
        again = listed["durable"]
        assert (again.url, again.token) == (dep.url, dep.token)
        answer = wait_for(lambda: _try(dep.greet, name="Bob"), what="a replica after the restart")
        assert answer["text"] == "hello, Bob"
        assert answer["pid"] != first["pid"]  # a new replica: the old one stopped with it
        assert ct.get_deployment("durable").status == "active"


def _try(fn: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except ct.EndpointError as exc:
        if exc.status_code in (502, 503):
            return None
        raise
