"""The scheduler on stub executors: placement, retries and backoff, budgets, time
limits, cancellation and billing, with no process started."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from placement_support import PRICED, StubWorld, task
from support import wait_for

from cobalt_common.hardware import HardwareSpec
from cobalt_controller.dispatch._model import (
    BUDGET_EXCEEDED,
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    TIMED_OUT,
)
from cobalt_controller.placement import charge
from cobalt_executors import TaskSubmission
from cobalt_executors.stub import StubExecutor

pytestmark = pytest.mark.unit


@pytest.fixture
def stub() -> StubExecutor:
    return StubExecutor("stub", {"cpus": 2, **PRICED})


@pytest.fixture
def world(stub: StubExecutor) -> Iterator[StubWorld]:
    w = StubWorld(stub, manager=False).start()
    yield w
    w.stop()


def test_a_chain_runs_in_order_and_each_task_gets_its_parents_output(
    world: StubWorld, stub: StubExecutor
) -> None:
    stub.set_auto(lambda sub: sub.task_key.encode())
    d = world.finished(world.dispatch([task(0), task(1, after=[0]), task(2, after=[1])]))
    assert d.status == COMPLETED
    first, second, third = stub.submitted
    assert [s.node_id for s in stub.submitted] == [0, 1, 2]
    assert second.args[0].payload.data == first.task_key.encode()
    assert third.args[0].payload.data == second.task_key.encode()


def test_a_task_that_finds_no_room_waits_and_starts_when_a_task_ends(
    world: StubWorld, stub: StubExecutor
) -> None:
    d = world.dispatch([task(0, HardwareSpec(cpus=2)), task(1, HardwareSpec(cpus=1))])
    first = stub.wait_submitted(1)[0]
    wait_for(lambda: stub.refused, what="the second task to be refused")
    assert d.tasks[1].status == PENDING and len(stub.submitted) == 1
    stub.complete(first.task_key)
    second = stub.wait_submitted(2)[1]
    stub.complete(second.task_key)
    assert world.finished(d).status == COMPLETED


def test_a_failed_task_is_retried_after_a_backoff_that_doubles(
    world: StubWorld, stub: StubExecutor
) -> None:
    starts: list[float] = []

    def fails_twice(sub: TaskSubmission) -> bytes:
        starts.append(time.monotonic())
        if len(starts) < 3:
            raise RuntimeError(f"attempt {len(starts)} fails")
        return b"third time lucky"

    stub.set_auto(fails_twice)
    d = world.finished(world.dispatch([task(0, retries=2)]))
    t = d.tasks[0]
    assert (d.status, t.status, t.attempts) == (COMPLETED, COMPLETED, 3)
    assert [s.task_key for s in stub.submitted] == [f"{d.dispatch_id}/0/{n}" for n in (1, 2, 3)]
    first_wait, second_wait = starts[1] - starts[0], starts[2] - starts[1]
    assert first_wait >= 0.05 and second_wait >= 0.1, (first_wait, second_wait)
    assert t.error == "" and t.output is not None and t.output.data == b"third time lucky"


def test_a_task_that_fails_more_often_than_its_retries_fails_and_its_children_are_skipped(
    world: StubWorld, stub: StubExecutor
) -> None:
    def always_fails(sub: TaskSubmission) -> bytes:
        raise RuntimeError("the task's own error")

    stub.set_auto(always_fails)
    d = world.finished(world.dispatch([task(0, retries=1), task(1, after=[0])]))
    parent, child = d.tasks
    assert (d.status, parent.status, parent.attempts) == (FAILED, FAILED, 2)
    assert "the task's own error" in parent.error
    assert child.status == SKIPPED and len(stub.submitted) == 2
    assert "the task's own error" in d.error


def test_a_task_past_its_time_limit_is_stopped_and_ends_timed_out(
    world: StubWorld, stub: StubExecutor
) -> None:
    d = world.dispatch([task(0, HardwareSpec(time_limit_s=0.2))])
    key = stub.wait_submitted(1)[0].task_key
    world.finished(d, timeout=5)
    assert stub.cancels == [(key, "time_limit")]
    assert (d.status, d.tasks[0].status, d.tasks[0].reason) == (TIMED_OUT, TIMED_OUT, "time_limit")
    assert stub.running() == [] and stub.inventory().free_now()[0] == 2


def test_cancelling_a_dispatch_stops_its_running_task_and_never_starts_the_rest(
    world: StubWorld, stub: StubExecutor
) -> None:
    d = world.dispatch([task(0), task(1, after=[0])])
    key = stub.wait_submitted(1)[0].task_key
    world.scheduler.cancel(d.dispatch_id)
    world.finished(d)
    assert stub.cancels == [(key, "cancelled")]
    assert [t.status for t in d.tasks] == [CANCELLED, CANCELLED]
    assert d.tasks[1].error == "cancelled before it started"
    assert d.status == CANCELLED and len(stub.submitted) == 1


def test_a_cancelled_running_task_is_not_retried_its_dependents_skip_and_the_rest_runs(
    world: StubWorld, stub: StubExecutor
) -> None:
    d = world.dispatch([task(0, retries=2), task(1), task(2, after=[0]), task(3, after=[1])])
    first, second = stub.wait_submitted(2)
    world.scheduler.cancel_tasks(d.dispatch_id, [0])
    wait_for(lambda: d.tasks[0].status == CANCELLED, what="task 0 to end cancelled")
    assert stub.cancels == [(first.task_key, "cancelled")]
    assert d.tasks[2].status == SKIPPED and "node 0" in d.tasks[2].error
    stub.complete(second.task_key)
    stub.complete(stub.wait_submitted(3)[2].task_key)
    world.finished(d)
    assert [t.status for t in d.tasks] == [CANCELLED, COMPLETED, SKIPPED, COMPLETED]
    assert (d.tasks[0].attempts, d.tasks[0].reason) == (1, "cancelled")
    assert d.status == CANCELLED and "'task0' (node 0)" in d.error
    assert len(stub.submitted) == 3, "the cancelled task was not retried"


def test_a_cancelled_pending_task_never_starts_and_an_ended_one_is_left_as_it_was(
    world: StubWorld, stub: StubExecutor
) -> None:
    d = world.dispatch([task(0), task(1, after=[0]), task(2)])
    first, third = stub.wait_submitted(2)
    stub.complete(third.task_key)
    wait_for(lambda: d.tasks[2].status == COMPLETED, what="task 2 to complete")
    world.scheduler.cancel_tasks(d.dispatch_id, [1, 2])
    wait_for(lambda: d.tasks[1].status == CANCELLED, what="task 1 to be cancelled")
    stub.complete(first.task_key)
    world.finished(d)
    assert [t.status for t in d.tasks] == [COMPLETED, CANCELLED, COMPLETED]
    assert d.tasks[1].attempts == 0 and d.tasks[1].error == "cancelled before it started"
    assert len(stub.submitted) == 2 and stub.cancels == []


def test_a_running_task_that_completes_before_its_cancel_lands_stays_completed(
    world: StubWorld, stub: StubExecutor
) -> None:
    d = world.dispatch([task(0)])
    key = stub.wait_submitted(1)[0].task_key
    stub.complete(key)
    world.scheduler.cancel_tasks(d.dispatch_id, [0])
    world.finished(d)
    assert (d.status, d.tasks[0].status) == (COMPLETED, COMPLETED)


def test_a_task_is_billed_once_for_its_run_at_its_executors_rate(
    world: StubWorld, stub: StubExecutor
) -> None:
    d = world.dispatch([task(0)])
    key = stub.wait_submitted(1)[0].task_key
    outcome = stub.complete(key)
    world.finished(d)
    t = d.tasks[0]
    bill = charge(outcome.started_at, outcome.ended_at, 3.6)
    assert t.rate == 3.6 and (t.billed_s, t.cost_usd) == bill
    assert d.cost_usd == pytest.approx(bill.cost_usd) and d.cost_usd > 0
    stored = world.state.get_dispatch(d.dispatch_id)
    assert stored is not None and stored.cost_usd == pytest.approx(bill.cost_usd)


# -- budgets -------------------------------------------------------------------------
# At $3.60 per CPU hour a 1-CPU task with a 10 s limit may cost at most $0.01.

LIMITED = HardwareSpec(cpus=1, time_limit_s=10)


def test_a_task_held_back_by_its_budget_starts_once_the_running_ones_real_cost_frees_it(
    world: StubWorld, stub: StubExecutor
) -> None:
    d = world.dispatch(
        [task(0, LIMITED), task(1, LIMITED), task(2, LIMITED, after=[0, 1])], budget_usd=0.015
    )
    first = stub.wait_submitted(1)[0]
    wait_for(lambda: d.ledger is not None and d.ledger.blocked, what="a task held back")
    assert d.ledger is not None and d.ledger.held == pytest.approx(0.01)
    assert len(stub.submitted) == 1, "two worst cases do not fit in $0.015 at once"
    assert [t.status for t in d.tasks[:2]].count(PENDING) == 1
    stub.complete(first.task_key)  # billed $0.001: $0.014 left, a worst case fits again
    second = stub.wait_submitted(2)[1]
    stub.complete(second.task_key)
    third = stub.wait_submitted(3)[2]
    stub.complete(third.task_key)
    assert world.finished(d).status == COMPLETED
    assert d.cost_usd == pytest.approx(0.003)


def test_a_dispatch_whose_budget_cannot_fit_its_next_task_ends_budget_exceeded(
    world: StubWorld, stub: StubExecutor
) -> None:
    d = world.dispatch([task(0, LIMITED), task(1, LIMITED, after=[0])], budget_usd=0.0105)
    first = stub.wait_submitted(1)[0]
    stub.complete(first.task_key)  # $0.0095 left: the next worst case ($0.01) never fits
    world.finished(d)
    assert d.status == BUDGET_EXCEEDED
    assert (d.tasks[0].status, d.tasks[1].status, d.tasks[1].reason) == (
        COMPLETED,
        SKIPPED,
        "budget",
    )
    assert len(stub.submitted) == 1 and "budget" in d.error


def test_a_running_dispatch_is_marked_running_once_its_first_task_starts(
    world: StubWorld, stub: StubExecutor
) -> None:
    d = world.dispatch([task(0)])
    key = stub.wait_submitted(1)[0].task_key
    wait_for(lambda: d.status == RUNNING)
    stub.complete(key)
    assert world.finished(d).status == COMPLETED


@pytest.mark.parametrize("frees_in_time", [False, True])
def test_a_task_waits_for_the_free_executor_before_it_goes_to_a_priced_one(
    frees_in_time: bool,
) -> None:
    free = StubExecutor("on-prem", {"cpus": 1})
    priced = StubExecutor("cloud", {"cpus": 1, **PRICED})
    w = StubWorld(free, priced, manager=False)
    w.scheduler.wait_for_cheaper_s = 0.6
    w.start()
    try:
        d = w.dispatch([task(0, HardwareSpec(cpus=1)), task(1, HardwareSpec(cpus=1))])
        first = free.wait_submitted(1)[0]
        began = time.monotonic()
        if frees_in_time:
            time.sleep(0.3)
            assert priced.submitted == [], "it waits for the free executor"
            free.complete(first.task_key)
            second = free.wait_submitted(2)[1]
            assert priced.submitted == []
            free.complete(second.task_key)
            note = w.finished(d).tasks[1].placement
            assert note.startswith("on-prem at $0.00/h: the cheapest") and "waited" in note
        else:
            second = priced.wait_submitted(1)[0]
            waited = time.monotonic() - began
            assert 0.5 <= waited < 3, waited
            priced.complete(second.task_key)
            free.complete(first.task_key)
            note = w.finished(d).tasks[1].placement
            assert note.startswith("cloud at $3.60/h: the cheapest free now"), note
            assert "for a cheaper one first" in note, note
    finally:
        w.stop()
