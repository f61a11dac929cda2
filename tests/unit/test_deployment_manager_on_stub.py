"""The deployment manager on stub executors, beside the scheduler: replica placement,
the priority of waiting replicas over tasks, outcomes routed by kind, billing once,
and replicas adopted after a simulated controller restart, with no process started."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from placement_support import FUNCTION_SHA, PRICED, FakePool, StubWorld, task
from support import wait_for

from cobalt_common.deploy import Autoscaling, Manifest, Route
from cobalt_common.hardware import HardwareSpec
from cobalt_controller.deploy import ACTIVE, FAILED, LiveDeployment, recover
from cobalt_controller.dispatch._model import COMPLETED, PENDING
from cobalt_controller.placement import WorkKind, charge
from cobalt_controller.state import MemoryStateStore
from cobalt_executors import Executor
from cobalt_executors.stub import StubExecutor

pytestmark = pytest.mark.unit

GPU = HardwareSpec(gpu="h100", gpus=1)
TWO_GPUS = HardwareSpec(gpu="h100", gpus=2)


def deploy(
    world: StubWorld,
    spec: HardwareSpec,
    name: str = "svc",
    candidates: tuple[Executor, ...] | None = None,
) -> LiveDeployment:
    manifest = Manifest(name, (Route("predict", "/predict"),), Autoscaling())
    return world.manager.create(
        manifest,
        manifest.to_json(),
        FUNCTION_SHA,
        [],
        spec,
        "",
        candidates if candidates is not None else tuple(world.executors),
        "",
    )


def events(world: StubWorld, name: str = "svc") -> list[str]:
    return [e.kind for e in reversed(world.state.deployment_events(name, 100))]


def replica_keys(stub: StubExecutor) -> list[str]:
    return [s.task_key for s in stub.submitted if s.task_key.startswith("replica/")]


@pytest.fixture
def stub() -> StubExecutor:
    return StubExecutor("stub", {"cpus": 4, "gpus": {"h100": 2}, **PRICED})


@pytest.fixture
def world(stub: StubExecutor) -> Iterator[StubWorld]:
    w = StubWorld(stub).start()
    yield w
    w.stop()


def test_a_replica_starts_on_the_cheapest_candidate_that_has_room() -> None:
    cheap = StubExecutor("cheap", {"cpus": 1, **PRICED})
    dear = StubExecutor("dear", {"cpus": 4, "prices": {"cpu_core_hour": 7.2}})
    world = StubWorld(cheap, dear)
    first = deploy(world, HardwareSpec(cpus=1), "first")
    second = deploy(world, HardwareSpec(cpus=1), "second")
    (r1,) = first.replicas.values()
    (r2,) = second.replicas.values()
    assert (r1.executor_name, r1.rate) == ("cheap", 3.6)
    assert (r2.executor_name, r2.rate) == ("dear", 7.2)
    assert events(world, "second") == ["deployed", "replica_started"]


def test_a_waiting_replica_holds_its_gpus_against_new_tasks_until_it_starts(
    world: StubWorld, stub: StubExecutor
) -> None:
    first = world.dispatch([task(0, GPU)])
    running = stub.wait_submitted(1)[0].task_key
    d = deploy(world, TWO_GPUS)
    assert events(world)[-1] == "replica_waiting" and replica_keys(stub) == []

    later = world.dispatch([task(0, GPU, name="gpu"), task(1, HardwareSpec(cpus=1), name="cpu")])
    cpu = stub.wait_submitted(2)[1]
    assert cpu.name == "cpu", "a task that needs no GPU starts at once"
    assert later.tasks[0].status == PENDING, "one GPU is free, but the replica holds it"
    assert len(stub.inventory().free_now()[2]) == 1

    stub.complete(running)
    key = wait_for(lambda: replica_keys(stub), what="the replica to start")[0]
    assert world.finished(first).status == COMPLETED
    assert stub.given(key).gpu_indices == (0, 1) and later.tasks[0].status == PENDING

    world.manager.teardown(d.name)  # it never became ready: stopped at once
    gpu = stub.wait_submitted(4)[3]
    assert gpu.name == "gpu", "the replica's end frees its GPUs for the held-back task"
    stub.complete(gpu.task_key)
    stub.complete(cpu.task_key)
    assert world.finished(later).status == COMPLETED


def test_a_replica_that_fails_before_it_is_ready_fails_its_deployment_and_no_dispatch(
    world: StubWorld, stub: StubExecutor
) -> None:
    d = deploy(world, HardwareSpec(cpus=1))
    key = replica_keys(stub)[0]
    assert world.placement.running(WorkKind.REPLICA) == [key]
    dispatch = world.dispatch([task(0)])
    task_key = stub.wait_submitted(2)[1].task_key
    stub.fail(key, "ImportError: no module named 'missing'", reason="exception")
    wait_for(lambda: d.status == FAILED, what="the deployment to fail")
    assert "no module named 'missing'" in d.error
    assert "deployment_failed" in events(world)
    assert dispatch.tasks[0].status != COMPLETED and not dispatch.done.is_set()
    stub.complete(task_key)
    assert world.finished(dispatch).status == COMPLETED


def test_a_ready_replica_that_ends_unexpectedly_is_replaced(
    world: StubWorld, stub: StubExecutor
) -> None:
    d = deploy(world, HardwareSpec(cpus=1))
    (r,) = d.replicas.values()
    assert world.manager.on_replica_ready(d.name, r.replica_id, "http://127.0.0.1:9", 1, "")
    assert d.status == ACTIVE
    stub.fail(r.task_key, "the worker running it exited with signal 9", reason="killed")
    wait_for(lambda: len(replica_keys(stub)) == 2, what="a replacement")
    assert r.status == "failed" and "replica_failed" in events(world)
    assert len(d.replicas) == 1 and r.replica_id not in d.replicas


def test_a_replica_is_billed_once_at_its_executors_rate_into_its_deployment_only(
    world: StubWorld, stub: StubExecutor
) -> None:
    d = deploy(world, HardwareSpec(cpus=1))
    (r,) = d.replicas.values()
    world.manager.on_replica_ready(d.name, r.replica_id, "", 1, "")
    world.manager.teardown(d.name)
    assert r.status == "draining" and world.gateway.called("remove") == [(d.name,)]
    world.manager.replica_drained(d.name, r.replica_id)
    wait_for(lambda: r.status == "stopped", what="the replica to stop")
    bill = charge(r.started_at, r.ended_at or 0.0, 3.6)
    assert (r.billed_s, r.cost_usd) == bill and bill.cost_usd > 0
    assert d.cost_usd == pytest.approx(bill.cost_usd)
    world.manager.stop(timeout=0.2)
    assert d.cost_usd == pytest.approx(bill.cost_usd), "an ended replica is not billed again"
    stored = world.state.get_deployment(d.name)
    assert stored is not None and stored.cost_usd == pytest.approx(bill.cost_usd)
    (row,) = [x for x in world.state.get_replicas(d.name) if x.replica_id == r.replica_id]
    assert row.cost_usd == pytest.approx(bill.cost_usd) and row.billed_s == bill.billed_s


# -- a simulated restart -----------------------------------------------------------------


@contextlib.contextmanager
def surviving_replica() -> Iterator[tuple[str, dict[str, Any]]]:
    """A replica's control API that outlived its controller: it answers its health
    check with the id in ``state["replica_id"]`` and records a shutdown."""
    state: dict[str, Any] = {"replica_id": "", "shutdown": threading.Event()}

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer({"replica_id": state["replica_id"]})

        def do_POST(self) -> None:
            if self.path == "/_cobalt/shutdown":
                state["shutdown"].set()
            self._answer({})

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def test_after_a_restart_a_gpu_held_by_an_adopted_replica_is_not_given_to_a_new_task() -> None:
    store = MemoryStateStore()
    options = {"cpus": 4, "gpus": {"h100": 1}}
    before = StubWorld(StubExecutor("gpus", options), state=store)
    with surviving_replica() as (url, replica):
        d = deploy(before, GPU)
        (r,) = d.replicas.values()
        replica["replica_id"] = r.replica_id
        assert before.manager.on_replica_ready(d.name, r.replica_id, url, 4242, "")
        # The controller is killed here: nothing of it is stopped; its replica runs on.

        stub = StubExecutor("gpus", options)
        after = StubWorld(stub, state=store)
        recover(after.manager, FakePool([stub]).as_pool())
        assert "replica_adopted" in events(after)
        adopted = after.manager.live[d.name].replicas[r.replica_id]
        assert adopted.adopted and stub.inventory().free_now()[2] == []
        after.start()
        try:
            dispatch = after.dispatch([task(0, GPU)])
            wait_for(lambda: stub.refused, what="the GPU task to be refused")
            assert stub.submitted == [] and dispatch.tasks[0].status == PENDING

            after.manager.teardown(d.name)
            after.manager.replica_drained(d.name, r.replica_id)
            assert replica["shutdown"].wait(5), "the adopted replica is told to shut down"
            key = stub.wait_submitted(1)[0].task_key
            assert stub.given(key).gpu_indices == (0,)
            stub.complete(key)
            assert after.finished(dispatch).status == COMPLETED
        finally:
            after.stop()
