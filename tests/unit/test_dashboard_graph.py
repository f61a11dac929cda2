"""The dashboard's workflow graph stays readable however many tasks a dispatch has."""

from __future__ import annotations

import doctest
import itertools
import json
from typing import Any

import pytest

from cobalt_controller.dashboard import _graph
from cobalt_controller.state import NodeRow

pytestmark = pytest.mark.unit


class Workflow:
    """Builds a dispatch's nodes the way the SDK records them: parents first."""

    def __init__(self) -> None:
        self.rows: list[NodeRow] = []

    def _add(self, name: str, kind: str, parents: list[int]) -> int:
        node_id = len(self.rows)
        inputs = json.dumps([[p, i, "", False] for i, p in enumerate(parents)])
        self.rows.append(NodeRow("d", node_id, name, kind, "PENDING", inputs=inputs))
        return node_id

    def param(self) -> int:
        return self._add("value", "parameter", [])

    def task(self, name: str, *parents: int) -> int:
        return self._add(name, "electron", list(parents))

    def sublattice(self, name: str, *parents: int) -> int:
        return self._add(name, "sublattice", list(parents))

    def collection(self, *parents: int) -> int:
        return self._add("[...]", "collection", list(parents))

    def getitem(self, parent: int) -> int:
        return self._add("[0]", "getitem", [parent])

    def graph(self) -> dict[str, Any]:
        return _graph.build(self.rows)


def group(name: str, count: int) -> str:
    """The label of a group node: ``"square ×2000"``."""  # noqa: RUF002
    return f"{name} {_graph.TIMES}{count}"


def labels(graph: dict[str, Any]) -> list[str]:
    return [n["label"] for n in graph["nodes"]]


def edges(graph: dict[str, Any]) -> set[tuple[str, str]]:
    names = labels(graph)
    return {(names[a], names[b]) for a, b in graph["edges"]}


def members(node: dict[str, Any]) -> list[int]:
    return [i for first, last in node["members"] for i in range(first, last + 1)]


def test_a_fan_out_of_2000_is_one_node_and_its_reduce_another() -> None:
    w = Workflow()
    n = w.param()
    squares = [w.task("square", n) for _ in range(2000)]
    w.task("total", w.collection(*squares))

    graph = w.graph()

    assert labels(graph) == [group("square", 2000), "total"]
    assert edges(graph) == {(group("square", 2000), "total")}
    assert members(graph["nodes"][0]) == squares
    assert graph["nodes"][0]["members"] == [[1, 2000]]
    assert graph["tasks"] == 2001


def test_a_small_workflow_shows_every_task() -> None:
    w = Workflow()
    trains = [w.task("train", w.param()) for _ in range(3)]
    w.task("best", w.collection(*trains))

    graph = w.graph()

    assert labels(graph) == ["train", "train", "train", "best"]
    assert edges(graph) == {("train", "best")}
    assert len(graph["edges"]) == 3


def test_a_map_over_a_pipeline_stays_a_pipeline_of_groups() -> None:
    w = Workflow()
    loaded = [w.task("load", w.param()) for _ in range(500)]
    trained = [w.task("train", x) for x in loaded]
    scored = [w.task("score", w.getitem(t)) for t in trained]
    w.task("report", w.collection(*scored))

    graph = w.graph()

    assert labels(graph) == [group("load", 500), group("train", 500), group("score", 500), "report"]
    assert edges(graph) == {
        (group("load", 500), group("train", 500)),
        (group("train", 500), group("score", 500)),
        (group("score", 500), "report"),
    }


def test_a_loop_of_600_calls_in_a_row_is_one_node() -> None:
    w = Workflow()
    x = w.task("init", w.param())
    for _ in range(600):
        x = w.task("step", x)
    w.task("save", x)

    graph = w.graph()

    assert labels(graph) == ["init", group("step", 600), "save"]
    assert graph["nodes"][1]["sequence"] is True
    assert edges(graph) == {("init", group("step", 600)), (group("step", 600), "save")}


def test_a_mixed_workflow_of_over_500_tasks_draws_as_a_handful_of_nodes() -> None:
    w = Workflow()
    data = w.task("fetch", w.param())
    branches = []
    for name in ("resnet", "vit", "mlp", "gbm", "svm"):
        fits = [w.task(f"fit_{name}", data, w.param()) for _ in range(120)]
        branches.append(w.task(f"pick_{name}", w.collection(*fits)))
    w.task("compare", w.collection(*branches))

    graph = w.graph()

    assert graph["tasks"] == 1 + 5 * 121 + 1
    assert len(graph["nodes"]) <= 12
    assert group("fit_vit", 120) in labels(graph)
    assert ("fetch", group("fit_vit", 120)) in edges(graph)


