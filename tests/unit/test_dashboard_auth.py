"""Every dashboard page and API call needs the controller's token, and nothing writes.

Each test serves a dashboard over an in-memory store on a free port and talks
HTTP to it, as a browser or a script would.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cobalt_common.deploy import Manifest, Route
from cobalt_common.errors import ConfigError
from cobalt_controller.dashboard import Dashboard
from cobalt_controller.state import (
    DeploymentRow,
    DispatchRow,
    MemoryStateStore,
    NodeRow,
    WriteBatch,
)

pytestmark = pytest.mark.unit

TOKEN = "s3cret-token_value"
PATHS = [
    "/",
    "/cost",
    "/dispatches/d1",
    "/static/app.js",
    "/api/dispatches",
    "/api/dispatches/d1",
    "/api/dispatches/d1/tasks/1",
    "/api/cost",
    "/api/events",
    "/deployments",
    "/deployments/classifier",
    "/api/deployments",
    "/api/deployments/classifier",
    "/api/events?deployment=classifier",
]


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str


def request(
    port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = "" if path.startswith("/api/events") else response.read().decode()
        return Reply(response.status, response.headers, body)
    finally:
        conn.close()


def serve(address: str) -> Dashboard:
    store = MemoryStateStore()
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
    manifest = Manifest("classifier", (Route("predict", "/predict"),))
    store.put_deployment(
        DeploymentRow("classifier", "ACTIVE", 1, manifest.to_json(), "sha", token="dep-token")
    )
    dashboard = Dashboard(store, TOKEN, address)
    dashboard.start()
    return dashboard


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    dashboard = serve("127.0.0.1:0")
    try:
        yield dashboard.port
    finally:
        dashboard.stop()


@pytest.mark.parametrize("path", PATHS)
def test_every_page_and_api_call_without_the_token_is_refused(port: int, path: str) -> None:
    reply = request(port, path)

    assert reply.status == 401
    assert "cobalt dashboard" in reply.body or path.startswith("/api/events")


def test_the_refusal_of_a_page_says_how_to_get_a_link(port: int) -> None:
    reply = request(port, "/")

    assert reply.headers["Content-Type"].startswith("text/html")
    assert "Run <code>cobalt dashboard</code>" in reply.body
    assert TOKEN not in reply.body


def test_the_refusal_of_an_api_call_is_json(port: int) -> None:
    reply = request(port, "/api/dispatches")

    assert "cobalt dashboard" in json.loads(reply.body)["error"]
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Cookie": "cobalt_dashboard_1=" + TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
)
def test_a_wrong_token_or_a_wrong_place_for_it_is_refused(
    port: int, headers: dict[str, str]
) -> None:
    assert request(port, "/api/dispatches", headers=headers).status == 401


def test_a_bearer_token_opens_every_page_and_api_call(port: int) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in PATHS:
        assert request(port, path, headers=auth).status == 200, path

    listed = json.loads(request(port, "/api/dispatches", headers=auth).body)
    assert [d["id"] for d in listed["dispatches"]] == ["d1"]


def test_a_link_with_the_token_sets_a_strict_cookie_and_drops_the_token(port: int) -> None:
    reply = request(port, f"/dispatches/d1?token={TOKEN}&view=graph")

    assert reply.status == 303
    assert reply.headers["Location"] == "/dispatches/d1?view=graph"
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith(f"cobalt_dashboard_{port}={TOKEN};")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes

    again = request(port, "/dispatches/d1?view=graph", headers={"Cookie": cookie.split(";")[0]})
    assert again.status == 200 and "<main" in again.body


def test_a_link_with_a_wrong_token_sets_no_cookie(port: int) -> None:
    reply = request(port, "/?token=guess")

    assert reply.status == 401
    assert "Set-Cookie" not in reply.headers


def test_a_link_cannot_redirect_to_another_site(port: int) -> None:
    reply = request(port, f"//example.org/?token={TOKEN}")

    assert reply.status == 303
    assert reply.headers["Location"] == "/example.org/"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_nothing_but_get_and_head_is_answered_even_with_the_token(port: int, method: str) -> None:
    reply = request(port, "/api/dispatches", method, {"Authorization": f"Bearer {TOKEN}"})

    assert reply.status == 405
    assert reply.headers["Allow"] == "GET, HEAD"
    assert request(port, "/", method).status == 405


def test_head_is_answered_like_get(port: int) -> None:
    reply = request(port, "/api/dispatches", "HEAD", {"Authorization": f"Bearer {TOKEN}"})

    assert reply.status == 200 and reply.body == ""


def test_pages_forbid_scripts_from_anywhere_else_and_framing(port: int) -> None:
    reply = request(port, "/", headers={"Authorization": f"Bearer {TOKEN}"})

    policy = reply.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert reply.headers["Referrer-Policy"] == "no-referrer"
    assert request(port, "/").headers["X-Content-Type-Options"] == "nosniff"


def test_the_token_is_required_when_listening_on_every_interface() -> None:
    dashboard = serve("0.0.0.0:0")
    try:
        assert dashboard.url == f"http://{socket.gethostname()}:{dashboard.port}/"
        for path in PATHS:
            assert request(dashboard.port, path).status == 401, path
        ok = request(dashboard.port, "/api/cost", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200
    finally:
        dashboard.stop()


def test_stopping_ends_open_event_streams_promptly() -> None:
    dashboard = serve("127.0.0.1:0")
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    conn.request("GET", "/api/events?dispatch=d1", headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.readline() == b"retry: 2000\n"

    started = time.monotonic()
    dashboard.stop()

    assert time.monotonic() - started < 3
    conn.close()


def test_a_taken_port_is_a_config_error_naming_the_setting() -> None:
    dashboard = serve("127.0.0.1:0")
    try:
        with pytest.raises(ConfigError, match="dashboard_address"):
            Dashboard(MemoryStateStore(), TOKEN, f"127.0.0.1:{dashboard.port}").start()
    finally:
        dashboard.stop()


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:http", "127.0.0.1:70000"])
def test_an_address_without_a_port_is_a_config_error(address: str) -> None:
    with pytest.raises(ConfigError, match="host:port"):
        Dashboard(MemoryStateStore(), TOKEN, address)
