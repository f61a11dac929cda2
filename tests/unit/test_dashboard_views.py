"""What the dashboard shows, read from a state store holding dispatches with costs and
deployments."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from cobalt_common.deploy import Autoscaling, Manifest, Route
from cobalt_common.hardware import HardwareSpec
from cobalt_controller._convert import given_from_json
from cobalt_controller.dashboard import _views
from cobalt_controller.dashboard._app import _Api
from cobalt_controller.dashboard._deployments import (
    ENDED_REPLICAS_SHOWN,
    DeploymentSnapshot,
    DeploymentSnapshots,
)
from cobalt_controller.dashboard._live import ALL, DEPLOYMENTS, LiveFeed, deployment_key
from cobalt_controller.state import (
    DeploymentEventRow,
    DeploymentRow,
    DispatchRow,
    MemoryStateStore,
    NodeRow,
    ReplicaRow,
    WriteBatch,
)

pytestmark = pytest.mark.unit

H100 = json.dumps({"gpu": "h100", "gpus": 1, "cpus": 4, "memory_mb": 49152, "time_limit_s": 3600})
H100_GIVEN = json.dumps(
    {"cpus": 4, "memory_mb": 49152, "gpu": "h100", "gpu_indices": [1], "emulated": True}
)
CPU = json.dumps({"gpu": None, "gpus": 0, "cpus": 1, "memory_mb": 0, "time_limit_s": None})
CPU_GIVEN = json.dumps(
    {"cpus": 1, "memory_mb": 0, "gpu": None, "gpu_indices": [], "emulated": False}
)


def sweep(store: MemoryStateStore, dispatch_id: str, costs: list[float], day: str) -> None:
    """A parameter, one emulated-H100 task per cost, their list, and a free CPU reduce."""
    now = time.time()
    n = len(costs)
    rows = [NodeRow(dispatch_id, 0, "widths", "parameter", "COMPLETED")]
    for i, cost in enumerate(costs, start=1):
        rows.append(
            NodeRow(
                dispatch_id,
                i,
                "train",
                "electron",
                "COMPLETED",
                inputs=json.dumps([[0, 0, "", False]]),
                hardware=H100,
                hardware_given=H100_GIVEN,
                executor="gpu",
                started_at=now - 10,
                ended_at=now - 4,
                stdout=f"training {i}\n",
                cost_usd=cost,
                billed_s=6.0,
                rate_usd_per_hour=cost / 6 * 3600,
                gpu_type="h100",
                emulated=True,
                ended_day=day,
            )
        )
    rows.append(
        NodeRow(
            dispatch_id,
            n + 1,
            "[...]",
            "collection",
            "COMPLETED",
            inputs=json.dumps([[i, i - 1, "", False] for i in range(1, n + 1)]),
        )
    )
    rows.append(
        NodeRow(
            dispatch_id,
            n + 2,
            "best",
            "electron",
            "COMPLETED",
            inputs=json.dumps([[n + 1, 0, "", False]]),
            hardware=CPU,
            hardware_given=CPU_GIVEN,
            executor="local",
            started_at=now - 3,
            ended_at=now - 2,
            ended_day=day,
        )
    )
    batch = WriteBatch()
    row = DispatchRow(
        dispatch_id,
        "sweep",
        "COMPLETED",
        now - 11,
        n + 2,
        n + 1,
        started_at=now - 10,
        ended_at=now - 2,
        cost_usd=sum(costs),
        emulated=True,
    )
    batch.new_dispatches.append((row, rows))
    store.apply(batch)


@pytest.fixture
def store() -> MemoryStateStore:
    s = MemoryStateStore()
    sweep(s, "d1", [0.25, 1.5, 0.125], "2026-11-01")
    sweep(s, "d2", [2.0], "2026-11-02")
    return s


def test_only_electrons_and_sublattices_are_tasks(store: MemoryStateStore) -> None:
    rows = _views.tasks(store.get_nodes("d1", include_logs=False))

    assert [(r["id"], r["name"]) for r in rows] == [
        (1, "train"),
        (2, "train"),
        (3, "train"),
        (5, "best"),
    ]


def test_a_task_row_describes_hardware_in_cobalts_words_and_marks_emulation(
    store: MemoryStateStore,
) -> None:
    train, *_, best = _views.tasks(store.get_nodes("d1"))

    assert train["requested"] == "1x H100, 4 CPUs, 48 GB, limit 1h"
    assert train["given"] == "1x H100 80GB (emulated), 4 CPU, 48 GB"
    assert train["emulated"] is True and train["cost_usd"] == 0.25
    assert train["duration_s"] == pytest.approx(6.0) and train["billed_s"] == 6.0
    assert best["requested"] == "1 CPU" and best["emulated"] is False


def test_the_per_task_costs_sum_to_the_dispatchs_cost(store: MemoryStateStore) -> None:
    nodes = store.get_nodes("d1")
    row = store.get_dispatch("d1")
    assert row is not None

    view = _views.dispatch(row, _views.count_statuses(nodes))

    assert sum(t["cost_usd"] for t in _views.tasks(nodes)) == pytest.approx(view["cost_usd"])
    assert view["cost_usd"] == pytest.approx(1.875)
    assert view["counts"] == {"COMPLETED": 4} and view["tasks"] == 4
    assert view["emulated"] is True
    assert view["duration_s"] == pytest.approx(8.0)


def test_the_dispatch_list_counts_tasks_by_status_as_the_store_does(
    store: MemoryStateStore,
) -> None:
    rows = store.list_dispatches()

    views = _views.dispatches(rows, store.status_counts([r.dispatch_id for r in rows]))

    assert {v["id"]: v["counts"] for v in views} == {
        "d1": {"COMPLETED": 4},
        "d2": {"COMPLETED": 2},
    }


def test_a_task_detail_carries_its_logs_and_billing(store: MemoryStateStore) -> None:
    node = store.get_node("d1", 2)
    assert node is not None

    detail = _views.task_detail(node)

    assert detail["stdout"] == "training 2\n"
    assert detail["billed_s"] == 6.0
    assert detail["gpu"] == "H100 (emulated)"


def test_cost_is_totalled_by_day_by_executor_and_by_gpu_type(store: MemoryStateStore) -> None:
    view = _views.cost(store.cost_summary(""), "")

    assert view["total"]["cost_usd"] == pytest.approx(3.875)
    assert [(d["day"], d["cost_usd"]) for d in view["by_day"]] == [
        ("2026-11-01", pytest.approx(1.875)),
        ("2026-11-02", pytest.approx(2.0)),
    ]
    assert [(e["executor"], e["tasks"]) for e in view["by_executor"]] == [("gpu", 4), ("local", 2)]
    gpus = {g["label"]: g["cost_usd"] for g in view["by_gpu"]}
    assert gpus == {"H100 (emulated)": pytest.approx(3.875), "no GPU": 0.0}
    for table in ("by_day", "by_executor", "by_gpu"):
        assert sum(r["cost_usd"] for r in view[table]) == pytest.approx(view["total"]["cost_usd"])


def test_a_real_gpu_and_an_emulated_one_are_totalled_apart() -> None:
    s = MemoryStateStore()
    sweep(s, "d1", [1.0], "2026-11-01")
    batch = WriteBatch()
    batch.update_node("d1", 1, emulated=False)
    s.apply(batch)
    sweep(s, "d2", [2.0], "2026-11-01")

    labels = {g["label"]: g["cost_usd"] for g in _views.cost(s.cost_summary(""), "")["by_gpu"]}

    assert labels["H100"] == 1.0 and labels["H100 (emulated)"] == 2.0


def test_unreadable_hardware_is_shown_as_stored_rather_than_failing() -> None:
    assert _views.describe_requested('{"gpu": "tpu9", "gpus": 1}') == '{"gpu": "tpu9", "gpus": 1}'
    assert _views.given_from_json("not json") is None


# -- live updates ---------------------------------------------------------------------


def changed(dispatch_id: str, node_id: int | None, status: str = "COMPLETED") -> tuple[Any, Any]:
    """What the scheduler hands the feed after a commit: a dispatch and a task."""
    task = None
    if node_id is not None:
        task = SimpleNamespace(
            node_id=node_id,
            name="train",
            kind="electron",
            status=status,
            executor="box",
            hardware=HardwareSpec.from_dict(json.loads(H100)),
            given=given_from_json(H100_GIVEN),
            started_at=100.0,
            ended_at=130.0,
            billed_s=30.0,
            cost_usd=0.25,
            reason="",
            sublattice_dispatch_id="",
        )
    return SimpleNamespace(dispatch_id=dispatch_id), task


def test_a_burst_of_changes_reaches_a_page_as_one_message(store: MemoryStateStore) -> None:
    feed = LiveFeed(store)

    async def scenario() -> list[str]:
        sub = feed.subscribe("d1")
        for _ in range(500):
            for node_id in (1, 2, 3, 5):
                feed.notify(*changed("d1", node_id))
        feed.notify(*changed("d1", None))
        await asyncio.to_thread(feed.push)
        await asyncio.sleep(0.05)
        return [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]

    messages = asyncio.run(scenario())

    assert len(messages) == 1
    message = json.loads(messages[0])
    assert message["type"] == "dispatch"
    assert message["dispatch"]["counts"] == {"COMPLETED": 4}
    assert sorted(t["id"] for t in message["tasks"]) == [1, 2, 3, 5]


def test_the_dispatch_list_hears_of_every_dispatch_and_others_only_of_theirs(
    store: MemoryStateStore,
) -> None:
    feed = LiveFeed(store)

    async def scenario() -> tuple[list[str], list[str]]:
        everything, other = feed.subscribe(ALL), feed.subscribe("d2")
        feed.notify(*changed("d1", 1))
        await asyncio.to_thread(feed.push)
        await asyncio.sleep(0.05)
        drain = [everything.queue.get_nowait() for _ in range(everything.queue.qsize())]
        return drain, [other.queue.get_nowait() for _ in range(other.queue.qsize())]

    everything, other = asyncio.run(scenario())

    assert other == []
    assert [d["id"] for d in json.loads(everything[0])["dispatches"]] == ["d1"]


def test_a_page_that_read_before_a_change_gets_just_the_tasks_that_changed_since(
    store: MemoryStateStore,
) -> None:
    feed = LiveFeed(store)
    feed.notify(*changed("d1", 1))
    time.sleep(0.01)
    read_at = time.time()
    feed.notify(*changed("d1", 2))
    feed.notify(*changed("d1", 3))

    async def scenario() -> tuple[list[str], list[str]]:
        stale = feed.subscribe("d1", since=read_at)
        fresh = feed.subscribe("d1", since=time.time() + 1)
        await asyncio.to_thread(feed.push)
        await asyncio.sleep(0.05)
        drain = [stale.queue.get_nowait() or "" for _ in range(stale.queue.qsize())]
        return drain, [fresh.queue.get_nowait() or "" for _ in range(fresh.queue.qsize())]

    stale, fresh = asyncio.run(scenario())

    catch_up = json.loads(stale[0])
    assert catch_up["type"] == "dispatch"
    assert [t["id"] for t in catch_up["tasks"]] == [2, 3]
    assert all(json.loads(m)["type"] == "dispatch" for m in stale + fresh)
    assert fresh and all(json.loads(m)["tasks"] == [] for m in fresh)


def test_a_page_that_read_before_changes_the_feed_has_forgotten_resyncs(
    store: MemoryStateStore,
) -> None:
    feed = LiveFeed(store, forget_after_s=0.0)
    read_at = time.time()
    feed.notify(*changed("d1", 1))
    feed.push()  # forgets when the tasks of d1 changed, but not that d1 changed

    async def first_messages() -> tuple[str | None, int]:
        stale = feed.subscribe("d1", since=read_at)
        fresh = feed.subscribe("d1", since=time.time() + 1)
        return stale.queue.get_nowait(), fresh.queue.qsize()

    stale, fresh = asyncio.run(first_messages())

    assert stale is not None and json.loads(stale) == {"type": "resync"}
    assert fresh == 0


def test_a_watched_task_reaches_the_page_as_committed_without_reading_the_store_again() -> None:
    store = CountingStore()
    sweep(store, "d1", [0.5], "2026-01-02")
    feed = LiveFeed(store)

    async def scenario() -> list[str]:
        sub = feed.subscribe("d1")
        feed.notify(*changed("d1", 1, status="RUNNING"))
        await asyncio.to_thread(feed.push)
        await asyncio.sleep(0.05)
        return [sub.queue.get_nowait() or "" for _ in range(sub.queue.qsize())]

    (message,) = asyncio.run(scenario())

    (row,) = json.loads(message)["tasks"]
    stored = _views.task(
        NodeRow(
            "d1",
            1,
            "train",
            "electron",
            "RUNNING",
            hardware=H100,
            executor="box",
            hardware_given=H100_GIVEN,
            started_at=100.0,
            ended_at=130.0,
            billed_s=30.0,
            cost_usd=0.25,
        ),
        now=time.time(),
    )
    assert row == stored
    assert store.reads == 0


def test_nothing_is_recorded_while_no_page_watches(store: MemoryStateStore) -> None:
    feed = LiveFeed(store)
    for node_id in range(1000):
        feed.notify(*changed("d1", node_id))

    assert not feed._dirty_dispatches and not feed._dirty_tasks


def test_a_page_that_falls_behind_is_told_to_read_everything_again(
    store: MemoryStateStore,
) -> None:
    feed = LiveFeed(store)

    async def scenario() -> list[str | None]:
        sub = feed.subscribe("d1")
        for _ in range(200):
            sub.deliver('{"type": "dispatch"}')
        return [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]

    messages = asyncio.run(scenario())

    assert len(messages) < 100
    assert '{"type": "resync"}' in messages


# -- the dispatch view's JSON ------------------------------------------------------------


class CountingStore(MemoryStateStore):
    """Counts how often a dispatch's nodes are read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get_nodes(
        self,
        dispatch_id: str,
        *,
        include_logs: bool = True,
        node_ids: Collection[int] | None = None,
    ) -> list[NodeRow]:
        self.reads += 1
        return super().get_nodes(dispatch_id, include_logs=include_logs, node_ids=node_ids)


