"""Merkle keys of a dispatch's nodes, and which tasks of a new dispatch take over an
earlier one's results (``ct.redispatch(..., reuse_previous_results=True)``)."""

from __future__ import annotations

import json

import pytest
from placement_support import task

from cobalt_controller.dispatch._model import COMPLETED, PARAMETER, PENDING, Task
from cobalt_controller.dispatch._reuse import (
    REUSED,
    NodeShape,
    merkle_keys,
    reuse_results,
    row_shapes,
    task_shapes,
)
from cobalt_controller.state import NodeRow
from cobalt_executors import PayloadRef

pytestmark = pytest.mark.unit

A, B = "a" * 64, "b" * 64


def param(value: str) -> NodeShape:
    return (PARAMETER, "", value, ())


def call(fn: str, *parents: int) -> NodeShape:
    return ("electron", fn, "", [(p, i, "", False) for i, p in enumerate(parents)])


def test_the_same_function_of_the_same_values_has_the_same_key() -> None:
    assert merkle_keys([param(A), call("f", 0)]) == merkle_keys([param(A), call("f", 0)])


def test_a_changed_value_changes_the_key_of_every_node_below_it_and_no_other() -> None:
    before = merkle_keys([param(A), param(B), call("f", 0), call("g", 1), call("h", 2, 3)])
    after = merkle_keys([param(A), param("c" * 64), call("f", 0), call("g", 1), call("h", 2, 3)])
    assert [x == y for x, y in zip(before, after, strict=True)] == [True, False, True, False, False]


def test_a_changed_function_changes_its_key_and_those_below_it() -> None:
    before = merkle_keys([param(A), call("f", 0), call("g", 1)])
    after = merkle_keys([param(A), call("f2", 0), call("g", 1)])
    assert [x == y for x, y in zip(before, after, strict=True)] == [True, False, False]


def test_argument_positions_count_but_the_order_keywords_were_given_in_does_not() -> None:
    swapped = merkle_keys([param(A), param(B), call("f", 1, 0)])[2]
    assert merkle_keys([param(A), param(B), call("f", 0, 1)])[2] != swapped
    by_keyword = [("electron", "f", "", [(0, -1, "x", False), (1, -1, "y", False)])]
    reordered = [("electron", "f", "", [(1, -1, "y", False), (0, -1, "x", False)])]
    assert (
        merkle_keys([param(A), param(B), *by_keyword])[2]
        == merkle_keys([param(A), param(B), *reordered])[2]
    )


def test_an_ordering_only_edge_is_part_of_the_key() -> None:
    plain = merkle_keys([param(A), call("f"), call("g", 0)])
    g_waits = ("electron", "g", "", [(0, 0, "", False), (1, -1, "", True)])
    waiting = merkle_keys([param(A), call("f"), g_waits])
    assert plain[2] != waiting[2]


def test_keys_do_not_depend_on_how_the_nodes_are_numbered() -> None:
    parameters_first = merkle_keys([param(A), call("f", 0), call("g", 1)])
    tasks_first = merkle_keys([call("g", 1), call("f", 2), param(A)])
    assert parameters_first == [tasks_first[2], tasks_first[1], tasks_first[0]]


def test_a_node_in_a_cycle_or_below_a_missing_input_matches_nothing() -> None:
    keys = merkle_keys([call("f", 1), call("g", 0), call("h", 1), call("k", 7), param(A)])
    assert keys[:4] == ["", "", "", ""] and keys[4]


class StoredPayloads:
    """What reuse asks of the payloads: which outputs are gone."""

    def __init__(self, gone: frozenset[str] = frozenset()) -> None:
        self.gone = gone

    def missing(self, shas: set[str]) -> set[str]:
        return shas & self.gone


def _workflow(x: str) -> list[Task]:
    """x -> t1 -> t2 ; y -> t3 (independent), as the intake builds them."""
    tasks = [
        Task(0, ":parameter:", PARAMETER, "", (), task(0).hardware, 0, ""),
        task(1, after=[0]),
        task(2, after=[1]),
        Task(3, ":parameter:", PARAMETER, "", (), task(0).hardware, 0, ""),
        task(4, after=[3]),
    ]
    for t, value in ((tasks[0], x), (tasks[3], B)):
        t.status = COMPLETED
        t.output = PayloadRef(value, None, 0)
    for t in tasks[1:]:
        if t.kind != PARAMETER:
            t.waiting = sum(1 for i in t.inputs if tasks[i.parent].kind != PARAMETER)
    tasks[1].children.append(2)
    return tasks


