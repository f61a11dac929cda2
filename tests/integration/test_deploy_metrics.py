"""Deployment metrics on the real stack: a replica's model counts, read by the
controller and shown by ``dep.metrics()`` and ``cobalt deployments show``."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from conftest import DEPLOY_CONFIG_TOML
from support import wait_for

import cobalt as ct
from cobalt._client import get_client
from cobalt_common.v1 import controller_pb2 as pb

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration

REQUESTS = 6
TOKENS = 5


@ct.service(name="metered", cpus=0.25, min_replicas=1, max_replicas=1)
def metered() -> dict[str, Any]:
    from cobalt_common.histogram import Histogram

    class CountingModel:
        """Counts like an engine: cumulative counters and latency histograms."""

        name = "counting-llm"

        def __init__(self) -> None:
            self.requests = self.prompt = self.generated = 0
            self.ttft, self.inter = Histogram(), Histogram()

        def generate(self, text: str, n: int) -> str:
            self.requests += 1
            self.prompt += len(text.split())
            self.generated += n
            self.ttft.record(0.040)
            for _ in range(n - 1):
                self.inter.record(0.010)
            return " ".join(["tok"] * n)

        def metrics(self) -> dict[str, Any]:
            return {
                "kind": "text",
                "requests": self.requests,
                "prompt_tokens": self.prompt,
                "generated_tokens": self.generated,
                "cached_prompt_tokens": 0,
                "batch_sizes": {"1": self.generated},
                "time_to_first_token": self.ttft.to_dict(),
                "inter_token": self.inter.to_dict(),
                "busy_s": self.generated * 0.010,
            }

    return {"model": CountingModel()}


@metered.endpoint("/generate")
def generate(model: Any, text: str, n: int = TOKENS) -> str:
    return str(model.generate(text, n))


def replicas_of(name: str) -> list[Any]:
    client = get_client()
    reply = client.call(client.stub.DeploymentGet, pb.DeploymentGetRequest(name=name))
    return list(reply.replicas)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerHome]:
    from conftest import ControllerHome

    with ControllerHome(tmp_path_factory.mktemp("metrics"), DEPLOY_CONFIG_TOML).serving() as h:
        yield h


def test_a_deployments_metrics_count_its_models_tokens_latencies_and_cost(
    home: ControllerHome,
) -> None:
    with ct.deploy(metered)() as dep:
        for i in range(REQUESTS):
            assert dep.generate(text=f"prompt number {i}") == " ".join(["tok"] * TOKENS)

        m = wait_for(
            lambda: (m := dep.metrics()).generated_tokens == REQUESTS * TOKENS and m,
            timeout=30,
            what="the replica's counts to reach the controller",
        )
        assert isinstance(m, ct.DeploymentMetrics)
        assert m.requests == REQUESTS and m.model_requests == REQUESTS
        assert m.prompt_tokens == REQUESTS * 3
        assert m.models == ("counting-llm",) and m.errors == ()
        assert m.time_to_first_token_p50 == pytest.approx(0.040, rel=0.05)
        assert m.inter_token_p99 == pytest.approx(0.010, rel=0.05)
        assert m.batch_sizes == {1: REQUESTS * TOKENS}
        assert m.tokens_per_second is not None and m.tokens_per_second > 0
        assert m.tokens_per_busy_second == pytest.approx(100.0)
        assert m.cost_per_1k_requests == pytest.approx(m.cost_usd / REQUESTS * 1000)
        tokens = m.prompt_tokens + m.generated_tokens
        assert m.cost_per_million_tokens == pytest.approx(m.cost_usd / tokens * 1e6)

        shown = home.cli("deployments", "show", "metered").stdout
        assert "metrics:" in shown and "counting-llm" in shown, shown
        assert f"requests             {REQUESTS}" in shown, shown
        assert re.search(r"time to first token  p50 \d+(\.\d+)? ms, p99 ", shown), shown
        assert "per 1,000 requests" in shown, shown

        dep.teardown()
        wait_for(lambda: not replicas_of("metered"), timeout=30, what="the replica to stop")
        after = dep.metrics()
        assert after.generated_tokens == REQUESTS * TOKENS, "an ended replica still counts"
        assert after.replicas_reporting == 1


def test_metrics_asked_right_after_requests_count_them(home: ControllerHome) -> None:
    with ct.deploy(metered)() as dep:
        before = dep.metrics()
        for i in range(3):
            dep.generate(text=f"just now {i}")
        m = dep.metrics()
        assert m.model_requests - before.model_requests == 3, "the replica was read when asked"
        assert m.generated_tokens - before.generated_tokens == 3 * TOKENS
        assert m.requests - before.requests == 3
        assert time.time() - m.as_of < 5, "as_of is the moment of that reading"
