from __future__ import annotations

import copy
import operator
import pickle
import types
from collections import namedtuple
from dataclasses import dataclass
from typing import Any

import cloudpickle
import pytest

from cobalt._deps import DepsBash, DepsCall, DepsPip
from cobalt._electron import electron
from cobalt._graph import (
    BUILTIN_OPTIONS,
    Graph,
    GraphNode,
    NodeKind,
    NodeRef,
    current_builder,
    wait,
)
from cobalt._lattice import lattice
from cobalt._options import TaskOptions
from cobalt._runtime import sublattice
from cobalt._runtime.sublattice import SublatticeCall
from cobalt._runtime.task import TaskCallable
from cobalt_common.errors import GraphError, SpecError
from cobalt_common.hardware import HardwareSpec

pytestmark = pytest.mark.unit

Point = namedtuple("Point", ["x", "y"])


def evaluate(graph: Graph) -> Any:
    """Run a graph in this process, each node once its parents ran, as a dispatcher would."""
    values: dict[int, Any] = {}

    def value(node_id: int) -> Any:
        if node_id not in values:
            node = graph.nodes[node_id]
            if node.kind is NodeKind.PARAMETER:
                values[node_id] = node.value
            else:
                assert node.function is not None
                args = [value(i) for i in node.args]
                kwargs = {key: value(i) for key, i in node.kwargs.items()}
                values[node_id] = node.function(*args, **kwargs)
        return values[node_id]

    return value(graph.output)


@electron
def add(x: int, y: int = 0) -> int:
    return x + y


@electron
def pair(x: int) -> tuple[int, int]:
    return x, x + 1


@electron
def identity(value: Any) -> Any:
    return value


def kinds(graph: Graph) -> list[tuple[str, str]]:
    return [(node.kind.value, node.name) for node in graph.nodes]


def test_node_ids_are_indexes_and_a_task_is_numbered_before_its_parameters() -> None:
    @lattice
    def wf(a: int) -> int:
        return add(add(a, 1), y=2)

    graph = wf.build_graph(5)
    assert graph.name == "wf"
    assert [node.node_id for node in graph.nodes] == list(range(len(graph.nodes)))
    assert kinds(graph) == [
        ("electron", "add"),
        ("parameter", ":parameter:"),
        ("parameter", ":parameter:"),
        ("electron", "add"),
        ("parameter", ":parameter:"),
    ]
    assert graph.nodes[0].args == [1, 2]
    assert graph.nodes[3].args == [0] and graph.nodes[3].kwargs == {"y": 4}
    assert graph.output == 3
    assert evaluate(graph) == 8


def test_the_first_electron_of_covalents_first_experiment_is_node_zero() -> None:
    @electron
    def join_words(a: str, b: str) -> str:
        return ", ".join([a, b])

    @electron
    def excitement(a: str) -> str:
        return f"{a}!"

    @lattice
    def simple_workflow(a: str, b: str) -> str:
        phrase = join_words(a, b)
        return excitement(phrase)

    graph = simple_workflow.build_graph("Hello", "World")
    assert kinds(graph) == [
        ("electron", "join_words"),
        ("parameter", ":parameter:"),
        ("parameter", ":parameter:"),
        ("electron", "excitement"),
    ]
    assert evaluate(graph) == "Hello, World!"


def test_collections_and_lookups_are_numbered_before_what_they_are_made_of() -> None:
    @lattice
    def wf() -> Any:
        low, _high = pair(1)
        return identity([low, 2, {"k": low}, (low, 3)])

    graph = wf.build_graph()
    assert kinds(graph) == [
        ("electron", "pair"),
        ("parameter", ":parameter:"),
        ("getitem", "pair[0]"),
        ("parameter", ":parameter:"),
        ("getitem", "pair[1]"),
        ("parameter", ":parameter:"),
        ("electron", "identity"),
        ("collection", ":list:"),
        ("parameter", ":parameter:"),
        ("collection", ":dict:"),
        ("parameter", ":parameter:"),
        ("collection", ":tuple:"),
        ("parameter", ":parameter:"),
    ]
    assert graph.nodes[6].args == [7] and graph.nodes[7].args == [2, 8, 9, 11]
    assert graph.nodes[9].args == [10, 2] and graph.nodes[11].args == [2, 12]
    assert evaluate(graph) == [1, 2, {"k": 1}, (1, 3)]


