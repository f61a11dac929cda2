"""What ``ct.redispatch`` builds and checks here, before the controller is asked anything,
and how ``ct.cancel`` checks task ids."""

from __future__ import annotations

import warnings

import pytest

import cobalt as ct
from cobalt._dispatch import check_task_ids
from cobalt._submit import add_source, build_request
from cobalt_common.v1 import controller_pb2 as pb

pytestmark = pytest.mark.unit


@ct.electron(cpus=3, retries=2)
def load(n: int) -> list[int]:
    return list(range(n))


@ct.electron
def total(values: list[int]) -> int:
    return sum(values)


@ct.electron(cpus=1)
def total_v2(values: list[int]) -> int:
    return sum(values) * 2


def mean(values: list[int]) -> float:
    return sum(values) / len(values)


@ct.lattice
def flow(n: int) -> int:
    return total(load(n))


def test_a_replacing_build_calls_the_new_electron_and_records_which_nodes_it_replaced() -> None:
    graph = flow.build_replacing({"total": total_v2}, (3,), {})
    names = [n.name for n in graph.nodes]
    assert "total_v2" in names and "total" not in names
    assert graph.replaced == {names.index("total_v2")}
    assert graph.nodes[names.index("total_v2")].options.hardware.cpus == 1


def test_a_plain_function_replacing_an_electron_keeps_that_electrons_options() -> None:
    graph = flow.build_replacing({"load": mean}, (3,), {})
    node = next(n for n in graph.nodes if n.name == "mean")
    assert node.options.hardware.cpus == 3 and node.options.retries == 2


def test_replacing_an_electron_the_lattice_does_not_call_lists_those_it_calls() -> None:
    with pytest.raises(ct.GraphError, match=r"names 'train'.*it calls 'load', 'total'"):
        flow.build_replacing({"train": total_v2}, (3,), {})


def test_functions_already_stored_are_sent_by_address_except_for_replaced_electrons() -> None:
    graph = flow.build_replacing({"total": total_v2}, (3,), {})
    load_key = f"{__name__}.load"
    graph.stored_functions = {load_key: "1" * 64, f"{__name__}.total_v2": "2" * 64}
    req, _ = build_request(graph)
    by_name = {n.name: n for n in req.nodes}
    assert by_name["load"].function_sha256 == "1" * 64
    assert by_name["total_v2"].function_sha256 != "2" * 64
    assert "1" * 64 not in {p.sha256 for p in req.payloads}


def test_the_lattice_and_its_inputs_travel_with_the_dispatch() -> None:
    req = pb.DispatchCreateRequest()
    large: dict[str, bytes] = {}
    add_source(req, (flow, (3,), {"unused": 1}), large)
    assert len(req.lattice_sha256) == len(req.inputs_sha256) == 64
    assert {p.sha256 for p in req.payloads} == {req.lattice_sha256, req.inputs_sha256}
    assert large == {}


def test_a_lattice_that_cannot_be_pickled_is_dispatched_without_being_kept() -> None:
    import threading

    lock = threading.Lock()

    @ct.lattice
    def holds_a_lock(n: int) -> int:
        with lock:
            return total(load(n))

    req = pb.DispatchCreateRequest()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_source(req, (holds_a_lock, (3,), {}), {})
    assert req.lattice_sha256 == "" and req.inputs_sha256 == ""
    assert "ct.redispatch cannot run it again" in str(caught[0].message)


def test_redispatch_checks_its_options_at_once() -> None:
    with pytest.raises(ct.SpecError, match="replace_electrons must map"):
        ct.redispatch("a" * 32, replace_electrons=[total_v2])  # type: ignore[arg-type]
    with pytest.raises(ct.SpecError, match="must be an electron or a function"):
        ct.redispatch("a" * 32, replace_electrons={"total": 3})  # type: ignore[dict-item]
    with pytest.raises(ct.SpecError, match="dispatch_id must be"):
        ct.redispatch("")


@pytest.mark.parametrize(
    ("task_ids", "expected"), [(None, []), (3, [3]), ([1, 3], [1, 3]), ((0,), [0])]
)
def test_task_ids_are_node_ids(task_ids: object, expected: list[int]) -> None:
    assert check_task_ids(task_ids) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("task_ids", "message"),
    [
        ([-1], "not a node id"),
        ([True], "not a node id"),
        (["1"], "not a node id"),
        ([2**32], "not a node id"),
        ("12", "must be a list of node ids"),
        ([], "leave it out to cancel the whole dispatch"),
    ],
)
def test_task_ids_that_are_not_node_ids_are_refused_before_any_call(
    task_ids: object, message: str
) -> None:
    with pytest.raises(ct.SpecError, match=message):
        check_task_ids(task_ids)  # type: ignore[arg-type]


@ct.electron
def size(data: bytes) -> int:
    return len(data)


@ct.lattice
def measure(data: bytes, label: str) -> int:
    return size(data)


def test_a_large_argument_passed_to_a_task_is_kept_once_and_the_inputs_name_it() -> None:
    from cobalt._pickling import loads

    data = bytes(range(256)) * 1024  # 256 KiB: too large to go inline
    graph = measure.build_graph(data, label="x")
    req, large = build_request(graph)
    (param_sha,) = [sha for sha, blob in large.items() if len(blob) > len(data)]
    add_source(req, (measure, (data,), {"label": "x"}), large, graph)
    inputs_blob = next(p.data for p in req.payloads if p.sha256 == req.inputs_sha256)
    assert len(inputs_blob) < 1024, "the argument's bytes are not pickled a second time"
    fetched: list[str] = []

    def fetch(sha: str) -> bytes:
        fetched.append(sha)
        return large[sha]

    assert loads(inputs_blob, "inputs", fetch) == {"args": [data], "kwargs": {"label": "x"}}
    assert fetched == [param_sha]
