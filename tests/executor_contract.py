"""The contract every executor passes, whatever runs its tasks.

:class:`ExecutorContract` holds the tests; an executor joins by subclassing it
in a test module of its tier with one fixture, ``harness``, that yields an
:class:`ExecutorHarness` around a set-up executor of the contract's size::

    class TestMyExecutorContract(ExecutorContract):
        @pytest.fixture
        def harness(self, tmp_path: Path) -> Iterator[ExecutorHarness]:
            with MyHarness(tmp_path) as h:   # builds MyExecutor, sets it up
                yield h

The executor must have exactly :data:`CPUS` CPUs, :data:`MEMORY_MB` of memory
and :data:`GPUS` emulated GPUs of type :data:`GPU` (and no other GPU of that
type). The harness says how a task is made to return, raise or hold until the
test lets it go; everything else (what the executor reports, and when) is
observed through its ``report`` callback. An executor that can queue tasks
ahead of their room (the remote executors' ``prefetch``) joins with that off,
since the contract checks that a full executor refuses. An executor whose room
comes on demand (a Slurm executor has none until a pilot job runs) is brought to
the contract's size by its harness before a test begins, as a scheduler would:
by offering a task of the whole size, which starts the room it then has.

Members today: the stub executor (tests/unit/test_stub_executor.py, no
processes), the local executor (tests/integration/test_local_executor_contract.py,
real worker processes running pickled functions), and the remote ones, whose
agents run that local executor: agents attached over gRPC
(tests/integration/test_agents_executor_contract.py), the SSH executor
(tests/integration/test_ssh_executor_contract.py), the Slurm executor, whose
agent runs in an ``sbatch`` pilot on a real cluster of the contract's size
(tests/integration/test_slurm_executor_contract.py), the Kubernetes executor, whose
agent runs in a pilot pod of the fake API server (tests/kube_fake;
tests/integration/test_kubernetes_executor_contract.py), and the Dask and Ray
executors on real loopback clusters.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any

import cloudpickle

from cobalt_common.hardware import HardwareSpec
from cobalt_common.status import Status
from cobalt_executors import Allocation, Executor, TaskOutcome, TaskSubmission
from cobalt_executors._runtime.payloads import read_payload, to_wire

CPUS = 4.0
MEMORY_MB = 8192
GPU = "l4"
GPUS = 2
WAIT_S = 30.0
QUIET_S = 0.3
"""How long a test listens after the last expected outcome for one reported twice."""


class Reports:
    """The ``report`` callback of a contract executor: every outcome, and what
    the executor had free when it was reported."""

    def __init__(self) -> None:
        self.executor: Executor | None = None
        self.outcomes: list[TaskOutcome] = []
        self.free_cpus_at_report: dict[str, float] = {}
        self._changed = threading.Condition()

    def __call__(self, outcome: TaskOutcome) -> None:
        free = self.executor.inventory().free_now()[0] if self.executor is not None else -1.0
        with self._changed:
            self.outcomes.append(outcome)
            self.free_cpus_at_report.setdefault(outcome.task_key, free)
            self._changed.notify_all()

    def wait(
        self, *keys: str, timeout: float = WAIT_S, quiet: float = QUIET_S
    ) -> dict[str, TaskOutcome]:
        """The first outcome of each key, once all have one; then listens a while
        longer and fails if any key was reported twice."""

        def arrived() -> bool:
            return set(keys) <= {o.task_key for o in self.outcomes}

        with self._changed:
            if not self._changed.wait_for(arrived, timeout):
                seen = sorted({o.task_key for o in self.outcomes})
                raise AssertionError(f"no outcome in {timeout:g}s for {sorted(keys)}; got {seen}")
        time.sleep(quiet)
        self.assert_once()
        with self._changed:
            return {o.task_key: o for o in self.outcomes if o.task_key in keys}

    def assert_once(self) -> None:
        with self._changed:
            twice = [k for k, n in Counter(o.task_key for o in self.outcomes).items() if n > 1]
        assert not twice, f"reported more than once: {twice}"

    def keys(self) -> list[str]:
        with self._changed:
            return [o.task_key for o in self.outcomes]


class ExecutorHarness(ABC):
    """One executor under the contract, and how its tasks are made to behave."""

    executor: Executor
    reports: Reports

    @abstractmethod
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
        """A submission that returns ``returns`` (or raises a RuntimeError with
        ``raises``); with ``holds`` it runs until :meth:`let_finish` or a cancel.
        With ``stored`` its payloads are not inline but at a location (as the
        controller's blob store gives large ones)."""

    @abstractmethod
    def let_finish(self, key: str) -> None:
        """A held task returns now."""

    @abstractmethod
    def output_bytes(self, outcome: TaskOutcome) -> bytes:
        """The bytes of a completed task's output, wherever the executor left them."""

    def submit(self, task: TaskSubmission) -> None:
        given = self.executor.try_submit(task)
        assert given is not None, f"{task.task_key} did not fit: {self.executor.describe()}"

    def free_cpus(self) -> float:
        return self.executor.inventory().free_now()[0]

    def free_now(self) -> tuple[float, int, int]:
        """CPUs, memory and GPUs of the contract's type free now (a machine's
        real GPUs of other types, which a local executor also finds, aside)."""
        cpus, memory, devices = self.executor.inventory().free_now()
        return cpus, memory, sum(1 for d in devices if d.type == GPU)


def _spec(cpus: float = 1, memory_mb: int = 0, gpus: int = 0) -> HardwareSpec:
    return HardwareSpec(cpus=cpus, memory_mb=memory_mb, gpu=GPU if gpus else None, gpus=gpus)


class ExecutorContract:
    """The tests; a subclass provides the ``harness`` fixture (see the module's docstring)."""

    # -- inventory -----------------------------------------------------------------

    def test_an_idle_executor_can_ever_run_what_fits_its_whole_inventory_and_nothing_more(
        self, harness: ExecutorHarness
    ) -> None:
        can = harness.executor.can_ever_run
        assert can(_spec(cpus=CPUS, memory_mb=MEMORY_MB, gpus=GPUS))
        assert not can(_spec(cpus=CPUS + 1))
        assert not can(_spec(memory_mb=MEMORY_MB + 1))
        assert not can(_spec(gpus=GPUS + 1))
        assert not can(HardwareSpec(gpu="b200", gpus=1))

    def test_a_running_task_holds_its_hardware_and_frees_it_before_its_outcome_arrives(
        self, harness: ExecutorHarness
    ) -> None:
        assert harness.free_now() == (CPUS, MEMORY_MB, GPUS)
        harness.submit(harness.task("a", _spec(cpus=1.5, memory_mb=1024, gpus=1), holds=True))
        assert harness.free_now() == (CPUS - 1.5, MEMORY_MB - 1024, GPUS - 1)
        harness.let_finish("a")
        assert harness.reports.wait("a")["a"].status == Status.COMPLETED
        assert harness.reports.free_cpus_at_report["a"] == CPUS
        assert harness.free_now() == (CPUS, MEMORY_MB, GPUS)

    def test_a_task_that_does_not_fit_now_is_refused_and_fits_once_room_is_freed(
        self, harness: ExecutorHarness
    ) -> None:
        harness.submit(harness.task("big", _spec(cpus=3, memory_mb=6144), holds=True))
        assert harness.executor.try_submit(harness.task("cpu", _spec(cpus=2))) is None
        assert harness.executor.try_submit(harness.task("mem", _spec(memory_mb=4096))) is None
        assert harness.free_cpus() == CPUS - 3
        harness.let_finish("big")
        harness.reports.wait("big")
        harness.submit(harness.task("cpu", _spec(cpus=2)))
        assert harness.reports.wait("cpu")["cpu"].status == Status.COMPLETED
        assert harness.reports.keys() == ["big", "cpu"]

    def test_tasks_submitted_from_many_threads_never_take_more_than_the_inventory(
        self, harness: ExecutorHarness
    ) -> None:
        tasks = [harness.task(f"t{i}", _spec(cpus=1), holds=True) for i in range(12)]
        accepted: list[str] = []
        lock = threading.Lock()

        def offer(chunk: list[TaskSubmission]) -> None:
            for task in chunk:
                if harness.executor.try_submit(task) is not None:
                    with lock:
                        accepted.append(task.task_key)

        threads = [threading.Thread(target=offer, args=(tasks[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(accepted) == CPUS
        assert harness.free_cpus() == 0
        for key in accepted:
            harness.let_finish(key)
        harness.reports.wait(*accepted)
        assert harness.free_cpus() == CPUS

    # -- outcomes ------------------------------------------------------------------

    def test_a_completed_task_is_reported_once_with_its_output_and_the_hardware_it_was_given(
        self, harness: ExecutorHarness
    ) -> None:
        task = harness.task("a", _spec(cpus=0.5, memory_mb=512), returns={"answer": 42})
        given = harness.executor.try_submit(task)
        outcome = harness.reports.wait("a")["a"]
        assert outcome.status == Status.COMPLETED
        assert outcome.output is not None
        assert cloudpickle.loads(harness.output_bytes(outcome)) == {"answer": 42}
        assert outcome.hardware_given == given
        assert (given.cpus, given.memory_mb) == (0.5, 512)  # type: ignore[union-attr]

    def test_a_large_output_is_reported_where_the_controller_can_read_it(
        self, harness: ExecutorHarness
    ) -> None:
        value = bytes(range(256)) * 64
        harness.submit(harness.task("big", returns=value))
        outcome = harness.reports.wait("big")["big"]
        assert outcome.status == Status.COMPLETED
        assert outcome.output is not None
        assert cloudpickle.loads(harness.output_bytes(outcome)) == value

    def test_a_task_whose_payloads_are_stored_at_a_location_runs_as_one_sent_inline(
        self, harness: ExecutorHarness
    ) -> None:
        harness.submit(harness.task("far", returns=["from", "a", "location"], stored=True))
        outcome = harness.reports.wait("far")["far"]
        assert outcome.status == Status.COMPLETED, outcome.error
        assert cloudpickle.loads(harness.output_bytes(outcome)) == ["from", "a", "location"]

    def test_a_task_that_raises_is_reported_failed_with_its_error(
        self, harness: ExecutorHarness
    ) -> None:
        harness.submit(harness.task("bad", raises="the task's own words"))
        outcome = harness.reports.wait("bad")["bad"]
        assert (outcome.status, outcome.reason, outcome.output) == (
            Status.FAILED,
            "exception",
            None,
        )
        assert "the task's own words" in outcome.error
        assert harness.free_cpus() == CPUS

    def test_many_tasks_at_once_are_each_reported_exactly_once(
        self, harness: ExecutorHarness
    ) -> None:
        keys = [f"t{i}" for i in range(8)]
        for i, key in enumerate(keys):
            harness.submit(harness.task(key, _spec(cpus=0.5), returns=i))
        outcomes = harness.reports.wait(*keys)
        assert [cloudpickle.loads(harness.output_bytes(outcomes[k])) for k in keys] == list(
            range(8)
        )

    # -- cancel and time limits ----------------------------------------------------

    def test_a_cancelled_task_is_reported_cancelled_and_frees_its_hardware(
        self, harness: ExecutorHarness
    ) -> None:
        harness.submit(harness.task("a", _spec(cpus=2, gpus=2), holds=True))
        harness.executor.cancel("a", "cancelled")
        outcome = harness.reports.wait("a")["a"]
        assert (outcome.status, outcome.reason, outcome.output) == (
            Status.CANCELLED,
            "cancelled",
            None,
        )
        assert "cancelled" in outcome.error
        cpus, _, gpus = harness.free_now()
        assert (cpus, gpus) == (CPUS, GPUS)

    def test_a_task_stopped_at_its_time_limit_is_reported_timed_out(
        self, harness: ExecutorHarness
    ) -> None:
        spec = HardwareSpec(cpus=1, time_limit_s=0.5)
        harness.submit(harness.task("slow", spec, holds=True))
        harness.executor.cancel("slow", "time_limit")
        outcome = harness.reports.wait("slow")["slow"]
        assert (outcome.status, outcome.reason) == (Status.TIMED_OUT, "time_limit")
        assert "time limit of 0.5s" in outcome.error
        assert harness.free_cpus() == CPUS

    def test_cancelling_a_task_already_reported_or_never_submitted_reports_nothing(
        self, harness: ExecutorHarness
    ) -> None:
        harness.submit(harness.task("done", returns=1))
        harness.reports.wait("done")
        harness.executor.cancel("done", "cancelled")
        harness.executor.cancel("never", "cancelled")
        time.sleep(QUIET_S)
        assert harness.reports.keys() == ["done"]

    def test_a_cancel_racing_a_completion_reports_the_task_exactly_once(
        self, harness: ExecutorHarness
    ) -> None:
        keys = [f"race{i}" for i in range(4)]
        for key in keys:
            harness.submit(harness.task(key, returns=key, holds=True))
        cancels = [
            threading.Thread(target=harness.executor.cancel, args=(key, "cancelled"))
            for key in keys
        ]
        for key, cancel in zip(keys, cancels, strict=True):
            harness.let_finish(key)
            cancel.start()
        for cancel in cancels:
            cancel.join()
        outcomes = harness.reports.wait(*keys)
        assert {o.status for o in outcomes.values()} <= {Status.COMPLETED, Status.CANCELLED}
        assert harness.free_cpus() == CPUS

    # -- teardown ------------------------------------------------------------------

    def test_teardown_ends_every_running_task_once_and_refuses_new_ones(
        self, harness: ExecutorHarness
    ) -> None:
        harness.submit(harness.task("done", returns=1))
        harness.reports.wait("done")
        harness.submit(harness.task("a", holds=True))
        harness.submit(harness.task("b", _spec(gpus=1), holds=True))
        harness.executor.teardown()
        outcomes = harness.reports.wait("a", "b")
        assert {o.status for o in outcomes.values()} <= {Status.FAILED, Status.CANCELLED}
        assert harness.executor.try_submit(harness.task("late", returns=1)) is None
        harness.executor.cancel("a", "cancelled")
        time.sleep(QUIET_S)
        assert sorted(harness.reports.keys()) == ["a", "b", "done"]

    # -- GPUs ----------------------------------------------------------------------

    def test_gpu_tasks_get_distinct_gpus_labelled_with_their_model_and_emulation(
        self, harness: ExecutorHarness
    ) -> None:
        given = [
            harness.executor.try_submit(harness.task(k, _spec(gpus=1), holds=True)) for k in "ab"
        ]
        assert None not in given
        first, second = given
        assert first is not None and second is not None
        assert (first.gpu, second.gpu) == (GPU, GPU)
        assert first.emulated and second.emulated
        assert len(first.gpu_indices) == len(second.gpu_indices) == 1
        assert first.gpu_indices != second.gpu_indices
        assert harness.executor.try_submit(harness.task("c", _spec(gpus=1))) is None
        for key in "ab":
            harness.let_finish(key)
        outcomes = harness.reports.wait("a", "b")
        assert [outcomes[k].hardware_given for k in "ab"] == given
        cpu_only = harness.executor.try_submit(harness.task("cpu", returns=0))
        assert cpu_only is not None
        assert (cpu_only.gpu, cpu_only.gpu_indices, cpu_only.emulated) == (None, (), False)
        harness.reports.wait("cpu")

    # -- adopted tasks -------------------------------------------------------------

    def test_hardware_adopted_after_a_restart_is_held_until_released_and_never_reported(
        self, harness: ExecutorHarness
    ) -> None:
        gpu = next(d for d in harness.executor.inventory().gpus if d.type == GPU)
        given = Allocation(1.0, 1024, (gpu,)).given()
        assert harness.executor.adopt("survivor", given)
        assert harness.free_now() == (CPUS - 1, MEMORY_MB - 1024, GPUS - 1)
        assert gpu not in harness.executor.inventory().free_now()[2]
        assert not harness.executor.adopt("twin", given), "its GPU is held already"
        harness.submit(harness.task("other", _spec(gpus=GPUS - 1), holds=True))
        assert harness.executor.try_submit(harness.task("more", _spec(gpus=1))) is None
        harness.executor.cancel("survivor", "cancelled")
        harness.executor.release("survivor")
        harness.executor.release("survivor")
        harness.submit(harness.task("more", _spec(gpus=1), returns=1))
        harness.let_finish("other")
        harness.reports.wait("other", "more")
        assert sorted(harness.reports.keys()) == ["more", "other"]
        assert harness.free_now() == (CPUS, MEMORY_MB, GPUS)


def read_output(outcome: TaskOutcome) -> bytes:
    """A completed outcome's output bytes: inline, or at the location it names."""
    output = outcome.output
    assert output is not None
    if output.data is not None:
        return output.data
    assert output.location is not None, "an output without bytes says where they are"
    return read_payload(output.sha256, b"", to_wire(output.location))
