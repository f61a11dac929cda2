"""A controller's dispatch and deployment sides on stub executors, without processes.

:class:`StubWorld` wires what ``ControllerServer`` wires (a
:class:`~cobalt_controller.placement.Placement` that every executor reports
to, the scheduler, the deployment manager) over the in-memory state and blob
stores and :class:`~cobalt_executors.stub.StubExecutor` executors; the test
decides how each task and replica ends.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from cobalt_common.hardware import HardwareSpec
from cobalt_controller._executors import ExecutorPool
from cobalt_controller._payloads import Payloads
from cobalt_controller.blobs.memory import MemoryBlobStore
from cobalt_controller.deploy import DeploymentManager, Gateway
from cobalt_controller.dispatch._model import ELECTRON, PENDING, Dispatch, Input, Task
from cobalt_controller.dispatch._scheduler import Scheduler
from cobalt_controller.placement import Placement
from cobalt_controller.state import DispatchRow, MemoryStateStore, NodeRow, WriteBatch
from cobalt_executors import Executor, ExecutorContext
from cobalt_executors.stub import StubExecutor

FUNCTION = b"a pickled function, never unpickled by the controller"
FUNCTION_SHA = hashlib.sha256(FUNCTION).hexdigest()
PRICED = {"prices": {"base": "zero", "cpu_core_hour": 3.6}}
"""$3.60 per CPU hour: a 1-CPU run costs $0.001 per started second."""


class StubWorld:
    """Stores, a placement, stub executors, a scheduler and a deployment manager.

    Args:
        executors: the stubs, cheapest first; each is set up to report to the placement.
    """

    def __init__(
        self,
        *executors: StubExecutor,
        retry_backoff_s: float = 0.05,
        state: MemoryStateStore | None = None,
        manager: bool = True,
    ) -> None:
        self.state = state if state is not None else MemoryStateStore()
        self.payloads = Payloads(self.state, MemoryBlobStore(), 1 << 20)
        self.payloads.remember(FUNCTION_SHA, FUNCTION)
        self.placement = Placement()
        self.executors = list(executors)
        for ex in executors:
            ex.setup(ExecutorContext(inline_limit=1 << 20, report=self.placement.report))
        self.scheduler = Scheduler(
            self.state,
            self.payloads,
            FakePool(self.executors),  # type: ignore[arg-type]
            placement=self.placement,
            retry_backoff_s=retry_backoff_s,
            retry_backoff_max_s=1.0,
        )
        self.gateway = FakeGateway()
        self.manager = DeploymentManager(
            self.state, self.payloads, cast(Gateway, self.gateway), placement=self.placement
        )
        self._run_manager = manager

    def start(self) -> StubWorld:
        self.scheduler.start()
        if self._run_manager:
            self.manager.start()
        return self

    def stop(self) -> None:
        if self._run_manager:
            self.manager.stop(timeout=1.0)
        self.scheduler.stop()

    def dispatch(
        self,
        tasks: list[Task],
        *,
        budget_usd: float | None = None,
        dispatch_id: str | None = None,
    ) -> Dispatch:
        """Stores a dispatch of ``tasks`` (see :func:`task`) and hands it to the scheduler."""
        dispatch_id = (
            dispatch_id or hashlib.sha256(str(time.perf_counter()).encode()).hexdigest()[:32]
        )
        for t in tasks:
            for i in t.inputs:
                tasks[i.parent].children.append(t.node_id)
            t.waiting = len({i.parent for i in t.inputs})
            if not t.candidates:
                t.candidates = tuple(self.executors)
        row = DispatchRow(dispatch_id, "flow", PENDING, time.time(), len(tasks) - 1, len(tasks))
        batch = WriteBatch()
        nodes = [NodeRow(dispatch_id, t.node_id, t.name, t.kind, PENDING) for t in tasks]
        batch.new_dispatches.append((row, nodes))
        self.state.apply(batch)
        d = Dispatch(dispatch_id, "flow", tasks, len(tasks) - 1, row.created_at)
        d.budget_usd = budget_usd
        self.scheduler.submit_dispatch(d)
        return d

    def finished(self, d: Dispatch, timeout: float = 10.0) -> Dispatch:
        assert d.done.wait(timeout), f"dispatch still {d.status}: {[t.status for t in d.tasks]}"
        return d


def task(
    node_id: int,
    hardware: HardwareSpec | None = None,
    *,
    after: Iterable[int] = (),
    retries: int = 0,
    name: str = "",
) -> Task:
    """An electron that takes the outputs of the nodes in ``after`` as arguments."""
    inputs = tuple(Input(p, i, "", False) for i, p in enumerate(after))
    return Task(
        node_id,
        name or f"task{node_id}",
        ELECTRON,
        FUNCTION_SHA,
        inputs,
        hardware or HardwareSpec(),
        retries,
        "",
    )


class FakePool:
    """What the scheduler and deployment recovery ask of the controller's executors."""

    def __init__(self, executors: list[StubExecutor]) -> None:
        self.executors = executors

    def all(self) -> list[Executor]:
        return list(self.executors)

    def resolve(self, ref_json: str) -> Executor | None:
        return None

    def candidates(
        self, spec: HardwareSpec, named: Executor | None, task: str
    ) -> tuple[Executor, ...]:
        return tuple(ex for ex in self.executors if ex.can_ever_run(spec))

    def as_pool(self) -> ExecutorPool:
        return self  # type: ignore[return-value]


class FakeGateway:
    """Records what the deployment manager tells the gateway; routes nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        def record(*args: Any) -> dict[str, Any]:
            self.calls.append((name, args))
            return {}

        return record

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [args for called, args in self.calls if called == name]
