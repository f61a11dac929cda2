"""A replica's HTTP API, driven in-process (httpx's ASGI transport) and over loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

import cobalt as ct
from cobalt._runtime.replica import bind, serve
from cobalt._runtime.replica_app import ReplicaApp

pytestmark = pytest.mark.unit

SECRET = "s3cret"
HEADERS = {"x-cobalt-replica-secret": SECRET, "x-request-id": "req-1"}


class Point(BaseModel):
    x: float
    y: float


def scaled(metrics: dict[str, Any]) -> int:
    return int(metrics["ongoing"]) // 2


@ct.service(name="demo", autoscaling=ct.Autoscaling(max_concurrency=4, policy=scaled))
def demo(prefix: str = ">") -> dict[str, Any]:
    return {"prefix": prefix, "model": "small"}


@demo.endpoint("/predict")
def predict(model: str, text: str, n: int = 1) -> dict[str, Any]:
    """Repeat the text."""
    return {"model": model, "out": [text] * n}


@demo.endpoint("/boom")
def boom(text: str) -> str:
    raise ValueError(f"cannot handle {text}")


@demo.endpoint("/norm")
async def norm(point: Point) -> float:
    return float((point.x**2 + point.y**2) ** 0.5)


@demo.endpoint("/anything")
def anything(value, tag: str = "") -> list[Any]:  # type: ignore[no-untyped-def]
    return [value, tag]


@demo.endpoint("/count", streaming=True)
def count(prefix: str, upto: int) -> Iterator[str]:
    for i in range(upto):
        if i == 2 and upto == 99:
            raise RuntimeError("stopped at 2")
        yield f"{prefix}{i}"


@demo.endpoint("/acount", streaming=True)
async def acount(upto: int) -> AsyncIterator[int]:
    for i in range(upto):
        await asyncio.sleep(0)
        yield i


@pytest.fixture
def app() -> Iterator[ReplicaApp]:
    made = ReplicaApp(demo, demo(), replica_id="r1-abcd", version=3, secret=SECRET, cpus=2)
    yield made
    made.close()


def post(app: ReplicaApp, path: str, body: Any = None, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers = kw.pop("headers", HEADERS)
            return await client.request(
                kw.pop("method", "POST"), path, content=content, headers=headers
            )

    return asyncio.run(go())


def test_an_endpoint_gets_the_body_fields_and_the_initializers_values(app: ReplicaApp) -> None:
    r = post(app, "/predict", {"text": "hi", "n": 2})
    assert r.status_code == 200
    assert r.json() == {"model": "small", "out": ["hi", "hi"]}


def test_an_async_endpoint_gets_validated_pydantic_models(app: ReplicaApp) -> None:
    r = post(app, "/norm", {"point": {"x": 3, "y": 4}})
    assert (r.status_code, r.json()) == (200, 5.0)


def test_a_parameter_without_a_type_hint_accepts_any_json(app: ReplicaApp) -> None:
    assert post(app, "/anything", {"value": {"a": [1, None]}}).json() == [{"a": [1, None]}, ""]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b"{not json", "", "not valid JSON"),
        ([1, 2], "", "must be a JSON object"),
        ({"n": 2}, "text", "field 'text' is required by predict"),
        ({"text": 5}, "text", "field 'text': Input should be a valid string"),
        ({"text": "a", "n": "many"}, "n", "field 'n': Input should be a valid integer"),
        ({"text": "a", "colour": "red"}, "colour", "'colour' is not a parameter of predict"),
        ({"text": "a", "model": "big"}, "model", "'model' is not a parameter of predict"),
    ],
)
def test_bad_bodies_get_422_naming_the_field(
    app: ReplicaApp, body: Any, field: str, words: str
) -> None:
    r = post(app, "/predict", body)
    assert r.status_code == 422
    data = r.json()
    assert words in data["error"]
    assert data["field"] == field
    assert data["detail"]


def test_a_nested_field_is_named_with_its_path(app: ReplicaApp) -> None:
    data = post(app, "/norm", {"point": {"x": 1, "y": "far"}}).json()
    assert data["field"] == "point"
    assert "field 'point.y'" in data["error"]


def test_an_endpoint_that_raises_gets_500_with_an_error_id_in_the_log_and_serving_goes_on(
    app: ReplicaApp, capsys: pytest.CaptureFixture[str]
) -> None:
    r = post(app, "/boom", {"text": "this"})
    assert r.status_code == 500
    data = r.json()
    assert data["error"] == "the endpoint boom raised ValueError: cannot handle this"
    err = capsys.readouterr().err
    assert f"error {data['error_id']} in boom (request req-1):" in err
    assert "ValueError: cannot handle this" in err
    assert 'raise ValueError(f"cannot handle {text}")' in err
    assert post(app, "/predict", {"text": "still"}).status_code == 200


def test_a_sync_generator_streams_server_sent_events(app: ReplicaApp) -> None:
    r = post(app, "/count", {"upto": 3})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert r.text == ('data: ">0"\n\ndata: ">1"\n\ndata: ">2"\n\nevent: end\ndata: null\n\n')


def test_an_async_generator_streams_too(app: ReplicaApp) -> None:
    assert (
        post(app, "/acount", {"upto": 2}).text == "data: 0\n\ndata: 1\n\nevent: end\ndata: null\n\n"
    )


def test_an_error_mid_stream_is_an_error_event_with_its_id(
    app: ReplicaApp, capsys: pytest.CaptureFixture[str]
) -> None:
    text = post(app, "/count", {"upto": 99}).text
    first, rest = text.split("event: error\ndata: ")
    assert first == 'data: ">0"\n\ndata: ">1"\n\n'
    error = json.loads(rest)
    assert error["error"] == "the endpoint count raised RuntimeError: stopped at 2"
    assert f"error {error['error_id']} in count" in capsys.readouterr().err


def test_a_streaming_route_checks_its_body_before_streaming(app: ReplicaApp) -> None:
    r = post(app, "/count", {"upto": "x"})
    assert (r.status_code, r.json()["field"]) == (422, "upto")


def test_requests_without_the_replica_secret_get_403(app: ReplicaApp) -> None:
    assert post(app, "/predict", {"text": "a"}, headers={}).status_code == 403
    wrong = {"x-cobalt-replica-secret": "guess"}
    assert post(app, "/_cobalt/health", method="GET", headers=wrong).status_code == 403


def test_unknown_paths_get_404_and_wrong_methods_405(app: ReplicaApp) -> None:
    r = post(app, "/nope", {})
    assert r.status_code == 404
    assert "/predict" in r.json()["error"]
    assert post(app, "/predict", method="GET").status_code == 405
    assert post(app, "/_cobalt/health", method="POST").status_code == 405


def test_health_says_who_the_replica_is(app: ReplicaApp) -> None:
    data = post(app, "/_cobalt/health", method="GET").json()
    assert data["deployment"] == "demo"
    assert (data["replica_id"], data["version"], data["ready"]) == ("r1-abcd", 3, True)
    assert data["pid"] > 0


def test_metrics_report_utilization_and_request_counts(
    app: ReplicaApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    post(app, "/predict", {"text": "a"})
    data = post(app, "/_cobalt/metrics", method="GET").json()
    assert 0.0 <= data["cpu_utilization"] <= 1.0
    assert data["gpu_utilization"] is None
    assert (data["in_flight"], data["requests"]) == (0, 1)


def test_metrics_read_no_gpu_when_gpus_are_emulated_or_nvidia_smi_is_missing(
    app: ReplicaApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("COBALT_GPUS_EMULATED", "1")
    assert post(app, "/_cobalt/metrics", method="GET").json()["gpu_utilization"] is None
    monkeypatch.setenv("COBALT_GPUS_EMULATED", "0")
    monkeypatch.setenv("PATH", "/nonexistent")
    r = post(app, "/_cobalt/metrics", method="GET")
    assert (r.status_code, r.json()["gpu_utilization"]) == (200, None)


def test_the_policy_route_runs_the_custom_policy(app: ReplicaApp) -> None:
    assert post(app, "/_cobalt/policy", {"ongoing": 9}).json() == {"replicas": 4}
    r = post(app, "/_cobalt/policy", {})
    assert r.status_code == 500
    assert "KeyError" in r.json()["error"]


def test_the_policy_route_is_404_without_a_custom_policy() -> None:
    svc = ct.service(lambda: {}, name="plain")
    svc.endpoint("/f")(predict)
    app = ReplicaApp(svc, {})
    assert post(app, "/_cobalt/policy", {"ongoing": 1}, headers={}).status_code == 404


def test_openapi_describes_each_route_with_its_body_schema(app: ReplicaApp) -> None:
    doc = app.openapi()
    assert doc["openapi"] == "3.1.0"
    op = doc["paths"]["/predict"]["post"]
    assert op["operationId"] == "predict"
    assert op["summary"] == "Repeat the text."
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert list(body["properties"]) == ["text", "n"]
    assert body["required"] == ["text"]
    assert set(op["responses"]) == {"200", "401", "404", "413", "422", "500", "503"}
    stream = doc["paths"]["/count"]["post"]["responses"]["200"]["content"]
    assert list(stream) == ["text/event-stream"]
    assert "Point" in doc["components"]["schemas"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    json.dumps(doc)


def test_openapi_of_an_open_service_has_no_security() -> None:
    svc = ct.service(lambda: {}, name="open", auth=False)
    svc.endpoint("/f")(predict)
    doc = ReplicaApp(svc, {}).openapi()
    assert "security" not in doc
    assert "401" not in doc["paths"]["/f"]["post"]["responses"]


def test_a_real_server_streams_and_stops_on_a_shutdown_request() -> None:
    app = ReplicaApp(demo, demo("#"), secret=SECRET)
    sock = bind("127.0.0.1")
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    thread = threading.Thread(target=serve, args=(app, sock), daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=url, headers=HEADERS, trust_env=False) as client:
            with client.stream("POST", "/count", json={"upto": 3}) as r:
                chunks = [line for line in r.iter_lines() if line]
            assert chunks == ['data: "#0"', 'data: "#1"', 'data: "#2"', "event: end", "data: null"]
            assert client.post("/predict", json={"text": "x"}).json()["out"] == ["x"]
            assert client.post("/_cobalt/shutdown").status_code == 202
        thread.join(10)
        assert not thread.is_alive()
    finally:
        sock.close()
        app.close()


def test_sync_endpoints_run_concurrently_up_to_max_concurrency() -> None:
    svc = ct.service(lambda: {}, name="slow", autoscaling=ct.Autoscaling(max_concurrency=4))

    @svc.endpoint("/wait")
    def wait() -> float:
        time.sleep(0.2)
        return 0.0

    app = ReplicaApp(svc, {})

    async def go() -> float:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
            started = time.monotonic()
            await asyncio.gather(*(client.post("/wait", content=b"") for _ in range(4)))
            return time.monotonic() - started

    assert asyncio.run(go()) < 0.6
    app.close()