def read_view(api: _Api, dispatch_id: str) -> dict[str, Any]:
    scope = {
        "type": "http",
        "method": "GET",
        "path": f"/api/dispatches/{dispatch_id}",
        "headers": [],
        "query_string": b"",
        "path_params": {"dispatch_id": dispatch_id},
    }
    response = api.dispatch(Request(scope))
    assert response.status_code == 200
    data: dict[str, Any] = json.loads(bytes(response.body))
    return data


def test_a_running_dispatch_is_read_afresh_and_an_ended_one_once() -> None:
    store = CountingStore()
    sweep(store, "d1", [0.5, 0.25], "2026-11-01")
    running = WriteBatch()
    running.update_dispatch("d1", status="RUNNING", ended_at=None)
    running.update_node("d1", 2, status="RUNNING", ended_at=None, cost_usd=0.0)
    store.apply(running)
    api = _Api(store)

    first = read_view(api, "d1")
    done = WriteBatch()
    done.update_node("d1", 2, status="COMPLETED", ended_at=time.time(), cost_usd=0.25)
    done.update_dispatch("d1", status="COMPLETED", ended_at=time.time())
    store.apply(done)
    second, third = read_view(api, "d1"), read_view(api, "d1")

    assert first["tasks"][1]["status"] == "RUNNING"
    assert second["tasks"][1]["status"] == "COMPLETED"
    assert third["dispatch"] == second["dispatch"] and third["tasks"] == second["tasks"]
    assert third["as_of"] > second["as_of"] > first["as_of"]
    assert store.reads == 2


