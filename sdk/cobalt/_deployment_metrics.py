"""What a deployment served, how fast, and what it cost per unit: ``dep.metrics()``.

The controller sums what every replica's models count (an engine of
:mod:`cobalt.llm`, or any initializer value with a ``name`` and a
``metrics()`` method), ended replicas included. ``dep.metrics()`` reads the
ready replicas when called (waiting up to a second for them), so requests just
served are counted; ``as_of`` says when the latest reading was taken.

Example:
    >>> m = DeploymentMetrics(
    ...     name="chat", requests=2000, generated_tokens=300_000, prompt_tokens=700_000,
    ...     time_to_first_token_p50=0.042, time_to_first_token_p99=0.180,
    ...     inter_token_p50=0.012, inter_token_p99=0.031, tokens_per_second=512.0,
    ...     batch_sizes={1: 20, 8: 340}, cost_usd=0.5, cost_per_1k_requests=0.25,
    ...     cost_per_million_tokens=0.5, models=("tiny-llm",))
    >>> print(m)
    metrics of deployment chat
    requests             2,000
    time to first token  p50 42 ms, p99 180 ms
    inter-token latency  p50 12 ms, p99 31 ms
    tokens per second    512 (last 60 s)
    tokens               300,000 generated, 700,000 prompt
    batch sizes          1: 20 steps, 8: 340 steps
    cost                 $0.500 so far, $0.250 per 1,000 requests, $0.500 per million tokens
    models               tiny-llm
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from cobalt import _html as h
from cobalt_common.deploy_metrics import WINDOW_S, MetricsSummary
from cobalt_common.pricing import format_usd

if TYPE_CHECKING:
    from cobalt_common.v1 import controller_pb2 as pb

_Optional = Literal[
    "time_to_first_token_p50",
    "time_to_first_token_p99",
    "inter_token_p50",
    "inter_token_p99",
    "tokens_per_second",
    "tokens_per_busy_second",
    "cost_per_1k_requests",
    "cost_per_million_tokens",
]
_OPTIONAL: tuple[_Optional, ...] = get_args(_Optional)
"""The fields that are ``None`` when not known (unset on the wire)."""


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _sizes(sizes: dict[int, int], unit: str) -> str:
    return ", ".join(f"{size}: {n:,} {unit}" for size, n in sorted(sizes.items()))


@dataclass(frozen=True, slots=True)
class DeploymentMetrics(MetricsSummary):
    """A deployment's metrics, as :meth:`cobalt.Deployment.metrics` returns them.

    Counts are totals since the deployment was created (or its controller
    last started), ended replicas included; latencies are in seconds, over
    every request so far. A value that is not known yet (no request, no token)
    is ``None``.

    Attributes:
        name: the deployment.
        requests: requests the gateway received.
        model_requests: requests the models served.
        prompt_tokens: tokens read from prompts.
        generated_tokens: tokens generated.
        cached_prompt_tokens: prompt tokens served from a prefix cache.
        time_to_first_token_p50: median time from a request to its first token.
        time_to_first_token_p99: 99th percentile of it.
        inter_token_p50: median time between two tokens of one stream.
        inter_token_p99: 99th percentile of it.
        tokens_per_second: tokens generated per second over the last
            ``window_s`` seconds.
        tokens_per_busy_second: tokens generated per second the models computed.
        window_s: the window of ``tokens_per_second``.
        batch_sizes: the models' steps run at each batch size.
        endpoint_batch_sizes: each batched endpoint's calls at each batch size.
        cost_usd: what the replicas have cost so far.
        emulated: whether some of the cost is for emulated GPUs.
        cost_per_1k_requests: cost per 1,000 requests.
        cost_per_million_tokens: cost per million tokens, prompt and generated.
        models: the names of the models counted.
        errors: models whose ``metrics()`` failed, with the error.
        replicas_reporting: replicas read, ended ones included.
        as_of: when the latest reading was taken (Unix seconds; 0 when none yet).
    """

    name: str = ""

    @classmethod
    def from_pb(cls, msg: pb.DeploymentMetricsResponse) -> DeploymentMetrics:
        optional = {key: getattr(msg, key) if msg.HasField(key) else None for key in _OPTIONAL}
        return cls(
            name=msg.name,
            requests=msg.requests,
            model_requests=msg.model_requests,
            prompt_tokens=msg.prompt_tokens,
            generated_tokens=msg.generated_tokens,
            cached_prompt_tokens=msg.cached_prompt_tokens,
            window_s=msg.window_s or WINDOW_S,
            batch_sizes=dict(sorted(msg.batch_sizes.items())),
            endpoint_batch_sizes={
                e.path: dict(sorted(e.sizes.items())) for e in msg.endpoint_batch_sizes
            },
            cost_usd=msg.cost_usd,
            emulated=msg.emulated,
            models=tuple(msg.models),
            errors=tuple(msg.errors),
            replicas_reporting=msg.replicas_reporting,
            as_of=msg.as_of,
            **optional,
        )

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs in words: what ``str()``, the notebook table and
        ``cobalt deployments show`` print. Lines about tokens appear once a model
        reported."""
        rows = [("requests", f"{self.requests:,}")]
        if self.models or self.generated_tokens or self.prompt_tokens:
            for label, p50, p99 in (
                ("time to first token", self.time_to_first_token_p50, self.time_to_first_token_p99),
                ("inter-token latency", self.inter_token_p50, self.inter_token_p99),
            ):
                rows.append((label, f"p50 {_seconds(p50)}, p99 {_seconds(p99)}"))
            rate = "-" if self.tokens_per_second is None else _rate(self.tokens_per_second)
            rate += f" (last {self.window_s:g} s)"
            if self.tokens_per_busy_second is not None:
                rate += f", {_rate(self.tokens_per_busy_second)} per busy second"
            rows.append(("tokens per second", rate))
            tokens = f"{self.generated_tokens:,} generated, {self.prompt_tokens:,} prompt"
            if self.cached_prompt_tokens:
                tokens += f" ({self.cached_prompt_tokens:,} cached)"
            rows.append(("tokens", tokens))
        if self.batch_sizes:
            rows.append(("batch sizes", _sizes(self.batch_sizes, "steps")))
        for path, sizes in self.endpoint_batch_sizes.items():
            rows.append((f"batches of {path}", _sizes(sizes, "calls")))
        cost = format_usd(self.cost_usd) + " so far" + (" (emulated)" if self.emulated else "")
        if self.cost_per_1k_requests is not None:
            cost += f", {format_usd(self.cost_per_1k_requests)} per 1,000 requests"
        if self.cost_per_million_tokens is not None:
            cost += f", {format_usd(self.cost_per_million_tokens)} per million tokens"
        rows.append(("cost", cost))
        if self.models:
            rows.append(("models", ", ".join(self.models)))
        rows += [("metrics failed", error) for error in self.errors]
        return rows

    def __str__(self) -> str:
        rows = self.rows()
        width = max(len(label) for label, _ in rows)
        lines = [f"metrics of deployment {self.name}"]
        lines += [f"{label.ljust(width)}  {value}" for label, value in rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = [[h.esc(label), h.esc(value)] for label, value in self.rows()]
        return (
            f"<div><b>metrics of deployment {h.esc(self.name)}</b>{h.table(['', ''], rows)}</div>"
        )
