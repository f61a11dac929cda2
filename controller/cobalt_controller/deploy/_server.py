"""The gateway's HTTP/1.1 server: an ``asyncio.Protocol`` parsing with ``httptools``.

aiohttp's server spent about half of the gateway's time per proxied request
on its request objects, header multidicts, response objects and several
writes per answer. The gateway needs far less: a method, a path, a few
headers and the body, then one answer. So each connection parses with
llhttp (``httptools``, which uvicorn uses too) inside ``data_received``, and
an answer is one ``transport.write`` of a preformatted head and body.

What the server guarantees the handler, and why:

- One request at a time per connection, answered in order: requests that
  arrive pipelined behind the current one wait in a queue, and reading
  pauses until they have been answered, so a client cannot make us buffer
  more than one read's worth ahead.
- The body is read by the handler with the limit it knows
  (:meth:`Request.read`): a ``Content-Length`` or a chunked body over it is
  not buffered further, and the connection closes after the answer, after
  reading and dropping what the client still sends for a moment (closing
  at once would reset the connection and lose the answer).
- A handler that answers without reading the body (404, 401, ...) leaves
  the rest of the body to be dropped, and the connection stays usable.
- When the client goes away, the handler's task is cancelled, so that it
  gives up its place in a queue or its replica connection at once.
- Streamed answers are chunked (HTTP/1.1) or delimited by the end of the
  connection (HTTP/1.0), and :meth:`HttpConnection.write` waits while the
  client's socket buffer is full: the slow reader's back-pressure reaches
  the replica through the gateway's upstream client.
- Malformed requests get 400 and the connection closes; idle connections
  close after :data:`KEEPALIVE_S`.
- Before any handler runs (and so before any token is checked), what one
  client can make the server hold is bounded by :class:`~._http.HttpLimits`:
  the request target (414), the whole head (431, counted as it arrives, not
  once it is whole), the time the head takes to arrive (408), and the number
  of open connections, in all and per client address (503 and closed).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import httptools

from cobalt_controller.deploy._http import (
    END_OF_HEAD,
    BadRequest,
    HttpLimits,
    Request,
    date_line,
    json_error,
    parse_path,
    status_line,
)

log = logging.getLogger("cobalt.gateway")

KEEPALIVE_S = 75.0
"""An idle connection (or one whose request stalls) closes after this."""
LINGER_S = 2.0
"""After refusing a body, how long to drop what the client still sends."""

Handler = Callable[["Request", "HttpConnection"], Awaitable[None]]
_JSON = b"Content-Type: application/json\r\n"
_BUSY_BODY = json_error("the gateway has too many open connections; retry soon.")
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n" + _JSON + b"Retry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _HeadRefused(Exception):
    """Raised in a parser callback: the head is over a limit (``status``: 414, 431)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpConnection(asyncio.Protocol):
    """One client connection; the handler answers through :meth:`respond` or a stream."""

    transport: asyncio.Transport

    def __init__(self, handler: Handler, loop: asyncio.AbstractEventLoop, server: Server) -> None:
        self.handler = handler
        self.loop = loop
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.parsing: Request | None = None
        self.current: Request | None = None
        self.pending: deque[Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.broken = False  # no further request is parsed: close after the current one
        self.lingering = False
        self.read_paused = False
        self.write_paused = False
        self.drain: asyncio.Future[None] | None = None
        self.started = False
        self.chunked = False
        self.last_active = loop.time()
        self.timer: asyncio.TimerHandle | None = None
        self.limits = server.limits
        self.client = ""
        self.admitted = False
        self.in_head = False
        self.head_bytes = 0  # the head's target and header lines, as the parser hands them
        self.head_raw = 0  # bytes received since the head began: bounds what llhttp buffers
        self.body_fed = 0  # body bytes seen in the current data_received
        self.head_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self.server.admit(self):
            self.broken = True
            self.transport.write(_BUSY)
            self.transport.close()
            return
        self.admitted = True
        self.timer = self.loop.call_at(self.last_active + KEEPALIVE_S, self._check_idle)
        self.head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.admitted:
            self.admitted = False
            self.server.forget(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.head_timer is not None:
            self.head_timer.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        drain = self.drain
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("the client went away"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drain = self.drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.lingering or self.broken:
            return
        self.last_active = self.loop.time()
        was_in_head = self.in_head
        self.body_fed = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.broken = True  # answer what came whole, then close
            req = self.parsing
            if req is not None and not req.complete:
                self._malformed(req, "protocol upgrades are not supported")
            return
        except httptools.HttpParserError as exc:
            self.broken = True
            refused = exc.__context__
            if isinstance(refused, _HeadRefused):
                self._malformed(self.parsing, str(refused), refused.status)
                return
            req = self.parsing
            self._malformed(req if req is not None and not req.complete else None, str(exc))
            return
        if self.in_head:
            # The part of a header line llhttp has not handed over yet is held by
            # httptools, so the head is also bounded by the bytes received for it.
            fresh = len(data) - self.body_fed
            self.head_raw = self.head_raw + len(data) if was_in_head else fresh
            if self.head_raw > self.limits.max_head_bytes:
                self.broken = True
                self._malformed(self.parsing, self._head_too_large(), 431)

    # -- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self.parsing = Request()
        self.in_head = True
        self.head_bytes = 0
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_late)

    def on_url(self, url: bytes) -> None:
        assert self.parsing is not None
        self.parsing.url += url
        self.head_bytes += len(url)
        if len(self.parsing.url) > self.limits.max_url_bytes:
            raise _HeadRefused(414, f"the request target is over {self.limits.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.parsing is not None
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.limits.max_head_bytes:
            raise _HeadRefused(431, self._head_too_large())
        headers = self.parsing.headers
        key = name.decode("latin-1").lower()
        text = value.decode("utf-8", "surrogateescape")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        req = self.parsing
        assert req is not None
        self.in_head = False
        self.head_raw = 0
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        parser = self.parser
        req.method = parser.get_method().decode("ascii")
        req.keep_alive = parser.should_keep_alive()
        req.http10 = parser.get_http_version() == "1.0"
        req.path = parse_path(req.url)
        if self.current is None:
            self._start(req)
        else:
            self.pending.append(req)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        assert self.parsing is not None
        self.body_fed += len(body)
        self.parsing.add(body)

    def on_message_complete(self) -> None:
        req = self.parsing
        assert req is not None
        req.complete = True
        req.wake()

    # -- the handler's side ----------------------------------------------------------

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def respond(self, status: int, headers: bytes, body: bytes) -> None:
        """Answers the current request: ``headers`` are whole ``Name: value\\r\\n`` lines."""
        req = self.current
        assert req is not None and not self.started
        self.started = True
        if self.closed:
            return
        close = self._closing(req)
        self.transport.write(
            b"".join(
                (
                    status_line(status),
                    date_line(),
                    headers,
                    b"Content-Length: %d\r\n" % len(body),
                    END_OF_HEAD[(req.http10, close)],
                    b"" if req.method == "HEAD" else body,
                )
            )
        )

    def start_stream(self, status: int, headers: bytes) -> None:
        """Starts an answer whose body follows in :meth:`write` calls."""
        req = self.current
        assert req is not None and not self.started
        self.started = True
        if req.http10:
            self.broken = True  # no chunked encoding: the end of the connection ends it
        self.chunked = not req.http10
        if self.closed:
            return
        close = self._closing(req)
        encoding = b"Transfer-Encoding: chunked\r\n" if self.chunked else b""
        self.transport.write(
            b"".join(
                (
                    status_line(status),
                    date_line(),
                    headers,
                    encoding,
                    END_OF_HEAD[(req.http10, close)],
                )
            )
        )

    async def write(self, chunk: bytes) -> None:
        """Sends part of a streamed body, waiting while the client lags behind.

        Raises:
            ConnectionResetError: the client went away.
        """
        if self.closed:
            raise ConnectionResetError("the client went away")
        if not chunk:
            return
        if self.chunked:
            self.transport.write(b"".join((b"%x\r\n" % len(chunk), chunk, b"\r\n")))
        else:
            self.transport.write(chunk)
        if self.write_paused:
            self.drain = self.loop.create_future()
            try:
                await self.drain
            finally:
                self.drain = None

    def abort(self) -> None:
        """Drops the connection at once: an answer that cannot be completed."""
        if not self.closed:
            self.transport.abort()

    def end_stream(self) -> None:
        if self.chunked and not self.closed:
            self.transport.write(b"0\r\n\r\n")

    # -- requests in turn ------------------------------------------------------------

    def _start(self, req: Request) -> None:
        self.current = req
        self.started = False
        self.chunked = False
        self.task = self.loop.create_task(self._run(req))

    async def _run(self, req: Request) -> None:
        try:
            if req.bad and not req.method:
                raise BadRequest(req.bad, req.bad_status)
            await self.handler(req, self)
            if not self.started:
                raise RuntimeError("the handler did not answer")
        except asyncio.CancelledError:
            pass  # the client went away
        except BadRequest as exc:
            self.broken = True
            if not self.started:
                reason = "malformed request: " if exc.status == 400 else ""
                self.respond(exc.status, _JSON, json_error(f"{reason}{exc}"))
        except Exception:
            log.exception("the gateway failed on %s %s", req.method, req.path)
            self.broken = True
            if not self.started:
                self.respond(500, _JSON, json_error("the gateway failed; see its log."))
        self._done(req)

    def _done(self, req: Request) -> None:
        self.current = None
        self.task = None
        if self.closed:
            return
        self.last_active = self.loop.time()
        if req.too_large or (not req.complete and not req.keep_alive):
            self._linger()
            return
        if not req.keep_alive or (self.broken and not self.pending):
            self.transport.close()
            return
        if not req.complete:
            req.drop()  # the answer went without it
        if self.pending:
            self._start(self.pending.popleft())
            if not self.pending and self.read_paused:
                self.read_paused = False
                self.transport.resume_reading()
        elif self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def _closing(self, req: Request) -> bool:
        return not req.keep_alive or req.too_large or (self.broken and not self.pending)

    def _malformed(self, req: Request | None, message: str, status: int = 400) -> None:
        if req is not None and req.complete:
            req = None
        if req is None:
            req = Request()
            req.keep_alive = False
            self.parsing = req
        if req.discard:  # answered already, and now its body is malformed
            self.transport.close()
            return
        req.bad = message or "unparsable"
        req.bad_status = status
        req.keep_alive = False
        req.wake()
        if req is self.current or req in self.pending:
            return  # its handler's read raises BadRequest
        if self.current is None:
            self._start(req)
        else:
            self.pending.append(req)

    def _pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def _linger(self) -> None:
        """Drops what the client still sends for a moment, then closes (at its end
        of file at the latest: ``eof_received`` is not overridden, so the transport
        closes then, as it does for a client that closes mid-request)."""
        self.lingering = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _head_too_large(self) -> str:
        return f"the request head is over {self.limits.max_head_bytes} bytes"

    def _head_late(self) -> None:
        """The head timeout: 408 for a request begun, or close a connection that sent nothing."""
        self.head_timer = None
        if self.closed or self.broken:
            return
        if self.read_paused:  # its turn has not come: the clock starts again when it does
            self.head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_late)
            return
        if self.in_head:
            self.broken = True
            seconds = f"{self.limits.head_timeout_s:g}"
            self._malformed(self.parsing, f"the request head took over {seconds} s", 408)
        elif self.current is None and not self.pending:
            self.transport.close()

    def _check_idle(self) -> None:
        self.timer = None
        if self.closed:
            return
        req = self.current
        if req is None or not req.complete:
            deadline = self.last_active + KEEPALIVE_S
            if self.loop.time() >= deadline:
                self.transport.close()
                return
        else:
            deadline = self.loop.time() + KEEPALIVE_S
        self.timer = self.loop.call_at(deadline, self._check_idle)


class Server:
    """Listens on a socket and keeps its connections, to close them on :meth:`close`."""

    def __init__(self, handler: Handler, limits: HttpLimits | None = None) -> None:
        self.handler = handler
        self.limits = limits or HttpLimits()
        self.connections: set[HttpConnection] = set()
        self.per_client: dict[str, int] = {}
        self._server: asyncio.base_events.Server | None = None

    def admit(self, conn: HttpConnection) -> bool:
        """Counts a new connection in, unless it is one too many (in all or for its client)."""
        limits = self.limits
        held = self.per_client.get(conn.client, 0)
        if (
            len(self.connections) >= limits.max_connections
            or held >= limits.max_connections_per_client
        ):
            return False
        self.connections.add(conn)
        self.per_client[conn.client] = held + 1
        return True

    def forget(self, conn: HttpConnection) -> None:
        self.connections.discard(conn)
        held = self.per_client.get(conn.client, 0) - 1
        if held > 0:
            self.per_client[conn.client] = held
        else:
            self.per_client.pop(conn.client, None)

    async def listen(self, host: str, port: int, *, backlog: int = 1024) -> int:
        """Serves on ``host:port`` and returns the port (``port`` 0: any free one)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpConnection(self.handler, loop, self), host, port, backlog=backlog
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.transport.close()
        if self._server is not None:
            await self._server.wait_closed()