def test_an_unknown_dispatch_is_a_404_that_says_where_to_look() -> None:
    api = _Api(MemoryStateStore())
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    scope["path_params"] = {"dispatch_id": "nope"}

    response = api.dispatch(Request(scope))

    assert response.status_code == 404
    assert "cobalt dispatches" in json.loads(bytes(response.body))["error"]


# -- deployments ---------------------------------------------------------------------------

DEPLOY_TOKEN = "dep-token-never-shown"


def deployed(
    store: MemoryStateStore, name: str, *, auth: bool = True, ended: int = 0, ids: str = ""
) -> None:
    """A deployment with one ready emulated-H100 replica, one starting, ``ended`` stopped
    ones, and three events; ``ids`` prefixes its replicas' ids (unique per store)."""
    now = time.time()
    manifest = Manifest(
        name,
        (Route("predict", "/predict"), Route("stream", "/stream", streaming=True)),
        Autoscaling(min_replicas=1, max_replicas=3),
        auth=auth,
    )
    store.put_deployment(
        DeploymentRow(
            name,
            "ACTIVE",
            2,
            manifest.to_json(),
            "sha",
            hardware=H100,
            executor_ref=json.dumps({"name": "gpu", "type": "local", "options_json": ""}),
            token=DEPLOY_TOKEN,
            created_at=now - 60,
            updated_at=now - 30,
            cost_usd=0.5,
            desired_replicas=2,
        )
    )
    store.put_replica(
        ReplicaRow(
            f"{ids}r2-ready",
            name,
            2,
            "ready",
            url="http://127.0.0.1:4100",
            secret="replica-secret",
            executor="gpu",
            hardware_given=H100_GIVEN,
            started_at=now - 40,
            ready_at=now - 37.5,
            gpu_type="h100",
            emulated=True,
        )
    )
    store.put_replica(ReplicaRow(f"{ids}r2-new", name, 2, "starting", started_at=now - 1))
    for i in range(ended):
        store.put_replica(
            ReplicaRow(
                f"{ids}r1-{i:03d}", name, 1, "stopped", started_at=now - 500 + i, ended_at=now - 100
            )
        )
    store.add_deployment_events(
        [
            DeploymentEventRow(name, now - 40, "deployed", "deployment created", '{"a": 1}'),
            DeploymentEventRow(name, now - 37, "replica_ready", "replica r2-ready is ready"),
            DeploymentEventRow(name, now - 2, "scale_up", "1 -> 2 replica(s)", "not json"),
        ]
    )


