"""Per-deployment request statistics kept by the gateway.

The hot path only appends to two bounded deques; rates and percentiles are
computed when the autoscaler or a status call asks, once a second at most.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 10.0
"""The sliding window of requests per second and latency percentiles."""
_KEEP = 65536


class RequestStats:
    """Arrivals and latencies of one deployment's requests, in loop time."""

    __slots__ = ("arrivals", "last_request", "latencies", "requests")

    def __init__(self, now: float) -> None:
        self.arrivals: deque[float] = deque(maxlen=_KEEP)
        self.latencies: deque[tuple[float, float]] = deque(maxlen=_KEEP)
        self.last_request = now
        """When the last request arrived (or the deployment was registered)."""
        self.requests = 0

    def arrived(self, now: float) -> None:
        self.arrivals.append(now)
        self.last_request = now
        self.requests += 1

    def finished(self, now: float, latency_s: float) -> None:
        """A request ended at loop time ``now`` after ``latency_s`` (measured with
        ``time.perf_counter``: uvloop's clock only moves once per loop iteration)."""
        self.latencies.append((now, latency_s))

    def snapshot(self, now: float) -> tuple[float, float, float]:
        """Requests per second, p50 and p99 latency in ms, over the last window."""
        cutoff = now - WINDOW_S
        arrivals = self.arrivals
        while arrivals and arrivals[0] < cutoff:
            arrivals.popleft()
        latencies = self.latencies
        while latencies and latencies[0][0] < cutoff:
            latencies.popleft()
        rps = len(arrivals) / WINDOW_S
        if not latencies:
            return rps, 0.0, 0.0
        ordered = sorted(lat for _, lat in latencies)
        n = len(ordered)
        p50 = ordered[min(n - 1, int(0.5 * n))]
        p99 = ordered[min(n - 1, int(0.99 * n))]
        return rps, p50 * 1000, p99 * 1000
