"""What goes wrong, and how it is reported: refused dispatches, remote failures, retries."""

from __future__ import annotations

import inspect
import json
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import cobalt as ct
from cobalt._runtime.task import TaskCallable

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import ControllerHome

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("controller_home")]


@ct.electron
def double(x: int) -> int:
    return x * 2


# -- refused at dispatch: nothing is registered -------------------------------------


@ct.electron(gpu="b200")
def needs_b200(x: int) -> int:
    return x


@ct.lattice
def b200_flow(x: int) -> int:
    return double(needs_b200(x))


@ct.electron(cpus=10_000)
def needs_many_cpus(x: int) -> int:
    return x


@ct.lattice
def many_cpus_flow(x: int) -> int:
    return needs_many_cpus(x)


@pytest.mark.parametrize(
    ("flow", "asked"),
    [(b200_flow, "1x B200"), (many_cpus_flow, "10000 CPUs")],
    ids=["gpu-b200", "cpus-10000"],
)
def test_a_spec_no_executor_can_satisfy_fails_at_dispatch_and_registers_nothing(
    flow: ct.Lattice[..., Any], asked: str, registered_dispatches: Callable[[], set[str]]
) -> None:
    before = registered_dispatches()
    with pytest.raises(ct.UnsatisfiableError) as info:
        ct.dispatch(flow)(1)
    message = str(info.value)
    assert asked in message
    assert "local (" in message and "gpu (" in message, "the configured executors are listed"
    assert "2x h100 (emulated)" in message
    assert registered_dispatches() == before


@ct.electron(gpu="h100", gpus=3)
def needs_three_h100s(x: int) -> int:
    return x


@ct.lattice
def three_h100_flow(x: int) -> int:
    return needs_three_h100s(x)


def test_asking_for_more_gpus_than_any_executor_has_says_how_many_there_are() -> None:
    with pytest.raises(ct.UnsatisfiableError) as info:
        ct.dispatch(three_h100_flow)(1)
    message = str(info.value)
    assert "3x H100" in message
    assert "The most h100 GPUs any of them has is 2." in message
    assert "emulate_gpus" not in message, "no advice to emulate what the executors have"


class Model:
    def __init__(self) -> None:
        self.weights = [1.0, 2.0]
        self._lock = threading.Lock()


class Pipeline:
    def __init__(self) -> None:
        self.name = "pipeline"
        self.model = Model()


@ct.electron
def run_pipeline(pipeline: Pipeline) -> str:
    return pipeline.name


@ct.lattice
def pipeline_flow(pipeline: Pipeline) -> str:
    return run_pipeline(pipeline)


def test_an_unpicklable_argument_fails_at_dispatch_naming_its_path(
    registered_dispatches: Callable[[], set[str]],
) -> None:
    before = registered_dispatches()
    with pytest.raises(ct.PicklingError) as info:
        ct.dispatch(pipeline_flow)(Pipeline())
    message = str(info.value)
    assert "args[0].model._lock is a lock" in message
    assert "task 'run_pipeline'" in message
    assert isinstance(info.value, ct.DispatchError)
    assert registered_dispatches() == before


@ct.lattice
def calls_double_wrongly(x: int) -> int:
    return double(x, 3)  # type: ignore[call-arg]


@ct.lattice
def calls_double_without_argument() -> int:
    return double()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("flow", "args", "detail"),
    [
        (calls_double_wrongly, (1,), "too many positional arguments"),
        (calls_double_without_argument, (), "missing a required argument: 'x'"),
        (pipeline_flow, (), "missing a required argument: 'pipeline'"),
    ],
    ids=["extra-argument", "missing-argument", "lattice-missing-argument"],
)
def test_a_wrong_call_fails_while_building_and_registers_nothing(
    flow: ct.Lattice[..., Any],
    args: tuple[Any, ...],
    detail: str,
    registered_dispatches: Callable[[], set[str]],
) -> None:
    before = registered_dispatches()
    with pytest.raises(ct.GraphError, match=detail):
        ct.dispatch(flow)(*args)
    assert registered_dispatches() == before


# -- remote failures -----------------------------------------------------------------


@ct.electron
def explode(x: int) -> int:
    raise ValueError(f"bad input {x}")


@ct.electron
def independent(x: int) -> int:
    return x + 100


@ct.lattice
def partly_failing(x: int) -> dict[str, int]:
    failed = explode(x)
    return {"failed": double(double(failed)), "fine": independent(x)}