def api_get(api: _Api, path: str, query: bytes = b"", **params: str) -> tuple[int, Any]:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [],
        "query_string": query,
        "path_params": params,
    }
    response = (api.deployment if params else api.deployments)(Request(scope))
    return response.status_code, json.loads(bytes(response.body))


def test_the_deployment_list_reads_replicas_auth_routes_and_cost_from_the_store() -> None:
    store = MemoryStateStore()
    deployed(store, "classifier")
    deployed(store, "public", auth=False, ids="p-")

    status, data = api_get(_Api(store), "/api/deployments")

    assert status == 200
    views = {d["name"]: d for d in data["deployments"]}
    c = views["classifier"]
    assert (c["status"], c["ready"], c["desired"], c["version"]) == ("ACTIVE", 1, 2, 2)
    assert c["auth"] is True and views["public"]["auth"] is False
    assert [(r["path"], r["streaming"]) for r in c["routes"]] == [
        ("/predict", False),
        ("/stream", True),
    ]
    assert c["cost_usd"] == 0.5 and c["emulated"] is True
    assert c["hardware"] == "1x H100, 4 CPUs, 48 GB, limit 1h" and c["executor"] == "gpu"
    assert c["url"] == "", "without the manager the gateway's address is unknown"


def test_no_deployment_token_or_replica_secret_reaches_a_page() -> None:
    store = MemoryStateStore()
    deployed(store, "classifier")
    api = _Api(store, lambda: DeploymentSnapshots("http://gw:9000"))

    texts = [
        json.dumps(api_get(api, "/api/deployments")[1]),
        json.dumps(api_get(api, "/api/deployments/classifier", name="classifier")[1]),
    ]

    for text in texts:
        assert DEPLOY_TOKEN not in text and "replica-secret" not in text
    assert '"url": "http://gw:9000/classifier"' in texts[0]


