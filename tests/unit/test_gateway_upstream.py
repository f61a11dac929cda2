"""The gateway's replica client against scripted HTTP servers on loopback.

Each fake replica is a raw asyncio server whose answers the test writes byte
by byte, so keep-alive expiry, a connection dropped mid-answer and chunks
sent apart in time can be staged exactly. Everything runs on uvloop, as the
gateway does.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from cobalt_controller.deploy import _upstream
from cobalt_controller.deploy._upstream import Pool, Unreachable, UpstreamError

pytestmark = pytest.mark.unit

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(coro: Coroutine[Any, Any, None]) -> None:
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(coro, 20))
    finally:
        loop.close()


class Replica:
    """A scripted server: ``answer`` gets each request's body and writes the reply."""

    def __init__(self, answer: Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> Replica:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                if not await self.answer(body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


def request(pool: Pool, body: bytes = b'{"x": 1}') -> bytes:
    return pool.head("/echo") + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def echo(body: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    return True


def test_requests_reuse_one_keep_alive_connection() -> None:
    async def main() -> None:
        replica = await Replica(echo).start()
        pool = Pool(replica.url + "/base/")
        for i in range(5):
            resp = await pool.request(request(pool, b"%d" % i))
            assert resp.status == 200 and resp.body == b"%d" % i
            resp.close()
        assert replica.connections == 1 and len(pool.idle) == 1
        assert replica.requests[0].startswith(b"POST /base/echo HTTP/1.1\r\nHost: 127.0.0.1:")
        pool.close()
        replica.close()

    run(main())


def test_a_connection_the_replica_closed_while_idle_is_replaced() -> None:
    async def once(body: bytes, writer: asyncio.StreamWriter) -> bool:
        await echo(body, writer)
        return False  # then close, as a keep-alive timeout would

    async def main() -> None:
        replica = await Replica(once).start()
        pool = Pool(replica.url)
        assert (await pool.request(request(pool))).status == 200
        await asyncio.sleep(0.1)  # the close arrives: the pool forgets the connection
        assert pool.idle == []
        assert (await pool.request(request(pool))).status == 200
        assert replica.connections == 2
        pool.close()
        replica.close()

    run(main())


class Closing:
    """A transport whose peer closes it just as the next request goes out."""

    def __init__(self, real: asyncio.Transport) -> None:
        self.real = real

    def write(self, data: bytes) -> None:
        self.real.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_stale_connection_that_fails_on_reuse_is_retried_on_a_fresh_one() -> None:
    async def main() -> None:
        replica = await Replica(echo).start()
        pool = Pool(replica.url)
        assert (await pool.request(request(pool))).status == 200
        (conn,) = pool.idle
        conn.transport = Closing(conn.transport)  # type: ignore[assignment]
        resp = await pool.request(request(pool, b"again"))
        assert resp.status == 200 and resp.body == b"again"
        assert replica.connections == 2
        pool.close()
        replica.close()

    run(main())


def test_idle_connections_past_their_age_are_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_upstream, "IDLE_S", 0.0)

    async def main() -> None:
        replica = await Replica(echo).start()
        pool = Pool(replica.url)
        for _ in range(2):
            assert (await pool.request(request(pool))).status == 200
            await asyncio.sleep(0.01)
        assert replica.connections == 2
        pool.close()
        replica.close()

    run(main())


def test_connection_refused_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nobody listens

    async def main() -> None:
        pool = Pool(f"http://127.0.0.1:{port}")
        with pytest.raises(Unreachable):
            await pool.request(request(pool))

    run(main())


def test_a_close_before_any_answer_is_unreachable() -> None:
    async def hang_up(body: bytes, writer: asyncio.StreamWriter) -> bool:
        return False

    async def main() -> None:
        replica = await Replica(hang_up).start()
        pool = Pool(replica.url)
        with pytest.raises(Unreachable):
            await pool.request(request(pool))
        replica.close()

    run(main())


def test_a_failure_mid_body_is_an_upstream_error() -> None:
    async def partial(body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")
        await writer.drain()
        return False

    async def main() -> None:
        replica = await Replica(partial).start()
        pool = Pool(replica.url)
        with pytest.raises(UpstreamError):
            await pool.request(request(pool))
        assert pool.idle == []
        replica.close()

    run(main())


def test_a_failure_mid_stream_ends_the_iteration_with_an_upstream_error() -> None:
    async def partial(body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        return False

    async def main() -> None:
        replica = await Replica(partial).start()
        pool = Pool(replica.url)
        resp = await pool.request(request(pool))
        got = []
        with pytest.raises(UpstreamError):
            async for chunk in resp:
                got.append(chunk)
        assert got == [b"hello"]
        resp.close()
        replica.close()

    run(main())


def test_events_arrive_as_they_are_sent_and_the_connection_is_reused() -> None:
    async def main() -> None:
        go = asyncio.Event()

        async def events(body: bytes, writer: asyncio.StreamWriter) -> bool:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for i in range(3):
                data = b"data: %d\n\n" % i
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
                await go.wait()
                go.clear()
            writer.write(b"0\r\n\r\n")
            return True

        replica = await Replica(events).start()
        pool = Pool(replica.url)
        resp = await pool.request(request(pool))
        assert resp.body is None
        assert (b"content-type", b"text/event-stream") in resp.headers
        got = []
        async for chunk in resp:
            got.append(chunk)  # each arrives before the next is even sent
            go.set()
        assert got == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
        resp.close()
        assert len(pool.idle) == 1
        again = await pool.request(request(pool))
        more = []
        async for chunk in again:
            more.append(chunk)
            go.set()
        assert more == got
        assert replica.connections == 1
        pool.close()
        replica.close()

    run(main())


def test_a_stream_closed_before_its_end_drops_the_connection() -> None:
    async def endless(body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
        while True:
            writer.write(b"data: x\n\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async def main() -> None:
        replica = await Replica(endless).start()
        pool = Pool(replica.url)
        resp = await pool.request(request(pool))
        async for _ in resp:
            break
        resp.close()
        assert pool.idle == []
        replica.close()

    run(main())


@pytest.mark.parametrize("chunked", [False, True])
def test_large_bodies_come_through_whole(chunked: bool) -> None:
    big = bytes(range(256)) * 40_000  # about 10 MB, over the pause threshold

    async def large(body: bytes, writer: asyncio.StreamWriter) -> bool:
        assert body == big
        if chunked:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for i in range(0, len(big), 65536):
                part = big[i : i + 65536]
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(big) + big)
        return True

    async def main() -> None:
        replica = await Replica(large).start()
        pool = Pool(replica.url)
        for _ in range(2):
            resp = await pool.request(request(pool, big))
            if chunked:
                parts = []
                async for chunk in resp:
                    parts.append(chunk)
                    await asyncio.sleep(0)  # a slow reader: the pool pauses reading
                data = b"".join(parts)
            else:
                data = resp.body or b""
            resp.close()
            assert data == big
        assert replica.connections == 1
        pool.close()
        replica.close()

    run(main())


def test_idle_connections_are_capped_and_closed_with_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_upstream, "MAX_IDLE", 2)

    async def slow(body: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        return await echo(body, writer)

    async def main() -> None:
        replica = await Replica(slow).start()
        pool = Pool(replica.url)
        answers = await asyncio.gather(*(pool.request(request(pool)) for _ in range(5)))
        assert [a.status for a in answers] == [200] * 5
        assert replica.connections == 5 and len(pool.idle) == 2
        idle = list(pool.idle)
        pool.close()
        assert pool.idle == [] and all(c.transport.is_closing() for c in idle)
        replica.close()

    run(main())


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError):
        Pool("https://127.0.0.1:1")


def test_request_heads_are_formatted_once_per_method_and_route() -> None:
    pool = Pool("http://127.0.0.1:9/base", "r1")
    post = pool.head("/v1/models")
    get = pool.head("/v1/models", "GET")
    assert post == b"POST /base/v1/models HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"
    assert get == b"GET /base/v1/models HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"
    assert pool.head("/v1/models", "GET") is get and pool.head("/v1/models") is post
