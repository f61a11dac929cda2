"""The gateway: an async reverse proxy in front of every deployment's replicas.

It runs a lean HTTP/1.1 server (``_server``: llhttp parsing, one socket
write per answer) on its own thread and event loop (uvloop when importable),
and reaches replicas through per-replica pools of keep-alive connections
(``_upstream``: the same, client side). A request to ``POST <base>/<name><route>``
(or ``GET``, for the routes that take it; handled in ``_gateway_requests``):

1. checks the deployment's bearer token with ``secrets.compare_digest``
   (401, for a deployment that does not exist too, so that nobody learns
   which names exist without a token), the route (404 naming the known ones)
   and the method (405 but for POST and GET; the replica refuses a GET on a
   route that takes POST only), and reads the body up to ``max_body_bytes`` (413);
2. takes the ready replica with the fewest requests in flight under
   ``max_concurrency``, or waits in a FIFO queue bounded by ``max_queue`` and
   ``queue_timeout`` (503 with ``Retry-After``). At zero replicas, the first
   waiting request asks the manager to start one at once;
3. forwards it with ``x-cobalt-replica-secret`` and ``x-request-id``; a
   connection that fails before any response byte is retried once on another
   replica, and the manager is told that the replica looks dead;
4. passes the answer through unchanged, whatever the route: an answer with
   ``Content-Type: text/event-stream`` or without ``Content-Length`` (chunked)
   is streamed as it arrives, with the client's back-pressure reaching the
   replica; any other comes whole, in one write.

The hot path holds no lock, writes nothing to the store and logs nothing;
the manager's changes reach the routing table through the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from cobalt_controller.deploy._gateway_backend import Backend, Offload
from cobalt_controller.deploy._gateway_requests import RequestHandler, failed_message
from cobalt_controller.deploy._gateway_scaling import AutoscalingLoop
from cobalt_controller.deploy._http import HttpLimits
from cobalt_controller.deploy._routing import Entry, Target, Upstream
from cobalt_controller.deploy._server import Server
from cobalt_controller.deploy._upstream import Unreachable

log = logging.getLogger("cobalt.gateway")

DRAIN_GRACE_S = 30.0
"""A draining replica is stopped when its last request ends, or after this."""


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Gateway:
    """The HTTP front of all deployments: owns the routing table and the loop, and
    holds the request handler and the autoscaling loop that work on that table.

    Args:
        backend: the deployment manager (or a fake in tests).
        autoscale_interval_s: seconds between autoscaler ticks (default 1.0).
        drain_grace_s: how long a draining replica may finish its requests.
        limits: what a client may make the gateway hold before its token is
            checked (request target, head size and time, connections); the
            defaults of :class:`~._http.HttpLimits` when not given.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        autoscale_interval_s: float = 1.0,
        drain_grace_s: float = DRAIN_GRACE_S,
        limits: HttpLimits | None = None,
    ) -> None:
        self.backend = backend
        self.limits = limits or HttpLimits()
        self.drain_grace_s = drain_grace_s
        self.url = ""
        self.port = 0
        self._entries: dict[str, Entry] = {}
        self._loop = _new_loop()
        self._thread: threading.Thread | None = None
        self._offload = Offload()
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._requests = RequestHandler(
            self._entries, self._loop, backend, self._offload, self._drained
        )
        self._scaling = AutoscalingLoop(
            self._entries, self._loop, backend, self._offload, self._spawn, autoscale_interval_s
        )

    # -- life cycle (any thread) ------------------------------------------------------

    def start(self, host: str, port: int, *, fallback: bool = False) -> str:
        """Serves on ``host:port`` (0: any free port; ``fallback``: any free port
        when ``port`` is taken) and returns the base URL."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._open(host, port, fallback))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="cobalt-gateway", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise OSError(f"the gateway cannot listen on {host}:{port}: {failure[0]}")
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
        self.url = f"http://{shown}:{self.port}"
        return self.url

    async def _open(self, host: str, port: int, fallback: bool) -> None:
        self._scaling.open()
        self._server = Server(self._requests.handle, self.limits)
        try:
            self.port = await self._server.listen(host, port, backlog=1024)
        except OSError:
            if not fallback or port == 0:
                raise
            self.port = await self._server.listen(host, 0, backlog=1024)
        self._spawn(self._scaling.run_forever())

    def stop(self) -> None:
        if self._thread is None:
            return

        async def close() -> None:
            for task in list(self._tasks):
                task.cancel()
            if self._server is not None:
                await self._server.close()
            await self._scaling.close()
            for entry in self._entries.values():
                for up in entry.upstreams:
                    up.pool.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._offload.shutdown()

    # -- changes from the manager (any thread) ---------------------------------------

    def _soon(self, fn: Callable[..., None], *args: Any) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(fn, *args)
        else:  # not started: tests drive the table directly
            fn(*args)

    def configure(self, target: Target) -> None:
        """Adds a deployment or changes its settings, keeping replicas and metrics."""
        self._soon(self._configure, target)

    def remove(self, name: str) -> None:
        """Stops routing ``name``: waiting requests get 503, replicas drain."""
        self._soon(self._remove, name)

    def add_replica(self, name: str, replica_id: str, url: str, secret: str) -> None:
        self._soon(self._add_replica, name, replica_id, url, secret)

    def drain_replica(self, name: str, replica_id: str) -> None:
        """No new requests for the replica; ``backend.replica_drained`` once it is idle."""
        self._soon(self._drain, name, replica_id)

    def remove_replica(self, name: str, replica_id: str) -> None:
        """Forgets a replica that ended (its in-flight requests fail and are retried)."""
        self._soon(self._remove_replica, name, replica_id)

    def clear_suspect(self, name: str, replica_id: str) -> None:
        """The replica answered its health check after all: route to it again."""
        self._soon(self._clear_suspect, name, replica_id)

    def sync(self, timeout: float = 5.0) -> None:
        """Waits until the changes asked for so far are applied."""
        if self._thread is not None:
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self._loop).result(timeout)

    def metrics(self, name: str) -> dict[str, Any]:
        """The deployment's current gateway metrics (a snapshot; {} when unknown)."""
        entry = self._entries.get(name)
        if entry is None:
            return {}
        try:
            return entry.metrics(self._loop.time())
        except RuntimeError:  # a deque changed under us: ask again next time
            return {}

    def in_flight(self, name: str) -> dict[str, int]:
        entry = self._entries.get(name)
        return {u.replica_id: u.in_flight for u in entry.upstreams} if entry else {}

    # -- the table (loop thread) ------------------------------------------------------

    def _configure(self, target: Target) -> None:
        entry = self._entries.get(target.name)
        if entry is None or entry.removed:
            self._entries[target.name] = Entry(target, self._loop.time())
        else:
            entry.update(target)
            entry.dispatch()
            if target.failed and not entry.usable():
                self._fail_waiters(entry, failed_message(entry))

    def _remove(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is None:
            return
        entry.removed = True
        self._fail_waiters(entry, f"deployment {name!r} was torn down.")
        for up in list(entry.upstreams):
            self._drain_upstream(entry, up)

    def _add_replica(self, name: str, replica_id: str, url: str, secret: str) -> None:
        entry = self._entries.get(name)
        if entry is None:
            return
        if any(u.replica_id == replica_id for u in entry.upstreams):
            return
        if not entry.usable():
            # The idle clock of scaledown_window starts when a replica can serve,
            # not when the deployment was created or the last one stopped.
            entry.stats.last_request = max(entry.stats.last_request, self._loop.time())
        entry.upstreams.append(Upstream(replica_id, url, secret))
        entry.dispatch()

    def _drain(self, name: str, replica_id: str) -> None:
        entry = self._entries.get(name)
        up = _find(entry, replica_id)
        if entry is None or up is None:
            self._offload(self.backend.replica_drained, name, replica_id)
            return
        self._drain_upstream(entry, up)

    def _drain_upstream(self, entry: Entry, up: Upstream) -> None:
        up.draining = True
        if up.in_flight == 0:
            self._drained(entry, up)
        else:
            self._loop.call_later(self.drain_grace_s, self._drained, entry, up)

    def _drained(self, entry: Entry, up: Upstream) -> None:
        if up.drain_reported:
            return
        up.drain_reported = True
        up.pool.close()
        with contextlib.suppress(ValueError):
            entry.upstreams.remove(up)
        self._offload(self.backend.replica_drained, entry.target.name, up.replica_id)

    def _remove_replica(self, name: str, replica_id: str) -> None:
        entry = self._entries.get(name)
        up = _find(entry, replica_id)
        if entry is not None and up is not None:
            up.drain_reported = True
            up.pool.close()
            entry.upstreams.remove(up)

    def _clear_suspect(self, name: str, replica_id: str) -> None:
        entry = self._entries.get(name)
        up = _find(entry, replica_id)
        if entry is not None and up is not None:
            up.suspect = False
            entry.dispatch()

    def _fail_waiters(self, entry: Entry, message: str) -> None:
        while entry.waiters:
            fut = entry.waiters.popleft()
            if not fut.done():
                fut.set_exception(Unreachable(message))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _find(entry: Entry | None, replica_id: str) -> Upstream | None:
    if entry is None:
        return None
    return next((u for u in entry.upstreams if u.replica_id == replica_id), None)