def test_lattice_arguments_are_plain_values_and_each_literal_is_a_parameter() -> None:
    @lattice
    def wf(n: int) -> int:
        assert n == 3
        return add(n, n)

    graph = wf.build_graph(3)
    params = [node for node in graph.nodes if node.kind is NodeKind.PARAMETER]
    assert [(node.value, node.function) for node in params] == [(3, None), (3, None)]


def test_builtin_nodes_need_no_cpu_and_no_executor() -> None:
    assert TaskOptions(HardwareSpec(cpus=0), retries=0, executor=None) == BUILTIN_OPTIONS

    @lattice(gpu="h100")
    def wf() -> int:
        return pair(1)[0]

    graph = wf.build_graph()
    for node in graph.nodes:
        if node.kind is not NodeKind.ELECTRON:
            assert node.options == BUILTIN_OPTIONS


def test_a_structure_without_refs_is_one_parameter() -> None:
    @lattice
    def wf() -> Any:
        return identity({"a": [1, 2, (3, 4)], "b": None})

    graph = wf.build_graph()
    assert kinds(graph) == [("electron", "identity"), ("parameter", ":parameter:")]
    assert graph.nodes[1].value == {"a": [1, 2, (3, 4)], "b": None}


def test_nested_structures_with_refs_become_nested_collections() -> None:
    @lattice
    def wf() -> Any:
        one = add(1)
        return identity({"items": [one, 2, (one, "x")], "point": Point(one, 5)})

    graph = wf.build_graph()
    collections = [node.name for node in graph.nodes if node.kind is NodeKind.COLLECTION]
    assert sorted(collections) == [":Point:", ":dict:", ":list:", ":tuple:"]
    assert evaluate(graph) == {"items": [1, 2, (1, "x")], "point": Point(1, 5)}


def test_dict_collection_takes_its_keys_as_a_parameter() -> None:
    @lattice
    def wf() -> Any:
        return {"a": add(1), "b": 2}

    graph = wf.build_graph()
    output = graph.nodes[graph.output]
    assert output.kind is NodeKind.COLLECTION and output.name == ":dict:"
    assert graph.nodes[output.args[0]].value == ["a", "b"]
    assert evaluate(graph) == {"a": 1, "b": 2}


def test_lattice_output_can_be_a_ref_a_structure_or_a_literal() -> None:
    @lattice
    def returns_ref() -> int:
        return add(1)

    @lattice
    def returns_list() -> list[int]:
        return [add(1), add(2)]

    @lattice
    def returns_literal() -> str:
        add(1)
        return "done"

    returned = returns_ref.build_graph()
    assert returned.output == 0 and returned.nodes[0].kind is NodeKind.ELECTRON
    listed = returns_list.build_graph()
    assert listed.nodes[listed.output].name == ":list:" and evaluate(listed) == [1, 2]
    literal = returns_literal.build_graph()
    assert literal.nodes[literal.output].kind is NodeKind.PARAMETER
    assert evaluate(literal) == "done"


def test_attribute_and_item_access_record_getattr_and_getitem_nodes() -> None:
    @electron
    def train() -> Any:
        return types.SimpleNamespace(weights=[0.5, 0.25])

    @lattice
    def wf() -> Any:
        model = train()
        return identity(model.weights[1])

    graph = wf.build_graph()
    getattr_node = next(node for node in graph.nodes if node.kind is NodeKind.GETATTR)
    getitem_node = next(node for node in graph.nodes if node.kind is NodeKind.GETITEM)
    assert getattr_node.name == "train.weights" and getattr_node.function is getattr
    assert getitem_node.name == "train.weights[1]"
    assert getitem_node.function is operator.getitem
    assert graph.nodes[getattr_node.args[1]].value == "weights"
    assert evaluate(graph) == 0.25


def test_repeated_lookups_reuse_one_node() -> None:
    @lattice
    def wf() -> Any:
        out = pair(1)
        return [out[0], out[0], out.real, out.real]  # type: ignore[attr-defined]

    graph = wf.build_graph()
    output = graph.nodes[graph.output]
    assert output.args[0] == output.args[1] and output.args[2] == output.args[3]


def test_private_and_dunder_lookups_create_no_nodes() -> None:
    @lattice
    def wf() -> None:
        ref = pair(1)
        before = len(current_builder().nodes)  # type: ignore[union-attr]
        assert not hasattr(ref, "__array__")
        assert not hasattr(ref, "_repr_html_")
        assert len(current_builder().nodes) == before  # type: ignore[union-attr]

    wf.build_graph()


