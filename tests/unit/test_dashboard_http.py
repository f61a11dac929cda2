"""The dashboard's HTTP server under malformed input: an answer or a close, never a traceback.

Requests are sent as raw bytes, as no ordinary client would write them.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from cobalt_controller.dashboard import Dashboard, _http
from cobalt_controller.state import MemoryStateStore

pytestmark = pytest.mark.unit

TOKEN = "s3cret-token_value"
AUTH = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"

MALFORMED = {
    "not-http": b"NOT HTTP AT ALL\r\n\r\n",
    "two-spaces": b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul-in-target": b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "unknown-version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "space-in-name": b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    "length-and-chunked": (
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "two-lengths": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "negative-length": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "unknown-coding": b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    "bad-chunk": b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "bad-chunk-with-token": (
        b"GET /api/dispatches HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Transfer-Encoding: chunked"
        b"\r\n\r\nzz\r\n"
    ),
    "garbage-after-body": (
        b"GET / HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Length: 3\r\n\r\nabcGARBAGE\r\n\r\n"
    ),
    "token-not-utf8": b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
}


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    dashboard = Dashboard(MemoryStateStore(), TOKEN, "127.0.0.1:0")
    dashboard.start()
    try:
        yield dashboard.port
    finally:
        dashboard.stop()


def exchange(port: int, data: bytes) -> bytes:
    """Everything the server sends back until it closes (or stays quiet for a second)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.settimeout(1)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def statuses(answer: bytes) -> list[int]:
    return [int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.")]


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_request_gets_a_4xx_or_a_close_and_no_traceback(
    port: int, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    answer = exchange(port, data)
    # a whole request before the malformed part may be answered; the malformed part is not
    last = statuses(answer)[-1:]
    assert not last or 400 <= last[0] < 500, answer[:300]
    problems = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not problems, caplog.text


def test_a_request_with_both_content_length_and_chunked_is_refused(port: int) -> None:
    answer = exchange(port, MALFORMED["length-and-chunked"])
    assert statuses(answer) == [400]


def test_a_lower_case_bearer_scheme_opens_the_dashboard(port: int) -> None:
    answer = exchange(
        port,
        b"HEAD / HTTP/1.1\r\nHost: x\r\nAuthorization: bearer %s\r\n"
        b"Connection: close\r\n\r\n" % TOKEN.encode(),
    )
    assert statuses(answer) == [200]


@pytest.mark.parametrize("where", ["url", "header"])
def test_a_request_head_over_64_kib_gets_431_before_it_ends(port: int, where: str) -> None:
    big = b"x" * (200 * 1024)
    if where == "url":
        head = b"GET /?q=" + big + b" HTTP/1.1\r\nHost: x\r\n"
    else:
        head = b"GET / HTTP/1.1\r\nHost: x\r\n" + AUTH + b"X-Big: " + big + b"\r\n"
    answer = exchange(port, head)  # the head never ends: the answer must not wait for it
    assert statuses(answer) == [431]


def test_a_head_just_under_the_limit_is_served(port: int) -> None:
    head = b"GET /api/dispatches HTTP/1.1\r\nHost: x\r\n" + AUTH
    filler = b"X-Fill: " + b"y" * (60 * 1024) + b"\r\n"
    answer = exchange(port, head + filler + b"Connection: close\r\n\r\n")
    assert statuses(answer) == [200]


def test_a_head_that_stops_halfway_gets_408_and_a_silent_connection_is_closed(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "HEAD_TIMEOUT_S", 0.3)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as half:
        half.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Half: ")
        assert statuses(half.recv(65536)) == [408]
        assert half.recv(1) == b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
        assert silent.recv(1) == b""
    answer = exchange(port, b"HEAD / HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Connection: close\r\n\r\n")
    assert statuses(answer) == [200], "a whole head is served"
