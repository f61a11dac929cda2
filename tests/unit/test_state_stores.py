"""One contract suite for every state store backend.

The backends are the in-memory store and the SQL store on a temporary SQLite
file; the SQL store also runs on PostgreSQL when ``COBALT_TEST_POSTGRES_URL``
names a database (each test gets its own schema, dropped afterwards).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cobalt_controller.state import (
    REUSED,
    DeploymentEventRow,
    DeploymentRow,
    DispatchRow,
    MemoryStateStore,
    NodeRow,
    ReplicaRow,
    SqlStateStore,
    StateStore,
    WriteBatch,
)

pytestmark = pytest.mark.unit


def _postgres_store(requires_service: Callable[..., None]) -> Iterator[StateStore]:
    url = os.environ.get("COBALT_TEST_POSTGRES_URL", "")
    requires_service("PostgreSQL", bool(url), "set COBALT_TEST_POSTGRES_URL to a database URL")
    schema = f"cobalt_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    scoped = sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    store = SqlStateStore(scoped.render_as_string(hide_password=False))
    try:
        yield store
    finally:
        store.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, requires_service: Callable[..., None]
) -> Iterator[StateStore]:
    if request.param == "memory":
        yield MemoryStateStore()
    elif request.param == "sqlite":
        sqlite = SqlStateStore(f"sqlite:///{tmp_path / 'state.db'}")
        yield sqlite
        sqlite.close()
    else:
        yield from _postgres_store(requires_service)


def _dispatch(
    dispatch_id: str | None = None,
    *,
    created_at: float = 1000.0,
    status: str = "PENDING",
    n: int = 3,
) -> tuple[DispatchRow, list[NodeRow]]:
    dispatch_id = dispatch_id or uuid.uuid4().hex
    row = DispatchRow(
        dispatch_id, "workflow", status, created_at, output_node=n - 1, task_count=n - 1
    )
    nodes = [
        NodeRow(
            dispatch_id,
            0,
            ":parameter:",
            "parameter",
            "COMPLETED",
            value_sha256="a" * 64,
            output_sha256="a" * 64,
        ),
        *(
            NodeRow(
                dispatch_id,
                i,
                f"task{i}",
                "electron",
                "PENDING",
                function_sha256="f" * 64,
                inputs=f'[[{i - 1}, 0, "", false]]',
                hardware='{"gpu": "h100", "gpus": 1, "cpus": 2.0}',
                retries=2,
            )
            for i in range(1, n)
        ),
    ]
    return row, nodes


def _apply_new(store: StateStore, *dispatches: tuple[DispatchRow, list[NodeRow]]) -> None:
    batch = WriteBatch()
    batch.new_dispatches.extend(dispatches)
    store.apply(batch)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_new_dispatch_reads_back_with_all_its_fields(store: StateStore) -> None:
    row, nodes = _dispatch()
    row.parent_dispatch_id, row.parent_node_id = "p" * 32, 7
    _apply_new(store, (row, nodes))
    assert store.get_dispatch(row.dispatch_id) == row
    assert store.get_nodes(row.dispatch_id) == nodes
    assert store.get_node(row.dispatch_id, 1) == nodes[1]


def test_unknown_dispatches_and_nodes_read_as_none(store: StateStore) -> None:
    row, nodes = _dispatch()
    _apply_new(store, (row, nodes))
    assert store.get_dispatch("no-such-dispatch") is None
    assert store.get_node("no-such-dispatch", 0) is None
    assert store.get_node(row.dispatch_id, len(nodes)) is None
    assert store.get_nodes("no-such-dispatch") == []


def test_node_updates_change_only_the_given_fields(store: StateStore) -> None:
    row, nodes = _dispatch()
    _apply_new(store, (row, nodes))
    batch = WriteBatch()
    batch.update_node(
        row.dispatch_id,
        1,
        status="RUNNING",
        executor="gpu",
        attempts=1,
        started_at=1001.5,
        hardware_given='{"gpu": "h100"}',
    )
    batch.update_node(
        row.dispatch_id,
        1,
        status="COMPLETED",
        ended_at=1002.25,
        output_sha256="b" * 64,
        stdout="out\n",
        stderr="err\n",
    )
    batch.update_node(
        row.dispatch_id, 2, status="FAILED", error="Traceback ...", reason="exception"
    )
    store.apply(batch)
    first = store.get_node(row.dispatch_id, 1)
    assert first == dataclasses.replace(
        nodes[1],
        status="COMPLETED",
        executor="gpu",
        attempts=1,
        started_at=1001.5,
        ended_at=1002.25,
        hardware_given='{"gpu": "h100"}',
        output_sha256="b" * 64,
        stdout="out\n",
        stderr="err\n",
    )
    second = store.get_node(row.dispatch_id, 2)
    assert second == dataclasses.replace(
        nodes[2], status="FAILED", error="Traceback ...", reason="exception"
    )
    assert store.get_node(row.dispatch_id, 0) == nodes[0]


def test_dispatch_updates_change_only_the_given_fields(store: StateStore) -> None:
    row, nodes = _dispatch()
    _apply_new(store, (row, nodes))
    batch = WriteBatch()
    batch.update_dispatch(row.dispatch_id, status="RUNNING", started_at=1000.5)
    store.apply(batch)
    batch = WriteBatch()
    batch.update_dispatch(row.dispatch_id, status="FAILED", ended_at=1003.0, error="task1 failed")
    store.apply(batch)
    assert store.get_dispatch(row.dispatch_id) == dataclasses.replace(
        row, status="FAILED", started_at=1000.5, ended_at=1003.0, error="task1 failed"
    )


def test_one_batch_can_create_a_dispatch_and_update_it(store: StateStore) -> None:
    row, nodes = _dispatch()
    batch = WriteBatch()
    batch.new_dispatches.append((row, nodes))
    batch.update_node(row.dispatch_id, 1, status="RUNNING")
    batch.update_dispatch(row.dispatch_id, status="RUNNING")
    batch.payloads[_sha(b"x")] = b"x"
    store.apply(batch)
    assert store.get_dispatch(row.dispatch_id).status == "RUNNING"  # type: ignore[union-attr]
    assert store.get_node(row.dispatch_id, 1).status == "RUNNING"  # type: ignore[union-attr]
    assert store.get_payload(_sha(b"x")) == b"x"


def test_an_empty_batch_is_falsy_and_applies_as_a_no_op(store: StateStore) -> None:
    batch = WriteBatch()
    assert not batch
    store.apply(batch)
    assert store.list_dispatches() == []


def test_payloads_read_back_and_missing_ones_are_reported(store: StateStore) -> None:
    small, large = b"\x80\x05small pickle", os.urandom(1 << 20)
    batch = WriteBatch()
    batch.payloads.update({_sha(small): small, _sha(large): large})
    store.apply(batch)
    assert store.get_payload(_sha(small)) == small
    assert store.get_payload(_sha(large)) == large
    assert store.get_payload(_sha(b"never stored")) is None
    unknown = _sha(b"never stored")
    assert store.missing_payloads([_sha(small), unknown, _sha(large)]) == {unknown}
    assert store.missing_payloads([]) == set()


def test_putting_a_payload_again_is_idempotent(store: StateStore) -> None:
    data = b"same bytes"
    for _ in range(2):
        batch = WriteBatch()
        batch.payloads[_sha(data)] = data
        batch.payloads[_sha(b"new")] = b"new"
        store.apply(batch)
    assert store.get_payload(_sha(data)) == data
    assert store.missing_payloads([_sha(data), _sha(b"new")]) == set()


def test_missing_payloads_handles_more_shas_than_one_query_takes(store: StateStore) -> None:
    stored = [f"{i}".encode() for i in range(600)]
    batch = WriteBatch()
    batch.payloads.update({_sha(d): d for d in stored})
    store.apply(batch)
    absent = {_sha(f"absent {i}".encode()) for i in range(700)}
    assert store.missing_payloads([*map(_sha, stored), *absent]) == absent


def test_dispatches_list_most_recent_first_up_to_the_limit(store: StateStore) -> None:
    rows = [_dispatch(created_at=t) for t in (1000.0, 3000.0, 2000.0, 4000.0)]
    _apply_new(store, *rows)
    listed = store.list_dispatches()
    assert [r.created_at for r in listed] == [4000.0, 3000.0, 2000.0, 1000.0]
    assert [r.created_at for r in store.list_dispatches(limit=2)] == [4000.0, 3000.0]
    assert listed[0] == rows[3][0]


def test_unfinished_dispatches_are_those_that_have_not_ended(store: StateStore) -> None:
    statuses = ["NEW", "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]
    rows = {s: _dispatch(status=s, created_at=1000.0 + i) for i, s in enumerate(statuses)}
    _apply_new(store, *rows.values())
    batch = WriteBatch()
    batch.update_dispatch(rows["RUNNING"][0].dispatch_id, status="COMPLETED")
    store.apply(batch)
    unfinished = {r.dispatch_id for r in store.unfinished_dispatches()}
    assert unfinished == {rows["NEW"][0].dispatch_id, rows["PENDING"][0].dispatch_id}


def test_nodes_come_in_node_id_order_with_or_without_logs(store: StateStore) -> None:
    row, nodes = _dispatch(n=12)
    _apply_new(store, (row, nodes))
    batch = WriteBatch()
    for node in nodes[1:]:
        batch.update_node(
            row.dispatch_id,
            node.node_id,
            stdout=f"out {node.node_id}",
            stderr=f"err {node.node_id}",
        )
    store.apply(batch)
    with_logs = store.get_nodes(row.dispatch_id)
    without = store.get_nodes(row.dispatch_id, include_logs=False)
    assert [n.node_id for n in with_logs] == list(range(12))
    assert [n.node_id for n in without] == list(range(12))
    assert with_logs[5].stdout == "out 5" and with_logs[5].stderr == "err 5"
    assert all(n.stdout == "" and n.stderr == "" for n in without)
    assert [dataclasses.replace(n, stdout="", stderr="") for n in with_logs] == without


def test_dispatches_do_not_see_each_others_nodes(store: StateStore) -> None:
    first, second = _dispatch(n=2), _dispatch(n=4)
    _apply_new(store, first, second)
    batch = WriteBatch()
    batch.update_node(first[0].dispatch_id, 1, status="COMPLETED")
    store.apply(batch)
    assert len(store.get_nodes(first[0].dispatch_id)) == 2
    assert [n.status for n in store.get_nodes(second[0].dispatch_id)] == ["COMPLETED"] + [
        "PENDING"
    ] * 3


def _child(parent: str, node_id: int = 1) -> tuple[DispatchRow, list[NodeRow]]:
    row, nodes = _dispatch()
    row.parent_dispatch_id, row.parent_node_id = parent, node_id
    return row, nodes


def test_descendants_are_every_dispatch_started_below_one_but_not_itself(
    store: StateStore,
) -> None:
    root, other = _dispatch(), _dispatch()
    child = _child(root[0].dispatch_id)
    grandchild = _child(child[0].dispatch_id)
    sibling = _child(root[0].dispatch_id, 2)
    elsewhere = _child(other[0].dispatch_id)
    _apply_new(store, root, other, child, grandchild, sibling, elsewhere)
    assert store.descendant_dispatches(root[0].dispatch_id) == {
        child[0].dispatch_id,
        grandchild[0].dispatch_id,
        sibling[0].dispatch_id,
    }
    assert store.descendant_dispatches(child[0].dispatch_id) == {grandchild[0].dispatch_id}
    assert store.descendant_dispatches(grandchild[0].dispatch_id) == set()
    assert store.descendant_dispatches("unknown") == set()


def test_a_dispatch_holds_its_values_functions_and_outputs_and_no_other_payload(
    store: StateStore,
) -> None:
    mine, theirs = _dispatch(n=3), _dispatch(n=3)
    theirs[1][0].value_sha256 = theirs[1][0].output_sha256 = "b" * 64
    theirs[1][1].function_sha256 = "c" * 64
    _apply_new(store, mine, theirs)
    batch = WriteBatch()
    batch.update_node(mine[0].dispatch_id, 2, output_sha256="d" * 64)
    batch.update_node(theirs[0].dispatch_id, 2, output_sha256="e" * 64)
    store.apply(batch)
    ids = [mine[0].dispatch_id]
    for sha in ("a" * 64, "f" * 64, "d" * 64):
        assert store.holds_payload(ids, sha), sha
    for sha in ("b" * 64, "c" * 64, "e" * 64, "0" * 64):
        assert not store.holds_payload(ids, sha), sha
    assert store.holds_payload([*ids, theirs[0].dispatch_id], "e" * 64)
    assert not store.holds_payload([], "a" * 64)
    assert not store.holds_payload(["unknown"], "a" * 64)


def test_rows_read_back_are_copies_not_the_stored_state(store: StateStore) -> None:
    row, nodes = _dispatch()
    _apply_new(store, (row, nodes))
    nodes[1].status = "MUTATED"
    read = store.get_node(row.dispatch_id, 1)
    assert read is not None and read.status == "PENDING"
    read.status = "MUTATED"
    assert store.get_node(row.dispatch_id, 1).status == "PENDING"  # type: ignore[union-attr]


def test_sqlite_state_survives_reopening_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first = SqlStateStore(url)
    row, nodes = _dispatch(status="RUNNING")
    batch = WriteBatch()
    batch.new_dispatches.append((row, nodes))
    batch.payloads[_sha(b"kept")] = b"kept"
    first.apply(batch)
    first.close()
    reopened = SqlStateStore(url)
    assert reopened.get_dispatch(row.dispatch_id) == row
    assert reopened.get_nodes(row.dispatch_id) == nodes
    assert [r.dispatch_id for r in reopened.unfinished_dispatches()] == [row.dispatch_id]
    assert reopened.get_payload(_sha(b"kept")) == b"kept"
    reopened.close()


def test_a_database_url_that_cannot_be_opened_is_a_config_error() -> None:
    from cobalt_common.errors import ConfigError

    with pytest.raises(ConfigError, match="database_url"):
        SqlStateStore("nosuchdialect://somewhere/db")


def _ended(store: StateStore, row: DispatchRow, updates: dict[int, dict[str, object]]) -> None:
    batch = WriteBatch()
    for node_id, values in updates.items():
        batch.update_node(row.dispatch_id, node_id, **values)
    store.apply(batch)


def test_status_counts_count_tasks_per_status_for_each_dispatch(store: StateStore) -> None:
    a, a_nodes = _dispatch(n=4)
    b, b_nodes = _dispatch(n=2)
    _apply_new(store, (a, a_nodes), (b, b_nodes))
    _ended(store, a, {1: {"status": "COMPLETED"}, 2: {"status": "FAILED"}})
    counts = store.status_counts([a.dispatch_id, b.dispatch_id, "unknown"])
    assert counts[a.dispatch_id] == {"COMPLETED": 1, "FAILED": 1, "PENDING": 1}
    assert counts[b.dispatch_id] == {"PENDING": 1}, "parameters are not tasks"
    assert counts.get("unknown", {}) == {}


def test_recent_run_times_are_the_electron_s_completed_runs_newest_first(
    store: StateStore,
) -> None:
    row, nodes = _dispatch(n=5)
    for n in nodes[1:]:
        n.function_key = "pkg.train"
    nodes[4].function_key = "pkg.other"
    _apply_new(store, (row, nodes))
    _ended(
        store,
        row,
        {
            1: {"status": "COMPLETED", "started_at": 10.0, "ended_at": 12.0},
            2: {"status": "COMPLETED", "started_at": 10.0, "ended_at": 15.0},
            3: {"status": "FAILED", "started_at": 10.0, "ended_at": 11.0},
            4: {"status": "COMPLETED", "started_at": 10.0, "ended_at": 19.0},
        },
    )
    assert store.recent_run_times("pkg.train") == [5.0, 2.0]
    assert store.recent_run_times("pkg.train", limit=1) == [5.0]
    assert store.recent_run_times("pkg.none") == []


def test_a_reused_result_is_no_run_time(store: StateStore) -> None:
    """A task whose output came from an earlier dispatch took no time to run."""
    row, nodes = _dispatch(n=3)
    for n in nodes[1:]:
        n.function_key = "pkg.train"
    nodes[2].reason = REUSED
    _apply_new(store, (row, nodes))
    _ended(
        store,
        row,
        {
            1: {"status": "COMPLETED", "started_at": 10.0, "ended_at": 14.0},
            2: {"status": "COMPLETED", "started_at": 20.0, "ended_at": 20.0},
        },
    )
    assert store.recent_run_times("pkg.train") == [4.0]


def test_cost_summary_groups_spend_by_day_executor_and_gpu(store: StateStore) -> None:
    row, nodes = _dispatch(n=5)
    _apply_new(store, (row, nodes))
    spend = {"status": "COMPLETED", "executor": "gpu", "gpu_type": "h100", "emulated": True}
    _ended(
        store,
        row,
        {
            1: {**spend, "ended_day": "2026-11-20", "billed_s": 10.0, "cost_usd": 0.5},
            2: {**spend, "ended_day": "2026-11-20", "billed_s": 20.0, "cost_usd": 1.0},
            3: {**spend, "ended_day": "2026-11-21", "billed_s": 5.0, "cost_usd": 0.25},
            4: {"status": "COMPLETED", "executor": "cpu", "ended_day": "2026-11-21"},
        },
    )
    rows = store.cost_summary()
    assert [(r.day, r.executor, r.gpu_type, r.emulated, r.tasks) for r in rows] == [
        ("2026-11-20", "gpu", "h100", True, 2),
        ("2026-11-21", "cpu", "", False, 1),
        ("2026-11-21", "gpu", "h100", True, 1),
    ]
    assert rows[0].cost_usd == pytest.approx(1.5) and rows[0].billed_s == 30.0
    assert [r.day for r in store.cost_summary("2026-11-21")] == ["2026-11-21", "2026-11-21"]


def test_cost_fields_of_dispatches_and_nodes_read_back(store: StateStore) -> None:
    row, nodes = _dispatch()
    row.budget_usd = 12.5
    _apply_new(store, (row, nodes))
    batch = WriteBatch()
    batch.update_dispatch(row.dispatch_id, cost_usd=0.75, emulated=True)
    batch.update_node(row.dispatch_id, 1, cost_usd=0.75, billed_s=3.0, placement="gpu: cheapest")
    store.apply(batch)
    read = store.get_dispatch(row.dispatch_id)
    assert read is not None and (read.cost_usd, read.budget_usd, read.emulated) == (
        0.75,
        12.5,
        True,
    )
    node = store.get_node(row.dispatch_id, 1)
    assert node is not None and (node.cost_usd, node.billed_s) == (0.75, 3.0)
    assert node.placement == "gpu: cheapest"


def test_a_dispatch_keeps_its_lattice_and_inputs_and_a_reused_tasks_marks(
    store: StateStore,
) -> None:
    row, nodes = _dispatch()
    row.lattice_sha256, row.inputs_sha256 = "1" * 64, "2" * 64
    nodes[1].status, nodes[1].reason, nodes[1].output_sha256 = "COMPLETED", "reused", "3" * 64
    nodes[1].placement = f"reused from dispatch {'e' * 32} node 1"
    nodes[1].ended_at = 1234.5
    _apply_new(store, (row, nodes))
    read = store.get_dispatch(row.dispatch_id)
    assert read is not None and (read.lattice_sha256, read.inputs_sha256) == ("1" * 64, "2" * 64)
    assert store.get_node(row.dispatch_id, 1) == nodes[1]


def test_an_older_sqlite_database_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE dispatches (dispatch_id VARCHAR(64) PRIMARY KEY, name VARCHAR(256) "
            "NOT NULL, status VARCHAR(16) NOT NULL, created_at FLOAT NOT NULL, output_node "
            "INTEGER NOT NULL, task_count INTEGER NOT NULL, started_at FLOAT, ended_at FLOAT, "
            "error TEXT NOT NULL, parent_dispatch_id VARCHAR(64), parent_node_id INTEGER)"
        )
        db.execute(
            "INSERT INTO dispatches VALUES ('old', 'wf', 'COMPLETED', 1.0, 0, 0, 1.0, 2.0, '', "
            "NULL, NULL)"
        )
    store = SqlStateStore(f"sqlite:///{path}")
    read = store.get_dispatch("old")
    assert read is not None and read.cost_usd == 0.0 and read.budget_usd is None
    assert read.emulated is False
    assert (read.lattice_sha256, read.inputs_sha256) == ("", "")
    store.close()


def test_nodes_can_be_read_by_id(store: StateStore) -> None:
    row, nodes = _dispatch(n=6)
    _apply_new(store, (row, nodes))
    read = store.get_nodes(row.dispatch_id, include_logs=False, node_ids={4, 1, 99})
    assert [n.node_id for n in read] == [1, 4]
    assert store.get_nodes(row.dispatch_id, node_ids=[]) == []


def test_storing_a_dispatch_id_twice_fails_and_keeps_the_first(store: StateStore) -> None:
    row, nodes = _dispatch()
    _apply_new(store, (row, nodes))
    again = dataclasses.replace(row, name="other")
    with pytest.raises(Exception):  # noqa: B017 - each backend raises its own error
        _apply_new(store, (again, nodes))
    stored = store.get_dispatch(row.dispatch_id)
    assert stored is not None and stored.name == "workflow"


# -- deployments ------------------------------------------------------------------------


def _deployment(name: str = "classifier", **values: object) -> DeploymentRow:
    row = DeploymentRow(
        name,
        "STARTING",
        1,
        json.dumps({"name": name}),
        "s" * 64,
        args_json=json.dumps([[0, "", "a" * 64]]),
        hardware='{"gpu": "l4", "gpus": 1}',
        token="tok",
        working_dir="/tmp",
        created_at=100.0,
        updated_at=100.0,
        desired_replicas=1,
    )
    for key, value in values.items():
        setattr(row, key, value)
    return row


def test_a_deployment_reads_back_with_all_its_fields(store: StateStore) -> None:
    row = _deployment(openapi_json='{"openapi": "3.1.0"}', cost_usd=0.5, emulated=True)
    store.put_deployment(row)
    assert store.get_deployment("classifier") == row
    assert store.get_deployment("unknown") is None


def test_putting_a_deployment_again_replaces_it(store: StateStore) -> None:
    store.put_deployment(_deployment())
    store.put_deployment(_deployment(version=2, status="ACTIVE"))
    read = store.get_deployment("classifier")
    assert read is not None and (read.version, read.status) == (2, "ACTIVE")
    assert len(store.list_deployments(include_stopped=True)) == 1


def test_deployment_updates_change_only_the_given_fields(store: StateStore) -> None:
    store.put_deployment(_deployment())
    store.update_deployment("classifier", status="FAILED", error="boom", cost_usd=1.25)
    read = store.get_deployment("classifier")
    assert read is not None
    assert (read.status, read.error, read.cost_usd, read.token) == ("FAILED", "boom", 1.25, "tok")


def test_stopped_deployments_are_listed_only_when_asked(store: StateStore) -> None:
    store.put_deployment(_deployment("b"))
    store.put_deployment(_deployment("a", status="STOPPED"))
    store.put_deployment(_deployment("c", status="ACTIVE"))
    assert [d.name for d in store.list_deployments()] == ["b", "c"]
    assert [d.name for d in store.list_deployments(include_stopped=True)] == ["a", "b", "c"]


def test_replicas_read_back_oldest_first_and_live_ones_on_their_own(store: StateStore) -> None:
    first = ReplicaRow("r1", "classifier", 1, "ready", url="http://127.0.0.1:1", secret="x")
    first.started_at, first.ready_at, first.pid = 10.0, 11.0, 42
    second = ReplicaRow("r2", "classifier", 2, "starting", started_at=20.0)
    other = ReplicaRow("r3", "other", 1, "ready", started_at=5.0)
    for r in (second, first, other):
        store.put_replica(r)
    assert store.get_replicas("classifier") == [first, second]
    store.update_replica("r1", status="stopped", ended_at=30.0, cost_usd=0.1)
    live = store.get_replicas("classifier", live_only=True)
    assert [r.replica_id for r in live] == ["r2"]
    ended = store.get_replicas("classifier")[0]
    assert (ended.status, ended.ended_at, ended.url) == ("stopped", 30.0, "http://127.0.0.1:1")


def test_deployment_events_come_newest_first_up_to_the_limit(store: StateStore) -> None:
    store.add_deployment_events(
        [
            DeploymentEventRow("classifier", float(t), "scale_up", f"event {t}", "{}")
            for t in range(5)
        ]
    )
    store.add_deployment_events([DeploymentEventRow("other", 9.0, "scale_up", "elsewhere")])
    events = store.deployment_events("classifier", limit=3)
    assert [e.message for e in events] == ["event 4", "event 3", "event 2"]
    assert events[0] == DeploymentEventRow("classifier", 4.0, "scale_up", "event 4", "{}")
    assert store.deployment_events("nobody") == []


def test_cost_summary_counts_ended_replicas_with_tasks(store: StateStore) -> None:
    row, nodes = _dispatch(n=2)
    _apply_new(store, (row, nodes))
    _ended(
        store,
        row,
        {
            1: {
                "status": "COMPLETED",
                "executor": "gpu",
                "gpu_type": "l4",
                "ended_day": "2026-11-20",
                "billed_s": 10.0,
                "cost_usd": 0.5,
            }
        },
    )
    billed = {"executor": "gpu", "gpu_type": "l4", "ended_day": "2026-11-20"}
    store.put_replica(ReplicaRow("r1", "svc", 1, "stopped", billed_s=60.0, cost_usd=2.0, **billed))
    store.put_replica(ReplicaRow("r2", "svc", 1, "ready", started_at=1.0))
    rows = store.cost_summary()
    assert [(r.day, r.executor, r.gpu_type, r.tasks) for r in rows] == [
        ("2026-11-20", "gpu", "l4", 2)
    ]
    assert rows[0].cost_usd == pytest.approx(2.5) and rows[0].billed_s == 70.0


def test_an_older_sqlite_database_gains_the_deployment_tables(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE deployments (name VARCHAR(64) PRIMARY KEY, status VARCHAR(16) "
            "NOT NULL, version INTEGER NOT NULL, manifest_json TEXT NOT NULL, "
            "service_sha256 VARCHAR(64) NOT NULL)"
        )
        db.execute("INSERT INTO deployments VALUES ('old', 'ACTIVE', 3, '{}', 'abc')")
    store = SqlStateStore(f"sqlite:///{path}")
    read = store.get_deployment("old")
    assert read is not None and (read.version, read.cost_usd, read.openapi_json) == (3, 0.0, "")
    assert store.get_replicas("old") == [] and store.deployment_events("old") == []
    store.close()
