"""The gateway: an async reverse proxy in front of every deployment's replicas.

It runs an aiohttp server on its own thread and event loop (uvloop when
importable), and reaches replicas through per-replica pools of keep-alive
connections (``_upstream``: one socket write per request, llhttp parsing). A request to
``POST <base>/<name><route>``:

1. finds the deployment (404), checks its bearer token with
   ``secrets.compare_digest`` (401), the route (404 naming the known ones)
   and the method (405), and reads the body up to ``max_body_bytes`` (413);
2. takes the ready replica with the fewest requests in flight under
   ``max_concurrency``, or waits in a FIFO queue bounded by ``max_queue`` and
   ``queue_timeout`` (503 with ``Retry-After``). At zero replicas, the first
   waiting request asks the manager to start one at once;
3. forwards it with ``x-cobalt-replica-secret`` and ``x-request-id``; a
   connection that fails before any response byte is retried once on another
   replica, and the manager is told that the replica looks dead;
4. passes the answer through unchanged, streaming server-sent events and
   chunked bodies as they arrive.

The hot path holds no lock, writes nothing to the store and logs nothing;
the manager's changes reach the routing table through the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from cobalt_controller.deploy._autoscaler import ScaleEvent
from cobalt_controller.deploy._gateway_scaling import GatewayScaling
from cobalt_controller.deploy._routing import Entry, Target, Upstream
from cobalt_controller.deploy._upstream import Response, Unreachable, UpstreamError

log = logging.getLogger("cobalt.gateway")

DRAIN_GRACE_S = 30.0
"""A draining replica is stopped when its last request ends, or after this."""
WAKE_REPEAT_S = 1.0
"""How often requests waiting at zero replicas may ask again for one."""
_PROBE_TIMEOUT_S = 2.0
_HOP_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"server", b"date"}
)


class Backend(Protocol):
    """What the gateway tells the deployment manager; called on a worker thread."""

    def wake(self, name: str) -> None:
        """A request waits and no replica serves ``name``: start one now."""

    def replica_suspect(self, name: str, replica_id: str) -> None:
        """A request could not reach the replica; find out whether it lives."""

    def replica_drained(self, name: str, replica_id: str) -> None:
        """A draining replica has no request left (or its grace ran out): stop it."""

    def scaled(self, name: str, target: int | None, events: list[ScaleEvent]) -> None:
        """The autoscaler changed the replica count (``target``) and/or has events."""


_Unreachable = Unreachable


class _QueueTimeout(Exception):
    pass


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"error": message}).encode(),
        content_type="application/json",
        headers=headers,
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Gateway(GatewayScaling):
    """The HTTP front of all deployments.

    Args:
        backend: the deployment manager (or a fake in tests).
        autoscale_interval_s: seconds between autoscaler ticks (default 1.0).
        drain_grace_s: how long a draining replica may finish its requests.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        autoscale_interval_s: float = 1.0,
        drain_grace_s: float = DRAIN_GRACE_S,
    ) -> None:
        self.backend = backend
        self.autoscale_interval_s = autoscale_interval_s
        self.drain_grace_s = drain_grace_s
        self.url = ""
        self.port = 0
        self._entries: dict[str, Entry] = {}
        self._loop = _new_loop()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cobalt-gateway")
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4).hex() + "-"
        self._tasks: set[asyncio.Task[Any]] = set()

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
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, keepalive_timeout=4.0, ttl_dns_cache=None, enable_cleanup_closed=True
            ),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        server = web.Server(self._handle, access_log=None)
        self._runner = web.ServerRunner(server, access_log=None)
        await self._runner.setup()
        try:
            site = web.TCPSite(self._runner, host, port, backlog=1024)
            await site.start()
        except OSError:
            if not fallback or port == 0:
                raise
            site = web.TCPSite(self._runner, host, 0, backlog=1024)
            await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._spawn(self._autoscale_forever())

    def stop(self) -> None:
        if self._thread is None:
            return

        async def close() -> None:
            for task in list(self._tasks):
                task.cancel()
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()
            for entry in self._entries.values():
                for up in entry.upstreams:
                    up.pool.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)

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
                self._fail_waiters(entry, self._failed_message(entry))

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
                fut.set_exception(_Unreachable(message))

    def _failed_message(self, entry: Entry) -> str:
        return (
            f"deployment {entry.target.name!r} failed to start: "
            f"{entry.target.failed.strip().splitlines()[-1] if entry.target.failed else ''}. "
            "Fix it and deploy again; `cobalt deployments events` shows what happened."
        )

    def _offload(self, fn: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("deployment manager call %s failed", getattr(fn, "__name__", fn))

        with contextlib.suppress(RuntimeError):  # shutting down
            self._pool.submit(run)

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests (loop thread) -------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path == "/healthz":
            return web.Response(body=b'{"ok": true}', content_type="application/json")
        name, _, rest = path[1:].partition("/")
        entry = self._entries.get(name)
        if entry is None:
            return _error(
                404,
                f"no deployment named {name!r} on this gateway; `cobalt deployments` lists them.",
            )
        target = entry.target
        if not entry.authorized(request.headers.get("Authorization")):
            return _error(
                401,
                f"deployment {name!r} needs 'Authorization: Bearer <token>'; the token is "
                f"dep.token, or `cobalt deployments token {name}`.",
                {"WWW-Authenticate": "Bearer"},
            )
        route = "/" + rest
        streaming = target.routes.get(route)
        if streaming is None:
            if route == "/openapi.json" and request.method == "GET":
                return web.Response(body=target.openapi or b"{}", content_type="application/json")
            known = ", ".join(sorted(target.routes)) or "(none)"
            return _error(
                404, f"deployment {name!r} has no route {route!r}; its routes are: {known}."
            )
        if request.method != "POST":
            return _error(
                405,
                f"{route} takes POST with a JSON body, not {request.method}.",
                {"Allow": "POST"},
            )
        limit = target.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            return _too_large(length, limit)
        if length is not None:
            body = await request.content.read()
        else:
            parts = []
            size = 0
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    return _too_large(size, limit)
                parts.append(chunk)
            body = b"".join(parts)
        loop = self._loop
        started = loop.time()
        entry.stats.arrived(started)
        in_headers = request.headers
        request_id = in_headers.get("x-request-id") or f"{self._prefix}{next(self._ids):x}"
        # Everything after the request line and Host but the secret, which is the
        # chosen replica's: request headers arrive parsed, so hold no CR or LF.
        common = (
            f"Content-Type: {in_headers.get('Content-Type', 'application/json')}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Accept: {in_headers.get('Accept', '*/*')}\r\n"
            f"x-request-id: {request_id}\r\n"
            "x-cobalt-replica-secret: "
        )
        for attempt in (0, 1):
            try:
                up = await self._acquire(entry)
            except _QueueTimeout as exc:
                return _error(503, str(exc), {"Retry-After": "1"})
            except _Unreachable as exc:
                return _error(503, str(exc), {"Retry-After": "5"})
            entry.in_flight += 1
            try:
                data = b"".join(
                    (
                        up.pool.head(route),
                        f"{common}{up.secret}\r\n\r\n".encode("utf-8", "surrogateescape"),
                        body,
                    )
                )
                return await self._forward(request, up, data, request_id)
            except _Unreachable:
                if not up.suspect and not up.draining:
                    up.suspect = True
                    self._offload(self.backend.replica_suspect, name, up.replica_id)
                if attempt:
                    return _error(
                        502,
                        f"deployment {name!r}: two replicas failed before answering request "
                        f"{request_id}; it was not completed. Try again.",
                    )
            finally:
                entry.in_flight -= 1
                up.in_flight -= 1
                entry.stats.finished(started, loop.time())
                if up.draining and up.in_flight == 0:
                    self._drained(entry, up)
                if entry.waiters:
                    entry.dispatch()
        raise AssertionError("unreachable")

    async def _acquire(self, entry: Entry) -> Upstream:
        up = entry.pick()
        if up is not None and not entry.waiters:
            up.in_flight += 1
            return up
        target = entry.target
        settings = target.autoscaling
        if target.failed and not entry.usable():
            raise _Unreachable(self._failed_message(entry))
        loop = self._loop
        if not entry.usable() and loop.time() - entry.last_wake >= WAKE_REPEAT_S:
            entry.last_wake = loop.time()
            entry.scaler.woke()
            self._offload(self.backend.wake, target.name)
        if len(entry.waiters) >= settings.max_queue:
            raise _QueueTimeout(
                f"deployment {target.name!r} is at capacity: {len(entry.waiters)} request(s) "
                "already wait. Retry after the time in Retry-After, or raise max_replicas "
                "or max_queue."
            )
        fut: asyncio.Future[Upstream] = loop.create_future()
        entry.waiters.append(fut)
        entry.dispatch()
        timeout = settings.seconds("queue_timeout")
        timer = loop.call_later(timeout, _expire, entry, fut, timeout)
        try:
            return await fut
        finally:
            timer.cancel()

    async def _forward(
        self, request: web.BaseRequest, up: Upstream, data: bytes, request_id: str
    ) -> web.StreamResponse:
        try:
            resp = await up.pool.request(data)  # Unreachable: the caller retries
        except UpstreamError:
            return _error(
                502, f"replica {up.replica_id} failed while answering request {request_id}."
            )
        try:
            out_headers = _pass_headers(resp)
            out_headers.setdefault("x-request-id", request_id)
            if resp.body is not None:
                return web.Response(status=resp.status, body=resp.body, headers=out_headers)
            out = web.StreamResponse(status=resp.status, headers=out_headers)
            await out.prepare(request)
            with contextlib.suppress(UpstreamError, ConnectionError):
                async for chunk in resp:
                    await out.write(chunk)
            with contextlib.suppress(ConnectionError):
                await out.write_eof()
            return out
        finally:
            resp.close()


def _pass_headers(resp: Response) -> dict[str, str]:
    """The replica's headers but the hop-by-hop ones (aiohttp sets its own)."""
    return {
        k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
        for k, v in resp.headers
        if k.lower() not in _HOP_HEADERS
    }


def _find(entry: Entry | None, replica_id: str) -> Upstream | None:
    if entry is None:
        return None
    return next((u for u in entry.upstreams if u.replica_id == replica_id), None)


def _expire(entry: Entry, fut: asyncio.Future[Upstream], timeout: float) -> None:
    name = entry.target.name
    if not fut.done():
        with contextlib.suppress(ValueError):
            entry.waiters.remove(fut)
        fut.set_exception(
            _QueueTimeout(
                f"no replica of deployment {name!r} could take the request within its "
                f"queue_timeout of {timeout:g} s. Retry after the time in Retry-After; "
                "raise max_replicas or queue_timeout if this persists."
            )
        )


def _too_large(size: int, limit: int) -> web.Response:
    return _error(
        413,
        f"the request body is {size} bytes or more, over this deployment's limit of "
        f"{limit} bytes; send less, or raise max_body_bytes.",
    )