def test_an_exception_fails_its_task_skips_dependants_and_spares_other_branches() -> None:
    result = ct.dispatch_sync(partly_failing, raise_on_failure=False)(7)
    assert result.status == ct.Status.FAILED
    assert result.result is None
    statuses = {(t.name, t.status) for t in result.tasks}
    assert statuses == {
        ("explode", ct.Status.FAILED),
        ("double", ct.Status.SKIPPED),
        ("independent", ct.Status.COMPLETED),
    }
    skipped = [t for t in result.tasks if t.status == ct.Status.SKIPPED]
    assert len(skipped) == 2 and all(t.start_time is None for t in skipped)
    fine = next(t for t in result.tasks if t.name == "independent")
    assert result.get_node_result(fine.node_id)["output"] == 107


def test_a_remote_exception_raises_in_the_caller_with_the_users_traceback() -> None:
    with pytest.raises(ct.TaskFailedError) as info:
        ct.dispatch_sync(partly_failing)(7)
    exc = info.value
    result = exc.result
    assert isinstance(result, ct.Result) and result.status == ct.Status.FAILED
    failed = next(t for t in result.tasks if t.name == "explode")
    assert (exc.task_name, exc.node_id, exc.reason) == ("explode", failed.node_id, "exception")
    assert exc.dispatch_id == result.dispatch_id
    texts = (str(exc), exc.remote_traceback, result.error, failed.error)
    for text in (*texts, result.get_node_result(failed.node_id)["error"]):
        assert "Traceback (most recent call last)" in text
        assert "ValueError: bad input 7" in text
        assert 'raise ValueError(f"bad input {x}")' in text
        assert "in explode" in text and "test_failures.py" in text
        assert "cobalt_executors" not in text and inspect.getfile(TaskCallable) not in text
    assert f"task 'explode' (node {failed.node_id})" in str(exc)
    assert "raised an exception" in str(exc)
    assert f"rerun_locally({failed.node_id})" in str(exc)
    assert failed.reason == "exception"
    assert failed.attempts == 1


@ct.electron
def chatty_failure(lines: int) -> None:
    import sys

    for i in range(lines):
        print(f"step {i}")
    print("warning: loss is nan", file=sys.stderr)
    raise FloatingPointError("loss diverged")


@ct.lattice
def chatty(lines: int) -> None:
    return chatty_failure(lines)


def test_the_exception_carries_the_last_20_lines_of_stdout_and_stderr() -> None:
    with pytest.raises(ct.TaskFailedError) as info:
        ct.dispatch_sync(chatty)(30)
    message = str(info.value)
    assert "--- last 20 lines of its stdout ---" in message
    assert "step 29" in message and "step 10" in message and "step 9\n" not in message
    assert info.value.stdout.splitlines() == [f"step {i}" for i in range(10, 30)]
    assert "warning: loss is nan" in info.value.stderr and "its stderr" in message
    assert "FloatingPointError: loss diverged" in message


def test_get_result_raises_only_when_asked() -> None:
    dispatch_id = ct.dispatch(partly_failing)(7)
    result = ct.get_result(dispatch_id, wait=True)
    assert result.status == ct.Status.FAILED
    with pytest.raises(ct.TaskFailedError, match="task 'explode'"):
        ct.get_result(dispatch_id, wait=True, raise_on_failure=True)


@ct.electron
def scale(values: list[int], factor: int = 1) -> list[int]:
    if sum(values) > 10:
        raise ValueError(f"too large: {sum(values)}")
    return [v * factor for v in values]


@ct.electron
def make_values(n: int) -> list[int]:
    return list(range(n))


@ct.lattice
def scaled(n: int) -> list[int]:
    return scale(make_values(n), factor=3)


def test_a_failed_task_reruns_locally_with_the_inputs_it_received() -> None:
    with pytest.raises(ct.TaskFailedError) as info:
        ct.dispatch_sync(scaled)(6)
    exc = info.value
    with pytest.raises(ValueError, match="too large: 15") as local:
        exc.result.rerun_locally(exc.node_id)
    frames = [f.name for f in traceback.extract_tb(local.value.__traceback__)]
    assert frames[-1] == "scale", "the exception comes from the user's own function, here"
    made = next(t for t in exc.result.tasks if t.name == "make_values")
    assert (made.node_id, exc.node_id) == (0, 2), "numbered as Covalent numbers them"
    assert exc.result.rerun_locally(made.node_id) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ct.NotFoundError, match="is a parameter, not an electron"):
        exc.result.rerun_locally(1)  # n=6, made after make_values


@ct.electron(retries=2)
def flaky_twice(counter: str) -> int:
    path = Path(counter)
    attempt = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt < 3:
        raise RuntimeError(f"attempt {attempt} failed")
    return attempt


@ct.lattice
def flaky_flow(counter: str) -> int:
    return flaky_twice(counter)


@ct.lattice
def flaky_flow_one_retry(counter: str) -> int:
    return ct.electron(flaky_twice.function, retries=1)(counter)


