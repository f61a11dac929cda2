"""Deployment metrics: what a replica reports of its models, how the controller sums
the replicas' readings, and how the SDK shows them."""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import http.server
import json
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import cobalt as ct
from cobalt import _deployment_metrics
from cobalt._runtime import replica_app as _replica_app
from cobalt._runtime.replica_app import ReplicaApp
from cobalt_common.deploy import Autoscaling
from cobalt_common.histogram import Histogram
from cobalt_controller._deploy_rpc import metrics_pb
from cobalt_controller.deploy import Autoscaler
from cobalt_controller.deploy import _model_metrics as model_metrics
from cobalt_controller.deploy._autoscaler import COLLECT_EVERY_S, READINGS, ScaleEvent
from cobalt_controller.deploy._book import DeploymentBook
from cobalt_controller.deploy._metrics_keeper import MetricsKeeper
from cobalt_controller.deploy._model_metrics import STALE_S, WINDOW_S, DeploymentTotals
from cobalt_controller.deploy.policies import Metrics, Utilization
from cobalt_controller.state import MemoryStateStore

pytestmark = pytest.mark.unit

SECRET = "s3cret"


class FakeModel:
    """Counts like an engine: cumulative counters and latency histograms."""

    name = "fake-llm"

    def __init__(self) -> None:
        self.requests = self.prompt = self.generated = 0
        self.ttft, self.inter = Histogram(), Histogram()
        self.fail = False

    def generate(self, prompt_tokens: int, tokens: int) -> None:
        self.requests += 1
        self.prompt += prompt_tokens
        self.generated += tokens
        self.ttft.record(0.040)
        for _ in range(tokens - 1):
            self.inter.record(0.010)

    def metrics(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("the engine is busy")
        return {
            "kind": "text",
            "requests": self.requests,
            "prompt_tokens": self.prompt,
            "generated_tokens": self.generated,
            "cached_prompt_tokens": 0,
            "batch_sizes": {"1": self.generated},
            "time_to_first_token": self.ttft.to_dict(),
            "inter_token": self.inter.to_dict(),
            "busy_s": self.generated * 0.01,
        }


@ct.service(name="metered")
def metered() -> dict[str, Any]:
    return {"model": FakeModel(), "prefix": ">", "klass": FakeModel}


@metered.endpoint("/generate")
def generate(model: FakeModel, text: str, n: int = 4) -> str:
    model.generate(len(text.split()), n)
    return text


def metrics_answer(app: ReplicaApp) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            headers = {"x-cobalt-replica-secret": SECRET}
            reply = await client.get("/_cobalt/metrics", headers=headers)
            assert reply.status_code == 200
            data: dict[str, Any] = reply.json()
            return data

    return asyncio.run(go())


def model_reading(
    generated: int, prompt: int, ttft: list[float], inter: list[float]
) -> dict[str, Any]:
    t, i = Histogram(), Histogram()
    for v in ttft:
        t.record(v)
    for v in inter:
        i.record(v)
    return {
        "name": "llm",
        "requests": len(ttft),
        "prompt_tokens": prompt,
        "generated_tokens": generated,
        "batch_sizes": {"1": 2, "8": generated},
        "time_to_first_token": t.to_dict(),
        "inter_token": i.to_dict(),
        "busy_s": generated / 100,
    }


def report(replica_id: str, **models: dict[str, Any]) -> dict[str, Any]:
    return {"replica_id": replica_id, "requests": 0, "batch_sizes": {}, "models": models}


# -- the replica -------------------------------------------------------------------------


def test_a_replica_reports_each_models_counters_by_its_key_with_its_name() -> None:
    values = metered()
    app = ReplicaApp(metered, values, replica_id="r1-abcd", secret=SECRET)
    try:
        asyncio.run(app.handle_json("/generate", b'{"text": "a b c", "n": 5}'))
        data = metrics_answer(app)
    finally:
        app.close()
    assert data["replica_id"] == "r1-abcd"
    assert list(data["models"]) == ["model"], "strings and classes are not models"
    model = data["models"]["model"]
    assert model["name"] == "fake-llm"
    assert (model["requests"], model["prompt_tokens"], model["generated_tokens"]) == (1, 3, 5)
    assert Histogram.from_dict(model["inter_token"]).count == 4


def test_a_model_whose_metrics_raise_is_reported_as_its_error_and_the_answer_still_comes() -> None:
    values = metered()
    values["model"].fail = True
    app = ReplicaApp(metered, values, secret=SECRET)
    try:
        data = metrics_answer(app)
    finally:
        app.close()
    assert data["models"]["model"] == {
        "name": "fake-llm",
        "error": "RuntimeError: the engine is busy",
    }
    assert data["cpu_utilization"] is not None


def test_a_replica_without_models_reports_none() -> None:
    app = ReplicaApp(metered, {"prefix": ">"}, secret=SECRET)
    try:
        assert metrics_answer(app)["models"] == {}
    finally:
        app.close()


# -- the sums ------------------------------------------------------------------------------


def test_histograms_merge_across_replicas_and_counters_add_up() -> None:
    totals = DeploymentTotals(0.0, 0.0, from_zero=True)
    fast = model_reading(100, 400, ttft=[0.01] * 50, inter=[0.005] * 50)
    slow = model_reading(300, 600, ttft=[1.0] * 50, inter=[0.050] * 50)
    totals.record(10.0, [report("r1", llm=fast), report("r2", llm=slow)])
    s = totals.summary(10.0, requests=100, cost_usd=1.0)
    assert (s.generated_tokens, s.prompt_tokens, s.model_requests) == (400, 1000, 100)
    assert s.time_to_first_token_p50 == pytest.approx(0.01, rel=0.05)
    assert s.time_to_first_token_p99 == pytest.approx(1.0, rel=0.05)
    assert s.inter_token_p99 == pytest.approx(0.05, rel=0.05)
    assert s.batch_sizes == {1: 4, 8: 400}
    assert s.tokens_per_busy_second == pytest.approx(100.0)
    assert s.models == ("llm",) and s.replicas_reporting == 2


def test_a_replica_that_ended_keeps_its_last_reading() -> None:
    totals = DeploymentTotals(0.0, 0.0, from_zero=True)
    totals.record(5.0, [report("r1", llm=model_reading(50, 10, [0.1], [0.01]))])
    totals.record(10.0, [report("r2", llm=model_reading(20, 10, [0.2], [0.01]))])  # r1 silent
    s = totals.summary(10.0, requests=2, cost_usd=0.0)
    assert s.generated_tokens == 70 and s.replicas_reporting == 2
    totals.ended("r1")
    # A reading of r1 taken before it ended and arriving late is not counted twice.
    totals.record(11.0, [report("r1", llm=model_reading(50, 10, [0.1], [0.01]))])
    s = totals.summary(11.0, requests=2, cost_usd=0.0)
    assert (s.generated_tokens, s.prompt_tokens, s.replicas_reporting) == (70, 20, 2)
    assert s.time_to_first_token_p99 == pytest.approx(0.2, rel=0.05)
    assert s.batch_sizes == {1: 4, 8: 70}


def test_a_failed_reading_keeps_the_models_previous_one_and_names_the_error() -> None:
    totals = DeploymentTotals(0.0, 0.0, from_zero=True)
    totals.record(5.0, [report("r1", llm=model_reading(50, 10, [0.1], [0.01]))])
    totals.record(10.0, [report("r1", llm={"name": "llm", "error": "RuntimeError: busy"})])
    s = totals.summary(10.0, requests=1, cost_usd=0.0)
    assert s.generated_tokens == 50
    assert s.errors == ("llm: RuntimeError: busy",)


def test_tokens_per_second_is_the_growth_over_the_last_window() -> None:
    totals = DeploymentTotals(0.0, 0.0, from_zero=True)
    for t in range(0, 200, 5):  # 10 tokens a second for 200 s
        totals.record(float(t), [report("r1", llm=model_reading(10 * t, 0, [], []))])
    assert totals.tokens_per_second(195.0) == pytest.approx(10.0)
    # Quiet for a while (no replica, no reading): the rate falls to zero.
    assert totals.tokens_per_second(195.0 + STALE_S + WINDOW_S) == 0.0
    # The window of a new deployment starts when it was created, at zero.
    young = DeploymentTotals(100.0, 0.0, from_zero=True)
    young.record(104.0, [report("r1", llm=model_reading(40, 0, [], []))])
    assert young.tokens_per_second(104.0) == pytest.approx(10.0)


def test_a_recovered_deployment_needs_two_readings_for_a_rate() -> None:
    totals = DeploymentTotals(100.0, 5.0, from_zero=False)
    totals.record(101.0, [report("r1", llm=model_reading(1000, 0, [], []))])
    assert totals.summary(101.0, requests=0, cost_usd=5.0).tokens_per_second is None
    totals.record(106.0, [report("r1", llm=model_reading(1050, 0, [], []))])
    assert totals.tokens_per_second(106.0) == pytest.approx(10.0)


def test_cost_per_unit_divides_what_was_spent_while_counting() -> None:
    totals = DeploymentTotals(0.0, cost_base=1.0, from_zero=False)
    totals.record(5.0, [report("r1", llm=model_reading(200_000, 800_000, [0.1], []))])
    s = totals.summary(5.0, requests=500, cost_usd=3.0)
    assert s.cost_usd == 3.0
    assert s.cost_per_1k_requests == pytest.approx(4.0)  # $2 spent over 500 requests
    assert s.cost_per_million_tokens == pytest.approx(2.0)  # $2 over a million tokens


def test_without_requests_or_tokens_the_ratios_and_latencies_are_none() -> None:
    s = DeploymentTotals(0.0, 0.0, from_zero=True).summary(1.0, requests=0, cost_usd=0.5)
    assert s.cost_per_1k_requests is None and s.cost_per_million_tokens is None
    assert s.time_to_first_token_p50 is None and s.inter_token_p99 is None
    assert s.tokens_per_second is None and s.tokens_per_busy_second is None
    s = DeploymentTotals(0.0, 0.0, from_zero=True).summary(1.0, requests=10, cost_usd=0.5)
    assert s.cost_per_1k_requests == pytest.approx(50.0)
    assert s.cost_per_million_tokens is None


def test_batched_endpoints_calls_per_size_add_up_across_replicas() -> None:
    totals = DeploymentTotals(0.0, 0.0, from_zero=True)
    one = {"replica_id": "r1", "batch_sizes": {"/embed": {"1": 3, "32": 10}}}
    two = {"replica_id": "r2", "batch_sizes": {"/embed": {"32": 5}}}
    totals.record(5.0, [one, two])
    s = totals.summary(5.0, requests=None, cost_usd=0.0)
    assert s.endpoint_batch_sizes == {"/embed": {1: 3, 32: 15}}
    assert json.loads(json.dumps(s.to_json()))["endpoint_batch_sizes"] == {
        "/embed": {"1": 3, "32": 15}
    }


def test_an_unknown_gateway_count_keeps_the_last_one() -> None:
    totals = DeploymentTotals(0.0, 0.0, from_zero=True)
    assert totals.summary(1.0, requests=7, cost_usd=0.0).requests == 7
    assert totals.summary(2.0, requests=None, cost_usd=0.0).requests == 7


# -- collecting --------------------------------------------------------------------------


def counting_probe(reports: list[dict[str, Any]]) -> Any:
    calls: list[str] = []

    async def probe(path: str, body: dict[str, Any] | None) -> list[dict[str, Any]]:
        calls.append(path)
        return reports

    probe.calls = calls  # type: ignore[attr-defined]
    return probe


def test_the_autoscaler_hands_over_readings_every_few_seconds_sharing_one_probe() -> None:
    scaler = Autoscaler(Autoscaling(utilization=0.9), current=1)
    probe = counting_probe([{"replica_id": "r1", "cpu_utilization": 0.5, "models": {}}])

    def tick(now: float) -> list[ScaleEvent]:
        metrics = Metrics(replicas=1, ongoing=1, now=now, probe=probe)
        return asyncio.run(scaler.tick(metrics))[1]

    (event,) = tick(1000.0)
    assert event.kind == READINGS and event.inputs["reports"][0]["replica_id"] == "r1"
    assert probe.calls == ["/_cobalt/metrics"], "the utilization policy's reading is reused"
    assert tick(1000.0 + COLLECT_EVERY_S / 2) == []
    assert [e.kind for e in tick(1000.0 + COLLECT_EVERY_S)] == [READINGS]


def test_the_utilization_policy_reads_through_the_shared_reading() -> None:
    probe = counting_probe([{"cpu_utilization": 0.95}])
    metrics = Metrics(replicas=1, current=1, probe=probe)
    decision = asyncio.run(Utilization(0.5).decide(metrics))
    assert decision is not None and decision.replicas == 2
    assert asyncio.run(metrics.replica_reports()) == [{"cpu_utilization": 0.95}]
    assert probe.calls == ["/_cobalt/metrics"]


class Keeper(MetricsKeeper):
    """The manager's metrics part, over one deployment ``chat`` with these replicas."""

    def __init__(self, replicas: dict[str, Any] | None = None) -> None:
        super().__init__(DeploymentBook(MemoryStateStore(), None))
        self.changed: list[str] = []
        self.book.listener = self.changed.append
        self.live = self.book.live
        self.live["chat"] = SimpleNamespace(  # type: ignore[assignment]
            name="chat",
            created_at=0.0,
            cost_usd=0.0,
            emulated=False,
            replicas=replicas or {},
            live_cost=lambda now: 0.25,
        )


def test_the_manager_keeps_readings_and_records_only_the_other_events() -> None:
    keeper = Keeper()
    keeper.count_from_zero(keeper.live["chat"])
    readings = ScaleEvent(
        READINGS, "", {"at": 10.0, "reports": [report("r1", llm=model_reading(8, 2, [0.1], []))]}
    )
    decision = ScaleEvent("scale_up", "1 -> 2 replica(s)")
    assert keeper.keep_readings("chat", [decision, readings]) == [decision]
    assert keeper.changed == ["chat"], "the dashboard hears of new counts"
    s = keeper.metrics("chat")
    assert s.generated_tokens == 8 and s.cost_usd == 0.25
    assert s.cost_per_million_tokens == pytest.approx(0.25 / 10 * 1e6)


@contextlib.contextmanager
def replica_server(answer: dict[str, Any] | None) -> Iterator[str]:
    """A replica's control API on loopback: it answers ``answer`` to the metrics path
    (with the right secret), or never answers when ``answer`` is None."""
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if answer is None:
                release.wait(10)
                return
            ok = self.path == "/_cobalt/metrics"
            ok = ok and self.headers["x-cobalt-replica-secret"] == SECRET
            body = json.dumps(answer if ok else {}).encode()
            self.send_response(200 if ok else 403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_a_fresh_reading_asks_the_ready_replicas_and_waits_at_most_about_a_second() -> None:
    from cobalt_controller.deploy._live import LiveReplica
    from cobalt_controller.deploy._metrics_keeper import FRESH_READ_TIMEOUT_S

    answer = {"requests": 2, "batch_sizes": {}, "models": {"llm": model_reading(7, 3, [0.1], [])}}
    with replica_server(answer) as fast, replica_server(None) as stuck:
        replicas = {
            rid: LiveReplica(rid, "chat", 1, SECRET, status=status, url=url)
            for rid, status, url in (
                ("r1", "ready", fast),
                ("r2", "ready", stuck),
                ("r3", "starting", fast),
            )
        }
        keeper = Keeper(replicas)
        keeper.count_from_zero(keeper.live["chat"])
        assert keeper.metrics("chat").generated_tokens == 0, "without fresh, the last reading"
        began, began_wall = time.monotonic(), time.time()
        s = keeper.metrics("chat", fresh=True)
        took, ended_wall = time.monotonic() - began, time.time()
    # (the clock is read before the servers close: closing the stuck one takes a while)
    assert s.generated_tokens == 7 and s.replicas_reporting == 1
    assert began_wall <= s.as_of <= ended_wall, "the figures are from this reading"
    assert took < FRESH_READ_TIMEOUT_S + 1, "a replica that does not answer is not waited for"
    assert keeper.changed == ["chat"]


# -- the SDK -----------------------------------------------------------------------------


def test_metrics_travel_the_wire_with_unknown_values_left_none() -> None:
    totals = DeploymentTotals(0.0, 0.0, from_zero=True)
    totals.record(5.0, [report("r1", llm=model_reading(100, 300, [0.05] * 10, [0.01] * 90))])
    summary = totals.summary(5.0, requests=10, cost_usd=0.01)
    m = ct.DeploymentMetrics.from_pb(metrics_pb("chat", summary))
    assert (m.name, m.requests, m.generated_tokens, m.prompt_tokens) == ("chat", 10, 100, 300)
    assert m.time_to_first_token_p50 == pytest.approx(0.05, rel=0.05)
    assert m.batch_sizes == {1: 2, 8: 100} and m.models == ("llm",)
    assert m.cost_per_1k_requests == pytest.approx(1.0)
    empty = ct.DeploymentMetrics.from_pb(
        metrics_pb("idle", DeploymentTotals(0, 0, from_zero=True).summary(1, 0, 0.0))
    )
    assert empty.tokens_per_second is None and empty.cost_per_1k_requests is None
    assert empty.time_to_first_token_p99 is None


def test_metrics_print_in_words_and_as_a_notebook_table() -> None:
    m = ct.DeploymentMetrics(
        name="chat",
        requests=3,
        generated_tokens=30,
        time_to_first_token_p50=0.0421,
        tokens_per_second=None,
        endpoint_batch_sizes={"/embed": {4: 2}},
        models=("fake-llm",),
        errors=("other: RuntimeError: busy",),
    )
    text = str(m)
    assert "p50 42.1 ms, p99 -" in text and "tokens per second    - (last 60 s)" in text
    assert "batches of /embed    4: 2 calls" in text and "metrics failed" in text
    html = m._repr_html_()
    assert "<table" in html and "42.1 ms" in html and "&lt;" not in text
    quiet = str(ct.DeploymentMetrics(name="web", requests=5, cost_per_1k_requests=0.2))
    assert "time to first token" not in quiet, "no token lines for a service without models"
    assert "$0.200 per 1,000 requests" in quiet


@pytest.mark.parametrize("module", [_deployment_metrics, model_metrics, _replica_app])
def test_the_docstring_examples_run(module: Any) -> None:
    assert doctest.testmod(module).failed == 0


def test_a_deployments_page_carries_its_metrics_only_while_the_manager_runs_it() -> None:
    from cobalt_common.deploy import Manifest, Route
    from cobalt_controller.dashboard._deployments import (
        DeploymentSnapshot,
        DeploymentSnapshots,
        detail,
    )
    from cobalt_controller.state import DeploymentRow

    manifest = Manifest("chat", (Route("generate", "/generate"),), Autoscaling())
    row = DeploymentRow("chat", "ACTIVE", 1, manifest.to_json(), "sha")
    totals = DeploymentTotals(0.0, 0.0, from_zero=True)
    totals.record(5.0, [report("r1", llm=model_reading(100, 300, [0.05], []))])
    summary = totals.summary(5.0, requests=4, cost_usd=0.02)
    live = DeploymentSnapshot("ACTIVE", 1, 1, 0.02, False)

    def metrics(name: str) -> dict[str, Any] | None:
        return summary.to_json() if name == "chat" else None

    page = detail(row, [], [], DeploymentSnapshots("", {"chat": live}, metrics))
    shown = json.loads(json.dumps(page))["metrics"]
    assert shown["requests"] == 4 and shown["generated_tokens"] == 100
    assert shown["batch_sizes"] == {"1": 2, "8": 100}
    assert shown["cost_per_1k_requests"] == pytest.approx(5.0)
    assert detail(row, [], [], DeploymentSnapshots())["metrics"] is None
