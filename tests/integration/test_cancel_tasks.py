"""``ct.cancel(dispatch_id, task_ids=[...])`` stops single tasks; the other branches go on."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from support import wait_for

import cobalt as ct
from cobalt._client import get_client
from cobalt_common.v1 import controller_pb2 as pb

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("controller_home")]


@ct.electron(cpus=0.5)
def nap(seconds: float, label: str) -> str:
    time.sleep(seconds)
    return label


@ct.electron(cpus=0.5)
def shout(text: str) -> str:
    return text.upper()


@ct.lattice
def two_branches(slow_s: float, fast_s: float) -> list[str]:
    slow = nap(slow_s, "slow")
    fast = nap(fast_s, "fast")
    return [shout(slow), shout(fast)]


def _tasks(dispatch_id: str) -> dict[str, list[ct.TaskRecord]]:
    by_name: dict[str, list[ct.TaskRecord]] = {}
    for t in ct.get_result(dispatch_id).tasks:
        by_name.setdefault(t.name, []).append(t)
    return by_name


def test_a_cancelled_running_task_stops_and_its_dependents_skip_while_the_rest_goes_on() -> None:
    dispatch_id = ct.dispatch(two_branches)(60, 2)
    slow = wait_for(
        lambda: (t := _tasks(dispatch_id)["nap"][0]).status == ct.Status.RUNNING and t,
        what="the slow task to start",
    )
    started = time.monotonic()
    ct.cancel(dispatch_id, task_ids=[slow.node_id])
    result = ct.get_result(dispatch_id, wait=30)
    assert time.monotonic() - started < 20, "the slow task was not stopped"
    assert result.status == ct.Status.CANCELLED
    assert "'nap' (node" in result.error and "cancelled" in result.error
    tasks = _tasks(dispatch_id)
    slow_task, fast_task = tasks["nap"]
    assert slow_task.status == ct.Status.CANCELLED
    assert slow_task.reason == "cancelled"
    assert slow_task.attempts == 1
    assert fast_task.status == ct.Status.COMPLETED
    shout_slow, shout_fast = tasks["shout"]
    assert shout_slow.status == ct.Status.SKIPPED
    assert shout_fast.status == ct.Status.COMPLETED
    assert result.get_node_result(shout_fast.node_id)["output"] == "FAST"


def test_a_cancelled_pending_task_never_starts_and_finished_ones_stay_as_they_are() -> None:
    dispatch_id = ct.dispatch(two_branches)(6, 0.1)
    tasks = wait_for(
        lambda: (t := _tasks(dispatch_id))["shout"][1].status == "COMPLETED" and t,
        what="the fast branch to complete",
    )
    shout_slow, shout_fast = tasks["shout"]
    assert shout_slow.status == ct.Status.PENDING
    ct.cancel(dispatch_id, task_ids=[shout_slow.node_id, shout_fast.node_id])
    result = ct.get_result(dispatch_id, wait=30)
    assert result.status == ct.Status.CANCELLED
    after = _tasks(dispatch_id)
    assert after["shout"][0].status == ct.Status.CANCELLED
    assert after["shout"][0].attempts == 0
    assert after["shout"][0].error == "cancelled before it started"
    assert after["shout"][1].status == ct.Status.COMPLETED  # it had ended: left as it was
    assert [t.status for t in after["nap"]] == [ct.Status.COMPLETED] * 2


def test_cancelling_without_task_ids_still_cancels_the_whole_dispatch() -> None:
    dispatch_id = ct.dispatch(two_branches)(60, 60)
    wait_for(lambda: ct.get_result(dispatch_id).status == "RUNNING", what="the dispatch to start")
    ct.cancel(dispatch_id)
    result = ct.get_result(dispatch_id, wait=30)
    assert result.status == ct.Status.CANCELLED
    assert result.error == "The dispatch was cancelled."
    assert {t.status for t in result.tasks} == {ct.Status.CANCELLED}


def test_the_command_line_cancels_one_task(controller_home: ControllerHome) -> None:
    dispatch_id = ct.dispatch(two_branches)(60, 0.1)
    slow = wait_for(
        lambda: (t := _tasks(dispatch_id)["nap"][0]).status == ct.Status.RUNNING and t,
        what="the slow task to start",
    )
    out = controller_home.cli("dispatches", "cancel", dispatch_id, "--task", str(slow.node_id))
    assert f"cancelled task(s) {slow.node_id} of dispatch {dispatch_id}" in out.stdout
    result = ct.get_result(dispatch_id, wait=30)
    assert result.status == ct.Status.CANCELLED
    assert [t.status for t in _tasks(dispatch_id)["shout"]] == ["SKIPPED", "COMPLETED"]
    listing = controller_home.cli("dispatches").stdout
    assert dispatch_id in listing


def test_ids_that_are_not_tasks_of_the_dispatch_are_refused_with_the_reason() -> None:
    dispatch_id = ct.dispatch(two_branches)(0.1, 0.1)
    result = ct.get_result(dispatch_id, wait=30)
    assert result.status == ct.Status.COMPLETED
    with pytest.raises(ct.SpecError, match="has no task 99: its node ids run from 0 to"):
        ct.cancel(dispatch_id, task_ids=[99])
    client = get_client()
    listed = client.call(
        client.stub.TaskList, pb.TaskListRequest(dispatch_id=dispatch_id, include_parameters=True)
    )
    parameter = next(t.node_id for t in listed.tasks if t.kind == pb.NODE_KIND_PARAMETER)
    with pytest.raises(ct.SpecError, match="is a parameter, not a task"):
        ct.cancel(dispatch_id, task_ids=[parameter])
    with pytest.raises(ct.SpecError, match="not a node id"):
        ct.cancel(dispatch_id, task_ids=[-1])
    with pytest.raises(ct.NotFoundError):
        ct.cancel("0" * 32, task_ids=[1])
    assert ct.get_result(dispatch_id).status == ct.Status.COMPLETED