def _stored(tasks: list[Task], status: str = COMPLETED) -> list[NodeRow]:
    return [
        NodeRow(
            dispatch_id="e" * 32,
            node_id=t.node_id,
            name=t.name,
            kind=t.kind,
            status=COMPLETED if t.kind == PARAMETER else status,
            function_sha256=t.fn_sha,
            value_sha256=t.output.sha256 if t.kind == PARAMETER and t.output else "",
            inputs=t.inputs_json(),
            output_sha256=f"{t.node_id:064d}",
        )
        for t in tasks
    ]


def test_an_unchanged_workflow_reuses_every_task_with_the_earlier_outputs() -> None:
    earlier = _stored(_workflow(A))
    tasks = _workflow(A)
    assert reuse_results(tasks, "e" * 32, earlier, StoredPayloads()) == 3  # type: ignore[arg-type]
    for t in (tasks[1], tasks[2], tasks[4]):
        assert (t.status, t.reason, t.attempts) == (COMPLETED, REUSED, 0)
        assert t.output is not None and t.output.sha256 == f"{t.node_id:064d}"
        assert t.placement == f"reused from dispatch {'e' * 32} node {t.node_id}"


def test_a_new_argument_reruns_what_depends_on_it_and_its_waits_are_recounted() -> None:
    earlier = _stored(_workflow(A))
    tasks = _workflow("c" * 64)
    assert reuse_results(tasks, "e" * 32, earlier, StoredPayloads()) == 1  # type: ignore[arg-type]
    assert [t.status for t in tasks] == [COMPLETED, PENDING, PENDING, COMPLETED, COMPLETED]
    assert (tasks[1].waiting, tasks[2].waiting) == (0, 1)


def test_only_completed_tasks_whose_output_is_still_stored_are_reused() -> None:
    earlier = _stored(_workflow(A))
    earlier[4].status = "FAILED"
    tasks = _workflow(A)
    gone = StoredPayloads(frozenset({earlier[1].output_sha256}))
    assert reuse_results(tasks, "e" * 32, earlier, gone) == 0  # type: ignore[arg-type]
    assert tasks[2].status == PENDING  # its parent was not reused, so neither is it


def test_stored_nodes_are_read_back_in_the_shape_new_tasks_have() -> None:
    tasks = _workflow(A)
    assert merkle_keys(row_shapes(_stored(tasks))) == merkle_keys(task_shapes(tasks))
    broken = _stored(tasks)
    broken[1].inputs = json.dumps("not a list of inputs")
    assert merkle_keys(row_shapes(broken))[1] != merkle_keys(task_shapes(tasks))[1]


def test_the_examples_in_the_docstrings_hold() -> None:
    import doctest

    from cobalt_controller.dispatch import _reuse, _task_cancel

    assert doctest.testmod(_reuse).failed == 0
    assert doctest.testmod(_task_cancel).failed == 0


def test_a_task_id_outside_the_dispatch_or_of_a_node_that_is_no_task_is_refused() -> None:
    from cobalt_common.errors import SpecError
    from cobalt_controller.dispatch._task_cancel import check_task_ids

    kinds = [PARAMETER, "electron", "collection", "sublattice"]
    assert check_task_ids("d" * 32, kinds, [3, 1, 3]) == [3, 1]
    with pytest.raises(SpecError, match="has no task 4: its node ids run from 0 to 3"):
        check_task_ids("d" * 32, kinds, [4])
    with pytest.raises(SpecError, match=r"node 2 of dispatch d+ is a collection, not a task"):
        check_task_ids("d" * 32, kinds, [2])


def test_a_task_numbered_before_the_task_it_depends_on_is_reused_too() -> None:
    def workflow() -> list[Task]:
        tasks = [
            task(0, after=[1]),
            task(1, after=[2]),
            Task(2, ":parameter:", PARAMETER, "", (), task(0).hardware, 0, ""),
        ]
        tasks[2].status, tasks[2].output = COMPLETED, PayloadRef(A, None, 0)
        tasks[0].waiting = 1
        tasks[1].children.append(0)
        return tasks

    tasks = workflow()
    assert reuse_results(tasks, "e" * 32, _stored(workflow()), StoredPayloads()) == 2  # type: ignore[arg-type]
    assert [t.reason for t in tasks[:2]] == [REUSED, REUSED]
