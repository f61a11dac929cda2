"""A dispatch keeps its lattice and inputs; ``ct.redispatch`` runs it again, and with
``reuse_previous_results`` takes over the results of unchanged tasks instead of running them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import cobalt as ct
from cobalt._submit import dispatch_graph

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration


@ct.electron
def double(x: int) -> int:
    return 2 * x


@ct.electron
def add(a: int, b: int) -> int:
    return a + b


@ct.electron
def tag(value: int) -> str:
    return f"v={value}"


@ct.electron
def tag_v2(value: int) -> str:
    return f"value {value}"


def add_v2(a: int, b: int) -> int:
    return a + b + 100


@ct.lattice
def pipeline(x: int, y: int = 1) -> str:
    return tag(add(double(x), double(y)))


def _finish(dispatch_id: str) -> ct.Result:
    return ct.get_result(dispatch_id, wait=60, raise_on_failure=True)


def _reused(result: ct.Result) -> dict[str, list[bool]]:
    """Per task name (in node order), whether each task was reused rather than run."""
    reused: dict[str, list[bool]] = {}
    for t in result.tasks:
        was_reused = t.reason == "reused"
        if was_reused:
            assert t.attempts == 0 and t.cost_usd == 0.0, t
        else:
            assert t.attempts == 1, t
        reused.setdefault(t.name, []).append(was_reused)
    return reused


@pytest.fixture(scope="module")
def first(controller_home: ControllerHome) -> ct.Result:
    """pipeline(2, y=1) run once: tag(double(2) + double(1)) = "v=6"."""
    result = _finish(ct.dispatch(pipeline)(2, y=1))
    assert result.result == "v=6"
    return result


def test_a_dispatch_keeps_its_inputs_as_args_and_kwargs(first: ct.Result) -> None:
    assert ct.get_result(first.dispatch_id).inputs == {"args": [2], "kwargs": {"y": 1}}
    assert first.inputs == {"args": [2], "kwargs": {"y": 1}}


def test_redispatch_without_arguments_runs_everything_again_with_the_same_inputs(
    first: ct.Result,
) -> None:
    again = _finish(ct.redispatch(first.dispatch_id)())
    assert again.dispatch_id != first.dispatch_id
    assert again.result == "v=6"
    assert again.inputs == {"args": [2], "kwargs": {"y": 1}}
    assert _reused(again) == {"double": [False, False], "add": [False], "tag": [False]}


def test_an_unchanged_workflow_reuses_every_task(first: ct.Result) -> None:
    again = _finish(ct.redispatch(first.dispatch_id, reuse_previous_results=True)())
    assert again.status == ct.Status.COMPLETED
    assert again.result == "v=6"
    assert again.cost_usd == 0.0
    assert _reused(again) == {"double": [True, True], "add": [True], "tag": [True]}
    tag_task = next(t for t in again.tasks if t.name == "tag")
    first_tag = next(t for t in first.tasks if t.name == "tag")
    assert f"reused from dispatch {first.dispatch_id} node {first_tag.node_id}" in (
        tag_task.placement
    )


def test_a_replaced_electron_runs_again_with_everything_below_it(first: ct.Result) -> None:
    replaced = ct.redispatch(
        first.dispatch_id, replace_electrons={"add": add_v2}, reuse_previous_results=True
    )()
    again = _finish(replaced)
    assert again.result == "v=106"
    assert _reused(again) == {"double": [True, True], "add_v2": [False], "tag": [False]}

    last = _finish(
        ct.redispatch(
            first.dispatch_id, replace_electrons={"tag": tag_v2}, reuse_previous_results=True
        )()
    )
    assert last.result == "value 6"
    assert _reused(last) == {"double": [True, True], "add": [True], "tag_v2": [False]}


def test_new_arguments_run_again_only_what_depends_on_them(first: ct.Result) -> None:
    again = _finish(ct.redispatch(first.dispatch_id, reuse_previous_results=True)(5, y=1))
    assert again.result == "v=12"
    assert again.inputs == {"args": [5], "kwargs": {"y": 1}}
    # double(5) is new; double(1) is not; the sum and the tag take the new value.
    assert _reused(again) == {"double": [False, True], "add": [False], "tag": [False]}


def test_results_are_reused_after_the_controller_restarts(
    first: ct.Result, controller_home: ControllerHome
) -> None:
    controller_home.stop()
    controller_home.start()
    again = _finish(ct.redispatch(first.dispatch_id, reuse_previous_results=True)())
    assert again.result == "v=6"
    assert _reused(again) == {"double": [True, True], "add": [True], "tag": [True]}


def test_redispatching_an_unknown_dispatch_says_where_to_look(first: ct.Result) -> None:
    with pytest.raises(ct.NotFoundError, match="cobalt dispatches"):
        ct.redispatch("0" * 32, reuse_previous_results=True)()


def test_replacing_an_electron_the_lattice_does_not_call_names_those_it_calls(
    first: ct.Result,
) -> None:
    with pytest.raises(ct.GraphError, match="'add', 'double', 'tag'"):
        ct.redispatch(first.dispatch_id, replace_electrons={"train": add_v2})()


def test_a_dispatch_that_kept_no_lattice_has_no_inputs_and_cannot_be_redispatched(
    controller_home: ControllerHome,
) -> None:
    # As an older cobalt dispatched: the graph alone.
    _, resp = dispatch_graph(pipeline.build_graph(3))
    result = _finish(resp.dispatch_id)
    assert result.result == "v=8"
    assert result.inputs is None
    with pytest.raises(ct.DispatchError, match="kept no lattice"):
        ct.redispatch(resp.dispatch_id)()


@ct.lattice
def inner(v: int) -> int:
    return double(v)


@ct.lattice
def outer(v: int) -> int:
    return add(ct.electron(inner)(v), 1)


def test_a_sublattice_keeps_its_inputs_and_is_reused_whole(controller_home: ControllerHome) -> None:
    first = _finish(ct.dispatch(outer)(3))
    assert first.result == 7
    (sub,) = [t for t in first.tasks if t.kind == "sublattice"]
    assert ct.get_result(sub.sublattice_dispatch_id).inputs == {"args": [3], "kwargs": {}}
    again = _finish(ct.redispatch(first.dispatch_id, reuse_previous_results=True)())
    assert again.result == 7
    assert _reused(again) == {":sublattice:inner": [True], "add": [True]}


@ct.electron
def size(data: bytes) -> int:
    return len(data)


@ct.lattice
def measure(data: bytes) -> int:
    return size(data)


def test_a_large_argument_comes_back_as_an_input_and_runs_again(
    controller_home: ControllerHome,
) -> None:
    data = bytes(range(256)) * 1024  # kept once, in the blob store
    first = _finish(ct.dispatch(measure)(data))
    assert first.inputs == {"args": [data], "kwargs": {}}
    again = _finish(ct.redispatch(first.dispatch_id, reuse_previous_results=True)())
    assert again.result == len(data)
    assert _reused(again) == {"size": [True]}
