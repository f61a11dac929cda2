"""The gateway's own HTTP/1.1 server, spoken to over raw sockets.

Each test sends bytes exactly as written, so the cases that ordinary clients
never produce (pipelining, HTTP/1.0, malformed requests, half-sent chunked
bodies, disconnects mid-answer) are covered too.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httptools
import pytest
from support import Loop, wait_for

from cobalt_common.deploy import Autoscaling
from cobalt_controller.deploy import Gateway, ScaleEvent, Target, _server
from cobalt_controller.deploy._http import HttpLimits, Request
from cobalt_controller.deploy._server import HttpConnection, Server

pytestmark = pytest.mark.unit

LIMIT = 100


async def handler(req: Request, conn: HttpConnection) -> None:
    """``/echo`` answers its body (413 over 100 bytes), ``/slow`` waits 0.3 s,
    ``/stream`` sends three chunks, anything else answers 404 unread."""
    if req.path == "/echo":
        body = await req.read(LIMIT, conn)
        if isinstance(body, int):
            conn.respond(413, b"", b"too large")
        else:
            conn.respond(200, b"X-Method: " + req.method.encode() + b"\r\n", body)
    elif req.path == "/slow":
        await asyncio.sleep(0.3)
        conn.respond(200, b"", b"slow")
    elif req.path == "/stream":
        conn.start_stream(200, b"Content-Type: text/plain\r\n")
        for i in range(3):
            await conn.write(b"part%d;" % i)
        conn.end_stream()
    else:
        conn.respond(404, b"", b"nothing at " + req.path.encode())


@pytest.fixture
def port() -> Iterator[int]:
    loop = Loop()
    server = Server(handler)
    yield loop.run(server.listen("127.0.0.1", 0))
    loop.run(server.close())
    loop.close()


SHORT = HttpLimits(head_timeout_s=0.4, max_connections=3, max_connections_per_client=2)


@pytest.fixture
def limited() -> Iterator[int]:
    """A server with a short head timeout and few connections (see :data:`SHORT`)."""
    loop = Loop()
    server = Server(handler, SHORT)
    yield loop.run(server.listen("127.0.0.1", 0))
    loop.run(server.close())
    loop.close()


class Answer:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.complete = False


class Client:
    """A raw socket that parses the answers it gets."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.answers: list[Answer] = []
        self.parser = httptools.HttpResponseParser(self)
        self.eof = False

    def on_message_begin(self) -> None:
        self.answers.append(Answer())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.answers[-1].headers[name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        self.answers[-1].status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.answers[-1].body += body

    def on_message_complete(self) -> None:
        self.answers[-1].complete = True

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, count: int = 1) -> list[Answer]:
        """Reads until ``count`` answers are complete (or the server closed)."""
        while sum(a.complete for a in self.answers) < count and not self.eof:
            data = self.sock.recv(65536)
            if not data:
                self.eof = True
                self.parser.feed_data(b"")
                break
            self.parser.feed_data(data)
        return self.answers[:count]

    def closed_by_server(self) -> bool:
        if self.eof:
            return True
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (
        path.encode(),
        len(body),
        extra,
        body,
    )


def test_a_connection_is_kept_alive_and_reused(port: int) -> None:
    c = Client(port)
    c.send(post("/echo", b"one"))
    c.read(1)
    c.send(post("/echo", b"two"))
    one, two = c.read(2)
    assert (one.status, one.body, two.status, two.body) == (200, b"one", 200, b"two")
    assert "connection" not in two.headers and two.headers["x-method"] == "POST"
    assert "date" in one.headers
    c.close()


