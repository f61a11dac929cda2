"""A deployment's metrics: what its replicas' models counted, summed, with costs.

Each replica answers ``GET /_cobalt/metrics`` with, under ``models``, the
cumulative counters of every model among its initializer's values (an engine
of ``cobalt.llm``, or any object with ``name`` and ``metrics()``): requests,
prompt and generated tokens, steps run at each batch size, histograms of the
time to first token and between tokens, and busy seconds. The autoscaler
reads the replicas every :data:`~._autoscaler.COLLECT_EVERY_S` (sharing the
utilization policy's reading), ``dep.metrics()`` reads them when asked, and
both hand the answers to the manager, whose
:class:`DeploymentTotals` keeps the last reading of every replica, ended ones
included, so totals never drop when a replica stops. From them it derives:

- the sums of the counters, and the calls per batch size (the models' steps
  and the batched endpoints' calls);
- percentiles of the histograms merged across replicas (every request so far);
- generated tokens per second over the last :data:`WINDOW_S` (the growth of
  the total), and per busy second (the models' compute time);
- cost per 1,000 requests (the gateway's count) and per million tokens.

Readings live in the controller's memory: after a restart, replicas that ended
before it no longer count, and cost ratios use the cost accrued since.

Example:
    >>> from cobalt_common.histogram import Histogram
    >>> ttft = Histogram()
    >>> ttft.record(0.05)
    >>> model = {"name": "tiny", "requests": 1, "prompt_tokens": 90, "generated_tokens": 10,
    ...          "busy_s": 0.5, "batch_sizes": {"1": 10}, "time_to_first_token": ttft.to_dict()}
    >>> totals = DeploymentTotals(started_at=100.0, cost_base=0.0, from_zero=True)
    >>> totals.record(105.0, [{"replica_id": "r1", "models": {"llm": model}}])
    True
    >>> s = totals.summary(now=105.0, requests=1, cost_usd=0.002)
    >>> s.generated_tokens, s.tokens_per_second, s.tokens_per_busy_second, s.batch_sizes
    (10, 2.0, 20.0, {1: 10})
    >>> round(s.cost_per_1k_requests, 6), round(s.cost_per_million_tokens, 6)
    (2.0, 20.0)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cobalt_common.deploy_metrics import WINDOW_S, MetricsSummary
from cobalt_common.histogram import Histogram

STALE_S = 15.0
"""A total not read for longer than this is taken as unchanged since (no replica ran)."""


@dataclass(slots=True)
class _Model:
    """One model's last reading on one replica."""

    name: str
    requests: int
    prompt_tokens: int
    generated_tokens: int
    cached_prompt_tokens: int
    busy_s: float
    batch_sizes: dict[int, int]
    time_to_first_token: Histogram
    inter_token: Histogram


@dataclass(slots=True)
class _Replica:
    raw: tuple[Any, Any, Any] = (None, None, None)
    endpoint_batch_sizes: dict[str, dict[int, int]] = field(default_factory=dict)
    models: dict[str, _Model] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _sizes(value: Any) -> dict[int, int]:
    if not isinstance(value, dict):
        return {}
    out: dict[int, int] = {}
    for size, n in value.items():
        try:
            out[int(size)] = _count(n)
        except (TypeError, ValueError):
            continue
    return out


def _histogram(value: Any) -> Histogram:
    try:
        return Histogram.from_dict(value) if isinstance(value, dict) else Histogram()
    except (TypeError, ValueError, AttributeError):
        return Histogram()


def _model(key: str, data: Any) -> _Model | str:
    """A model's reading, or the error it reported (or why it could not be read)."""
    if not isinstance(data, dict):
        return f"{key}: the reading is not a JSON object"
    name = str(data.get("name") or key)
    if data.get("error"):
        return f"{name}: {data['error']}"
    busy = data.get("busy_s")
    return _Model(
        name=name,
        requests=_count(data.get("requests")),
        prompt_tokens=_count(data.get("prompt_tokens")),
        generated_tokens=_count(data.get("generated_tokens")),
        cached_prompt_tokens=_count(data.get("cached_prompt_tokens")),
        busy_s=float(busy) if isinstance(busy, int | float) else 0.0,
        batch_sizes=_sizes(data.get("batch_sizes")),
        time_to_first_token=_histogram(data.get("time_to_first_token")),
        inter_token=_histogram(data.get("inter_token")),
    )


def _add(into: dict[int, int], sizes: dict[int, int]) -> None:
    for size, n in sizes.items():
        into[size] = into.get(size, 0) + n


class _Sums:
    """Counters, batch sizes and histograms added up over replicas."""

    __slots__ = (
        "batch",
        "busy",
        "cached",
        "endpoints",
        "generated",
        "inter",
        "names",
        "prompt",
        "replicas",
        "requests",
        "ttft",
    )

    def __init__(self) -> None:
        self.requests = self.prompt = self.generated = self.cached = self.replicas = 0
        self.busy = 0.0
        self.batch: dict[int, int] = {}
        self.endpoints: dict[str, dict[int, int]] = {}
        self.ttft, self.inter = Histogram(), Histogram()
        self.names: dict[str, None] = {}

    def add(self, replica: _Replica) -> None:
        self.replicas += 1
        for path, sizes in replica.endpoint_batch_sizes.items():
            _add(self.endpoints.setdefault(path, {}), sizes)
        for m in replica.models.values():
            self.names[m.name] = None
            self.requests += m.requests
            self.prompt += m.prompt_tokens
            self.generated += m.generated_tokens
            self.cached += m.cached_prompt_tokens
            if m.generated_tokens:  # the throughput of generating models only
                self.busy += m.busy_s
            _add(self.batch, m.batch_sizes)
            self.ttft.merge(m.time_to_first_token)
            self.inter.merge(m.inter_token)

    def merge(self, other: _Sums) -> None:
        self.replicas += other.replicas
        self.requests += other.requests
        self.prompt += other.prompt
        self.generated += other.generated
        self.cached += other.cached
        self.busy += other.busy
        _add(self.batch, other.batch)
        for path, sizes in other.endpoints.items():
            _add(self.endpoints.setdefault(path, {}), sizes)
        self.ttft.merge(other.ttft)
        self.inter.merge(other.inter)
        self.names.update(other.names)


