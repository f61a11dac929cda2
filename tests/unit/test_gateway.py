"""The gateway against real HTTP servers on loopback standing in for replicas.

No SDK and no controller: fake replicas are small aiohttp apps, registered
with the gateway directly, and a fake backend records what the gateway asks
of the deployment manager.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from aiohttp import web
from support import Loop, wait_for

from cobalt_common.deploy import Autoscaling
from cobalt_controller.deploy import Gateway, ScaleEvent, Target

pytestmark = pytest.mark.unit

TOKEN = "secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Backend:
    """Records the gateway's calls to the manager."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.woke = threading.Event()
        self.drained = threading.Event()
        self.on_wake: Callable[[], None] | None = None

    def wake(self, name: str) -> None:
        self.calls.append(("wake", name))
        self.woke.set()
        if self.on_wake is not None:
            self.on_wake()

    def replica_suspect(self, name: str, replica_id: str) -> None:
        self.calls.append(("suspect", name, replica_id))

    def replica_drained(self, name: str, replica_id: str) -> None:
        self.calls.append(("drained", name, replica_id))
        self.drained.set()

    def scaled(self, name: str, target: int | None, events: list[ScaleEvent]) -> None:
        self.calls.append(("scaled", name, str(target)))


class FakeReplica:
    """A replica: ``/predict`` answers who served it, ``/slow`` waits for a release,
    ``/stream`` sends three events 0.3 s apart, ``/bad`` answers 422, ``GET /models``
    answers its method, ``/either`` answers JSON or events as its body asks."""

    def __init__(self, loop: Loop, replica_id: str, delay: float = 0.0) -> None:
        self.loop = loop
        self.replica_id = replica_id
        self.delay = delay
        self.seen: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.release: asyncio.Event | None = None
        app = web.Application()
        app.router.add_post("/predict", self.predict)
        app.router.add_post("/slow", self.slow)
        app.router.add_post("/stream", self.stream)
        app.router.add_post("/bad", self.bad)
        app.router.add_post("/cut", self.cut)
        app.router.add_get("/models", self.models)
        app.router.add_post("/either", self.either)
        self.runner = web.AppRunner(app)
        self.url = loop.run(self._start())

    async def _start(self) -> str:
        self.release = asyncio.Event()
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def predict(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.json()
            self.seen.append(dict(request.headers))
            if self.delay:
                await asyncio.sleep(self.delay)
            return web.json_response({"replica": self.replica_id, "body": body})
        finally:
            self.in_flight -= 1

    async def slow(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        assert self.release is not None
        await self.release.wait()
        self.in_flight -= 1
        return web.json_response({"replica": self.replica_id})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        for i in range(3):
            await out.write(f"data: {i}\n\n".encode())
            await asyncio.sleep(0.3)
        await out.write(b"event: end\ndata: null\n\n")
        return out

    async def cut(self, request: web.Request) -> web.StreamResponse:
        """Starts a stream, then dies part-way (the connection drops)."""
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        await out.write(b"data: 0\n\n")
        await asyncio.sleep(0.1)
        assert request.transport is not None
        request.transport.abort()
        return out

    async def models(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        return web.json_response({"method": request.method, "replica": self.replica_id})

    async def either(self, request: web.Request) -> web.StreamResponse:
        if not (await request.json()).get("stream"):
            return web.json_response({"whole": True})
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        for i in range(3):
            await out.write(f"data: {i}\n\n".encode())
            await asyncio.sleep(0.3)
        await out.write(b"data: [DONE]\n\n")
        return out

    async def bad(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "field text is missing", "field": "text"}, status=422)

    def let_go(self) -> None:
        assert self.release is not None
        self.loop.loop.call_soon_threadsafe(self.release.set)

    def close(self) -> None:
        self.loop.run(self.runner.cleanup())


class Closer:
    """A 'replica' that reads the request and closes the connection unanswered."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.connections = 0
        self.server: asyncio.Server = loop.run(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.read(1024)
        writer.close()

    def close(self) -> None:
        # On the server's own loop: asyncio.Server is not thread-safe, and closing it
        # from this thread while the loop detaches a connection woke its waiters twice
        # ("'NoneType' object is not iterable").
        self.loop.run(_close_server(self.server))


async def _close_server(server: asyncio.Server) -> None:
    server.close()


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    loop = Loop()
    yield loop
    loop.close()


@pytest.fixture
def backend() -> Backend:
    return Backend()


@pytest.fixture
def gateway(backend: Backend) -> Iterator[Gateway]:
    gw = Gateway(backend, autoscale_interval_s=3600, drain_grace_s=5)
    gw.start("127.0.0.1", 0)
    yield gw
    gw.stop()


@pytest.fixture
def replicas(loop: Loop) -> Iterator[Callable[..., FakeReplica]]:
    made: list[FakeReplica] = []

    def make(replica_id: str, delay: float = 0.0) -> FakeReplica:
        r = FakeReplica(loop, replica_id, delay)
        made.append(r)
        return r

    yield make
    for r in made:
        r.let_go()
        r.close()


def target(name: str = "svc", auth: bool = True, **autoscaling: Any) -> Target:
    return Target(
        name=name,
        token=TOKEN if auth else "",
        routes={
            "/predict": False,
            "/slow": False,
            "/stream": True,
            "/bad": False,
            "/cut": True,
            "/models": False,
            "/either": False,
        },
        max_body_bytes=1000,
        autoscaling=Autoscaling(**autoscaling),
        openapi=b'{"openapi": "3.1.0"}',
        desired=1,
        get_routes=frozenset({"/models", "/either"}),
    )


def serve(gw: Gateway, t: Target, *ups: FakeReplica | Closer) -> None:
    gw.configure(t)
    for i, up in enumerate(ups):
        rid = up.replica_id if isinstance(up, FakeReplica) else f"closer{i}"
        gw.add_replica(t.name, rid, up.url, f"secret-{rid}")
    gw.sync()


def post(gw: Gateway, path: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("json", {"text": "hi"})
    kwargs.setdefault("headers", AUTH)
    return httpx.post(gw.url + path, timeout=10, **kwargs)


def test_healthz_answers_without_auth(gateway: Gateway) -> None:
    r = httpx.get(gateway.url + "/healthz")
    assert r.status_code == 200 and r.json() == {"ok": True}


def test_a_request_reaches_a_replica_with_its_secret_and_a_request_id(
    gateway: Gateway, replicas: Callable[..., FakeReplica]
) -> None:
    a = replicas("a")
    serve(gateway, target(), a)
    r = post(gateway, "/svc/predict", json={"text": "hello"})
    assert r.status_code == 200
    assert r.json() == {"replica": "a", "body": {"text": "hello"}}
    headers = {k.lower(): v for k, v in a.seen[0].items()}
    assert headers["x-cobalt-replica-secret"] == "secret-a"
    assert headers["x-request-id"] and r.headers["x-request-id"] == headers["x-request-id"]
    assert "authorization" not in headers


def test_gateway_errors_are_json_with_the_right_status(
    gateway: Gateway, replicas: Callable[..., FakeReplica]
) -> None:
    serve(gateway, target(), replicas("a"))
    missing = post(gateway, "/svc/predict", headers={})
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = post(gateway, "/svc/predict", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    route = post(gateway, "/svc/other")
    assert route.status_code == 404 and "/predict" in route.json()["error"]
    method = httpx.put(gateway.url + "/svc/predict", headers=AUTH)
    assert method.status_code == 405 and method.headers["Allow"] == "POST"
    put = httpx.put(gateway.url + "/svc/models", headers=AUTH)
    assert put.status_code == 405 and put.headers["Allow"] == "GET, POST"
    # the gateway refuses a GET on a POST-only route itself: no replica is woken for it
    get = httpx.get(gateway.url + "/svc/predict", headers=AUTH)
    assert get.status_code == 405 and get.headers["Allow"] == "POST"
    assert "takes POST" in get.json()["error"]
    big = post(gateway, "/svc/predict", content=b"x" * 2000)
    assert big.status_code == 413 and "1000 bytes" in big.json()["error"]

    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b"x" * 400

    streamed = post(gateway, "/svc/predict", content=chunks(), json=None)
    assert streamed.status_code == 413


def test_replica_errors_pass_through_unchanged(
    gateway: Gateway, replicas: Callable[..., FakeReplica]
) -> None:
    serve(gateway, target(), replicas("a"))
    r = post(gateway, "/svc/bad")
    assert r.status_code == 422 and r.json() == {"error": "field text is missing", "field": "text"}


def test_open_deployments_need_no_token_and_serve_their_openapi(
    gateway: Gateway, replicas: Callable[..., FakeReplica]
) -> None:
    serve(gateway, target(auth=False), replicas("a"))
    assert post(gateway, "/svc/predict", headers={}).status_code == 200
    spec = httpx.get(gateway.url + "/svc/openapi.json")
    assert spec.status_code == 200 and spec.json() == {"openapi": "3.1.0"}


def test_requests_spread_over_replicas_by_least_outstanding(
    gateway: Gateway, replicas: Callable[..., FakeReplica]
) -> None:
    a, b = replicas("a"), replicas("b")
    serve(gateway, target(), a, b)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(post, gateway, "/svc/slow")
        wait_for(lambda: a.in_flight + b.in_flight, timeout=5, what="the slow request")
        busy, idle = (a, b) if a.in_flight else (b, a)
        served = {post(gateway, "/svc/predict").json()["replica"] for _ in range(4)}
        assert served == {idle.replica_id}
        busy.let_go()
        assert held.result().status_code == 200


def test_a_replica_gets_at_most_max_concurrency_and_the_rest_wait(
    gateway: Gateway, replicas: Callable[..., FakeReplica]
) -> None:
    a = replicas("a", delay=0.2)
    serve(gateway, target(max_concurrency=1), a)
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: post(gateway, "/svc/predict"), range(3)))
    assert [r.status_code for r in results] == [200, 200, 200]
    assert a.max_in_flight == 1
    assert time.monotonic() - started >= 0.55


def test_a_full_queue_answers_503_with_retry_after(
    gateway: Gateway, replicas: Callable[..., FakeReplica]
) -> None:
    a = replicas("a")
    serve(gateway, target(max_concurrency=1, max_queue=1), a)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, gateway, "/svc/slow")
        second = pool.submit(post, gateway, "/svc/slow")
        wait_for(lambda: gateway.metrics("svc").get("queued") == 1, timeout=5, what="a queued one")
        full = post(gateway, "/svc/predict")
        assert full.status_code == 503 and full.headers["Retry-After"]
        assert "at capacity" in full.json()["error"]
        a.let_go()
        assert first.result().status_code == second.result().status_code == 200


def test_a_request_that_waits_past_the_queue_timeout_gets_503(
    gateway: Gateway, backend: Backend
) -> None:
    serve(gateway, target(queue_timeout=0.3))
    started = time.monotonic()
    r = post(gateway, "/svc/predict")
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert "queue_timeout" in r.json()["error"]
    assert 0.25 <= time.monotonic() - started < 3


def test_the_first_request_at_zero_replicas_wakes_a_start_at_once(
    gateway: Gateway, backend: Backend, replicas: Callable[..., FakeReplica]
) -> None:
    serve(gateway, target())
    a = replicas("a")
    backend.on_wake = lambda: gateway.add_replica("svc", "a", a.url, "secret-a")
    started = time.monotonic()
    r = post(gateway, "/svc/predict")
    assert r.status_code == 200 and r.json()["replica"] == "a"
    assert backend.calls[0] == ("wake", "svc")
    assert time.monotonic() - started < 1.0


def test_a_replica_that_closes_the_connection_is_retried_on_another(
    gateway: Gateway, backend: Backend, loop: Loop, replicas: Callable[..., FakeReplica]
) -> None:
    closer = Closer(loop)
    good = replicas("good")
    try:
        serve(gateway, target(), closer, good)
        answers = [post(gateway, "/svc/predict") for _ in range(4)]
        assert [r.status_code for r in answers] == [200] * 4
        assert {r.json()["replica"] for r in answers} == {"good"}
        assert closer.connections == 1
        assert ("suspect", "svc", "closer0") in backend.calls
    finally:
        closer.close()


def test_two_failing_replicas_give_502(gateway: Gateway, loop: Loop) -> None:
    one, two = Closer(loop), Closer(loop)
    try:
        serve(gateway, target(queue_timeout=1), one, two)
        r = post(gateway, "/svc/predict")
        assert r.status_code == 502 and "two replicas failed" in r.json()["error"]
    finally:
        one.close()
        two.close()


def test_server_sent_events_arrive_as_they_are_sent(
    gateway: Gateway, replicas: Callable[..., FakeReplica]
) -> None:
    serve(gateway, target(), replicas("a"))
    started = time.monotonic()
    arrivals: list[tuple[float, str]] = []
    with httpx.stream("POST", gateway.url + "/svc/stream", json={}, headers=AUTH) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data:"):
                arrivals.append((time.monotonic() - started, line))
    assert [line for _, line in arrivals] == ["data: 0", "data: 1", "data: 2", "data: null"]
    assert arrivals[0][0] < 0.5 and arrivals[-1][0] >= 0.8


def test_a_get_reaches_the_replica_on_the_routes_it_serves(
    gateway: Gateway, replicas: Callable[..., FakeReplica]
) -> None:
    a = replicas("a")
    serve(gateway, target(), a)
    r = httpx.get(gateway.url + "/svc/models", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"method": "GET", "replica": "a"}
    assert a.seen[-1]["x-cobalt-replica-secret"] == "secret-a"
    assert post(gateway, "/svc/predict").status_code == 200  # POST after GET, same pool
    unauthorized = httpx.get(gateway.url + "/svc/models")
    assert unauthorized.status_code == 401


def test_any_route_streams_when_its_replica_answers_with_events(
    gateway: Gateway, replicas: Callable[..., FakeReplica]
) -> None:
    serve(gateway, target(), replicas("a"))
    whole = post(gateway, "/svc/either", json={"stream": False})
    assert whole.json() == {"whole": True} and "content-length" in whole.headers
    started = time.monotonic()
    arrivals: list[tuple[float, str]] = []
    body = {"stream": True}
    with httpx.stream("POST", gateway.url + "/svc/either", json=body, headers=AUTH) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data:"):
                arrivals.append((time.monotonic() - started, line))
    assert [line for _, line in arrivals] == ["data: 0", "data: 1", "data: 2", "data: [DONE]"]
    assert arrivals[0][0] < 0.5 and arrivals[-1][0] >= 0.8


def test_a_stream_cut_short_by_its_replica_is_cut_short_for_the_client_too(
    gateway: Gateway, replicas: Callable[..., FakeReplica]
) -> None:
    serve(gateway, target(), replicas("a"))
    lines = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", gateway.url + "/svc/cut", json={}, headers=AUTH) as r,
    ):
        for line in r.iter_lines():
            lines.append(line)
    assert "data: 0" in lines  # what arrived before the failure was passed on
    assert post(gateway, "/svc/predict").status_code == 200


def test_a_draining_replica_gets_no_new_requests_and_is_reported_when_idle(
    gateway: Gateway, backend: Backend, replicas: Callable[..., FakeReplica]
) -> None:
    a, b = replicas("a"), replicas("b")
    serve(gateway, target(), a)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(post, gateway, "/svc/slow")
        wait_for(lambda: a.in_flight, timeout=5, what="the slow request on a")
        gateway.add_replica("svc", "b", b.url, "secret-b")
        gateway.drain_replica("svc", "a")
        gateway.sync()
        assert {post(gateway, "/svc/predict").json()["replica"] for _ in range(3)} == {"b"}
        assert not backend.drained.is_set()
        a.let_go()
        assert held.result().status_code == 200
        assert backend.drained.wait(2)
    assert ("drained", "svc", "a") in backend.calls


def test_a_failed_deployment_without_replicas_answers_503_at_once(gateway: Gateway) -> None:
    serve(gateway, target())
    gateway.configure(dataclasses.replace(target(), failed="Traceback...\nValueError: no model"))
    gateway.sync()
    r = post(gateway, "/svc/predict")
    assert r.status_code == 503 and "ValueError: no model" in r.json()["error"]


def test_metrics_count_requests_latency_and_rate(
    gateway: Gateway, replicas: Callable[..., FakeReplica]
) -> None:
    serve(gateway, target(), replicas("a"))
    for _ in range(5):
        post(gateway, "/svc/predict")
    m = gateway.metrics("svc")
    assert m["requests"] == 5 and m["ongoing"] == 0 and m["rps"] == pytest.approx(0.5)
    assert 0 < m["p50_ms"] <= m["p99_ms"] and m["idle_s"] < 5
    assert json.dumps(m)


def test_an_unknown_deployment_answers_401_like_a_known_one_without_its_token(
    gateway: Gateway, replicas: Callable[..., FakeReplica]
) -> None:
    serve(gateway, target(), replicas("a"))
    serve(gateway, target("open", auth=False), replicas("b"))
    known = post(gateway, "/svc/predict", headers={})
    for headers in ({}, AUTH, {"Authorization": "Bearer anything"}):
        unknown = post(gateway, "/nope/predict", headers=headers)
        assert unknown.status_code == 401, headers
        assert unknown.headers["WWW-Authenticate"] == "Bearer"
        assert unknown.json()["error"] == known.json()["error"].replace("svc", "nope")
    assert post(gateway, "/open/predict", headers={}).json()["replica"] == "b"


def test_the_bearer_scheme_is_accepted_in_any_case(
    gateway: Gateway, replicas: Callable[..., FakeReplica]
) -> None:
    serve(gateway, target(), replicas("a"))
    for scheme in ("bearer", "BEARER", "bEaReR"):
        r = post(gateway, "/svc/predict", headers={"Authorization": f"{scheme} {TOKEN}"})
        assert r.status_code == 200, scheme
    assert post(gateway, "/svc/predict", headers={"Authorization": TOKEN}).status_code == 401
    basic = {"Authorization": f"Basic {TOKEN}"}
    assert post(gateway, "/svc/predict", headers=basic).status_code == 401


@pytest.mark.parametrize(
    "value", [b"Bearer \xff\xfe\x80", b"\xc3(", b"Bearer " + TOKEN.encode() + b"\xff"]
)
def test_an_authorization_header_that_is_not_utf8_answers_401_without_a_traceback(
    gateway: Gateway,
    replicas: Callable[..., FakeReplica],
    caplog: pytest.LogCaptureFixture,
    value: bytes,
) -> None:
    serve(gateway, target(), replicas("a"))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(
            b"POST /svc/predict HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}" % value
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert not [r for r in caplog.records if r.exc_info], caplog.text
