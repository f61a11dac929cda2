"""The stub executor passes the executor contract, and does what a test tells it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from executor_contract import CPUS, GPU, GPUS, MEMORY_MB, ExecutorContract, ExecutorHarness, Reports

from cobalt_common.errors import NotFoundError, SpecError
from cobalt_common.hardware import HardwareSpec
from cobalt_common.payloads import BlobLocation, blob_path
from cobalt_common.status import Status
from cobalt_executors import ExecutorContext, PayloadRef, TaskOutcome, TaskSubmission
from cobalt_executors.stub import StubExecutor

pytestmark = pytest.mark.unit


def _submission(key: str, hardware: HardwareSpec | None = None) -> TaskSubmission:
    return TaskSubmission(
        task_key=key,
        dispatch_id="d",
        node_id=0,
        name=f"task {key}",
        hardware=hardware or HardwareSpec(),
        function=PayloadRef("f" * 64, b"never unpickled", 15),
        args=[],
    )


class StubHarness(ExecutorHarness):
    """Tasks that return are completed by the stub's automatic mode; held ones
    wait for :meth:`let_finish`."""

    def __init__(self, tmp_path: Path) -> None:
        self.reports = Reports()
        self._plans: dict[str, tuple[bytes, str, bool]] = {}
        self.executor = self.stub = StubExecutor(
            "stub",
            {"cpus": CPUS, "memory": MEMORY_MB, "emulate_gpus": {GPU: GPUS}},
            auto=self._auto,
        )
        self.reports.executor = self.stub
        self.stub.setup(ExecutorContext(inline_limit=1024, report=self.reports))

    def _auto(self, task: TaskSubmission) -> bytes | None:
        output, raises, holds = self._plans[task.task_key]
        if holds:
            return None
        if raises:
            raise RuntimeError(raises)
        return output

    def task(
        self,
        key: str,
        hardware: HardwareSpec | None = None,
        *,
        returns: Any = None,
        raises: str = "",
        holds: bool = False,
        stored: bool = False,
    ) -> TaskSubmission:
        self._plans[key] = (cloudpickle.dumps(returns), raises, holds)
        submission = _submission(key, hardware)
        if stored:  # the stub never reads a payload, wherever it is
            submission.function = PayloadRef("f" * 64, None, 0, BlobLocation.directory("/nowhere"))
        return submission

    def let_finish(self, key: str) -> None:
        output, raises, _ = self._plans[key]
        if raises:
            self.stub.fail(key, raises)
        else:
            self.stub.complete(key, output)

    def output_bytes(self, outcome: TaskOutcome) -> bytes:
        assert outcome.output is not None and outcome.output.data is not None
        return outcome.output.data


class TestStubExecutorContract(ExecutorContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Iterator[ExecutorHarness]:
        harness = StubHarness(tmp_path)
        yield harness
        harness.stub.teardown()

    def test_a_held_task_the_test_lets_finish_after_a_cancel_raised_nothing(
        self, harness: ExecutorHarness
    ) -> None:
        harness.submit(harness.task("a", holds=True))
        harness.executor.cancel("a", "cancelled")
        with pytest.raises(NotFoundError, match="has already been reported"):
            harness.let_finish("a")
        assert harness.reports.keys() == ["a"]


@pytest.fixture
def outcomes() -> list[TaskOutcome]:
    return []


def _stub(
    outcomes: list[TaskOutcome], options: dict[str, Any] | None = None, **kw: Any
) -> StubExecutor:
    stub = StubExecutor("stub", options, **kw)
    stub.setup(ExecutorContext(inline_limit=1024, report=outcomes.append))
    return stub


def test_a_stub_completes_failed_and_cancelled_tasks_only_when_told(
    outcomes: list[TaskOutcome],
) -> None:
    stub = _stub(outcomes)
    for key in "abc":
        assert stub.try_submit(_submission(key)) is not None
    assert stub.running() == ["a", "b", "c"] and outcomes == []
    done = stub.complete("a", b"output", stdout="printed")
    failed = stub.fail("b", "Traceback: boom", reason="killed")
    stub.cancel("c", "cancelled")
    assert [(o.task_key, o.status, o.reason) for o in outcomes] == [
        ("a", Status.COMPLETED, ""),
        ("b", Status.FAILED, "killed"),
        ("c", Status.CANCELLED, "cancelled"),
    ]
    assert outcomes[:2] == [done, failed] == stub.reported[:2]
    assert done.output is not None and (done.output.data, done.output.size) == (b"output", 6)
    assert done.stdout == "printed" and failed.error == "Traceback: boom"
    assert stub.cancels == [("c", "cancelled")] and stub.running() == []


def test_ending_a_task_that_is_not_running_names_what_runs(outcomes: list[TaskOutcome]) -> None:
    stub = _stub(outcomes)
    stub.try_submit(_submission("a"))
    with pytest.raises(NotFoundError, match=r"'zz' .* was never submitted; running tasks: a\."):
        stub.complete("zz")
    stub.complete("a")
    with pytest.raises(NotFoundError, match=r"'a' .* has already been reported"):
        stub.fail("a")


def test_real_and_emulated_gpus_are_labelled_with_their_model(outcomes: list[TaskOutcome]) -> None:
    stub = _stub(outcomes, {"gpus": {"h100": 1}, "emulate_gpus": {"a100": 2}})
    real = stub.try_submit(_submission("r", HardwareSpec(gpu="h100", gpus=1)))
    emulated = stub.try_submit(_submission("e", HardwareSpec(gpu="a100-40gb", gpus=2)))
    assert real is not None and emulated is not None
    assert (real.gpu, real.gpu_indices, real.emulated) == ("h100", (0,), False)
    assert (emulated.gpu, emulated.gpu_indices, emulated.emulated) == ("a100-40gb", (1, 2), True)
    assert stub.given("e") == emulated
    assert stub.describe() == ("4 CPU, 16 GB, 2x a100-40gb (emulated), 1x h100", "2 CPU, 16 GB")


def test_unknown_options_and_bad_gpu_tables_are_refused_with_what_is_accepted() -> None:
    with pytest.raises(SpecError, match="accepted options are: cpus, emulate_gpus, gpus, memory"):
        StubExecutor("s", {"workers": 2})
    with pytest.raises(SpecError, match=r"gpus must be a table such as \{h100 = 2\}"):
        StubExecutor("s", {"gpus": "h100"})
    with pytest.raises(SpecError, match="h1000"):
        StubExecutor("s", {"emulate_gpus": {"h1000": 1}})


def test_the_automatic_mode_completes_with_bytes_or_with_what_a_callable_decides(
    outcomes: list[TaskOutcome],
) -> None:
    stub = _stub(outcomes, auto=b"same for all")
    stub.try_submit(_submission("a"))
    assert outcomes[-1].output is not None and outcomes[-1].output.data == b"same for all"

    def decide(task: TaskSubmission) -> bytes | None:
        if task.task_key == "fails":
            raise ValueError("decided to fail")
        return None if task.task_key == "holds" else task.task_key.encode()

    stub.set_auto(decide)
    for key in ("b", "fails", "holds"):
        stub.try_submit(_submission(key))
    assert [(o.task_key, o.status) for o in outcomes] == [
        ("a", Status.COMPLETED),
        ("b", Status.COMPLETED),
        ("fails", Status.FAILED),
    ]
    assert outcomes[1].output is not None and outcomes[1].output.data == b"b"
    assert "ValueError: decided to fail" in outcomes[2].error and outcomes[2].reason == "exception"
    assert stub.running() == ["holds"]
    stub.set_auto(None)
    stub.try_submit(_submission("c"))
    assert stub.running() == ["holds", "c"]


def test_a_stub_records_what_it_accepted_and_refused(outcomes: list[TaskOutcome]) -> None:
    stub = _stub(outcomes, {"cpus": 1})
    stub.try_submit(_submission("fits"))
    stub.try_submit(_submission("waits"))
    stub.complete("fits")
    assert [t.task_key for t in stub.submitted] == ["fits"]
    assert [t.task_key for t in stub.refused] == ["waits"]


def test_waiting_for_submissions_returns_once_another_thread_submitted_them(
    outcomes: list[TaskOutcome],
) -> None:
    stub = _stub(outcomes)
    threading.Timer(0.05, lambda: stub.try_submit(_submission("later"))).start()
    assert [t.task_key for t in stub.wait_submitted(1, timeout=5)] == ["later"]
    with pytest.raises(TimeoutError, match="accepted 1 task"):
        stub.wait_submitted(2, timeout=0.05)


def test_a_large_output_goes_where_a_worker_would_put_it(tmp_path: Path) -> None:
    large, small = b"x" * 2048, b"y" * 16
    outcomes: list[TaskOutcome] = []
    stub = StubExecutor("stub")
    location = BlobLocation.directory(tmp_path)
    stub.setup(ExecutorContext(inline_limit=1024, report=outcomes.append, output_location=location))
    for key in ("large", "small"):
        stub.try_submit(_submission(key))
    stored, inline = stub.complete("large", large).output, stub.complete("small", small).output
    assert stored is not None and inline is not None
    assert (stored.data, stored.size, stored.location) == (None, 2048, location)
    assert blob_path(tmp_path, stored.sha256).read_bytes() == large
    assert (inline.data, inline.location) == (small, None)


def test_a_large_output_stays_inline_where_workers_cannot_write(
    outcomes: list[TaskOutcome],
) -> None:
    stub = _stub(outcomes)
    stub.try_submit(_submission("large"))
    output = stub.complete("large", b"x" * 2048).output
    assert output is not None and output.data == b"x" * 2048
