"""Operators on task outputs inside a lattice record nodes, as Covalent's do; conversions
that need the value now raise GraphError with what to do instead."""

from __future__ import annotations

import doctest
import math
import operator
from typing import Any

import pytest
from test_graph_building import add, evaluate, identity, pair

from cobalt import _graph, _operators
from cobalt._electron import electron
from cobalt._graph import BUILTIN_OPTIONS, NodeKind, NodeRef, current_builder
from cobalt._lattice import lattice
from cobalt_common.errors import GraphError

pytestmark = pytest.mark.unit


@electron
def ten() -> int:
    return 10


@electron
def matrix() -> Any:
    class Square:
        def __matmul__(self, other: int) -> int:
            return 7 * other

        def __rmatmul__(self, other: int) -> int:
            return 11 * other

    return Square()


def operations(graph: Any) -> list[str]:
    return [node.name for node in graph.nodes if node.kind is NodeKind.OPERATION]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (lambda out: out + 2, 12),
        (lambda out: 2 + out, 12),
        (lambda out: out - 3, 7),
        (lambda out: 3 - out, -7),
        (lambda out: out * 4, 40),
        (lambda out: 4 * out, 40),
        (lambda out: out / 4, 2.5),
        (lambda out: 5 / out, 0.5),
        (lambda out: out // 3, 3),
        (lambda out: 33 // out, 3),
        (lambda out: out % 3, 1),
        (lambda out: 23 % out, 3),
        (lambda out: out**2, 100),
        (lambda out: 2**out, 1024),
        (lambda out: out & 6, 2),
        (lambda out: 6 | out, 14),
        (lambda out: out ^ 3, 9),
        (lambda out: out << 1, 20),
        (lambda out: 1 >> out, 0),
        (lambda out: -out, -10),
        (lambda out: +out, 10),
        (lambda out: abs(-out), 10),
        (lambda out: ~out, -11),
        (lambda out: (out + 1) * (out - 1), 99),
        (lambda out: out + out, 20),
    ],
)
def test_arithmetic_on_an_output_records_nodes_that_compute_it(
    expression: Any, expected: object
) -> None:
    @lattice
    def wf() -> Any:
        return expression(ten())

    graph = wf.build_graph()
    assert graph.nodes[graph.output].kind is NodeKind.OPERATION
    assert evaluate(graph) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (lambda out: out == 10, True),
        (lambda out: out == 11, False),
        (lambda out: 10 == out, True),  # noqa: SIM300 (the reflected form)
        (lambda out: out != 10, False),
        (lambda out: out < 11, True),
        (lambda out: 11 < out, False),  # noqa: SIM300
        (lambda out: out <= 10, True),
        (lambda out: out > 10, False),
        (lambda out: 9 > out, False),  # noqa: SIM300
        (lambda out: out >= 10, True),
        (lambda out: out == ten(), True),
    ],
)
def test_comparing_an_output_records_a_node_with_the_real_comparison(
    expression: Any, expected: bool
) -> None:
    @lattice
    def wf() -> Any:
        return expression(ten())

    graph = wf.build_graph()
    assert graph.nodes[graph.output].kind is NodeKind.OPERATION
    assert evaluate(graph) is expected


def test_matrix_multiplication_is_recorded_both_ways() -> None:
    @lattice
    def wf() -> Any:
        m = matrix()
        return [m @ 2, 3 @ m]  # type: ignore[operator]

    assert evaluate(wf.build_graph()) == [14, 33]


def test_operation_nodes_are_builtin_and_named_after_the_expression() -> None:
    @lattice
    def wf() -> Any:
        out = ten()
        low, high = pair(out)
        return identity([out + 1, 2 * out, (low - high) / 2, -out, abs(out), out == 10, ~out])

    graph = wf.build_graph()
    assert operations(graph) == [
        "ten + 1",
        "2 * ten",
        "pair[0] - pair[1]",
        "(pair[0] - pair[1]) / 2",
        "-ten",
        "abs(ten)",
        "ten == 10",
        "~ten",
    ]
    for node in graph.nodes:
        if node.kind is NodeKind.OPERATION:
            assert node.options == BUILTIN_OPTIONS
            function = node.function
            assert function is getattr(operator, getattr(function, "__name__", "?"), None)
    assert evaluate(graph) == [11, 20, -0.5, -10, 10, True, -11]