def _ratio(numerator: float, denominator: float, scale: float = 1.0) -> float | None:
    return numerator / denominator * scale if denominator > 0 else None


class DeploymentTotals:
    """The last reading of each replica of one deployment, and the generated total over time.

    Args:
        started_at: when counting began (Unix seconds).
        cost_base: the deployment's cost at that moment; cost ratios use what
            was spent since, the period the counts cover.
        from_zero: the deployment is new, so every counter was 0 at
            ``started_at`` (a first sample for the tokens-per-second window).
    """

    def __init__(self, started_at: float, cost_base: float, *, from_zero: bool) -> None:
        self.cost_base = cost_base
        self.last_requests = 0
        self._replicas: dict[str, _Replica] = {}
        self._ended = _Sums()
        """The last readings of replicas that ended, added up."""
        self._ended_ids: set[str] = set()
        self._samples: deque[tuple[float, int]] = deque()
        if from_zero:
            self._samples.append((started_at, 0))
        self._as_of = 0.0

    def record(self, at: float, reports: Iterable[dict[str, Any]]) -> bool:
        """Takes the replicas' ``/_cobalt/metrics`` answers read at ``at``; True when a
        count changed. A model whose reading failed keeps its previous one."""
        changed = False
        for report in reports:
            rid = report.get("replica_id")
            if not isinstance(rid, str) or not rid or rid in self._ended_ids:
                continue
            replica = self._replicas.setdefault(rid, _Replica())
            raw = (report.get("requests"), report.get("batch_sizes"), report.get("models"))
            if raw == replica.raw:
                continue
            changed = True
            replica.raw = raw
            batched = report.get("batch_sizes")
            if isinstance(batched, dict):
                replica.endpoint_batch_sizes = {str(p): _sizes(s) for p, s in batched.items()}
            models = report.get("models")
            for key, data in models.items() if isinstance(models, dict) else ():
                reading = _model(str(key), data)
                if isinstance(reading, str):
                    replica.errors[str(key)] = reading
                else:
                    replica.errors.pop(str(key), None)
                    replica.models[str(key)] = reading
        self._as_of = max(self._as_of, at)
        self._sample(at)
        return changed

    def ended(self, replica_id: str) -> None:
        """The replica ended: its last reading joins the sum of ended ones for good
        (a reading of it that arrives later is ignored)."""
        self._ended_ids.add(replica_id)
        replica = self._replicas.pop(replica_id, None)
        if replica is not None:
            self._ended.add(replica)

    def _sample(self, at: float) -> None:
        total = self._ended.generated + sum(
            m.generated_tokens for r in self._replicas.values() for m in r.models.values()
        )
        samples = self._samples
        if samples and at < samples[-1][0]:
            return
        samples.append((at, total))
        # Keep one sample at or before the window's start, and those after it.
        while len(samples) >= 2 and samples[1][0] <= at - WINDOW_S:
            samples.popleft()

    def tokens_per_second(self, now: float) -> float | None:
        """Generated tokens per second over the last :data:`WINDOW_S` seconds."""
        samples = self._samples
        if len(samples) < 2:
            return None
        cutoff = now - WINDOW_S
        start = samples[0]
        for sample in samples:
            if sample[0] > cutoff:
                break
            start = sample
        latest = samples[-1]
        end = latest[0] if now - latest[0] <= STALE_S else now
        span = end - start[0]
        return (latest[1] - start[1]) / span if span > 0 else None

    def summary(
        self, now: float, requests: int | None, cost_usd: float, emulated: bool = False
    ) -> MetricsSummary:
        """The metrics now. ``requests``: the gateway's count (None: unknown, the last
        one given is used); ``cost_usd``: the deployment's cost so far."""
        if requests is not None:
            self.last_requests = max(requests, 0)
        requests = self.last_requests
        sums = _Sums()
        sums.merge(self._ended)
        errors: dict[str, None] = {}
        for replica in self._replicas.values():
            sums.add(replica)
            errors.update(dict.fromkeys(replica.errors.values()))
        spent = max(cost_usd - self.cost_base, 0.0)
        return MetricsSummary(
            requests=requests,
            model_requests=sums.requests,
            prompt_tokens=sums.prompt,
            generated_tokens=sums.generated,
            cached_prompt_tokens=sums.cached,
            time_to_first_token_p50=sums.ttft.quantile(0.5),
            time_to_first_token_p99=sums.ttft.quantile(0.99),
            inter_token_p50=sums.inter.quantile(0.5),
            inter_token_p99=sums.inter.quantile(0.99),
            tokens_per_second=self.tokens_per_second(now),
            tokens_per_busy_second=_ratio(sums.generated, sums.busy),
            batch_sizes=dict(sorted(sums.batch.items())),
            endpoint_batch_sizes={
                p: dict(sorted(s.items())) for p, s in sums.endpoints.items() if s
            },
            cost_usd=cost_usd,
            emulated=emulated,
            cost_per_1k_requests=_ratio(spent, requests, 1000.0),
            cost_per_million_tokens=_ratio(spent, sums.prompt + sums.generated, 1e6),
            models=tuple(sums.names),
            errors=tuple(errors),
            replicas_reporting=sums.replicas,
            as_of=self._as_of,
        )
