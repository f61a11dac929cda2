"""Dynamic batching: coalescing, one answer per request, per-request errors, metrics."""

from __future__ import annotations

import asyncio
import doctest
import json
import math
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest

import cobalt as ct
from cobalt import _service
from cobalt._runtime import batching as _batching
from cobalt._runtime.batching import Batcher
from cobalt._runtime.replica_app import ReplicaApp
from cobalt_common import deploy
from cobalt_common.deploy import Manifest, Route

pytestmark = pytest.mark.unit

WAIT_MS = 200
"""Long enough that concurrent test requests always meet in one batch."""


def ok(value: Any, request_id: str) -> tuple[int, bytes]:
    return 200, json.dumps(value).encode()


def failed(exc: BaseException, request_ids: str) -> tuple[int, bytes]:
    return 500, str(exc).encode()


def run_batcher(batcher: Batcher, inputs: list[Any]) -> list[tuple[int, bytes]]:
    async def go() -> list[tuple[int, bytes]]:
        return await asyncio.gather(*(batcher.submit({"x": x}) for x in inputs))

    return asyncio.run(go())


class Calls:
    """A batch function that records the inputs of each call."""

    def __init__(self) -> None:
        self.seen: list[list[Any]] = []

    async def __call__(self, columns: dict[str, list[Any]]) -> Any:
        self.seen.append(list(columns["x"]))
        return [x * 10 for x in columns["x"]]


def test_waiting_requests_are_coalesced_up_to_max_size() -> None:
    calls = Calls()
    batcher = Batcher("f", ct.Batch(max_size=4, max_wait_ms=1000), calls, answer=ok, fail=failed)
    started = time.monotonic()
    answers = run_batcher(batcher, list(range(8)))
    assert answers == [(200, str(x * 10).encode()) for x in range(8)]
    assert calls.seen == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert time.monotonic() - started < 0.5, "full batches do not wait for max_wait_ms"
    assert batcher.sizes() == {"4": 2}


def test_a_batch_with_fewer_runs_once_max_wait_ms_passed() -> None:
    calls = Calls()
    batcher = Batcher("f", ct.Batch(max_size=32, max_wait_ms=80), calls, answer=ok, fail=failed)
    started = time.monotonic()
    run_batcher(batcher, [1, 2, 3])
    waited = time.monotonic() - started
    assert calls.seen == [[1, 2, 3]]
    assert 0.07 <= waited < 1.0


def test_max_wait_ms_zero_runs_whatever_is_waiting() -> None:
    calls = Calls()
    batcher = Batcher("f", ct.Batch(max_size=32, max_wait_ms=0), calls, answer=ok, fail=failed)
    run_batcher(batcher, [1, 2, 3])
    assert sum(len(c) for c in calls.seen) == 3


def test_requests_arriving_during_a_batch_form_the_next_one() -> None:
    seen: list[list[int]] = []
    running = 0

    async def slow(columns: dict[str, list[Any]]) -> list[int]:
        nonlocal running
        running += 1
        assert running == 1, "batches of one endpoint run one at a time"
        seen.append(columns["x"])
        await asyncio.sleep(0.05)
        running -= 1
        return list(columns["x"])

    batcher = Batcher("f", ct.Batch(max_size=8, max_wait_ms=0), slow, answer=ok, fail=failed)

    async def go() -> list[tuple[int, bytes]]:
        first = asyncio.ensure_future(batcher.submit({"x": 0}))
        await asyncio.sleep(0.01)  # the batch of one is running
        later = [asyncio.ensure_future(batcher.submit({"x": x})) for x in (1, 2, 3)]
        return await asyncio.gather(first, *later)

    assert [a[1] for a in asyncio.run(go())] == [b"0", b"1", b"2", b"3"]
    assert seen == [[0], [1, 2, 3]]


