"""Operators on task outputs and Covalent's node numbering, dispatched to a real controller."""

from __future__ import annotations

from typing import Any

import pytest

import cobalt as ct

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("controller_home")]


@ct.electron
def ten() -> int:
    return 10


@ct.electron
def pair(x: int) -> tuple[int, int]:
    return x, x + 1


@ct.lattice
def equals_ten() -> bool:
    out = ten()
    return out == 10


@ct.lattice
def arithmetic() -> list[Any]:
    out = ten()
    low, high = pair(out)
    return [
        out + 1,
        2 - out,
        out * high,
        out / 4,
        out // 3,
        out % 3,
        out**2,
        -out,
        abs(low - 20),
        ~out,
        (out + 1) * (out - 1),
    ]


@ct.lattice
def comparisons() -> list[bool]:
    out = ten()
    return [out == 11, out != 10, out < 11, 9 >= out, out > 9, out == ten()]  # noqa: SIM300


def test_out_equals_ten_returns_true_after_the_dispatch() -> None:
    result = ct.dispatch_sync(equals_ten)()
    assert result.status == ct.Status.COMPLETED, result.error
    assert result.result is True


def test_arithmetic_on_outputs_gives_the_values_python_would() -> None:
    result = ct.dispatch_sync(arithmetic)()
    assert result.result == [11, -8, 110, 2.5, 3, 1, 100, -10, 10, -11, 99]
    ids = {node.name: node.node_id for node in arithmetic.build_graph().nodes}
    plus_one = result.get_node_result(ids["ten + 1"])
    assert (plus_one["node_name"], plus_one["output"]) == ("ten + 1", 11)
    product = result.get_node_result(ids["(ten + 1) * (ten - 1)"])
    assert (product["output"], product["status"]) == (99, ct.Status.COMPLETED)
    assert [t.name for t in result.tasks] == ["ten", "pair"], "operators are plumbing"


def test_comparisons_on_outputs_give_the_real_comparisons() -> None:
    assert ct.dispatch_sync(comparisons)().result == [False, False, True, False, True, True]


@ct.electron
def join_words(a: str, b: str) -> str:
    return ", ".join([a, b])


@ct.electron
def excitement(a: str) -> str:
    return f"{a}!"


@ct.lattice
def simple_workflow(a: str, b: str) -> str:
    phrase = join_words(a, b)
    return excitement(phrase)


def test_node_zero_is_the_first_electron_as_in_covalent() -> None:
    result = ct.dispatch_sync(simple_workflow)("Hello", "World")
    assert result.result == "Hello, World!"
    first = result.get_node_result(0)
    assert (first["node_name"], first["output"]) == ("join_words", "Hello, World")
    assert result.get_node_result(3)["node_name"] == "excitement"
    assert result.get_node_result(1)["output"] == "Hello"
    assert result.rerun_locally(0) == "Hello, World"


@pytest.mark.parametrize(
    ("parent", "refusal"),
    [
        (3, r"node 0 \('join_words'\) is in, or after, a cycle of inputs"),
        (0, "node 0 depends on itself"),
        (99, "node 0 depends on node 99, which does not exist"),
    ],
)
def test_the_controller_refuses_a_cycle_though_parents_may_have_larger_ids(
    parent: int, refusal: str
) -> None:
    from cobalt import _client
    from cobalt._submit import build_request

    client = _client.get_client()
    req, _ = build_request(simple_workflow.build_graph("a", "b"))
    assert [i.parent for i in req.nodes[0].inputs] == [1, 2], "parents after their child"
    req.nodes[0].inputs.add(parent=parent, position=-1, wait_only=True)
    with pytest.raises(ct.DispatchError, match=refusal):
        client.call(client.stub.DispatchCreate, req)