def test_a_task_that_fails_twice_completes_on_its_third_attempt(tmp_path: Path) -> None:
    result = ct.dispatch_sync(flaky_flow)(str(tmp_path / "counter"))
    assert result.status == ct.Status.COMPLETED, result.error
    assert result.result == 3
    (task,) = result.tasks
    assert task.attempts == 3
    assert task.error == "" and task.status == ct.Status.COMPLETED


def test_a_task_that_runs_out_of_retries_fails_with_its_last_error(tmp_path: Path) -> None:
    result = ct.dispatch_sync(flaky_flow_one_retry, raise_on_failure=False)(
        str(tmp_path / "counter")
    )
    assert result.status == ct.Status.FAILED
    (task,) = result.tasks
    assert task.attempts == 2
    assert "RuntimeError: attempt 2 failed" in task.error
    assert (tmp_path / "counter").read_text() == "2"


# -- the controller is missing or the id is wrong -------------------------------------


def test_an_unknown_dispatch_id_is_not_found() -> None:
    with pytest.raises(ct.NotFoundError, match="no-such-id"):
        ct.get_result("no-such-id")
    with pytest.raises(ct.NotFoundError):
        ct.get_result("no-such-id", wait=1)
    with pytest.raises(ct.NotFoundError):
        ct.cancel("no-such-id")


def test_get_result_from_a_stopped_controller_says_how_to_start_one(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    home = make_controller_home()
    home.start()
    dispatch_id = ct.dispatch(calls_double_once)(2)
    assert ct.get_result(dispatch_id, wait=30).result == 4
    home.stop()
    with pytest.raises(ct.ControllerUnavailableError) as info:
        ct.get_result(dispatch_id)
    assert "cobalt controller start" in str(info.value)
    assert str(home.path) in str(info.value)


def test_a_controller_that_died_without_cleaning_up_is_reported_unavailable(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    home = make_controller_home()
    (home.path / "controller.json").write_text(
        json.dumps({"address": "127.0.0.1:1", "pid": 0, "token": "stale"})
    )
    with pytest.raises(ct.ControllerUnavailableError) as info:
        ct.get_result("any-id")
    assert "127.0.0.1:1" in str(info.value)
    assert "cobalt controller start" in str(info.value)


@ct.lattice
def calls_double_once(x: int) -> int:
    return double(x)


def test_a_dispatch_id_chosen_by_the_client_must_be_new_and_well_formed() -> None:
    from cobalt import _client
    from cobalt._submit import build_request
    from cobalt_common.v1 import controller_pb2 as pb

    client = _client.get_client()
    req, _ = build_request(partly_failing.build_graph(1))
    for bad in ("not-hex", "A" * 32, "0" * 31):
        req.dispatch_id = bad
        with pytest.raises(ct.DispatchError, match="32 lowercase hex digits"):
            client.call(client.stub.DispatchCreate, req)
    req.dispatch_id = "ab" * 16
    created = client.call(client.stub.DispatchCreate, req)
    assert created.dispatch_id == "ab" * 16
    with pytest.raises(ct.DispatchError, match="already exists"):
        client.call(client.stub.DispatchCreate, req)
    assert isinstance(created, pb.DispatchCreateResponse)


@ct.electron
def errors_as_values() -> list[Exception]:
    return [
        ct.EndpointError("classify: busy", status_code=503, retry_after=2.0),
        ct.TaskFailedError("task 'fit' was killed", node_id=4, reason="killed"),
    ]


@ct.lattice
def returns_errors() -> list[Exception]:
    return errors_as_values()


@ct.electron
def refuses(gpu: str) -> None:
    raise ct.SpecError(f"gpu={gpu!r} is not a GPU type")


@ct.lattice
def raises_a_cobalt_error() -> None:
    return refuses("tpu")


def test_errors_a_worker_pickles_arrive_in_the_notebook_with_their_attributes() -> None:
    busy, killed = ct.dispatch_sync(returns_errors)().result
    assert type(busy) is ct.EndpointError
    assert (busy.args, busy.status_code, busy.retry_after) == (("classify: busy",), 503, 2.0)
    assert type(killed) is ct.TaskFailedError
    assert (killed.node_id, killed.reason) == (4, "killed")


def test_a_cobalt_error_raised_in_a_task_is_named_as_cobalt_in_its_traceback() -> None:
    with pytest.raises(ct.TaskFailedError) as info:
        ct.dispatch_sync(raises_a_cobalt_error)()
    assert "cobalt.SpecError: gpu='tpu' is not a GPU type" in info.value.remote_traceback
    assert "cobalt_common" not in info.value.remote_traceback
