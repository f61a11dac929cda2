"""Local executors of one controller share one machine's CPUs, memory and warm workers.

Each local executor keeps its own limits; the machine's CPUs and memory are
handed out once over all of them. Executors here join a machine the test
sizes, as clients' executors join the one a controller's configuration sized.
Their worker processes are stand-ins that report when the test says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cobalt_common.hardware import HardwareSpec
from cobalt_common.v1 import worker_pb2
from cobalt_executors import ExecutorContext, PayloadRef, TaskOutcome, TaskSubmission
from cobalt_executors._inventory import Allocation
from cobalt_executors._machine import Machine, host_cpus
from cobalt_executors.local import LocalExecutor
from cobalt_executors.local import _executor as local_executor
from cobalt_executors.local._functions import KnownFunctions

pytestmark = pytest.mark.unit


class _Proc:
    pid = 0

    def wait(self, timeout: float | None = None) -> int:
        return 0


class FakeWorker:
    """A worker process that runs nothing: the test ends its task with :meth:`finish`."""

    started: list[FakeWorker] = []

    def __init__(
        self,
        device_key: str,
        log_dir: Path,
        env: dict[str, str],
        on_result: Callable[[Any, worker_pb2.WorkerResult], None],
        on_exit: Callable[[Any, int | None], None],
        cgroups: bool = True,
    ) -> None:
        self.device_key = device_key
        self.known_functions = KnownFunctions()
        self.task_key: str | None = None
        self.proc = _Proc()
        self.alive = True
        self._on_result, self._on_exit = on_result, on_exit
        FakeWorker.started.append(self)

    def send(self, command: worker_pb2.WorkerCommand) -> None:
        pass

    def finish(self) -> None:
        assert self.task_key is not None
        self._on_result(self, worker_pb2.WorkerResult(task_key=self.task_key, ok=True))

    def shutdown(self) -> None:
        if self.alive:
            self.alive = False
            self._on_exit(self, 0)

    kill = shutdown

    def read_logs(self) -> tuple[str, str]:
        return "", ""

    def cleanup(self) -> None:
        pass


def _alive() -> int:
    return sum(1 for w in FakeWorker.started if w.alive)


def _machine(cpus: float = 2, memory_mb: int = 8192) -> Machine:
    machine = Machine(cpus=cpus, memory_mb=memory_mb)
    machine.close()
    return machine


@pytest.fixture
def join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``join(machine, name, **options)``: a set-up local executor on ``machine``."""
    monkeypatch.setattr(local_executor, "WorkerProcess", FakeWorker)
    FakeWorker.started = []
    executors: list[LocalExecutor] = []
    outcomes: list[TaskOutcome] = []

    def make(machine: Machine, name: str, **options: Any) -> LocalExecutor:
        context = ExecutorContext(
            inline_limit=1024, report=outcomes.append, machine=machine, work_dir=tmp_path
        )
        executor = LocalExecutor(name, {"workers": 1, **options})
        executor.setup(context)
        executors.append(executor)
        return executor

    yield make
    for executor in executors:
        executor.teardown()


def _task(key: str, cpus: float = 1) -> TaskSubmission:
    return TaskSubmission(
        task_key=key,
        dispatch_id="d",
        node_id=0,
        name=key,
        hardware=HardwareSpec(cpus=cpus),
        function=PayloadRef("f" * 64, b"", 0),
        args=[],
    )


def _running(executor: LocalExecutor, key: str) -> FakeWorker:
    worker = executor._running[key].worker
    assert isinstance(worker, FakeWorker)
    return worker


def _take_all(executor: LocalExecutor, spec: HardwareSpec) -> list[Allocation]:
    taken = []
    while (allocation := executor.inventory().allocate(spec)) is not None:
        taken.append(allocation)
        assert len(taken) < 1000
    return taken


def test_two_local_executors_with_default_capacity_run_no_more_tasks_than_the_machines_cpus(
    join: Any,
) -> None:
    machine = _machine(cpus=2)
    a = join(machine, "a", emulate_gpus={"h100": 1})
    b = join(machine, "b", emulate_gpus={"l4": 2})
    assert a.inventory().cpus == b.inventory().cpus == 2, "each defaults to the machine"
    assert a.try_submit(_task("a1")) is not None
    assert b.try_submit(_task("b1")) is not None
    assert b.try_submit(_task("b2")) is None, "a and b hold the machine's two CPUs"
    assert a.try_submit(_task("a2")) is None
    _running(a, "a1").finish()
    assert b.try_submit(_task("b2")) is not None, "a's CPU went back to the machine"
    assert a.try_submit(_task("a2")) is None
    assert machine.free()[0] == 0


