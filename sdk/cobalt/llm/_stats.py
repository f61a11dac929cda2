"""What an engine counts while it runs, read by the replica's metrics route.

Counters are cumulative since the engine started and latencies are kept in
mergeable histograms, so the controller can add replicas together.

Example:
    >>> stats = Stats("text")
    >>> stats.batch(4)
    >>> stats.snapshot()["batch_sizes"]
    {'4': 1}
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from cobalt_common.histogram import Histogram

if TYPE_CHECKING:
    from cobalt.llm._sequence import Sequence


class Stats:
    """Thread-safe counters of one engine (or embedder)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._lock = threading.Lock()
        self.requests = 0
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.cached_prompt_tokens = 0
        self.proposed_tokens = 0
        self.accepted_tokens = 0
        self.busy_s = 0.0
        self.batch_sizes: dict[int, int] = {}
        self.ttft = Histogram()
        self.inter_token = Histogram()

    def batch(self, size: int) -> None:
        with self._lock:
            self.batch_sizes[size] = self.batch_sizes.get(size, 0) + 1

    def busy(self, seconds: float) -> None:
        with self._lock:
            self.busy_s += seconds

    def first_token(self, sequence: Sequence, now: float) -> None:
        self.first_latency(now - sequence.arrived)

    def first_latency(self, seconds: float) -> None:
        with self._lock:
            self.ttft.record(seconds)

    def gap(self, seconds: float) -> None:
        with self._lock:
            self.inter_token.record(seconds)

    def speculated(self, proposed: int, accepted: int) -> None:
        with self._lock:
            self.proposed_tokens += proposed
            self.accepted_tokens += accepted

    def finished(self, sequence: Sequence) -> None:
        with self._lock:
            self.requests += 1
            self.prompt_tokens += len(sequence.prompt_ids)
            self.generated_tokens += len(sequence.output_ids)
            self.cached_prompt_tokens += sequence.cached_tokens

    def counted(self, prompt_tokens: int, generated_tokens: int) -> None:
        """A request another engine ran (vLLM) ended."""
        with self._lock:
            self.requests += 1
            self.prompt_tokens += prompt_tokens
            self.generated_tokens += generated_tokens

    def embedded(self, texts: int, tokens: int) -> None:
        with self._lock:
            self.requests += texts
            self.prompt_tokens += tokens

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-ready data (the format the controller reads)."""
        with self._lock:
            data: dict[str, Any] = {
                "kind": self.kind,
                "requests": self.requests,
                "prompt_tokens": self.prompt_tokens,
                "generated_tokens": self.generated_tokens,
                "cached_prompt_tokens": self.cached_prompt_tokens,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "time_to_first_token": self.ttft.to_dict(),
                "inter_token": self.inter_token.to_dict(),
                "busy_s": self.busy_s,
            }
            if self.proposed_tokens:
                data["speculative"] = {
                    "proposed": self.proposed_tokens,
                    "accepted": self.accepted_tokens,
                    "acceptance_rate": self.accepted_tokens / self.proposed_tokens,
                }
            return data
