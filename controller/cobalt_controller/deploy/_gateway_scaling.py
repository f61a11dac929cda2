"""The gateway's autoscaling loop: ticks each deployment's autoscaler and lets
policies reach the replicas (a mixin of :class:`~._gateway.Gateway`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from cobalt_controller.deploy._routing import Entry, Upstream
from cobalt_controller.deploy.policies import Metrics

log = logging.getLogger("cobalt.gateway")

PROBE_TIMEOUT_S = 2.0
"""How long a policy waits for a replica's metrics or custom policy."""


class GatewayScaling:
    """Runs on the gateway's loop; the gateway provides the attributes."""

    autoscale_interval_s: float
    backend: Any
    _entries: dict[str, Entry]
    _loop: asyncio.AbstractEventLoop
    _session: aiohttp.ClientSession | None

    def _spawn(self, coro: Any) -> None:
        raise NotImplementedError

    def _offload(self, fn: Callable[..., None], *args: Any) -> None:
        raise NotImplementedError

    async def _autoscale_forever(self) -> None:
        while True:
            await asyncio.sleep(self.autoscale_interval_s)
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
                self._offload(self.backend.scaled, entry.target.name, target, events)
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
