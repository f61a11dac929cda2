"""The gateway's autoscaling loop: ticks each deployment's autoscaler and lets
policies reach the replicas (:class:`AutoscalingLoop`, which :class:`~._gateway.Gateway` holds)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from cobalt_controller.deploy._gateway_backend import Backend, Offload
from cobalt_controller.deploy._routing import Entry, Upstream
from cobalt_controller.deploy.policies import Metrics

log = logging.getLogger("cobalt.gateway")

PROBE_TIMEOUT_S = 2.0
"""How long a policy waits for a replica's metrics or custom policy."""


class AutoscalingLoop:
    """Runs on the gateway's loop, over the routing table it shares with the gateway.

    Args:
        entries: the gateway's routing table (the same dict, changed by the gateway).
        loop: the gateway's event loop.
        backend: the deployment manager, told of each scaling decision.
        offload: runs calls to ``backend`` off the loop.
        spawn: starts a task on the loop that the gateway cancels when it stops.
        interval_s: seconds between ticks.
    """

    def __init__(
        self,
        entries: dict[str, Entry],
        loop: asyncio.AbstractEventLoop,
        backend: Backend,
        offload: Offload,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        interval_s: float,
    ) -> None:
        self._entries = entries
        self._loop = loop
        self._backend = backend
        self._offload = offload
        self._spawn = spawn
        self.interval_s = interval_s
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        """Opens the session that probes replicas; called on the loop."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, keepalive_timeout=4.0, ttl_dns_cache=None, enable_cleanup_closed=True
            ),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            for entry in list(self._entries.values()):
                if not entry.ticking:
                    entry.ticking = True
                    self._spawn(self._tick(entry))

    async def _tick(self, entry: Entry) -> None:
        try:
            m = entry.metrics(self._loop.time())
            metrics = Metrics(
                replicas=m["replicas"],
                ongoing=m["ongoing"],
                queued=m["queued"],
                rps=m["rps"],
                p50_ms=m["p50_ms"],
                p99_ms=m["p99_ms"],
                idle_s=m["idle_s"],
                now=time.time(),
                probe=lambda path, body: self._probe(entry, path, body),
            )
            target, events = await entry.scaler.tick(metrics)
            if (target is not None or events) and not entry.removed:
                self._offload(self._backend.scaled, entry.target.name, target, events)
        except Exception:
            log.exception("autoscaling %s failed", entry.target.name)
        finally:
            entry.ticking = False

    async def _probe(
        self, entry: Entry, path: str, body: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        """GET ``path`` on every usable replica, or POST ``body`` to one of them."""
        ups = [u for u in entry.upstreams if not (u.draining or u.suspect)]
        if body is not None:
            ups = ups[:1]
        answers = await asyncio.gather(*(self._probe_one(u, path, body) for u in ups))
        return [a for a in answers if a is not None]

    async def _probe_one(
        self, up: Upstream, path: str, body: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        assert self._session is not None
        headers = {"x-cobalt-replica-secret": up.secret}
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
        method = "GET" if body is None else "POST"
        try:
            async with self._session.request(
                method, up.url_for(path), json=body, headers=headers, timeout=timeout
            ) as resp:
                if resp.status == 404:
                    return None
                data = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            if body is not None:
                raise
            return None
        if resp.status >= 400:
            error = data.get("error") if isinstance(data, dict) else data
            raise RuntimeError(f"replica {up.replica_id} answered {resp.status}: {error}")
        return data if isinstance(data, dict) else None
