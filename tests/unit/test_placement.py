"""The placement owner: outcomes routed by kind, room held for waiting replicas by
the written rule, adopted hardware counted, and one bill for tasks and replicas."""

from __future__ import annotations

import doctest

import pytest

from cobalt_common.hardware import HardwareSpec
from cobalt_common.status import Status
from cobalt_controller.placement import (
    HOLD_S,
    Placement,
    WorkKind,
    _billing,
    _owner,
    charge,
    holds_back,
)
from cobalt_executors import Allocation, ExecutorContext, PayloadRef, TaskOutcome, TaskSubmission
from cobalt_executors.stub import StubExecutor

pytestmark = pytest.mark.unit

GPU = HardwareSpec(gpu="h100", gpus=1)
TWO_GPUS = HardwareSpec(gpu="h100", gpus=2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Heard:
    """Each component's outcomes, and how often it was told room freed."""

    def __init__(self, placement: Placement) -> None:
        self.tasks: list[TaskOutcome] = []
        self.replicas: list[TaskOutcome] = []
        self.room = 0
        placement.route(WorkKind.TASK, self.tasks.append)
        placement.route(WorkKind.REPLICA, self.replicas.append)
        placement.on_room(self._room)

    def _room(self) -> None:
        self.room += 1


def sub(key: str, hardware: HardwareSpec | None = None) -> TaskSubmission:
    return TaskSubmission(
        task_key=key,
        dispatch_id="",
        node_id=0,
        name=key,
        hardware=hardware or HardwareSpec(),
        function=PayloadRef("f" * 64, b"opaque", 6),
        args=[],
    )


def a_stub(placement: Placement, name: str = "stub") -> StubExecutor:
    stub = StubExecutor(name, {"cpus": 4, "gpus": {"h100": 2}})
    stub.setup(ExecutorContext(inline_limit=1024, report=placement.report))
    return stub


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def placement(clock: Clock) -> Placement:
    return Placement(clock=clock)


@pytest.fixture
def heard(placement: Placement) -> Heard:
    return Heard(placement)


@pytest.fixture
def stub(placement: Placement) -> StubExecutor:
    return a_stub(placement)


# -- routing -------------------------------------------------------------------------


def test_each_outcome_goes_to_the_component_that_started_the_run_whatever_its_key(
    placement: Placement, heard: Heard, stub: StubExecutor
) -> None:
    assert placement.submit_task(stub, sub("replica/looks/like/one")) is not None
    assert placement.submit_replica(stub, sub("d/0/1")) is not None
    assert placement.running(WorkKind.TASK) == ["replica/looks/like/one"]
    assert placement.running(WorkKind.REPLICA) == ["d/0/1"]
    stub.complete("d/0/1")
    stub.complete("replica/looks/like/one")
    assert [o.task_key for o in heard.tasks] == ["replica/looks/like/one"]
    assert [o.task_key for o in heard.replicas] == ["d/0/1"]
    assert placement.running(WorkKind.TASK) == placement.running(WorkKind.REPLICA) == []


def test_an_outcome_reported_before_try_submit_returns_still_reaches_its_component(
    placement: Placement, heard: Heard, stub: StubExecutor
) -> None:
    stub.set_auto(b"done at once")
    assert placement.submit_task(stub, sub("fast")) is not None
    assert [o.task_key for o in heard.tasks] == ["fast"] and heard.replicas == []


def test_a_run_refused_or_raising_leaves_nothing_behind_to_route(
    placement: Placement, heard: Heard, stub: StubExecutor
) -> None:
    assert placement.submit_task(stub, sub("huge", HardwareSpec(cpus=64))) is None
    stub.teardown()
    assert placement.submit_replica(stub, sub("late")) is None

    class Unreachable(StubExecutor):
        def try_submit(self, task: TaskSubmission) -> None:
            raise OSError("the cluster does not answer")

    with pytest.raises(OSError, match="does not answer"):
        placement.submit_replica(Unreachable("far"), sub("replica"))
    assert placement.running(WorkKind.TASK) == placement.running(WorkKind.REPLICA) == []


def test_a_cancel_reaches_the_executor_that_runs_the_task(
    placement: Placement, heard: Heard, stub: StubExecutor
) -> None:
    other = a_stub(placement, "other")
    placement.submit_task(other, sub("t"))
    placement.cancel("t", "time_limit")
    placement.cancel("never-started", "cancelled")
    assert other.cancels == [("t", "time_limit")] and stub.cancels == []
    assert [(o.task_key, o.status) for o in heard.tasks] == [("t", Status.TIMED_OUT)]


# -- the priority rule ---------------------------------------------------------------


def test_the_rule_holds_back_tasks_that_would_take_what_a_waiting_replica_needs() -> None:
    assert holds_back(GPU, HardwareSpec(gpu="h100", gpus=1))
    assert not holds_back(GPU, HardwareSpec(gpu="l4", gpus=1)), "another GPU type"
    assert not holds_back(GPU, HardwareSpec(cpus=8)), "a GPU replica holds only its GPUs"
    assert holds_back(HardwareSpec(cpus=1), HardwareSpec(cpus=0.5))
    assert not holds_back(HardwareSpec(cpus=1), HardwareSpec(cpus=0))
    assert holds_back(HardwareSpec(cpus=0, memory_mb=512), HardwareSpec(cpus=0, memory_mb=1))
    assert not holds_back(HardwareSpec(cpus=0, memory_mb=512), HardwareSpec(cpus=1))


def test_a_waiting_replica_holds_its_gpus_against_new_tasks_on_its_candidates_only(
    placement: Placement, heard: Heard, stub: StubExecutor
) -> None:
    elsewhere = a_stub(placement, "elsewhere")
    assert placement.submit_task(stub, sub("running", GPU)) is not None
    assert placement.submit_replica(stub, sub("replica", TWO_GPUS)) is None
    placement.replica_waits("replica", TWO_GPUS, (stub,))

    assert placement.submit_task(stub, sub("gpu task", GPU)) is None, "a GPU is free, but held"
    assert stub.refused[-1].task_key != "gpu task", "held back before the executor is asked"
    assert placement.submit_task(stub, sub("cpu task", HardwareSpec(cpus=1))) is not None
    assert placement.submit_task(elsewhere, sub("gpu elsewhere", GPU)) is not None

    stub.complete("running")
    assert placement.submit_replica(stub, sub("replica", TWO_GPUS)) is not None
    assert heard.room == 1, "the scheduler hears that the hold ended"
    stub.complete("replica")
    assert placement.submit_task(stub, sub("gpu task", GPU)) is not None


def test_a_hold_ends_after_hold_s_and_then_tasks_and_the_replica_are_first_come(
    placement: Placement, heard: Heard, stub: StubExecutor, clock: Clock
) -> None:
    placement.submit_task(stub, sub("running", GPU))
    placement.replica_waits("replica", TWO_GPUS, (stub,))
    clock.now += HOLD_S - 1
    placement.replica_waits("replica", TWO_GPUS, (stub,))  # every retry: the hold is not renewed
    assert placement.submit_task(stub, sub("gpu task", GPU)) is None
    clock.now += 1
    assert placement.submit_task(stub, sub("gpu task", GPU)) is not None
    assert heard.room == 1


def test_a_replica_no_longer_wanted_stops_holding_room(
    placement: Placement, heard: Heard, stub: StubExecutor
) -> None:
    placement.replica_waits("replica", TWO_GPUS, (stub,))
    assert placement.submit_task(stub, sub("gpu task", GPU)) is None
    placement.forget("replica")
    assert heard.room == 1
    assert placement.submit_task(stub, sub("gpu task", GPU)) is not None


# -- adopted replicas ----------------------------------------------------------------


def test_adopted_hardware_is_held_until_the_replica_is_forgotten(
    placement: Placement, heard: Heard, stub: StubExecutor
) -> None:
    gpu0 = stub.inventory().gpus[0]
    given = Allocation(1.0, 1024, (gpu0,)).given()
    assert placement.adopt("replica/survivor", stub, given)
    cpus, memory, gpus = stub.inventory().free_now()
    assert (cpus, memory, [d.index for d in gpus]) == (3.0, 16384 - 1024, [1])
    assert not placement.adopt("replica/twin", stub, given), "GPU 0 is held already"

    assert placement.submit_task(stub, sub("one", GPU)) is not None
    assert placement.submit_task(stub, sub("two", GPU)) is None, "only GPU 1 was free"
    assert stub.given("one").gpu_indices == (1,)

    placement.forget("replica/survivor")
    assert heard.room == 1 and heard.replicas == [], "an adopted replica is never reported"
    assert placement.submit_task(stub, sub("two", GPU)) is not None
    assert stub.given("two").gpu_indices == (0,)


def test_adopting_hardware_the_executor_does_not_have_free_counts_nothing(
    placement: Placement, stub: StubExecutor
) -> None:
    gone = Allocation(1.0, 0, ()).given()
    huge = Allocation(64.0, 0, ()).given()
    assert not placement.adopt("replica/huge", stub, huge)
    assert stub.inventory().free_now()[0] == 4.0
    assert placement.adopt("replica/small", stub, gone)
    placement.forget("replica/small")
    placement.forget("replica/small")
    assert stub.inventory().free_now()[0] == 4.0


# -- billing -------------------------------------------------------------------------


def test_a_task_and_a_replica_of_the_same_run_cost_the_same() -> None:
    assert charge(10.0, 12.2, 3.6) == (3.0, pytest.approx(0.003))
    assert charge(10.0, 10.0, 3.6).billed_s == 1.0, "every run bills at least a second"
    assert charge(None, 12.0, 3.6) == (0.0, 0.0), "a run that never started costs nothing"
    assert charge(10.0, 100.0, 3.6, time_limit_s=5).billed_s == 5.0
    assert charge(10.0, 12.0, 0.0) == (2.0, 0.0)


@pytest.mark.parametrize("module", [_owner, _billing])
def test_the_docstring_examples_run(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]
