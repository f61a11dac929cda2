"""Workflows as Covalent's own functional tests write them, run on a real controller.

Each test is a behaviour Covalent's suite checks (nested collections,
sublattices, hooks, positional and keyword arguments, logs, failures,
``ct.wait`` by node id, lookups, list and dict arguments), written with
``import cobalt as ct`` and read back through Covalent's ``Result`` API:
``ct.get_result(..., wait=True)``, ``get_node_result``,
``get_all_node_results`` and the status constants.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import cobalt as ct
from cobalt import Result

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("controller_home")]


def run(lattice: Any, *args: Any, **kwargs: Any) -> Result:
    """Covalent's pattern: dispatch, then wait for the result."""
    return ct.get_result(ct.dispatch(lattice)(*args, **kwargs), wait=True)


@ct.electron
def identity(a: Any) -> Any:
    return a


@ct.electron
def collect(items: Any) -> Any:
    return items


def test_an_electron_outside_a_lattice_is_the_plain_function() -> None:
    @ct.electron
    def add(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3


def test_electrons_take_nested_lists_of_outputs_by_keyword() -> None:
    @ct.lattice
    def workflow() -> Any:
        first = [identity(a=i) for i in range(5)]
        second = [identity(a=i) for i in range(5, 10)]
        return collect(items=[first, second])

    assert run(workflow).result == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_a_lattice_called_as_an_electron_is_a_sublattice_with_its_own_result() -> None:
    def add(a: int, b: int) -> int:
        return a + b

    sublattice_add = ct.lattice(add)

    @ct.lattice
    def workflow(a: int, b: int) -> Any:
        return identity(a=ct.electron(sublattice_add)(a=a, b=b))

    result = run(workflow, a=1, b=2)
    assert result.error is None
    assert result.status == Result.COMPLETED
    assert result.result == 3
    # The sublattice is called first (it is identity's argument), so it is node 0.
    assert result.get_node_result(node_id=0)["sublattice_result"].result == 3
    assert result.get_node_result(node_id=1)["sublattice_result"] is None


def test_a_lattice_of_an_electron_runs_that_electron() -> None:
    @ct.lattice
    @ct.electron
    def square(x: int) -> int:
        return x * x

    result = run(square, 7)
    assert result.status == "COMPLETED" and result.result == 49
    assert result.get_node_result(0)["node_name"] == "square"


def test_deps_bash_runs_before_the_task(tmp_path: Path) -> None:
    marker = tmp_path / "made-by-bash"

    @ct.electron(deps_bash=ct.DepsBash([f"touch {marker}"]))
    def task(x: int) -> int:
        return x

    @ct.electron(deps_bash=[f"echo implicit > {marker}.2"])
    def implicit(x: int) -> int:
        return x

    @ct.lattice
    def workflow(x: int) -> Any:
        return task(x), implicit(x)

    assert run(workflow, x=5).result == (5, 5)
    assert marker.is_file() and Path(f"{marker}.2").read_text() == "implicit\n"


def _create(path: str, **_: Any) -> None:
    Path(path).write_text("Hello")


def _delete(path: str) -> None:
    Path(path).unlink()


def test_call_before_and_call_after_wrap_the_task(tmp_path: Path) -> None:
    path = str(tmp_path / "scratch")

    @ct.electron(
        call_before=[ct.DepsCall(_create, args=[path])],
        call_after=ct.DepsCall(_delete, args=[path]),
    )
    def read(file_path: str) -> tuple[bool, str]:
        return Path(file_path).is_file(), Path(file_path).read_text()

    @ct.lattice
    def workflow(file_path: str) -> Any:
        return read(file_path)

    result = run(workflow, file_path=path)
    assert result.error is None
    assert result.result == (True, "Hello")
    assert not Path(path).exists()


def _same(y: Any) -> Any:
    return y


def test_a_call_before_value_is_injected_by_keyword() -> None:
    @ct.electron(call_before=[ct.DepsCall(_same, args=[5], retval_keyword="y")])
    def task(x: int, y: int = 0) -> tuple[int, int]:
        return x, y

    @ct.electron(call_before=[ct.DepsCall(_same, args=[i], retval_keyword="y") for i in (1, 2, 3)])
    def several(y: Any = None) -> Any:
        return y

    @ct.lattice
    def workflow(x: int) -> Any:
        return task(x), several()

    assert run(workflow, 2).result == ((2, 5), [1, 2, 3])


def test_positional_and_keyword_arguments_mix_in_lattices_and_electrons() -> None:
    @ct.electron
    def five(a: int, b: int, c: int, d: int, e: int) -> int:
        return a + b + c + d + e

    @ct.lattice
    def workflow(a: int, b: int, c: int) -> Any:
        return five(a, b, c, d=4, e=5)

    assert run(workflow, 1, 2, c=3).result == 15


def test_every_kind_of_parameter_passes_through() -> None:
    @ct.electron
    def task(a: int, /, b: int, *args: int, c: int, **kwargs: int) -> Any:
        return a * b * c, args, kwargs

    @ct.lattice
    def workflow(a: int, /, b: int, *args: int, c: int, **kwargs: int) -> Any:
        return task(a, b, *args, c=c, **kwargs)

    result = run(workflow, 1, 2, 3, 4, c=5, d=6, e=7)
    assert result.result == (10, (3, 4), {"d": 6, "e": 7})
    assert list(result.inputs["args"]) == [1, 2, 3, 4]
    assert result.inputs["kwargs"] == {"c": 5, "d": 6, "e": 7}


def test_stdout_and_stderr_are_in_the_node_results() -> None:
    @ct.electron
    def noisy(a: int, b: int) -> int:
        print(a)
        print(b, file=sys.stderr)
        return a + b

    @ct.lattice
    def workflow(a: int, b: int) -> Any:
        return noisy(a, b)

    nodes = run(workflow, 1, 2).get_all_node_results()
    assert [n["stdout"] for n in nodes if n["stdout"]] == ["1\n"]
    assert [n["stderr"] for n in nodes if n["stderr"]] == ["2\n"]


def test_an_already_decorated_function_runs() -> None:
    def wrapper(func: Any) -> Any:
        def inner(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

        return inner

    @ct.electron
    @wrapper
    def task(x: int) -> int:
        return x**2

    @ct.lattice
    def workflow() -> Any:
        return task(x=5)

    result = run(workflow)
    assert result.status == Result.COMPLETED and result.result == 25


def test_a_failed_leaf_or_intermediate_task_fails_the_dispatch() -> None:
    @ct.electron
    def failing(x: int = 0) -> int:
        raise AssertionError("no")

    @ct.lattice
    def leaf() -> int:
        failing()
        return 1

    @ct.lattice
    def intermediate(x: int) -> Any:
        return failing(failing(x))

    for result in (run(leaf), run(intermediate, 5)):
        assert result.status == Result.FAILED
        assert result.get_node_result(0)["status"] == Result.FAILED
        assert "AssertionError" in result.get_node_result(0)["error"]
        assert result.result is None
    assert run(intermediate, 5).get_node_result(2)["status"] == ct.status.SKIPPED


def test_wait_orders_tasks_by_covalents_node_ids() -> None:
    @ct.electron
    def task_1a(a: int) -> int:
        return a**2

    @ct.electron
    def task_1b(a: int) -> int:
        return a**3

    @ct.electron
    def task_2(x: int, y: int) -> int:
        return x * y

    @ct.electron
    def task_3(b: int) -> int:
        return b**3

    @ct.lattice
    def workflow() -> Any:
        res_1a = task_1a(2)
        res_1b = task_1b(2)
        res_2 = task_2(res_1a, 3)
        res_3 = ct.wait(task_3(5), [res_1a, res_1b])
        return task_2(res_2, res_3)

    result = run(workflow)
    assert result.status == Result.COMPLETED and result.result == 1500
    nodes = {i: result.get_node_result(node_id=i) for i in (0, 2, 6)}
    assert [nodes[i]["node_name"] for i in (0, 2, 6)] == ["task_1a", "task_1b", "task_3"]
    assert nodes[6]["start_time"] >= nodes[0]["end_time"]
    assert nodes[6]["start_time"] >= nodes[2]["end_time"]
    assert workflow() == 1500  # called directly, the lattice is the plain function


def test_outputs_are_indexed_by_literals_and_by_other_outputs() -> None:
    @ct.electron
    def create_array() -> list[int]:
        return [0, 1, 2, 3, 4, 5]

    @ct.lattice
    def by_literal() -> Any:
        return create_array()[2]

    @ct.lattice
    def by_output() -> Any:
        return create_array()[identity(2)]

    assert run(by_literal).result == 2
    assert run(by_output).result == 2


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


def test_attributes_of_outputs_take_part_in_arithmetic() -> None:
    @ct.electron
    def create_point() -> Point:
        return Point(3, 4)

    @ct.lattice
    def workflow() -> Any:
        point = create_point()
        return point.x * point.x + point.y * point.y

    assert run(workflow).result == 25


def test_lists_and_dicts_with_any_keys_are_lattice_arguments() -> None:
    @ct.electron
    def total(values: Any) -> int:
        return sum(values.values() if isinstance(values, dict) else values)

    @ct.electron
    def square(x: int) -> int:
        return x * x

    @ct.lattice
    def workflow(x: Any) -> Any:
        return square(total(x))

    assert run(workflow, [1, 2, 3]).result == 36
    assert run(workflow, {"x": 1, "y": 2, 3: 3}).result == 36


def test_fan_out_and_in_over_a_hundred_tasks() -> None:
    @ct.electron
    def square(x: int) -> int:
        return x * x

    @ct.lattice
    def workflow(n: int) -> Any:
        return collect([square(i) for i in range(n)])

    result = run(workflow, 100)
    assert result.result == [i * i for i in range(100)]
    assert len([t for t in result.tasks if t.name == "square"]) == 100


@ct.electron
def sum_task(x: int, y: int) -> int:
    return x + y


@ct.electron
def mult_task(x: int, y: int) -> int:
    return x * y


@ct.electron
def square_task(x: int) -> int:
    return x * x


@ct.electron
def cube_task(x: int) -> int:
    return x**3


@ct.lattice
def sum_then_square(x: int, y: int) -> Any:
    return square_task(sum_task(x, y))


def test_redispatch_replaces_electrons_by_name_and_takes_new_arguments() -> None:
    dispatch_id = ct.dispatch(sum_then_square)(2, 3)
    assert ct.get_result(dispatch_id, wait=True).result == 25

    def again(**kwargs: Any) -> Any:
        def call(*args: Any) -> Any:
            return ct.get_result(ct.redispatch(dispatch_id, **kwargs)(*args), wait=True).result

        return call

    assert again(replace_electrons={"square_task": cube_task})() == 125
    assert again(replace_electrons={"sum_task": mult_task})() == 36
    assert again(replace_electrons={"sum_task": mult_task})(2, 5) == 100
    assert again()(2, 5) == 49


def test_redispatch_reuses_what_did_not_change_as_covalent_marks_it() -> None:
    dispatch_id = ct.dispatch(sum_then_square)(2, 3)
    assert ct.get_result(dispatch_id, wait=True).result == 25

    replaced = ct.redispatch(
        dispatch_id, replace_electrons={"square_task": cube_task}, reuse_previous_results=True
    )()
    result = ct.get_result(replaced, wait=True)
    assert result.result == 125
    reused = result.get_node_result(0)  # sum_task: not run again
    assert reused["node_name"] == "sum_task"
    assert reused["start_time"] == reused["end_time"]

    same = ct.get_result(ct.redispatch(dispatch_id, reuse_previous_results=True)(), wait=True)
    assert same.result == 25
    for node in same.get_all_node_results():
        if node["node_name"] in ("sum_task", "square_task"):
            assert node["start_time"] == node["end_time"], node["node_name"]


def test_redispatch_with_reuse_and_new_arguments_repairs_a_failed_dispatch() -> None:
    @ct.electron
    def task_1(x: int) -> int:
        return x

    @ct.electron
    def divide(x: int, y: int) -> float:
        return x / y

    @ct.lattice
    def failing(x: int, y: int) -> Any:
        return divide(task_1(x), y)

    dispatch_id = ct.dispatch(failing)(1, 0)
    first = ct.get_result(dispatch_id, wait=True)
    assert first.status == "FAILED" and first.result is None

    fixed = ct.get_result(
        ct.redispatch(dispatch_id=dispatch_id, reuse_previous_results=True)(1, 1), wait=True
    )
    assert fixed.status == "COMPLETED" and int(fixed.result) == 1
    task = fixed.get_node_result(0)
    assert task["node_name"] == "task_1" and task["start_time"] == task["end_time"]


def test_a_redispatch_leaves_the_earlier_outputs_as_they_were(tmp_path: Path) -> None:
    @ct.lattice
    @ct.electron
    def read_from_file(filename: str) -> str:
        return Path(filename).read_text()

    path = tmp_path / "impure"
    path.write_text("run_1")
    dispatch_id = ct.dispatch(read_from_file)(str(path))
    assert ct.get_result(dispatch_id, wait=True).result == "run_1"

    path.write_text("run_2")
    again = ct.get_result(ct.redispatch(dispatch_id, reuse_previous_results=False)(), wait=True)
    assert again.status == "COMPLETED" and again.result == "run_2"

    original = ct.get_result(dispatch_id)
    assert original.get_node_result(0)["output"] == "run_1"
    assert original.result == "run_1"


def test_one_task_of_a_running_workflow_is_cancelled_by_its_node_id() -> None:
    @ct.electron
    def slow(x: int) -> int:
        import time

        time.sleep(60)
        return x

    @ct.electron
    def quick(x: int) -> int:
        return x + 1

    @ct.lattice
    def workflow() -> Any:
        return slow(1), quick(1)

    dispatch_id = ct.dispatch(workflow)()
    ct.cancel(dispatch_id, task_ids=[0])
    result = ct.get_result(dispatch_id, wait=30)
    assert result.status == ct.status.CANCELLED
    assert result.get_node_result(0)["status"] == ct.status.CANCELLED
    quick_node = [n for n in result.get_all_node_results() if n["node_name"] == "quick"]
    assert quick_node[0]["status"] == ct.status.COMPLETED and quick_node[0]["output"] == 2
