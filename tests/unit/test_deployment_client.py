"""The Deployment handle against a loopback server that imitates the gateway."""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

import cobalt as ct
from cobalt._deploy import wait_until_started
from cobalt._deployment import Deployment
from cobalt._runtime.replica import bind
from cobalt._runtime.replica_app import ReplicaApp, Scope, dump
from cobalt_common.deploy import Route
from cobalt_common.v1 import controller_pb2 as pb

pytestmark = pytest.mark.unit

TOKEN = "tok-123"


@ct.service(name="demo")
def demo() -> dict[str, Any]:
    return {"model": "m"}


@demo.endpoint("/predict")
def predict(model: str, text: str, n: int = 1) -> dict[str, Any]:
    if text == "fail":
        raise ValueError("asked to fail")
    return {"model": model, "out": [text] * n}


@demo.endpoint("/count", streaming=True)
def count(upto: int, fail_at: int = -1) -> Iterator[int]:
    for i in range(upto):
        if i == fail_at:
            raise RuntimeError(f"failed at {i}")
        yield i


@demo.endpoint("/busy")
def busy() -> None:
    return None


class FakeGateway:
    """``/<name>/<route>`` with a bearer token, proxied in-process to a ReplicaApp."""

    def __init__(self, app: ReplicaApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        headers = dict(scope["headers"])
        path: str = scope["path"]

        async def answer(status: int, body: Any, extra: list[tuple[bytes, bytes]]) -> None:
            data = dump(body)
            start = [(b"content-type", b"application/json"), *extra]
            await send({"type": "http.response.start", "status": status, "headers": start})
            await send({"type": "http.response.body", "body": data})

        if headers.get(b"authorization") != f"Bearer {TOKEN}".encode():
            await answer(
                401, {"error": "missing or wrong token"}, [(b"www-authenticate", b"Bearer")]
            )
        elif not path.startswith("/demo/"):
            await answer(404, {"error": f"no deployment at {path}"}, [])
        elif path == "/demo/openapi.json":
            await answer(200, self.app.openapi(), [])
        elif path == "/demo/busy":
            await answer(503, {"error": "queue full; retry later"}, [(b"retry-after", b"2")])
        else:
            inner = dict(scope, path=path[len("/demo") :])
            await self.app(inner, receive, send)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = ReplicaApp(demo, demo())
    sock = bind("127.0.0.1")
    config = uvicorn.Config(FakeGateway(app), lifespan="off", log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()
    app.close()


@pytest.fixture
def dep(base_url: str) -> Deployment:
    routes = [Route(e.route.name, e.route.path, e.route.streaming) for e in demo.endpoints]
    return Deployment("demo", f"{base_url}/demo", routes, TOKEN, status="active")


def test_each_route_is_a_method_named_after_its_function(dep: Deployment) -> None:
    assert dep.predict(text="hi", n=2) == {"model": "m", "out": ["hi", "hi"]}
    assert dep.call("/predict", text="x") == {"model": "m", "out": ["x"]}
    assert dep.routes == ["/predict", "/count", "/busy"]
    assert {"predict", "async_predict", "count"} <= set(dir(dep))


def test_async_variants_are_coroutines_and_async_iterators(dep: Deployment) -> None:
    async def go() -> tuple[Any, list[int]]:
        value = await dep.async_predict(text="a")
        items = [i async for i in dep.async_count(upto=3)]
        return value, items

    assert asyncio.run(go()) == ({"model": "m", "out": ["a"]}, [0, 1, 2])
    assert asyncio.run(go())[1] == [0, 1, 2]  # a second event loop gets its own client


def test_a_streaming_route_returns_an_iterator(dep: Deployment) -> None:
    assert list(dep.count(upto=4)) == [0, 1, 2, 3]


def test_an_error_mid_stream_raises_with_the_error_id(dep: Deployment) -> None:
    seen = []
    with pytest.raises(ct.EndpointError, match="raised RuntimeError: failed at 2") as info:
        for item in dep.count(upto=5, fail_at=2):
            seen.append(item)
    assert seen == [0, 1]
    assert len(info.value.error_id) == 8


def test_an_endpoint_that_raises_gives_endpoint_error_500_with_its_id(dep: Deployment) -> None:
    with pytest.raises(ct.EndpointError, match="raised ValueError: asked to fail") as info:
        dep.predict(text="fail")
    assert info.value.status_code == 500
    assert info.value.error_id


def test_a_mistyped_field_gives_endpoint_error_422_with_the_field(dep: Deployment) -> None:
    with pytest.raises(ct.EndpointError, match="field 'n'") as info:
        dep.predict(text="a", n="many")
    assert (info.value.status_code, info.value.field) == (422, "n")


def test_a_wrong_token_raises_authentication_error(dep: Deployment) -> None:
    dep.token = "wrong"
    with pytest.raises(ct.AuthenticationError, match="missing or wrong token"):
        dep.predict(text="a")
    with pytest.raises(ct.AuthenticationError):
        list(dep.count(upto=1))


def test_a_refused_token_is_an_endpoint_error_too(dep: Deployment) -> None:
    dep.token = "wrong"
    with pytest.raises(ct.EndpointError, match="missing or wrong token") as info:
        dep.predict(text="a")
    assert info.value.status_code == 401
    assert isinstance(info.value, ct.AuthenticationError)


def test_an_unknown_route_raises_not_found(dep: Deployment) -> None:
    with pytest.raises(ct.NotFoundError, match="no endpoint at /nope"):
        dep.call("/nope")
    with pytest.raises(ct.EndpointError, match="no endpoint at /nope") as info:
        dep.call("/nope")
    assert info.value.status_code == 404
    with pytest.raises(AttributeError, match="has no endpoint 'nope'; its endpoints are predict"):
        dep.nope  # noqa: B018


def test_a_full_queue_raises_503_with_retry_after(dep: Deployment) -> None:
    with pytest.raises(ct.EndpointError, match="queue full") as info:
        dep.busy()
    assert (info.value.status_code, info.value.retry_after) == (503, 2.0)


def test_the_handle_pickles_as_plain_data_and_works_after(dep: Deployment) -> None:
    dep.predict(text="warm")  # its clients exist now
    copy = pickle.loads(pickle.dumps(dep))
    assert (copy.name, copy.url, copy.token, copy.routes) == (dep.name, dep.url, TOKEN, dep.routes)
    assert copy.predict(text="again")["out"] == ["again"]


def test_calling_a_one_route_deployment_maps_positional_arguments(base_url: str) -> None:
    one = Deployment("demo", f"{base_url}/demo", [Route("predict", "/predict")], TOKEN)
    assert one("hi", 2) == {"model": "m", "out": ["hi", "hi"]}
    assert one("yo", n=1)["out"] == ["yo"]
    with pytest.raises(ct.SpecError, match="at most 2 positional"):
        one(1, 2, 3)


def test_calling_a_many_route_deployment_asks_for_a_method(dep: Deployment) -> None:
    with pytest.raises(ct.SpecError, match=r"has 3 endpoints; call one by name: dep.predict"):
        dep("x")


def test_openapi_is_read_from_the_gateway(dep: Deployment) -> None:
    assert "/predict" in dep.openapi()["paths"]


def test_status_replicas_teardown_rotate_and_events_ask_the_controller(
    dep: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    msg = pb.Deployment(name="demo", status=pb.DEPLOYMENT_STATUS_ACTIVE, ready_replicas=2)
    msg.token = TOKEN
    calls: list[str] = []

    def rpc(method: str, request: Any) -> Any:
        calls.append(method)
        if method == "DeploymentEvents":
            event = pb.DeploymentEvent(time=1.0, kind="scale_up", message="up", inputs_json="{}")
            event.inputs_json = json.dumps({"ongoing": 9})
            return pb.DeploymentEventsResponse(events=[event])
        if method == "DeploymentTeardown":
            msg.status = pb.DEPLOYMENT_STATUS_STOPPED
        if method == "DeploymentTokenRotate":
            msg.token = "new-token"
        return msg

    monkeypatch.setattr(dep, "_rpc", rpc)
    assert (dep.status, dep.replicas) == ("active", 2)
    assert dep.events()[0].inputs == {"ongoing": 9}
    assert dep.rotate_token() == "new-token" == dep.token
    dep.teardown()
    assert dep.status == "stopped"
    assert calls[:2] == ["DeploymentGet", "DeploymentGet"]


def test_a_with_block_tears_the_deployment_down_when_it_ends_or_raises(
    dep: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def rpc(method: str, request: Any) -> Any:
        calls.append(method)
        stopped = method == "DeploymentTeardown"
        status = pb.DEPLOYMENT_STATUS_STOPPED if stopped else pb.DEPLOYMENT_STATUS_ACTIVE
        return pb.Deployment(name="demo", status=status)

    monkeypatch.setattr(dep, "_rpc", rpc)
    with dep as entered:
        assert entered is dep
        assert dep.predict(text="hi") == {"model": "m", "out": ["hi"]}
        assert calls == []
    assert calls == ["DeploymentTeardown"]
    assert dep._client is None, "its HTTP connections are closed"
    with pytest.raises(ValueError, match="in the block"), dep:
        raise ValueError("raised in the block")
    assert calls == ["DeploymentTeardown", "DeploymentTeardown"], "torn down, error kept"


def test_repr_shows_status_url_routes_and_an_open_marker_without_auth(base_url: str) -> None:
    open_dep = Deployment("demo", f"{base_url}/demo", [Route("predict", "/predict")], None)
    text = repr(open_dep)  # no controller here: it shows what it last knew
    assert text.startswith("<deployment demo: starting, 0 replicas ready, http://127.0.0.1:")
    assert "routes /predict, open (no auth)>" in text
    html = open_dep._repr_html_()
    assert "open (no auth)" in html and "dep.predict(...)" in html


class FakeClient:
    """Answers DeploymentGet with the given messages, in turn."""

    def __init__(self, *answers: pb.Deployment) -> None:
        self.answers = list(answers)
        self.stub = type("Stub", (), {"DeploymentGet": object()})()

    def call_interruptibly(self, method: Any, request: Any) -> pb.Deployment:
        return self.answers.pop(0)


def test_waiting_raises_deployment_error_with_the_replicas_traceback() -> None:
    starting = pb.Deployment(name="demo", status=pb.DEPLOYMENT_STATUS_STARTING)
    tb = 'Traceback (most recent call last):\n  File "x.py"\nOSError: no weights'
    failed = pb.Deployment(name="demo", status=pb.DEPLOYMENT_STATUS_FAILED, error=tb)
    with pytest.raises(ct.DeploymentError, match="failed to start: OSError: no weights") as info:
        wait_until_started(FakeClient(failed), starting, 5)  # type: ignore[arg-type]
    assert info.value.remote_traceback == tb
    assert info.value.name == "demo"


def test_waiting_past_the_timeout_raises_wait_timeout_error() -> None:
    starting = pb.Deployment(name="demo", status=pb.DEPLOYMENT_STATUS_STARTING)
    with pytest.raises(ct.WaitTimeoutError, match="still starting after 0s"):
        wait_until_started(FakeClient(), starting, 0)  # type: ignore[arg-type]


def test_the_handle_lists_each_route_with_the_methods_it_takes(base_url: str) -> None:
    routes = [
        Route("predict", "/predict"),
        Route("models", "/v1/models", methods=("GET",), raw=True),
    ]
    html = Deployment("demo", f"{base_url}/demo", routes, None)._repr_html_()
    assert "<code>POST /predict</code> → <code>dep.predict(...)</code>" in html
    assert "<code>GET /v1/models</code>" in html
    assert "POST /v1/models" not in html and "dep.models(" not in html
