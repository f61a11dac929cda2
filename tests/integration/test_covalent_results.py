"""Covalent's ways of reading a dispatch's results, on a real controller.

``get_all_node_outputs``, ``get_all_node_results``, the status constants,
``sublattice_result``, ``error is None``, ``ct.get_result``'s Covalent
arguments, ``ct.sync``, repeated ``retval_keyword`` hooks and
``@ct.lattice(workflow_executor=...)``.
"""

from __future__ import annotations

import pytest

import cobalt as ct

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("controller_home")]


@ct.electron
def add(x: int, y: int) -> int:
    return x + y


@ct.electron
def total(values: list[int]) -> int:
    return sum(values)


@ct.lattice
def pipeline(a: int, b: int) -> int:
    return total([add(a, b), add(b, b)])


@ct.lattice
def inner(x: int) -> int:
    return add(x, 1)


@ct.lattice
def outer(x: int) -> int:
    return add(ct.electron(inner)(x), 10)


def _by_name(nodes: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    return [n for n in nodes if n["node_name"] == name]


def test_every_node_output_is_keyed_by_name_and_id() -> None:
    result = ct.dispatch_sync(pipeline)(2, 3)
    outputs = result.get_all_node_outputs()
    adds = sorted(value for key, value in outputs.items() if key.startswith("add("))
    assert adds == [5, 6]
    assert [v for k, v in outputs.items() if k.startswith("total(")] == [11]
    parameters = [v for k, v in outputs.items() if k.startswith(":parameter:(")]
    assert sorted(parameters) == [2, 3, 3, 3]
    for key in outputs:
        name, _, rest = key.rpartition("(")
        assert name and rest.endswith(")") and rest[:-1].isdigit(), key
    assert len(outputs) == len(result.get_all_node_results())


def test_all_node_results_carry_covalents_keys_in_node_order() -> None:
    result = ct.dispatch_sync(pipeline)(2, 3)
    nodes = result.get_all_node_results()
    assert [n["node_id"] for n in nodes] == list(range(len(nodes)))
    for node in nodes:
        assert {"node_id", "node_name", "output", "status", "error", "sublattice_result"} <= set(
            node
        )
        assert node["status"] == ct.status.COMPLETED
        assert node["error"] is None and node["sublattice_result"] is None
    assert _by_name(nodes, "total")[0]["output"] == 11


def test_status_constants_compare_with_a_results_status() -> None:
    result = ct.dispatch_sync(pipeline)(1, 1)
    assert result.status == ct.Result.COMPLETED == ct.status.COMPLETED
    assert str(result.status) == "COMPLETED"
    assert result.error is None


def test_a_failed_dispatch_keeps_its_error_text() -> None:
    @ct.electron
    def boom() -> None:
        raise ValueError("broken on purpose")

    @ct.lattice
    def fails() -> None:
        return boom()

    result = ct.dispatch_sync(fails, raise_on_failure=False)()
    assert result.status == ct.Result.FAILED
    node = _by_name(result.get_all_node_results(), "boom")[0]
    assert "broken on purpose" in str(node["error"])


def test_a_sublattice_node_gives_its_child_result() -> None:
    result = ct.dispatch_sync(outer)(1)
    assert result.result == 12
    [node] = [n for n in result.get_all_node_results() if n["sublattice_result"] is not None]
    child = node["sublattice_result"]
    assert isinstance(child, ct.Result)
    assert child.status == ct.status.COMPLETED and child.result == 2
    assert child.dispatch_id != result.dispatch_id


def test_get_result_takes_covalents_arguments() -> None:
    dispatch_id = ct.dispatch(outer)(1)
    assert ct.get_result(dispatch_id, wait=True, status_only=True) == {
        "id": dispatch_id,
        "status": ct.status.COMPLETED,
    }
    full = ct.get_result(dispatch_id, wait=True, workflow_output=True, results_dir="/nowhere")
    assert full.result == 12
    bare = ct.get_result(
        dispatch_id, workflow_output=False, intermediate_outputs=False, sublattice_results=False
    )
    assert bare.status == ct.status.COMPLETED and bare.result is None
    nodes = bare.get_all_node_results()
    assert all(n["output"] is None and n["sublattice_result"] is None for n in nodes)
    assert any(n["status"] == ct.status.COMPLETED for n in nodes)


def test_get_result_refuses_a_covalent_server_address_with_advice() -> None:
    with pytest.raises(ct.ConfigError, match="COBALT_CONTROLLER_ADDRESS"):
        ct.get_result("0" * 32, dispatcher_addr="localhost:48008")
    with pytest.raises(ct.ConfigError, match="quantum"):
        ct.get_result("0" * 32, qelectron_db=True)


def test_sync_waits_for_every_dispatch() -> None:
    ids = [ct.dispatch(pipeline)(i, i) for i in range(3)]
    ct.sync(ids)
    assert all(ct.get_result(i).status == ct.status.COMPLETED for i in ids)
    ct.sync(ids[0])
    with pytest.raises(ct.SpecError, match="list"):
        ct.sync(42)  # type: ignore[arg-type]


def _text(value: str) -> str:
    return value


@ct.electron(
    call_before=[
        ct.DepsCall(_text, args=["first"], retval_keyword="parts"),
        ct.DepsCall(_text, args=["second"], retval_keyword="parts"),
        ct.DepsCall(_text, args=["alone"], retval_keyword="single"),
    ]
)
def joined(parts: list[str], single: str) -> str:
    return "+".join(parts) + "|" + single


@ct.lattice
def hooks() -> str:
    return joined()


def test_hooks_naming_one_keyword_pass_every_value_as_a_list() -> None:
    assert ct.dispatch_sync(hooks)().result == "first+second|alone"


@ct.lattice(workflow_executor="gpu")
def assembled(a: int) -> list[int]:
    return [add(a, 1), add(a, 2)]


def test_workflow_executor_runs_the_nodes_that_assemble_values() -> None:
    result = ct.dispatch_sync(assembled)(1)
    assert result.result == [2, 3]
    nodes = result.get_all_node_results()
    [collection] = [n for n in nodes if n["node_name"] == ":list:"]
    assert collection["executor"] == "gpu"
    assert {n["executor"] for n in _by_name(nodes, "add")} == {"local"}


def test_workflow_executor_is_checked_where_it_is_written() -> None:
    with pytest.raises(ct.SpecError, match="workflow_executor"):
        ct.lattice(workflow_executor=3)(lambda: None)  # type: ignore[call-overload]
