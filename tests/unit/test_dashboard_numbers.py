"""Numbers in a dashboard URL are the visitor's to choose: none of them is a 500.

The dashboard is served over a SQLite store, whose integers are 64-bit, and
asked as a script would ask, with the token in a header.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cobalt_controller.dashboard._app import build_app
from cobalt_controller.dashboard._live import LiveFeed
from cobalt_controller.state import DispatchRow, NodeRow, SqlStateStore, WriteBatch

pytestmark = pytest.mark.unit

TOKEN = "numbers-token"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path: Path = tmp_path_factory.mktemp("dashboard") / "state.db"
    store = SqlStateStore(f"sqlite:///{path}")
    batch = WriteBatch()
    batch.new_dispatches.append(
        (
            DispatchRow("d1", "flow", "COMPLETED", time.time(), 1, 1),
            [
                NodeRow("d1", 0, "x", "parameter", "COMPLETED"),
                NodeRow("d1", 1, "f", "electron", "COMPLETED", stdout="hi\n"),
            ],
        )
    )
    store.apply(batch)
    app = build_app(store, LiveFeed(store), token=TOKEN, cookie="cobalt-test")
    # Not entered as a context: the dashboard runs no lifespan events.
    yield TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})


def test_a_stored_task_is_found_by_its_node_id(client: TestClient) -> None:
    reply = client.get("/api/dispatches/d1/tasks/1")

    assert reply.status_code == 200
    assert reply.json()["stdout"] == "hi\n"


@pytest.mark.parametrize(
    "node_id",
    ["99999999999999999999999", str(2**63), str(2**64 + 1), "9" * 5000],
    ids=["23-digits", "2**63", "2**64+1", "5000-digits"],
)
def test_a_node_id_beyond_64_bits_is_a_404_not_a_500(client: TestClient, node_id: str) -> None:
    reply = client.get(f"/api/dispatches/d1/tasks/{node_id}")

    assert reply.status_code == 404
    assert "error" in reply.json()


@pytest.mark.parametrize("node_id", ["-1", "1.5", "nan", "1e3", "%201"])
def test_a_node_id_that_is_not_a_non_negative_integer_is_a_404(
    client: TestClient, node_id: str
) -> None:
    reply = client.get(f"/api/dispatches/d1/tasks/{node_id}")

    assert reply.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/api/dispatches?limit=99999999999999999999999",
        "/api/dispatches?limit=-99999999999999999999999",
        "/api/dispatches?limit=nan",
        "/api/dispatches?limit=" + "9" * 5000,
        "/api/cost?days=99999999999999999999999",
        "/api/cost?days=-5",
        "/api/cost?days=inf",
        "/api/deployments/classifier?limit=99999999999999999999999",
    ],
)
def test_out_of_range_limits_and_days_are_clamped_or_ignored(client: TestClient, path: str) -> None:
    reply = client.get(path)

    assert reply.status_code in (200, 404)
    assert reply.headers["content-type"].startswith("application/json")