def test_a_request_cancelled_before_its_batch_runs_is_dropped_from_it() -> None:
    calls = Calls()
    batcher = Batcher("f", ct.Batch(max_size=8, max_wait_ms=50), calls, answer=ok, fail=failed)

    async def go() -> list[tuple[int, bytes]]:
        tasks = [asyncio.ensure_future(batcher.submit({"x": x})) for x in (1, 2, 3)]
        await asyncio.sleep(0.01)
        tasks[1].cancel()
        return await asyncio.gather(tasks[0], tasks[2])

    assert asyncio.run(go()) == [(200, b"10"), (200, b"30")]
    assert calls.seen == [[1, 3]]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"max_size": 0}, "Batch(max_size=...) must be a whole number >= 1"),
        ({"max_size": 2.5}, "Batch(max_size=...) must be a whole number >= 1"),
        ({"max_size": True}, "Batch(max_size=...) must be a whole number >= 1"),
        ({"max_wait_ms": -1}, "Batch(max_wait_ms=...) must be a number of milliseconds >= 0"),
        ({"max_wait_ms": math.inf}, "Batch(max_wait_ms=...) must be a number of milliseconds"),
        ({"max_wait_ms": "5ms"}, "Batch(max_wait_ms=...) must be a number of milliseconds"),
    ],
)
def test_batch_options_are_checked_where_they_are_written(
    options: dict[str, Any], words: str
) -> None:
    with pytest.raises(ct.SpecError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ct.Batch(**options)


def test_batch_defaults_and_the_manifest_round_trip() -> None:
    assert ct.Batch() == ct.Batch(max_size=32, max_wait_ms=5)
    svc = ct.service(lambda: {}, name="emb")

    @svc.endpoint("/embed", batch=ct.Batch(max_size=8, max_wait_ms=2))
    def embed(text: list[str]) -> list[int]:
        return [len(t) for t in text]

    manifest = svc.manifest()
    assert manifest.routes == (Route("embed", "/embed", False, ct.Batch(8, 2.0)),)
    assert Manifest.from_json(manifest.to_json()) == manifest
    plain = json.loads(manifest.to_json())
    del plain["routes"][0]["batch"]  # a manifest written before batching existed
    assert Manifest.from_json(json.dumps(plain)).routes[0].batch is None
    assert embed(["a", "bcd"]) == [1, 3], "the function stays a plain function"


def make_service() -> ct.Service[[]]:
    @ct.service(name="batched", autoscaling=ct.Autoscaling(max_concurrency=64))
    def batched() -> dict[str, Any]:
        return {"prefix": ">", "seen": [], "lock": threading.Lock()}

    return batched


def post_all(app: ReplicaApp, path: str, bodies: list[Any]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(
                            path,
                            content=b if isinstance(b, bytes) else json.dumps(b).encode(),
                            headers={"x-request-id": f"req-{i}"},
                        )
                        for i, b in enumerate(bodies)
                    )
                )
            )

    return asyncio.run(go())


@pytest.fixture
def app() -> Iterator[ReplicaApp]:
    svc = make_service()

    @svc.endpoint("/tag", batch=ct.Batch(max_size=16, max_wait_ms=WAIT_MS))
    def tag(prefix: str, seen: list[list[str]], lock: Any, text: list[str], n: list[int]) -> Any:
        with lock:
            seen.append(list(text))
        time.sleep(0.01)
        return [f"{prefix}{t}" * k for t, k in zip(text, n, strict=True)]

    @svc.endpoint("/check", batch=ct.Batch(max_size=16, max_wait_ms=WAIT_MS))
    async def check(value: list[int]) -> list[int | Exception]:
        return [ValueError(f"{v} is negative") if v < 0 else v * 2 for v in value]

    @svc.endpoint("/fragile", batch=ct.Batch(max_size=16, max_wait_ms=WAIT_MS))
    def fragile(seen: list[list[str]], lock: Any, word) -> list[str]:  # type: ignore[no-untyped-def]
        with lock:
            seen.append(list(word))
        if "bad" in word:
            raise RuntimeError("cannot take 'bad'")
        return [w.upper() for w in word]

    @svc.endpoint("/short", batch=ct.Batch(max_size=16, max_wait_ms=WAIT_MS))
    def short(x: list[int]) -> Any:
        return x[:-1] if len(x) > 1 else {"x": x}

    made = ReplicaApp(svc, svc())
    yield made
    made.close()