def test_http_1_0_closes_unless_asked_to_keep_alive(port: int) -> None:
    c = Client(port)
    c.send(b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
    [a] = c.read(1)
    assert a.status == 200 and a.body == b"hi" and c.closed_by_server()
    c = Client(port)
    c.send(b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\na")
    c.read(1)
    c.send(b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nb")
    one, two = c.read(2)
    assert one.headers["connection"] == "keep-alive" and two.body == b"b"
    c.close()


def test_connection_close_is_honoured(port: int) -> None:
    c = Client(port)
    c.send(post("/echo", b"bye", b"Connection: close\r\n"))
    [a] = c.read(1)
    assert a.status == 200 and a.headers["connection"] == "close" and c.closed_by_server()


def test_a_chunked_request_body_is_read_whole(port: int) -> None:
    c = Client(port)
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    c.send(head + b"5\r\nhello\r\n")
    time.sleep(0.05)
    c.send(b"6\r\n world\r\n0\r\n\r\n")
    [a] = c.read(1)
    assert a.status == 200 and a.body == b"hello world"
    c.close()


def test_a_chunked_body_over_the_limit_gets_413_and_the_connection_closes(port: int) -> None:
    c = Client(port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        c.send(b"40\r\n" + b"x" * 64 + b"\r\n")
    [a] = c.read(1)
    assert a.status == 413 and a.headers["connection"] == "close"
    c.send(b"0\r\n\r\n")
    assert c.closed_by_server()


def test_a_content_length_over_the_limit_gets_413_before_the_body(port: int) -> None:
    c = Client(port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 10)
    [a] = c.read(1)
    assert a.status == 413 and a.headers["connection"] == "close"
    c.close()


def test_an_unread_body_is_dropped_and_the_connection_goes_on(port: int) -> None:
    c = Client(port)
    c.send(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    [a] = c.read(1)
    assert a.status == 404
    c.send(b"67890" + post("/echo", b"next"))
    assert c.read(2)[1].body == b"next"
    c.close()


def test_expect_100_continue_gets_its_interim_answer(port: int) -> None:
    c = Client(port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert c.sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
    c.send(b"body")
    [a] = c.read(1)
    assert a.status == 200 and a.body == b"body"
    c.close()


@pytest.mark.parametrize(
    "junk",
    [b"NOT HTTP AT ALL\r\n\r\n", b"POST /echo HTTP/1.1\r\nContent-Length: nope\r\n\r\n"],
)
def test_a_malformed_request_gets_400_and_the_connection_closes(port: int, junk: bytes) -> None:
    c = Client(port)
    c.send(junk)
    [a] = c.read(1)
    assert a.status == 400 and a.headers["connection"] == "close" and c.closed_by_server()


def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    c = Client(port)
    c.send(post("/slow", b"") + post("/echo", b"second") + post("/stream", b""))
    slow, second, stream = c.read(3)
    assert (slow.body, second.body, stream.body) == (b"slow", b"second", b"part0;part1;part2;")
    c.close()


def test_a_malformed_request_behind_a_good_one_is_answered_after_it(port: int) -> None:
    c = Client(port)
    c.send(post("/slow", b"") + b"GARBAGE\r\n\r\n")
    good, bad = c.read(2)
    assert (good.status, bad.status) == (200, 400) and c.closed_by_server()


def test_a_stream_is_chunked_for_1_1_and_ends_with_the_connection_for_1_0(port: int) -> None:
    c = Client(port)
    c.send(post("/stream", b""))
    [a] = c.read(1)
    assert a.headers["transfer-encoding"] == "chunked" and a.body == b"part0;part1;part2;"
    c.close()
    c = Client(port)
    c.send(b"POST /stream HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
    [a] = c.read(1)
    assert "transfer-encoding" not in a.headers and a.body == b"part0;part1;part2;"
    assert c.eof


def test_an_idle_connection_closes_after_the_keep_alive_timeout(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_server, "KEEPALIVE_S", 0.3)
    c = Client(port)
    c.send(post("/echo", b"x"))
    c.read(1)
    started = time.monotonic()
    assert c.closed_by_server() and 0.2 < time.monotonic() - started < 3


# -- limits on what a client can make the server hold before any handler runs ----------


def send_until_answered(c: Client, head: bytes, filler: bytes, most: int) -> None:
    """Sends ``head``, then ``filler`` again and again (``most`` bytes at most), stopping
    once the server answers or stops reading."""
    c.send(head)
    sent = 0
    c.sock.settimeout(0.01)
    try:
        while sent < most:
            try:
                data = c.sock.recv(65536)
            except TimeoutError:
                c.sock.sendall(filler)
                sent += len(filler)
                continue
            c.parser.feed_data(data)
            break
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        c.sock.settimeout(5)


def test_a_request_target_over_8_kib_gets_414_before_it_ends(port: int) -> None:
    c = Client(port)
    send_until_answered(c, b"GET /", b"a" * 1024, most=1024 * 1024)
    [a] = c.read(1)
    assert a.status == 414 and a.headers["connection"] == "close"
    assert b"8192 bytes" in a.body and c.closed_by_server()


@pytest.mark.parametrize(
    "filler", [b"a" * 4096, (b"X-Many: " + b"b" * 100 + b"\r\n") * 40], ids=["one-header", "many"]
)
def test_a_head_over_64_kib_gets_431_before_it_ends(port: int, filler: bytes) -> None:
    c = Client(port)
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\n" + (b"X-Big: " if b":" not in filler else b"")
    send_until_answered(c, head, filler, most=4 * 1024 * 1024)
    [a] = c.read(1)
    assert a.status == 431 and a.headers["connection"] == "close"
    assert b"65536 bytes" in a.body and c.closed_by_server()


def test_a_head_just_under_the_limits_is_served(port: int) -> None:
    c = Client(port)
    lines = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(55))
    c.send(post("/echo?" + "q" * 8000, b"ok", lines))
    [a] = c.read(1)
    assert a.status == 200 and a.body == b"ok"
    c.close()


def test_a_head_behind_a_large_body_in_the_same_read_is_not_counted_with_it(port: int) -> None:
    c = Client(port)
    big = post("/nowhere", b"z" * 90_000)
    c.send(big + b"POST /echo HTTP/1.1\r\nHost: x\r\n")
    time.sleep(0.1)
    c.send(b"Content-Length: 4\r\n\r\nnext")
    first, second = c.read(2)
    assert (first.status, second.status, second.body) == (404, 200, b"next")
    c.close()


def test_a_head_sent_a_byte_at_a_time_gets_408_after_the_head_timeout(limited: int) -> None:
    c = Client(limited)
    started = time.monotonic()
    send_until_answered(c, b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"a", most=400)
    [a] = c.read(1)
    assert a.status == 408 and a.headers["connection"] == "close"
    assert 0.3 < time.monotonic() - started < 3 and c.closed_by_server()


def test_a_connection_that_sends_nothing_closes_after_the_head_timeout(limited: int) -> None:
    c = Client(limited)
    started = time.monotonic()
    assert c.closed_by_server() and 0.3 < time.monotonic() - started < 3


def test_a_whole_head_is_not_timed_out_while_its_answer_takes_longer(limited: int) -> None:
    c = Client(limited)
    c.send(post("/slow", b"") + post("/slow", b"") + post("/echo", b"third"))
    answers = c.read(3)
    assert [a.status for a in answers] == [200, 200, 200] and answers[2].body == b"third"
    c.close()


def test_connections_over_the_per_client_bound_get_503_and_close(limited: int) -> None:
    held = [Client(limited), Client(limited)]
    for c in held:
        c.send(post("/echo", b"x"))
        assert c.read(1)[0].status == 200
    extra = Client(limited)
    [a] = extra.read(1)
    assert a.status == 503 and a.headers["retry-after"] == "1" and extra.closed_by_server()
    held.pop().close()
    time.sleep(0.1)
    again = Client(limited)
    again.send(post("/echo", b"y"))
    assert again.read(1)[0].body == b"y"
    for c in (*held, again):
        c.close()


def test_connections_over_the_total_bound_get_503_and_close() -> None:
    loop = Loop()
    server = Server(handler, HttpLimits(max_connections=2))
    port = loop.run(server.listen("127.0.0.1", 0))
    try:
        held = [Client(port), Client(port)]
        for c in held:
            c.send(post("/echo", b"x"))
            c.read(1)
        extra = Client(port)
        assert extra.read(1)[0].status == 503 and extra.closed_by_server()
        for c in held:
            c.close()
    finally:
        loop.run(server.close())
        loop.close()


# -- through the gateway: a client that goes away gives back its replica slot ------------


class Backend:
    def wake(self, name: str) -> None: ...
    def replica_suspect(self, name: str, replica_id: str) -> None: ...
    def replica_drained(self, name: str, replica_id: str) -> None: ...
    def scaled(self, name: str, target: int | None, events: list[ScaleEvent]) -> None: ...


class EndlessStream:
    """A replica that answers every request with an event stream that never ends."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.ended = threading.Event()
        self.server = loop.run(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while True:
                writer.write(b"9\r\ndata: x\n\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)
        except ConnectionError:
            self.ended.set()
        finally:
            writer.close()


@pytest.fixture
def streaming_gateway() -> Iterator[tuple[Gateway, EndlessStream]]:
    loop = Loop()
    replica = EndlessStream(loop)
    gw = Gateway(Backend(), autoscale_interval_s=3600)
    gw.start("127.0.0.1", 0)
    gw.configure(
        Target(
            name="svc",
            token="",
            routes={"/stream": True},
            max_body_bytes=LIMIT,
            autoscaling=Autoscaling(max_concurrency=1, queue_timeout=30),
        )
    )
    gw.add_replica("svc", "r", replica.url, "s")
    gw.sync()
    yield gw, replica
    gw.stop()
    loop.run(_close_server(replica.server))  # on its own loop: asyncio.Server is not thread-safe
    loop.close()


async def _close_server(server: asyncio.Server) -> None:
    server.close()


def test_a_client_that_leaves_mid_stream_frees_its_slot_and_the_replica_connection(
    streaming_gateway: tuple[Gateway, EndlessStream],
) -> None:
    gw, replica = streaming_gateway
    c = Client(gw.port)
    c.send(post("/svc/stream", b"{}"))
    assert c.sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert gw.in_flight("svc") == {"r": 1}
    c.close()
    wait_for(lambda: gw.in_flight("svc") == {"r": 0}, timeout=3)
    assert replica.ended.wait(3)


def test_a_client_that_leaves_while_queued_leaves_the_queue(
    streaming_gateway: tuple[Gateway, EndlessStream],
) -> None:
    gw, _ = streaming_gateway
    holder, waiter = Client(gw.port), Client(gw.port)
    holder.send(post("/svc/stream", b"{}"))
    assert holder.sock.recv(4096).startswith(b"HTTP/1.1 200")
    waiter.send(post("/svc/stream", b"{}"))
    wait_for(lambda: gw.metrics("svc")["queued"] == 1, timeout=3)
    waiter.close()
    wait_for(lambda: gw.metrics("svc")["queued"] == 0, timeout=3)
    holder.close()
    wait_for(lambda: gw.metrics("svc")["ongoing"] == 0, timeout=3)
    assert gw.in_flight("svc") == {"r": 0}
