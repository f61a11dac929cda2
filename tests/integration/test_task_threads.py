"""A task's numeric libraries start as many threads as the CPUs it asked for.

Without that, torch in every task starts one thread per core of the machine, and
two tasks on a shared machine slow each other down several times over. Real
controller, real warm workers, real torch.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

import cobalt as ct
from cobalt_executors._runtime.worker import thread_limits

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import ControllerHome

pytestmark = pytest.mark.integration

ONE_WORKER = """\
[controller]
retry_backoff_s = 0.05

[executors.local]
type = "local"
workers = 1
cpus = 2
"""


def _threads() -> tuple[str, str, int]:
    import torch

    return (
        os.environ.get("OMP_NUM_THREADS", ""),
        os.environ.get("COBALT_CPUS", ""),
        (torch.get_num_threads()),
    )


@ct.electron(cpus=1)
def on_one() -> tuple[str, str, int]:
    return _threads()


@ct.electron(cpus=2)
def on_two() -> tuple[str, str, int]:
    return _threads()


@ct.electron(cpus=0.5)
def on_half() -> tuple[str, str, int]:
    return _threads()


@ct.lattice
def one_then_two() -> list[tuple[str, str, int]]:
    first = on_one()
    second = on_two()
    ct.wait(second, [first])
    third = on_half()
    ct.wait(third, [second])
    return [first, second, third]


@ct.lattice
def just_two() -> tuple[str, str, int]:
    return on_two()


def test_a_task_gets_as_many_threads_as_cpus_even_in_a_warm_worker_that_loaded_torch(
    make_controller_home: Callable[..., ControllerHome], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("two cores are needed to tell one thread from two")
    with make_controller_home(ONE_WORKER).serving():
        result = ct.dispatch_sync(one_then_two)()
    assert result.status == ct.Status.COMPLETED, result.error
    # One warm worker runs all three: the second finds torch loaded with one thread.
    assert result.result == [("1", "1", 1), ("2", "2", 2), ("1", "0.5", 1)]


def test_threads_an_operator_set_for_the_controller_are_left_alone(
    make_controller_home: Callable[..., ControllerHome], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with make_controller_home(ONE_WORKER).serving():
        result = ct.dispatch_sync(just_two)()
    assert result.status == ct.Status.COMPLETED, result.error
    assert result.result == ("1", "2", 1)


@pytest.mark.parametrize(
    ("task_env", "process_env", "expected"),
    [
        ({"COBALT_CPUS": "4"}, {}, "4"),
        ({"COBALT_CPUS": "1.9"}, {}, "1"),
        ({"COBALT_CPUS": "0.25"}, {}, "1"),
        ({"COBALT_CPUS": "100000"}, {}, str(len(os.sched_getaffinity(0)))),
        ({"COBALT_CPUS": "0"}, {}, None),
        ({"COBALT_CPUS": "nan"}, {}, None),
        ({"COBALT_CPUS": "-1"}, {}, None),
        ({"COBALT_CPUS": "lots"}, {}, None),
        ({}, {}, None),
        ({"COBALT_CPUS": "2", "OMP_NUM_THREADS": "7"}, {}, None),
        ({"COBALT_CPUS": "2"}, {"OMP_NUM_THREADS": "7"}, None),
    ],
)
def test_the_thread_count_follows_whole_cpus_and_yields_to_one_someone_chose(
    task_env: dict[str, str], process_env: dict[str, str], expected: str | None
) -> None:
    limits = thread_limits(task_env, process_env)
    if expected is None:
        assert limits == {}
    else:
        cores = str(min(int(expected), len(os.sched_getaffinity(0))))
        assert limits == dict.fromkeys(
            ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), cores
        )
    assert thread_limits({"COBALT_CPUS": "2"}, {"MKL_NUM_THREADS": "5"}).keys() == {
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
    }