def test_unpacking_a_ref_yields_one_getitem_per_name() -> None:
    @lattice
    def wf() -> Any:
        low, high = pair(1)
        return add(low, high)

    graph = wf.build_graph()
    getitems = [node.name for node in graph.nodes if node.kind is NodeKind.GETITEM]
    assert getitems == ["pair[0]", "pair[1]"]
    assert evaluate(graph) == 3


def test_unpacking_into_three_names_works_too() -> None:
    @electron
    def triple() -> tuple[int, int, int]:
        return 1, 2, 3

    @lattice
    def wf() -> Any:
        a, b, c = triple()
        return [c, b, a]

    assert evaluate(wf.build_graph()) == [3, 2, 1]


@pytest.mark.parametrize(
    ("use", "explains"),
    [
        (lambda ref: [x for x in ref], "cannot be iterated over.*Index it"),
        (lambda ref: list(ref), "cannot be iterated over"),
        (lambda ref: bool(ref), "if/while/and/or.*Move the condition into an electron"),
        (lambda ref: 1 if ref else 0, "if/while/and/or"),
        (lambda ref: len(ref), "measured with len().*Return the length"),
        (lambda ref: setattr(ref, "weights", 1), "given attributes"),
    ],
)
def test_using_a_refs_value_while_building_explains_what_to_do(use: Any, explains: str) -> None:
    @lattice
    def wf() -> None:
        use(pair(1))

    with pytest.raises(GraphError, match=explains) as info:
        wf.build_graph()
    assert "'pair'" in str(info.value) and "lattice 'wf'" in str(info.value)


def test_star_unpacking_is_refused_because_the_length_is_unknown() -> None:
    @lattice
    def wf() -> None:
        _first, *_rest = pair(1)

    with pytest.raises(GraphError, match="iterated over"):
        wf.build_graph()


def test_pickling_a_ref_raises_a_graph_error() -> None:
    @lattice
    def wf() -> None:
        ref = pair(1)
        with pytest.raises(GraphError, match="about to be pickled"):
            pickle.dumps(ref)
        with pytest.raises(GraphError, match="about to be pickled"):
            cloudpickle.dumps({"nested": ref})
        assert copy.deepcopy(ref) is ref and copy.copy(ref) is ref

    wf.build_graph()


@dataclass
class Config:
    value: Any


@pytest.mark.parametrize(
    ("literal", "explains"),
    [
        (lambda ref: {ref, 1}, "a set cannot hold a task's output"),
        (lambda ref: {ref: 1}, "a dict key cannot be a task's output"),
        (lambda ref: [Config(ref)], r"Config holds a task's output"),
    ],
)
def test_refs_hidden_where_they_cannot_be_wired_are_refused(literal: Any, explains: str) -> None:
    @lattice
    def wf() -> None:
        identity(value=literal(pair(1)))

    with pytest.raises(GraphError, match=explains) as info:
        wf.build_graph()
    assert "argument 'value' of identity" in str(info.value)


def test_wrong_arguments_to_an_electron_name_the_task_and_its_signature() -> None:
    @lattice
    def wf() -> None:
        add(1, 2, 3)  # type: ignore[call-arg]

    with pytest.raises(GraphError) as info:
        wf.build_graph()
    message = str(info.value)
    assert "electron 'add'" in message and "too many positional arguments" in message
    assert "add(x: 'int', y: 'int' = 0)" in message


def test_missing_and_unknown_keyword_arguments_are_graph_errors() -> None:
    @lattice
    def missing() -> None:
        add()  # type: ignore[call-arg]

    @lattice
    def unknown() -> None:
        add(1, z=2)  # type: ignore[call-arg]

    with pytest.raises(GraphError, match="missing a required argument: 'x'"):
        missing.build_graph()
    with pytest.raises(GraphError, match="unexpected keyword argument 'z'"):
        unknown.build_graph()


def test_wrong_arguments_to_a_lattice_name_it_and_its_signature() -> None:
    @lattice
    def wf(n: int, *, scale: float = 1.0) -> None: ...

    with pytest.raises(GraphError, match=r"lattice 'wf'.*Its signature is wf\(n: 'int'"):
        wf.build_graph()  # type: ignore[call-arg]


def test_wait_adds_ordering_only_parents() -> None:
    @lattice
    def wf() -> Any:
        a, b = add(1), add(2)
        c = add(3)
        assert wait(c, [a, b]) is c
        wait(c, a)
        return c

    graph = wf.build_graph()
    node = graph.nodes[graph.output]
    assert node.waits == [0, 2]
    assert node.args == [5]


def test_wait_outside_a_build_returns_the_child_unchanged() -> None:
    assert wait(5, [1, 2]) == 5