def test_each_executor_keeps_its_own_limits_inside_the_machine(join: Any) -> None:
    machine = _machine(cpus=4, memory_mb=8192)
    small = join(machine, "small", cpus=1, memory=1024)
    other = join(machine, "other")
    assert len(_take_all(small, HardwareSpec(cpus=0.5, memory_mb=256))) == 2
    assert len(_take_all(other, HardwareSpec(cpus=1))) == 3, "the machine's 4 less small's 1"


def test_memory_is_the_machines_too(join: Any) -> None:
    machine = _machine(cpus=8, memory_mb=4096)
    a, b = join(machine, "a"), join(machine, "b")
    assert a.inventory().allocate(HardwareSpec(cpus=1, memory_mb=3072)) is not None
    assert b.inventory().allocate(HardwareSpec(cpus=1, memory_mb=2048)) is None
    assert b.inventory().allocate(HardwareSpec(cpus=1, memory_mb=1024)) is not None


def test_an_executor_larger_than_the_machine_is_a_scaled_view_of_it(join: Any) -> None:
    machine = _machine(cpus=2, memory_mb=4096)
    big = join(machine, "big", memory="64GB", cpus=8, emulate_gpus={"h100": 2})
    task = HardwareSpec(gpu="h100", gpus=1, cpus=4, memory_mb=32768)
    assert big.can_ever_run(task)
    both = _take_all(big, task)
    assert len(both) == 2, "the executor runs what it states"
    assert machine.free() == (0, 0), "and together its tasks take the whole machine"
    other = join(machine, "other")
    assert other.inventory().allocate(HardwareSpec(cpus=0.5)) is None
    big.inventory().release(both[0])
    assert other.inventory().allocate(HardwareSpec(cpus=1)) is not None


def test_configured_executors_size_the_machine_within_the_host_and_clients_join_it() -> None:
    machine = Machine(cpus=8, memory_mb=16384)  # the host
    assert machine.claim(2, 4096), "a configured executor with cpus = 2"
    assert (machine.cpus, machine.memory_mb) == (2, 4096), "makes a 2-CPU machine"
    assert machine.claim(4, None), "another one, with the host's memory"
    assert (machine.cpus, machine.memory_mb) == (4, 16384), "the largest claim wins"
    assert machine.claim(64, 1 << 20), "one that lends more than the host has"
    assert (machine.cpus, machine.memory_mb) == (8, 16384), "is a scaled view of the host"
    machine.close()
    assert not machine.claim(None, None), "a client's executor joins as a guest"
    assert (machine.cpus, machine.memory_mb) == (8, 16384)
    assert machine.members == 4
    assert Machine().cpus == host_cpus()


def test_status_shows_the_machine_once_and_executors_by_what_is_their_own(join: Any) -> None:
    machine = _machine(cpus=2, memory_mb=8192)
    plain = join(machine, "plain")
    gpus = join(machine, "gpus", emulate_gpus={"h100": 2}, memory="256GB")
    assert machine.describe() == "2 CPU, 8 GB"
    assert plain.describe() == ("machine, no GPU", "machine, no GPU")
    assert gpus.describe() == (
        "machine CPUs, 256 GB, 2x h100 (emulated)",
        "machine CPUs, 256 GB, 2x h100 (emulated)",
    )
    assert gpus.inventory().allocate(HardwareSpec(gpu="h100", gpus=1, memory_mb=131072))
    assert gpus.describe()[1] == "machine CPUs, 128 GB, 1x h100 (emulated)"
    assert machine.describe(free=True) == "1 CPU, 4 GB"


def test_adding_executors_does_not_add_idle_warm_workers(join: Any) -> None:
    machine = _machine(cpus=2)
    executors = [join(machine, f"x{i}", workers=2) for i in range(4)]
    assert machine.idle_workers() == _alive() == 2, "the most any one executor keeps, not 4 x 2"
    last = executors[-1]
    assert last.try_submit(_task("t")) is not None, "a worker is started when none is warm"
    _running(last, "t").finish()
    assert machine.idle_workers() == _alive() == 2, "and it replaced the one idle longest"
    assert len(last._idle[""]) == 1


def test_the_machine_retires_the_worker_idle_longest() -> None:
    machine = _machine()
    machine.want_warm(2)
    retired: list[str] = []
    assert machine.keep_idle("w1", lambda: retired.append("w1")) == []
    assert machine.keep_idle("w2", lambda: retired.append("w2")) == []
    machine.busy("w1")
    machine.keep_idle("w1", lambda: retired.append("w1"))
    for stop in machine.keep_idle("w3", lambda: retired.append("w3")):
        stop()
    assert retired == ["w2"]
    assert machine.idle_workers() == 2
