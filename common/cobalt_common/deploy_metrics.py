"""A deployment's model metrics at one moment, as the controller computes them and the
SDK shows them (:class:`cobalt.DeploymentMetrics` adds its name and presentation).

Example:
    >>> MetricsSummary(requests=3, cost_usd=0.3).to_json()["requests"]
    3
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

WINDOW_S = 60.0
"""Tokens per second are measured over this many recent seconds."""


@dataclass(frozen=True, slots=True)
class MetricsSummary:
    """A deployment's metrics at one moment; ``None`` where not known yet.

    Latencies are in seconds; counters are totals since the deployment was
    created (or the controller started), ended replicas included.
    """

    requests: int = 0
    model_requests: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    cached_prompt_tokens: int = 0
    time_to_first_token_p50: float | None = None
    time_to_first_token_p99: float | None = None
    inter_token_p50: float | None = None
    inter_token_p99: float | None = None
    tokens_per_second: float | None = None
    tokens_per_busy_second: float | None = None
    window_s: float = WINDOW_S
    batch_sizes: dict[int, int] = field(default_factory=dict)
    endpoint_batch_sizes: dict[str, dict[int, int]] = field(default_factory=dict)
    cost_usd: float = 0.0
    emulated: bool = False
    cost_per_1k_requests: float | None = None
    cost_per_million_tokens: float | None = None
    models: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    replicas_reporting: int = 0
    as_of: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (batch sizes keyed by strings), for the dashboard."""
        data = asdict(self)
        data["batch_sizes"] = {str(k): v for k, v in self.batch_sizes.items()}
        data["endpoint_batch_sizes"] = {
            path: {str(k): v for k, v in sizes.items()}
            for path, sizes in self.endpoint_batch_sizes.items()
        }
        data["models"], data["errors"] = list(self.models), list(self.errors)
        return data