def test_wait_refuses_values_that_are_not_task_outputs() -> None:
    @lattice
    def wf() -> None:
        wait(add(1), [add(2), 7])

    with pytest.raises(GraphError, match=r"ct\.wait.*got 7"):
        wf.build_graph()


def test_wait_refuses_a_cycle() -> None:
    @lattice
    def wf() -> None:
        a = add(1)
        b = add(a)
        wait(a, b)

    with pytest.raises(GraphError, match="cycle"):
        wf.build_graph()


def test_refs_from_another_build_are_refused() -> None:
    leaked: list[Any] = []

    @lattice
    def first() -> None:
        leaked.append(add(1))

    @lattice
    def second() -> None:
        add(leaked[0])

    first.build_graph()
    with pytest.raises(GraphError, match=r"another lattice build.*'first'"):
        second.build_graph()


def test_electrons_inherit_lattice_options_unless_they_set_them() -> None:
    @electron
    def plain() -> None: ...

    @electron(gpu=None, cpus=2, retries=3, executor="slurm")
    def cpu_only() -> None: ...

    @lattice(gpu="h100", memory="8GB", time_limit="1h", retries=1, executor="local")
    def wf() -> None:
        plain()
        cpu_only()

    graph = wf.build_graph()
    inherited, overridden = (n.options for n in graph.nodes if n.kind is NodeKind.ELECTRON)
    assert inherited == TaskOptions(
        HardwareSpec(gpu="h100", gpus=1, cpus=1, memory_mb=8192, time_limit_s=3600),
        retries=1,
        executor="local",
    )
    assert overridden == TaskOptions(
        HardwareSpec(gpu=None, gpus=0, cpus=2, memory_mb=8192, time_limit_s=3600),
        retries=3,
        executor="slurm",
    )


def test_an_electron_asking_for_gpus_without_a_type_fails_the_build() -> None:
    @electron(gpus=2)
    def multi() -> None: ...

    @lattice
    def wf() -> None:
        multi()

    with pytest.raises(SpecError, match="electron 'multi': gpus=2"):
        wf.build_graph()


def test_electron_nodes_call_a_task_callable_with_deps_in_order() -> None:
    hook, after = DepsCall(print), DepsCall(repr)

    @electron(deps_pip=["numpy"], deps_bash="make", call_before=[hook], call_after=after)
    def job() -> None: ...

    @lattice
    def wf() -> None:
        job()

    function = wf.build_graph().nodes[0].function
    assert isinstance(function, TaskCallable)
    assert function.fn is job.function
    assert function.before == (DepsBash("make"), DepsPip(["numpy"]), hook)
    assert function.after == (after,)


def test_lattice_deps_are_inherited_by_electrons_that_set_none() -> None:
    @electron
    def inherits() -> None: ...

    @electron(deps_pip=["torch"])
    def own() -> None: ...

    @lattice(deps_pip=["numpy"], call_after=DepsCall(print))
    def wf() -> None:
        inherits()
        own()

    first, second = (n.function for n in wf.build_graph().nodes if n.function is not None)
    assert isinstance(first, TaskCallable) and isinstance(second, TaskCallable)
    assert first.before == (DepsPip(["numpy"]),) and first.after == (DepsCall(print),)
    assert second.before == (DepsPip(["torch"]),) and second.after == (DepsCall(print),)


def test_one_task_callable_is_reused_per_electron_per_build() -> None:
    @lattice
    def wf() -> None:
        add(1)
        add(2)
        pair(3)

    electrons = [n for n in wf.build_graph().nodes if n.kind is NodeKind.ELECTRON]
    assert electrons[0].function is electrons[1].function
    assert electrons[0].function is not electrons[2].function


def test_retval_keyword_arguments_need_not_be_passed() -> None:
    @electron(call_before=DepsCall(lambda: "conn", retval_keyword="connection"))
    def query(sql: str, connection: str) -> str:
        return f"{connection}: {sql}"

    @lattice
    def wf() -> str:
        return query("select 1")  # type: ignore[call-arg]

    graph = wf.build_graph()
    assert evaluate(graph) == "conn: select 1"


def test_passing_a_retval_keyword_argument_explicitly_is_refused() -> None:
    @electron(call_before=DepsCall(lambda: "conn", retval_keyword="connection"))
    def query(sql: str, connection: str) -> str:
        return sql

    @lattice
    def wf() -> None:
        query("select 1", connection="mine")

    with pytest.raises(GraphError, match="retval_keyword='connection'"):
        wf.build_graph()


def inner_total(values: list[int]) -> int:
    return add(add(values[0]), values[1])


