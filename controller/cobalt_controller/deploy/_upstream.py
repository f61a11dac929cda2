"""The gateway's client to its replicas: pools of keep-alive HTTP/1.1 connections.

aiohttp's client spent most of the gateway's time per request on building a
request object, several socket writes, and its payload and stream machinery.
Replicas are our own uvicorn servers on loopback, so a far smaller client
does: each request is one ``transport.write`` of preformatted bytes, and
``httptools`` (llhttp, which uvicorn uses too) parses the answer inside
``data_received`` with no task, stream reader or copy in between.

What the gateway needs from it, and why:

- :class:`Unreachable` when the connection failed before any byte of an
  answer arrived, so the gateway may retry on another replica; a failure
  later is :class:`UpstreamError` (the replica may have acted on the request).
- A pooled connection the replica closed while it sat idle (its keep-alive
  expired) is not the replica's fault: the request goes once more on a fresh
  connection before that counts as unreachable.
- Bodies with a ``Content-Length`` come back whole; server-sent events and
  chunked answers come as an async iterator of chunks as they arrive, with
  reading paused while the caller lags behind by more than ``_HIGH`` bytes.

Everything runs on the gateway's event loop; nothing is locked.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from urllib.parse import urlsplit

import httptools

MAX_IDLE = 64
"""Idle connections kept per replica; more are closed when they come back."""
IDLE_S = 4.0
"""An idle connection older than this is closed instead of reused: uvicorn
drops them after 5 s, and reusing one at that moment would race its close."""
CONNECT_TIMEOUT_S = 10.0
_HIGH = 1 << 20
_LOW = _HIGH // 4


class Unreachable(Exception):
    """No byte of an answer arrived: the request may go to another replica."""


class UpstreamError(Exception):
    """The replica failed part-way through its answer."""


class Response:
    """A replica's answer: ``body`` when it came whole, else iterate over it.

    ``headers`` are the raw (name, value) pairs as sent. :meth:`close` must be
    called when done; it drops the connection if the answer was not read to
    its end, so that a half-read connection never returns to the pool.
    """

    __slots__ = ("_exchange", "body", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        exchange: _Exchange | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self._exchange = exchange

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        ex = self._exchange
        if ex is None:
            raise StopAsyncIteration
        while not ex.parts:
            if ex.error is not None:
                raise ex.error
            if ex.finished:
                raise StopAsyncIteration
            ex.waiter = asyncio.get_running_loop().create_future()
            try:
                await ex.waiter
            finally:
                ex.waiter = None
        chunk = ex.parts.popleft()
        ex.buffered -= len(chunk)
        conn = ex.conn
        if conn.paused and ex.buffered < _LOW and conn.ex is ex:
            conn.paused = False
            conn.transport.resume_reading()
        return chunk

    def close(self) -> None:
        ex = self._exchange
        if ex is not None and not ex.finished and ex.conn.ex is ex:
            ex.conn.abort()


class _Exchange:
    """One request's answer while it arrives."""

    __slots__ = (
        "buffered",
        "chunked",
        "conn",
        "error",
        "finished",
        "future",
        "headers",
        "length",
        "parts",
        "received",
        "sse",
        "status",
        "streaming",
        "waiter",
    )

    def __init__(self, conn: _Conn, future: asyncio.Future[Response]) -> None:
        self.conn = conn
        self.future = future
        self.headers: list[tuple[bytes, bytes]] = []
        self.parts: deque[bytes] = deque()
        self.status = 0
        self.length: int | None = None
        self.chunked = False
        self.sse = False
        self.streaming = False
        self.received = False
        self.finished = False
        self.buffered = 0
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
        elif not self.finished and self.error is None:
            self.error = exc
            self.wake()