def test_the_managers_live_counts_in_flight_and_accrued_cost_win_over_the_store() -> None:
    store = MemoryStateStore()
    deployed(store, "classifier")
    live = DeploymentSnapshot("ACTIVE", 2, 3, 0.75, True, {"r2-ready": 5})
    api = _Api(store, lambda: DeploymentSnapshots("http://gw:9000", {"classifier": live}))

    _, listed = api_get(api, "/api/deployments")
    _, page = api_get(api, "/api/deployments/classifier", name="classifier")

    (d,) = listed["deployments"]
    assert (d["ready"], d["desired"], d["cost_usd"]) == (2, 3, 0.75)
    assert page["deployment"]["ready"] == 2
    in_flight = {r["id"]: r["in_flight"] for r in page["replicas"]}
    assert in_flight == {"r2-ready": 5, "r2-new": 0}


def test_a_deployments_page_lists_live_replicas_first_with_hardware_and_readiness() -> None:
    store = MemoryStateStore()
    deployed(store, "classifier", ended=25)

    _, page = api_get(_Api(store), "/api/deployments/classifier", name="classifier")

    replicas = page["replicas"]
    assert [r["id"] for r in replicas[:2]] == ["r2-new", "r2-ready"]
    ready = replicas[1]
    assert ready["status"] == "ready" and ready["executor"] == "gpu"
    assert ready["given"] == "1x H100 80GB (emulated), 4 CPU, 48 GB" and ready["emulated"]
    assert ready["ready_after_s"] == pytest.approx(2.5)
    assert ready["url"] == "http://127.0.0.1:4100"
    assert ready["in_flight"] is None, "unknown without the manager"
    assert replicas[0]["ready_after_s"] is None
    ended = replicas[2:]
    assert len(ended) == ENDED_REPLICAS_SHOWN and ended[0]["id"] == "r1-024"
    assert page["ended_replicas_left_out"] == 25 - ENDED_REPLICAS_SHOWN
    assert page["deployment"]["autoscaling"]["max_replicas"] == 3