@pytest.mark.parametrize("form", ["call", "stacked"])
def test_sublattices_record_a_sublattice_node_in_both_forms(form: str) -> None:
    if form == "call":
        evaluate_sub = electron(lattice(inner_total))
    else:

        @electron(retries=2)
        @lattice(gpu="t4")
        def evaluate_sub(values: list[int]) -> int:
            return inner_total(values)

    @lattice(time_limit="2h")
    def outer() -> int:
        return evaluate_sub([add(1), 2])

    graph = outer.build_graph()
    node = graph.nodes[graph.output]
    assert node.kind is NodeKind.SUBLATTICE
    assert node.name == f":sublattice:{evaluate_sub.__name__}"
    assert isinstance(node.function, SublatticeCall)
    assert node.function.lattice is evaluate_sub.function
    assert node.options.hardware == HardwareSpec(cpus=0, time_limit_s=7200)
    assert node.options.retries == (2 if form == "stacked" else 0)
    assert graph.nodes[node.args[0]].name == ":list:"


def test_sublattice_arguments_are_checked_against_the_lattice_signature() -> None:
    sub = electron(lattice(inner_total))

    @lattice
    def outer() -> None:
        sub(1, 2)  # type: ignore[call-arg, arg-type]

    with pytest.raises(GraphError, match=r"electron 'inner_total'.*inner_total\(values"):
        outer.build_graph()


def test_sublattice_call_runs_the_lattice_through_dispatch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Any] = []

    def run_sublattice(lat: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        calls.append((lat, args, kwargs))
        return 42

    monkeypatch.setattr(sublattice, "run_sublattice", run_sublattice)
    inner = lattice(inner_total)
    assert SublatticeCall(inner)([1, 2], extra=True) == 42
    assert calls == [(inner, ([1, 2],), {"extra": True})]


def test_sublattice_call_survives_a_cloudpickle_round_trip() -> None:
    def local_inner(n: int) -> int:
        return add(n, 1)

    call = SublatticeCall(lattice(local_inner, cpus=2))
    restored = cloudpickle.loads(cloudpickle.dumps(call))
    assert isinstance(restored, SublatticeCall)
    graph = restored.lattice.build_graph(4)
    assert evaluate(graph) == 5
    assert graph.nodes[0].options.hardware.cpus == 2


def test_a_lattice_can_build_while_another_builds() -> None:
    inner = lattice(inner_total)
    inner_graphs: list[Graph] = []

    @lattice
    def outer() -> int:
        first = add(1)
        inner_graphs.append(inner.build_graph([1, 2]))
        return add(first, 1)

    graph = outer.build_graph()
    assert evaluate(inner_graphs[0]) == 3
    assert evaluate(graph) == 2
    assert current_builder() is None


def test_a_lattice_called_inside_a_build_inlines_its_electrons_with_its_defaults() -> None:
    @lattice(gpu="l4")
    def inner(n: int) -> int:
        return add(n)

    @lattice(cpus=2)
    def outer() -> int:
        return add(inner(1), 1)

    graph = outer.build_graph()
    first, second = (n for n in graph.nodes if n.kind is NodeKind.ELECTRON)
    assert first.options.hardware == HardwareSpec(gpu="l4", gpus=1, cpus=2)
    assert second.options.hardware == HardwareSpec(cpus=2)
    assert evaluate(graph) == 2


def test_the_builder_is_cleared_even_when_the_lattice_raises() -> None:
    @lattice
    def broken() -> None:
        add(1)
        raise RuntimeError("user bug")

    with pytest.raises(RuntimeError, match="user bug"):
        broken.build_graph()
    assert current_builder() is None
    assert add(1, 2) == 3


def test_graph_nodes_follow_the_ir_contract() -> None:
    @lattice
    def wf() -> int:
        return add(1)

    node = wf.build_graph().nodes[0]
    assert isinstance(node, GraphNode)
    assert (node.node_id, node.kind, node.name, node.value) == (0, NodeKind.ELECTRON, "add", None)
    assert (node.args, node.kwargs, node.waits) == ([1], {}, [])
    assert NodeKind("sublattice") is NodeKind.SUBLATTICE
    assert isinstance(NodeKind.ELECTRON, str) and f"{NodeKind.ELECTRON}" == "electron"


def test_node_ref_repr_names_the_node() -> None:
    @lattice
    def wf() -> None:
        assert repr(add(1)) == "<NodeRef 0: add>"
        assert isinstance(add(1), NodeRef)

    wf.build_graph()