def metrics(app: ReplicaApp) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
            return (await client.get("/_cobalt/metrics")).json()  # type: ignore[no-any-return]

    return asyncio.run(go())


def seen(app: ReplicaApp) -> list[list[str]]:
    return app._routes["/tag"].injected["seen"]  # type: ignore[no-any-return]


def test_concurrent_callers_each_get_their_own_result_in_one_call(app: ReplicaApp) -> None:
    bodies = [{"text": f"t{i}", "n": 1 + i % 3} for i in range(12)]
    answers = post_all(app, "/tag", bodies)
    assert [r.status_code for r in answers] == [200] * 12
    assert [r.json() for r in answers] == [f">t{i}" * (1 + i % 3) for i in range(12)]
    assert seen(app) == [[f"t{i}" for i in range(12)]], "one call, in arrival order"


def test_an_exception_returned_at_one_position_fails_only_that_request(
    app: ReplicaApp, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = post_all(app, "/check", [{"value": v} for v in (1, -2, 3, -4)])
    assert [r.status_code for r in answers] == [200, 500, 200, 500]
    assert (answers[0].json(), answers[2].json()) == (2, 6)
    bad = answers[1].json()
    assert bad["error"] == "the endpoint check returned ValueError: -2 is negative"
    err = capsys.readouterr().err
    assert f"error {bad['error_id']} in check (request req-1):" in err
    assert f"error {answers[3].json()['error_id']} in check (request req-3):" in err


def test_a_batch_that_raises_is_run_again_one_request_at_a_time(
    app: ReplicaApp, capsys: pytest.CaptureFixture[str]
) -> None:
    words = ["ok", "bad", "fine", "bad"]
    answers = post_all(app, "/fragile", [{"word": w} for w in words])
    assert [r.status_code for r in answers] == [200, 500, 200, 500]
    assert (answers[0].json(), answers[2].json()) == ("OK", "FINE")
    error = answers[1].json()["error"]
    assert error == "the endpoint fragile raised RuntimeError: cannot take 'bad'"
    assert seen(app) == [words, ["ok"], ["bad"], ["fine"], ["bad"]]
    err = capsys.readouterr().err
    assert (
        "a batch of 4 requests to fragile raised RuntimeError: cannot take 'bad'; "
        "running each request alone (requests req-0, req-1, req-2, req-3)" in err
    )
    assert f"error {answers[1].json()['error_id']} in fragile (request req-1)" in err
    assert metrics(app)["batch_sizes"]["/fragile"] == {"1": 4, "4": 1}


def test_a_wrong_number_of_results_fails_the_whole_batch_saying_why(
    app: ReplicaApp, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = post_all(app, "/short", [{"x": i} for i in range(3)])
    assert [r.status_code for r in answers] == [500] * 3
    messages = {r.json()["error"] for r in answers}
    assert messages == {
        "the batched endpoint short returned 2 results for a batch of 3 requests; it must "
        "return exactly one result per request, in the order of its inputs."
    }
    eid = answers[0].json()["error_id"]
    assert f"error {eid} in short (requests req-0, req-1, req-2):" in capsys.readouterr().err
    (alone,) = post_all(app, "/short", [{"x": 7}])
    assert alone.json()["error"].startswith(
        "the batched endpoint short returned dict for a batch of 1 request; it must return a list"
    )


def test_a_request_that_does_not_validate_gets_422_and_never_enters_a_batch(
    app: ReplicaApp,
) -> None:
    bodies = [{"text": "a", "n": 1}, {"text": "b", "n": "many"}, {"text": ["c"], "n": 1}, {"n": 1}]
    answers = post_all(app, "/tag", bodies)
    assert [r.status_code for r in answers] == [200, 422, 422, 422]
    assert [r.json().get("field") for r in answers[1:]] == ["n", "text", "text"]
    assert "field 'n': Input should be a valid integer" in answers[1].json()["error"]
    assert seen(app) == [["a"]]


def test_the_metrics_count_batch_sizes_per_endpoint(app: ReplicaApp) -> None:
    post_all(app, "/tag", [{"text": str(i), "n": 1} for i in range(5)])
    post_all(app, "/tag", [{"text": "x", "n": 1}])
    assert metrics(app)["batch_sizes"] == {
        "/tag": {"1": 1, "5": 1},
        "/check": {},
        "/fragile": {},
        "/short": {},
    }


def test_a_client_that_leaves_while_waiting_is_dropped_from_its_batch(app: ReplicaApp) -> None:
    async def go() -> tuple[list[Any], list[httpx.Response]]:
        leave = asyncio.Event()
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            if not sent:
                sent.append("body")
                return {"type": "http.request", "body": b'{"text": "gone", "n": 1}'}
            await leave.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/tag", "headers": []}
        leaving = asyncio.ensure_future(app(scope, receive, send))
        await asyncio.sleep(0.005)
        leave.set()  # well before max_wait_ms passed
        await leaving
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
            staying = await client.post("/tag", json={"text": "here", "n": 1})
        return sent, [staying]

    sent, (staying,) = asyncio.run(go())
    assert sent == ["body"], "nothing is sent to a client that left"
    assert staying.json() == ">here"
    assert seen(app) == [["here"]]


def test_openapi_describes_one_request_and_one_result() -> None:
    svc = make_service()

    @svc.endpoint("/embed", batch=ct.Batch(max_size=8, max_wait_ms=1))
    def embed(prefix: str, text: list[str], k: list[int]) -> list[list[float] | Exception]:
        """Embed texts."""
        return [[1.0] for _ in text]

    op = ReplicaApp(svc, svc()).openapi()["paths"]["/embed"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["text"]["type"] == "string"
    assert body["properties"]["k"]["type"] == "integer"
    assert body["required"] == ["text", "k"]
    result = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert result == {"type": "array", "items": {"type": "number"}}
    assert op["x-cobalt-batch"] == {"max_size": 8, "max_wait_ms": 1.0}


def test_a_body_parameter_that_is_not_a_list_is_refused_when_the_replica_builds() -> None:
    svc = make_service()

    @svc.endpoint("/embed", batch=ct.Batch())
    def embed(prefix: str, text: list[str], k: int) -> list[str]:
        return text

    with pytest.raises(ct.SpecError) as info:
        ReplicaApp(svc, svc())
    assert str(info.value) == (
        "endpoint embed is batched, so its body parameter 'k' receives one value per request "
        "as a list: annotate it k: list[int], not int. If it should come from the "
        "initializer, return it in the initializer's dict."
    )


def test_batched_endpoints_that_cannot_work_are_refused_at_decoration() -> None:
    svc = make_service()

    def stream(text: list[str]) -> Iterator[str]:
        yield from text

    with pytest.raises(ct.SpecError, match="a streaming endpoint cannot be batched"):
        svc.endpoint("/s", streaming=True, batch=ct.Batch())(stream)
    with pytest.raises(ct.SpecError, match="a streaming endpoint cannot be batched"):
        svc.endpoint("/s", batch=ct.Batch())(stream)

    def extra(text: list[str], **rest: Any) -> list[str]:
        return text

    with pytest.raises(ct.SpecError, match=r"replace \*\*kwargs with parameters"):
        svc.endpoint("/e", batch=ct.Batch())(extra)

    def scalar(model: str, n: int) -> list[int]:
        return [n]

    with pytest.raises(ct.SpecError, match="none of its parameters is a list"):
        svc.endpoint("/n", batch=ct.Batch())(scalar)
    with pytest.raises(ct.SpecError, match=r'Did you mean @batched.endpoint\("/b", batch=ct.Batch'):
        svc.endpoint("/b", batch=True)  # type: ignore[arg-type]
    with pytest.raises(ct.SpecError, match=r"batch= takes ct.Batch\(max_size=..., max_wait_ms"):
        svc.endpoint("/b", batch=32)  # type: ignore[arg-type]
    assert svc.endpoints == []


@pytest.mark.parametrize("module", [_batching, _service, deploy], ids=lambda m: m.__name__)
def test_the_docstring_examples_run(module: ModuleType) -> None:
    assert doctest.testmod(module).failed == 0
