"""A scheduling round whose write fails is never announced: it is written again with
the next round, and only then do listeners and waiters hear of it."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from cobalt_common.hardware import HardwareSpec
from cobalt_controller._executors import ExecutorPool
from cobalt_controller._model import COMPLETED, ELECTRON, PENDING, Dispatch, Task
from cobalt_controller._payloads import Payloads
from cobalt_controller._scheduler import Scheduler
from cobalt_controller.state import DispatchRow, MemoryStateStore, NodeRow, WriteBatch

pytestmark = pytest.mark.unit

DISPATCH_ID = "d" * 32


class FailingOnce(MemoryStateStore):
    """A store whose next write raises, as a full disk or a lost database would."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = False

    def apply(self, batch: WriteBatch) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk full")
        super().apply(batch)


def stored_dispatch(store: MemoryStateStore) -> Dispatch:
    task = Task(0, "f", ELECTRON, "ab" * 32, (), HardwareSpec(), 0, "")
    batch = WriteBatch()
    row = DispatchRow(DISPATCH_ID, "flow", PENDING, time.time(), 0, 1)
    batch.new_dispatches.append((row, [NodeRow(DISPATCH_ID, 0, "f", ELECTRON, PENDING)]))
    store.apply(batch)
    return Dispatch(DISPATCH_ID, "flow", [task], 0, row.created_at)


def test_a_round_whose_write_fails_is_announced_only_once_it_is_stored() -> None:
    store = FailingOnce()
    scheduler = Scheduler(store, cast(Payloads, None), cast(ExecutorPool, None))
    heard: list[tuple[str, str]] = []

    def listener(d: Dispatch, t: Task | None) -> None:
        heard.append((d.status, t.status if t is not None else ""))

    scheduler.listener = listener
    d = stored_dispatch(store)
    scheduler.active[d.dispatch_id] = d
    t = d.tasks[0]
    t.status = COMPLETED
    d.remaining -= 1
    scheduler._touch(d, t)
    scheduler._finish(d)

    store.fail_next = True
    with pytest.raises(OSError):
        scheduler._flush()

    assert heard == [] and not d.done.is_set()
    stored = store.get_dispatch(DISPATCH_ID)
    assert stored is not None and stored.status == PENDING

    scheduler._flush()

    stored = store.get_dispatch(DISPATCH_ID)
    node: Any = store.get_node(DISPATCH_ID, 0)
    assert stored is not None and stored.status == COMPLETED
    assert node.status == COMPLETED
    assert (COMPLETED, COMPLETED) in heard and d.done.is_set()


def test_changes_made_after_a_failed_write_are_kept_over_it() -> None:
    store = FailingOnce()
    scheduler = Scheduler(store, cast(Payloads, None), cast(ExecutorPool, None))
    d = stored_dispatch(store)
    scheduler._batch.update_dispatch(d.dispatch_id, status="RUNNING", error="first")
    store.fail_next = True
    with pytest.raises(OSError):
        scheduler._flush()

    scheduler._batch.update_dispatch(d.dispatch_id, error="second")
    scheduler._flush()

    stored = store.get_dispatch(DISPATCH_ID)
    assert stored is not None
    assert (stored.status, stored.error) == ("RUNNING", "second")