class _Conn(asyncio.Protocol):
    """One connection to a replica, carrying one request at a time."""

    transport: asyncio.Transport

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.ex: _Exchange | None = None
        self.closed = False
        self.paused = False
        self.idle_since = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        ex = self.ex
        if ex is None:
            return
        self.ex = None
        if not ex.received:
            ex.fail(Unreachable(f"{self.pool.name}: the connection closed before any answer"))
        elif ex.streaming and ex.length is None and not ex.chunked:
            ex.finished = True  # an answer delimited by the end of the connection
            ex.wake()
        else:
            ex.fail(UpstreamError(f"{self.pool.name}: the connection closed mid-answer"))

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:  # bytes nobody asked for: this connection is not sound
            self.abort()
            return
        ex.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.ex = None
            ex.fail(UpstreamError(f"{self.pool.name}: malformed answer: {exc}"))
            self.abort()

    # -- httptools callbacks ---------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.ex
        assert ex is not None
        ex.headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length":
            ex.length = int(value)
        elif lower == b"content-type":
            ex.sse = value.startswith(b"text/event-stream")
        elif lower == b"transfer-encoding":
            ex.chunked = b"chunked" in value.lower()

    def on_headers_complete(self) -> None:
        ex = self.ex
        assert ex is not None
        ex.status = self.parser.get_status_code()
        if ex.length is None or ex.sse:
            ex.streaming = True
            ex.future.set_result(Response(ex.status, ex.headers, None, ex))

    def on_body(self, body: bytes) -> None:
        ex = self.ex
        assert ex is not None
        ex.parts.append(body)
        if ex.streaming:
            ex.buffered += len(body)
            if ex.buffered > _HIGH and not self.paused:
                self.paused = True
                self.transport.pause_reading()
            ex.wake()

    def on_message_complete(self) -> None:
        ex = self.ex
        assert ex is not None
        self.ex = None
        ex.finished = True
        if ex.streaming:
            ex.wake()
        else:
            parts = ex.parts
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            ex.future.set_result(Response(ex.status, ex.headers, body))
        if self.parser.should_keep_alive():
            self.pool.release(self)
        else:
            self.transport.close()

    # -- for the pool -----------------------------------------------------------------

    async def exchange(self, data: bytes) -> Response:
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.ex = _Exchange(self, future)
        self.transport.write(data)
        try:
            return await future
        except asyncio.CancelledError:
            self.abort()
            raise

    def usable(self) -> bool:
        return not self.closed and not self.transport.is_closing()

    def abort(self) -> None:
        self.closed = True
        self.ex = None
        self.transport.abort()


class Pool:
    """Keep-alive connections to one replica at ``url`` (``http://host:port[/base]``)."""

    def __init__(self, url: str, name: str = "") -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"replica URL {url!r} is not http://host:port")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base = parts.path.rstrip("/")
        self.name = name or url
        self.host_header = parts.netloc
        self.idle: list[_Conn] = []
        self.closed = False
        self._heads: dict[str, bytes] = {}

    def head(self, route: str, method: str = "POST") -> bytes:
        """The request line and Host header for ``method route``, formatted once."""
        key = route if method == "POST" else f"{method} {route}"
        head = self._heads.get(key)
        if head is None:
            head = self._heads[key] = (
                f"{method} {self.base}{route} HTTP/1.1\r\nHost: {self.host_header}\r\n".encode()
            )
        return head

    async def request(self, data: bytes) -> Response:
        """Sends ``data`` (a whole request) and returns the answer.

        Raises:
            Unreachable: no byte of an answer came, even on a fresh connection.
            UpstreamError: the answer broke off (or was malformed) part-way.
        """
        idle = self.idle
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.usable():
                continue
            if now - conn.idle_since > IDLE_S:
                conn.transport.close()
                continue
            try:
                return await conn.exchange(data)
            except Unreachable:
                break  # the replica closed it as we sent: a fresh connection decides
        conn = await self._connect()
        return await conn.exchange(data)

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            transport, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(self), self.host, self.port),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError) as exc:
            raise Unreachable(f"{self.name}: cannot connect: {exc or type(exc).__name__}") from exc
        conn.transport = transport  # uvloop may call connection_made a little later
        return conn

    def release(self, conn: _Conn) -> None:
        if conn.paused:
            conn.paused = False
            conn.transport.resume_reading()
        if self.closed or len(self.idle) >= MAX_IDLE:
            conn.transport.close()
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def forget(self, conn: _Conn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        """Closes the idle connections; those in use close when their answer ends."""
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.transport.close()