def test_a_deployments_events_are_newest_first_with_their_inputs() -> None:
    store = MemoryStateStore()
    deployed(store, "classifier")

    _, page = api_get(_Api(store), "/api/deployments/classifier", name="classifier")

    events = page["events"]
    assert [e["kind"] for e in events] == ["scale_up", "replica_ready", "deployed"]
    assert events[2]["inputs"] == {"a": 1}
    assert events[1]["inputs"] is None
    assert events[0]["inputs"] == "not json", "shown as stored rather than failing"


def test_torn_down_deployments_are_listed_only_when_asked() -> None:
    store = MemoryStateStore()
    deployed(store, "classifier")
    store.update_deployment("classifier", status="STOPPED")
    api = _Api(store)

    assert api_get(api, "/api/deployments")[1]["deployments"] == []
    (d,) = api_get(api, "/api/deployments", b"all=1")[1]["deployments"]
    assert d["status"] == "STOPPED"


def test_an_unknown_deployment_is_a_404_that_says_where_to_look() -> None:
    status, body = api_get(_Api(MemoryStateStore()), "/api/deployments/nope", name="nope")

    assert status == 404
    assert "cobalt deployments" in body["error"]


def test_a_deployment_change_reaches_the_list_and_that_deployments_page_only(
    store: MemoryStateStore,
) -> None:
    feed = LiveFeed(store)

    async def scenario() -> list[list[str | None]]:
        subs = [
            feed.subscribe(DEPLOYMENTS),
            feed.subscribe(deployment_key("classifier")),
            feed.subscribe(deployment_key("public")),
            feed.subscribe(ALL),
        ]
        for _ in range(50):
            feed.notify_deployment("classifier")
        await asyncio.to_thread(feed.push)
        await asyncio.sleep(0.05)
        return [[s.queue.get_nowait() for _ in range(s.queue.qsize())] for s in subs]

    listing, mine, other, dispatches = asyncio.run(scenario())

    assert [json.loads(m or "") for m in listing] == [
        {"type": "deployments", "names": ["classifier"]}
    ]
    assert [json.loads(m or "") for m in mine] == [{"type": "deployment", "name": "classifier"}]
    assert other == [] and dispatches == []


def test_a_deployment_page_that_read_before_a_change_resyncs(store: MemoryStateStore) -> None:
    feed = LiveFeed(store)
    read_at = time.time()
    feed.notify_deployment("classifier")

    async def first() -> tuple[int, int, int]:
        stale = feed.subscribe(deployment_key("classifier"), since=read_at)
        listing = feed.subscribe(DEPLOYMENTS, since=read_at)
        other = feed.subscribe(deployment_key("public"), since=read_at)
        return stale.queue.qsize(), listing.queue.qsize(), other.queue.qsize()

    assert asyncio.run(first()) == (1, 1, 0)
