"""The gateway's routing table: deployments, their replicas, and the wait queue.

Everything here is touched only on the gateway's event loop, so nothing is
locked: the manager's changes arrive through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from cobalt_common.deploy import Autoscaling
from cobalt_controller.deploy._autoscaler import Autoscaler
from cobalt_controller.deploy._stats import RequestStats
from cobalt_controller.deploy._upstream import Pool


@dataclass(frozen=True, slots=True)
class Target:
    """What the gateway needs to serve one deployment.

    Attributes:
        name: the deployment, the first path segment of its URL.
        token: the bearer token; empty when auth is off.
        routes: route path -> whether it streams.
        max_body_bytes: larger request bodies get 413.
        autoscaling: the deployment's settings (concurrency limit, queue, policies).
        openapi: the OpenAPI description as JSON bytes (empty until a replica reported it).
        desired: the replica count the manager runs now.
        failed: why the deployment failed, when it did; requests that find no
            replica then get 503 with it at once instead of waiting.
        get_routes: the routes that also take GET (the others take POST only).
    """

    name: str
    token: str
    routes: dict[str, bool]
    max_body_bytes: int
    autoscaling: Autoscaling
    openapi: bytes = b""
    desired: int = 0
    failed: str = ""
    get_routes: frozenset[str] = frozenset()


@dataclass(slots=True, eq=False)
class Upstream:
    """One ready replica as the gateway sees it."""

    replica_id: str
    url: str
    secret: str
    in_flight: int = 0
    draining: bool = False
    suspect: bool = False
    """A request failed to reach it; left out until the manager says it lives."""
    drain_reported: bool = False
    urls: dict[str, URL] = field(default_factory=dict)
    pool: Pool = field(init=False)
    """Keep-alive connections to it; closed when the gateway forgets it."""

    def __post_init__(self) -> None:
        self.pool = Pool(self.url, f"replica {self.replica_id}")

    def url_for(self, path: str) -> URL:
        url = self.urls.get(path)
        if url is None:
            url = self.urls[path] = URL(self.url.rstrip("/") + path, encoded=True)
        return url


class Entry:
    """A deployment in the routing table."""

    __slots__ = (
        "auth",
        "in_flight",
        "last_wake",
        "removed",
        "rr",
        "scaler",
        "stats",
        "target",
        "ticking",
        "upstreams",
        "waiters",
    )

    def __init__(self, target: Target, now: float) -> None:
        self.target = target
        self.auth = target.token.encode()
        self.upstreams: list[Upstream] = []
        self.waiters: deque[asyncio.Future[Upstream]] = deque()
        self.stats = RequestStats(now)
        self.scaler = Autoscaler(target.autoscaling, target.desired)
        self.in_flight = 0
        self.rr = 0
        self.last_wake = -1e9
        self.ticking = False
        self.removed = False

    def update(self, target: Target) -> None:
        if target.autoscaling != self.target.autoscaling:
            self.scaler.configure(target.autoscaling)
        self.scaler.current = target.desired
        self.target = target
        self.auth = target.token.encode()

    def authorized(self, header: str | None) -> bool:
        """Whether ``header`` (``Authorization``) carries the token, if one is needed.

        The scheme is case-insensitive (RFC 7235), and a header that is not
        UTF-8 (its bytes kept as surrogates by the server) is simply a wrong token.
        """
        if not self.auth:
            return True
        return bearer_matches(header, self.auth)

    def usable(self) -> int:
        return sum(1 for u in self.upstreams if not (u.draining or u.suspect))

    def pick(self) -> Upstream | None:
        """The usable replica with the fewest requests in flight, under the limit.

        Ties go round-robin, so an idle deployment still spreads its load.
        """
        ups = self.upstreams
        n = len(ups)
        if not n:
            return None
        limit = self.target.autoscaling.max_concurrency
        self.rr = start = (self.rr + 1) % n
        best: Upstream | None = None
        for i in range(n):
            up = ups[(start + i) % n]
            if up.draining or up.suspect or up.in_flight >= limit:
                continue
            if best is None or up.in_flight < best.in_flight:
                best = up
                if not up.in_flight:
                    break
        return best

    def dispatch(self) -> None:
        """Hands free replica slots to waiting requests, first come first served."""
        waiters = self.waiters
        while waiters:
            if waiters[0].done():
                waiters.popleft()
                continue
            up = self.pick()
            if up is None:
                return
            up.in_flight += 1
            waiters.popleft().set_result(up)

    def metrics(self, now: float) -> dict[str, Any]:
        rps, p50, p99 = self.stats.snapshot(now)
        queued = sum(1 for w in self.waiters if not w.done())
        return {
            "ongoing": self.in_flight + queued,
            "in_flight": self.in_flight,
            "queued": queued,
            "rps": rps,
            "p50_ms": p50,
            "p99_ms": p99,
            "idle_s": max(0.0, now - self.stats.last_request),
            "requests": self.stats.requests,
            "replicas": self.usable(),
        }


def bearer_matches(header: str | None, token: bytes) -> bool:
    """Whether ``header`` is ``Bearer <token>``, the scheme in any case."""
    if header is None:
        return False
    scheme, _, credentials = header.partition(" ")
    presented = credentials.strip().encode("utf-8", "surrogateescape")
    # compare_digest runs even for a wrong scheme, so timing tells nothing of it
    return secrets.compare_digest(presented, token) and scheme.lower() == "bearer"
