"""A scheduling round whose write fails is never announced: it is written again with
the next round, and only then do listeners and waiters hear of it."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from cobalt_common.hardware import HardwareSpec
from cobalt_controller._executors import ExecutorPool
from cobalt_controller._payloads import Payloads
from cobalt_controller.dispatch._model import COMPLETED, ELECTRON, FAILED, PENDING, Dispatch, Task
from cobalt_controller.dispatch._scheduler import WRITE_ATTEMPTS, Scheduler
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


POISON_ID = "p" * 32


class RefusingOneDispatch(MemoryStateStore):
    """A store that refuses every write touching one dispatch, as a row it cannot hold
    would make it do; writes of other dispatches alone succeed."""

    def apply(self, batch: WriteBatch) -> None:
        touched = {key[0] for key in batch.node_updates} | set(batch.dispatch_updates)
        touched |= {row.dispatch_id for row, _ in batch.new_dispatches}
        if POISON_ID in touched:
            raise ValueError("NOT NULL constraint failed: nodes.rate_usd_per_hour")
        super().apply(batch)


def a_dispatch(store: MemoryStateStore, dispatch_id: str) -> Dispatch:
    task = Task(0, "f", ELECTRON, "ab" * 32, (), HardwareSpec(), 0, "")
    row = DispatchRow(dispatch_id, "flow", PENDING, time.time(), 0, 1)
    batch = WriteBatch()
    batch.new_dispatches.append((row, [NodeRow(dispatch_id, 0, "f", ELECTRON, PENDING)]))
    MemoryStateStore.apply(store, batch)
    return Dispatch(dispatch_id, "flow", [task], 0, row.created_at)


def test_a_dispatch_whose_state_cannot_be_stored_is_stopped_and_the_others_go_on() -> None:
    store = RefusingOneDispatch()
    scheduler = Scheduler(store, cast(Payloads, None), cast(ExecutorPool, None))
    heard: list[tuple[str, str, str]] = []
    scheduler.listener = lambda d, t: heard.append(
        (d.dispatch_id, d.status, t.status if t is not None else "")
    )
    good, bad = a_dispatch(store, DISPATCH_ID), a_dispatch(store, POISON_ID)
    for d in (good, bad):
        scheduler.active[d.dispatch_id] = d
        d.tasks[0].status = COMPLETED
        d.remaining -= 1
        scheduler._touch(d, d.tasks[0])
        scheduler._finish(d)

    for _ in range(WRITE_ATTEMPTS - 1):  # the round is retried whole a few times first
        with pytest.raises(ValueError):
            scheduler._flush()
        assert heard == []
    scheduler._flush()

    stored: Any = store.get_dispatch(DISPATCH_ID)
    assert stored.status == COMPLETED and good.done.is_set()
    assert (DISPATCH_ID, COMPLETED, COMPLETED) in heard
    assert bad.status == FAILED and bad.done.is_set()
    assert "could not store this dispatch's state" in bad.error
    assert (POISON_ID, FAILED, "") in heard
    assert not any(t for d, _, t in heard if d == POISON_ID), "its unstored tasks are not told"
    assert POISON_ID not in scheduler.active

    # Later rounds no longer carry the stopped dispatch, so they are stored at once.
    scheduler._batch.update_dispatch(DISPATCH_ID, error="later")
    scheduler._batch.update_dispatch(POISON_ID, error="never stored")
    scheduler._flush()
    stored = store.get_dispatch(DISPATCH_ID)
    assert stored.error == "later"