def test_a_long_literal_operand_is_shortened_in_the_name() -> None:
    @lattice
    def wf() -> Any:
        return ten() + "x" * 100  # type: ignore[operator]

    (name,) = operations(wf.build_graph())
    assert name.startswith("ten + 'xxx") and name.endswith("...") and len(name) < 40


def test_an_operation_is_numbered_before_the_parameters_of_its_operands() -> None:
    @lattice
    def wf() -> Any:
        return ten() * 3

    graph = wf.build_graph()
    assert [(n.kind.value, n.name) for n in graph.nodes] == [
        ("electron", "ten"),
        ("operation", "ten * 3"),
        ("parameter", ":parameter:"),
    ]
    assert graph.nodes[1].args == [0, 2] and graph.output == 1


def test_operands_from_another_lattice_build_are_refused() -> None:
    leaked: list[Any] = []

    @lattice
    def first() -> None:
        leaked.append(ten())

    @lattice
    def second() -> Any:
        return ten() + leaked[0]

    first.build_graph()
    with pytest.raises(GraphError, match="another lattice build"):
        second.build_graph()


def test_if_on_a_comparison_raises_with_advice_instead_of_being_false() -> None:
    @lattice
    def wf() -> str:
        out = ten()
        if out == 10:
            return "ten"
        return "other"

    with pytest.raises(GraphError, match=r"if out == 10.*Move the condition into an electron"):
        wf.build_graph()


@pytest.mark.parametrize(
    ("use", "explains"),
    [
        (int, r"converted with int\(\)"),
        (float, r"converted with float\(\)"),
        (complex, r"converted with complex\(\)"),
        (round, r"converted with round\(\)"),
        (lambda ref: round(ref, 2), r"converted with round\(\)"),
        (operator.index, "converted with an integer index"),
        (lambda ref: range(ref), "converted with an integer index"),
        (lambda ref: [1, 2, 3][ref], "converted with an integer index"),
        (math.floor, r"math.floor\(\)"),
        (math.ceil, r"math.ceil\(\)"),
        (math.trunc, r"math.trunc\(\)"),
        (dict, r"cannot be called.*dict\(out\).*inside an electron"),
        (lambda ref: ref(), "cannot be called.*inside an electron"),
        (lambda ref: ref.keys(), "cannot be called"),
        (lambda ref: 3 in ref, "searched with `in`"),
        (lambda ref: not ref, "if/while/and/or/not"),
        (lambda ref: ref == 1 and ref == 2, "if/while/and/or/not"),
    ],
)
def test_conversions_that_need_the_value_raise_a_graph_error_with_advice(
    use: Any, explains: str
) -> None:
    @lattice
    def wf() -> None:
        use(ten())

    with pytest.raises(GraphError, match=explains) as info:
        wf.build_graph()
    assert "task 'ten" in str(info.value) and "lattice 'wf'" in str(info.value)
    assert "electron" in str(info.value)


def test_refs_hash_by_identity_so_they_work_as_dict_keys_and_in_sets() -> None:
    @lattice
    def wf() -> None:
        one, two = ten(), ten()
        builder = current_builder()
        assert builder is not None
        before = len(builder.nodes)
        seen = {one: "one", two: "two"}
        assert seen[one] == "one" and seen[two] == "two"
        assert len({one, two, one}) == 2 and hash(one) != hash(two)
        assert one in [one] and [one].index(one) == 0
        assert len(builder.nodes) == before, "hashing and identity records nothing"
        assert isinstance(one == two, NodeRef)

    wf.build_graph()


def test_an_operator_on_an_output_kept_past_its_build_is_refused() -> None:
    kept: list[Any] = []

    @lattice
    def wf() -> None:
        kept.append(ten())

    wf.build_graph()
    with pytest.raises(GraphError, match=r"`ten \+ 1` uses an output of lattice 'wf' after"):
        kept[0] + 1


def test_a_ref_as_an_index_key_is_looked_up_once_without_comparing_refs() -> None:
    @lattice
    def wf() -> Any:
        table, index = identity([5, 6, 7]), add(1)
        return [table[index], table[index]]

    graph = wf.build_graph()
    output = graph.nodes[graph.output]
    assert output.args[0] == output.args[1]
    assert evaluate(graph) == [6, 6]


def test_operators_outside_a_lattice_are_plain_python() -> None:
    assert ten() + 1 == 11 and (ten() == 10) is True


def test_the_module_examples_run() -> None:
    assert doctest.testmod(_operators).failed == 0
    assert doctest.testmod(_graph).failed == 0