def test_parameters_and_plumbing_are_looked_through() -> None:
    w = Workflow()
    a = w.task("a", w.param())
    b = w.task("b", w.param())
    w.task("c", w.getitem(w.collection(a, w.getitem(b))))

    graph = w.graph()

    assert labels(graph) == ["a", "b", "c"]
    assert edges(graph) == {("a", "c"), ("b", "c")}


def test_a_small_group_feeding_a_collapsed_one_keeps_its_edges() -> None:
    w = Workflow()
    seeds = [w.task("seed", w.param()) for _ in range(2)]
    w_all = w.collection(*seeds)
    for _ in range(50):
        w.task("sim", w_all)

    graph = w.graph()

    assert labels(graph) == ["seed", "seed", group("sim", 50)]
    assert graph["edges"] == [[0, 2], [1, 2]]


def test_sublattices_are_drawn_like_tasks() -> None:
    w = Workflow()
    s = w.sublattice("inner_workflow", w.param())
    w.task("after", s)

    assert labels(w.graph()) == ["inner_workflow", "after"]
    assert w.graph()["nodes"][0]["kind"] == "sublattice"


def test_children_sit_below_their_parents_and_boxes_in_a_layer_do_not_overlap() -> None:
    w = Workflow()
    roots = [w.task(f"root{i}", w.param()) for i in range(6)]
    mids = [w.task(f"mid{i}", roots[i % 6], roots[(i + 1) % 6]) for i in range(8)]
    w.task("end", w.collection(*mids))

    graph = w.graph()
    nodes = graph["nodes"]

    for parent, child in graph["edges"]:
        assert nodes[child]["y"] > nodes[parent]["y"]
    by_layer: dict[int, list[dict[str, Any]]] = {}
    for node in nodes:
        by_layer.setdefault(node["y"], []).append(node)
    for layer in by_layer.values():
        layer.sort(key=lambda n: n["x"])
        for left, right in itertools.pairwise(layer):
            assert left["x"] + left["w"] <= right["x"]
    assert all(n["x"] >= 0 and n["x"] + n["w"] <= graph["width"] for n in nodes)


def test_a_dispatch_of_only_parameters_has_an_empty_graph() -> None:
    w = Workflow()
    w.param()

    assert w.graph() == {"nodes": [], "edges": [], "width": 0, "height": 0, "tasks": 0}


def test_the_module_example_runs() -> None:
    assert doctest.testmod(_graph).failed == 0


def rows_of(graph: Any) -> list[NodeRow]:
    """The rows the controller stores for a lattice the SDK built."""
    rows = []
    for node in graph.nodes:
        inputs = [[p, i, "", False] for i, p in enumerate(node.args)]
        inputs += [[p, -1, k, False] for k, p in node.kwargs.items()]
        rows.append(
            NodeRow(
                "d", node.node_id, node.name, node.kind.value, "PENDING", inputs=json.dumps(inputs)
            )
        )
    return rows


def test_a_task_numbered_before_its_collections_is_grouped_by_its_real_parents() -> None:
    import cobalt as ct

    @ct.electron
    def square(x: int) -> int:
        return x * x

    @ct.electron
    def cube(x: int) -> int:
        return x**3

    @ct.electron
    def total(values: list[int]) -> int:
        return sum(values)

    @ct.lattice
    def wf() -> list[list[int]]:
        squares = [total([square(i)]) for i in range(4)]
        cubes = [total([cube(i)]) for i in range(4)]
        return [squares, cubes]

    built = wf.build_graph()
    assert [n.name for n in built.nodes[:2]] == ["square", ":parameter:"], "Covalent's ids"
    graph = _graph.build(rows_of(built))

    assert labels(graph) == [
        group("square", 4),
        group("total", 4),
        group("cube", 4),
        group("total", 4),
    ]
    assert edges(graph) == {
        (group("square", 4), group("total", 4)),
        (group("cube", 4), group("total", 4)),
    }
    assert [n["y"] for n in graph["nodes"]] == [12, 96, 12, 96]
