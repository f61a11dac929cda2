"""The gateway's request path: :class:`RequestHandler`, which :class:`~._gateway.Gateway` holds.

``POST <base>/<name><route>`` checks the deployment's bearer token (401)
before the route (404 naming the known ones) and the method (405 but for
POST and GET), so that nobody learns a deployment's routes without its
token. A deployment that does not exist answers 401 too, as no token can
open it: a 404 there would tell anyone which names exist. Reads
the body up to ``max_body_bytes`` (413); takes a replica slot or waits in the
deployment's queue (503 with ``Retry-After``); and forwards the request,
retrying once on another replica when the first could not be reached.

Which of POST and GET a route takes is the replica's to say (it answers 405
with ``Allow``): most routes take POST only, and some raw routes (such as
the OpenAI-compatible ``GET /v1/models``) take GET, so a GET is forwarded
like a POST rather than checked here.

Answers are written through :class:`~._server.HttpConnection`: whole ones as
one socket write, streamed ones chunk by chunk as the replica sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import Callable

from cobalt_controller.deploy._gateway_backend import Backend, Offload
from cobalt_controller.deploy._http import Request
from cobalt_controller.deploy._routing import Entry, Upstream
from cobalt_controller.deploy._server import HttpConnection
from cobalt_controller.deploy._upstream import Response, Unreachable, UpstreamError

WAKE_REPEAT_S = 1.0
"""How often requests waiting at zero replicas may ask again for one."""
_HOP_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"server", b"date"}
)
_JSON = b"Content-Type: application/json\r\n"


class QueueTimeout(Exception):
    """No replica slot came free in time, or the queue is full: 503, retry soon."""


class RequestHandler:
    """Serves requests on the gateway's loop, from the routing table it shares with the gateway.

    Args:
        entries: the gateway's routing table (the same dict, changed by the gateway).
        loop: the gateway's event loop.
        backend: the deployment manager, told of suspect replicas and of waits at zero.
        offload: runs calls to ``backend`` off the loop.
        drained: called when a draining replica's last request ends.
    """

    def __init__(
        self,
        entries: dict[str, Entry],
        loop: asyncio.AbstractEventLoop,
        backend: Backend,
        offload: Offload,
        drained: Callable[[Entry, Upstream], None],
    ) -> None:
        self._entries = entries
        self._loop = loop
        self._backend = backend
        self._offload = offload
        self._drained = drained
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4).hex() + "-"

    async def handle(self, req: Request, conn: HttpConnection) -> None:
        path = req.path
        if path == "/healthz":
            conn.respond(200, _JSON, b'{"ok": true}')
            return
        name, _, rest = path[1:].partition("/")
        entry = self._entries.get(name)
        headers = req.headers
        if entry is None or not entry.authorized(headers.get("authorization")):
            _error(
                conn,
                401,
                f"deployment {name!r} needs 'Authorization: Bearer <token>'; the token is "
                f"dep.token, or `cobalt deployments token {name}` (which also tells whether "
                "it exists: without its token, a name that does not exist answers this too).",
                b"WWW-Authenticate: Bearer\r\n",
            )
            return
        target = entry.target
        route = "/" + rest
        streaming = target.routes.get(route)
        if streaming is None:
            if route == "/openapi.json" and req.method == "GET":
                conn.respond(200, _JSON, target.openapi or b"{}")
                return
            known = ", ".join(sorted(target.routes)) or "(none)"
            _error(
                conn, 404, f"deployment {name!r} has no route {route!r}; its routes are: {known}."
            )
            return
        method = req.method
        if method != "POST" and (method != "GET" or route not in target.get_routes):
            takes_get = route in target.get_routes
            _error(
                conn,
                405,
                f"{route} takes {'GET or ' if takes_get else ''}POST with a JSON body, "
                f"not {method}.",
                b"Allow: GET, POST\r\n" if takes_get else b"Allow: POST\r\n",
            )
            return
        limit = target.max_body_bytes
        body = await req.read(limit, conn)
        if isinstance(body, int):
            _error(
                conn,
                413,
                f"the request body is {body} bytes or more, over this deployment's limit of "
                f"{limit} bytes; send less, or raise max_body_bytes.",
            )
            return
        loop = self._loop
        started = loop.time()
        clock = time.perf_counter()
        entry.stats.arrived(started)
        request_id = headers.get("x-request-id") or f"{self._prefix}{next(self._ids):x}"
        # Everything after the request line and Host but the secret, which is the
        # chosen replica's: llhttp refuses CR and LF inside header values.
        common = (
            f"Content-Type: {headers.get('content-type', 'application/json')}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Accept: {headers.get('accept', '*/*')}\r\n"
            f"x-request-id: {request_id}\r\n"
            "x-cobalt-replica-secret: "
        )
        for attempt in (0, 1):
            try:
                up = await self._acquire(entry)
            except QueueTimeout as exc:
                _error(conn, 503, str(exc), b"Retry-After: 1\r\n")
                return
            except Unreachable as exc:
                _error(conn, 503, str(exc), b"Retry-After: 5\r\n")
                return
            entry.in_flight += 1
            try:
                data = b"".join(
                    (
                        up.pool.head(route, method),
                        f"{common}{up.secret}\r\n\r\n".encode("utf-8", "surrogateescape"),
                        body,
                    )
                )
                await self._forward(conn, up, data, request_id)
                return
            except Unreachable:
                if not up.suspect and not up.draining:
                    up.suspect = True
                    self._offload(self._backend.replica_suspect, name, up.replica_id)
                if attempt:
                    _error(
                        conn,
                        502,
                        f"deployment {name!r}: two replicas failed before answering request "
                        f"{request_id}; it was not completed. Try again.",
                    )
                    return
            finally:
                entry.in_flight -= 1
                entry.stats.finished(loop.time(), time.perf_counter() - clock)
                self._release(entry, up)

    def _release(self, entry: Entry, up: Upstream) -> None:
        up.in_flight -= 1
        if up.draining and up.in_flight == 0:
            self._drained(entry, up)
        if entry.waiters:
            entry.dispatch()

    async def _acquire(self, entry: Entry) -> Upstream:
        up = entry.pick()
        if up is not None and not entry.waiters:
            up.in_flight += 1
            return up
        target = entry.target
        settings = target.autoscaling
        if target.failed and not entry.usable():
            raise Unreachable(failed_message(entry))
        loop = self._loop
        if not entry.usable() and loop.time() - entry.last_wake >= WAKE_REPEAT_S:
            entry.last_wake = loop.time()
            entry.scaler.woke()
            self._offload(self._backend.wake, target.name)
        if len(entry.waiters) >= settings.max_queue:
            raise QueueTimeout(
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
        except asyncio.CancelledError:
            # The client went away; a slot handed over just before is given back.
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release(entry, fut.result())
            raise
        finally:
            timer.cancel()

    async def _forward(
        self, conn: HttpConnection, up: Upstream, data: bytes, request_id: str
    ) -> None:
        try:
            resp = await up.pool.request(data)  # Unreachable: the caller retries
        except UpstreamError:
            _error(
                conn, 502, f"replica {up.replica_id} failed while answering request {request_id}."
            )
            return
        try:
            head = _pass_headers(resp, request_id)
            if resp.body is not None:
                conn.respond(resp.status, head, resp.body)
                return
            conn.start_stream(resp.status, head)
            try:
                async for chunk in resp:
                    await conn.write(chunk)
            except UpstreamError:
                # The replica failed part-way: cut the connection rather than end the
                # stream cleanly, so that any HTTP client can tell the answer is incomplete.
                conn.abort()
                return
            except ConnectionError:
                return  # the client went away
            conn.end_stream()
        finally:
            resp.close()  # drops the replica connection when the answer was cut short


def failed_message(entry: Entry) -> str:
    """Why requests to a deployment whose replicas could not start are refused."""
    return (
        f"deployment {entry.target.name!r} failed to start: "
        f"{entry.target.failed.strip().splitlines()[-1] if entry.target.failed else ''}. "
        "Fix it and deploy again; `cobalt deployments events` shows what happened."
    )


def _pass_headers(resp: Response, request_id: str) -> bytes:
    """The replica's header lines but the hop-by-hop ones, with ``x-request-id``."""
    lines = []
    has_id = False
    for k, v in resp.headers:
        lower = k.lower()
        if lower in _HOP_HEADERS:
            continue
        has_id = has_id or lower == b"x-request-id"
        lines.append(b"%s: %s\r\n" % (k, v))
    if not has_id:
        lines.append(f"x-request-id: {request_id}\r\n".encode("utf-8", "surrogateescape"))
    return b"".join(lines)


def _error(conn: HttpConnection, status: int, message: str, headers: bytes = b"") -> None:
    conn.respond(status, _JSON + headers, json.dumps({"error": message}).encode())


def _expire(entry: Entry, fut: asyncio.Future[Upstream], timeout: float) -> None:
    name = entry.target.name
    if not fut.done():
        with contextlib.suppress(ValueError):
            entry.waiters.remove(fut)
        fut.set_exception(
            QueueTimeout(
                f"no replica of deployment {name!r} could take the request within its "
                f"queue_timeout of {timeout:g} s. Retry after the time in Retry-After; "
                "raise max_replicas or queue_timeout if this persists."
            )
        )
