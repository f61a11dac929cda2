"""Fuzzing the controller's HTTP surfaces, the gateway and the dashboard, with malformed
raw requests; the shared rules and figures are described in ``test_fuzz_grpc.py``.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

import cobalt as ct
from cobalt._client import get_client
from cobalt_common.v1 import controller_pb2 as pb

if TYPE_CHECKING:
    from conftest import ControllerHome

from fuzz_support import (  # noqa: F401  (fixtures, used by name)
    HTTP_PER_SURFACE,
    SEED,
    Vitals,
    deployment,
    home,
    token_of,
    vitals,
)

pytestmark = pytest.mark.integration

# -- HTTP inputs -----------------------------------------------------------------------

HTTP_DEADLINE_S = 15.0
"""For an answer or a close, after the request was sent (the gateway times a head
out after 10 s)."""
QUIET_S = 0.5
"""Once an answer came, more is waited for only this long."""


@dataclass
class Surface:
    """An HTTP server to fuzz, and a request it serves."""

    name: str
    port: int
    token: str
    path: str
    body: bytes

    def request(
        self, rng: random.Random, *, body: bytes | None = None, extra: bytes = b""
    ) -> bytes:
        body = self.body if body is None else body
        method = b"POST" if body else b"GET"
        close = b"Connection: close\r\n" if rng.random() < 0.7 else b""
        return (
            b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n%s%s\r\n%s"
            % (method, self.path.encode(), self.token.encode(), len(body), close, extra, body)
        )

    def head(self, path: bytes, headers: bytes) -> bytes:
        return b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n%s\r\n" % (
            path,
            self.token.encode(),
            headers,
        )


@dataclass
class Exchange:
    """What a server answered one connection."""

    statuses: list[int] = field(default_factory=list)
    closed: bool = False
    seconds: float = 0.0
    first: bytes = b""


def exchange(
    port: int, pieces: list[bytes], pause_s: float = 0.0, half_close: bool = False
) -> Exchange:
    """Sends ``pieces`` (``pause_s`` apart), half-closes if asked (a request that may be
    incomplete: the server sees that no more comes), and reads what comes back:
    until the server closes, or is quiet for :data:`QUIET_S` after an answer, or
    :data:`HTTP_DEADLINE_S` passes."""
    result = Exchange()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            for i, piece in enumerate(pieces):
                if i and pause_s:
                    time.sleep(pause_s)
                sock.sendall(piece)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server refused and closed while we were sending
            pass
        deadline = started + HTTP_DEADLINE_S
        while (now := time.monotonic()) < deadline:
            sock.settimeout(min(deadline - now, QUIET_S) if result.statuses else deadline - now)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                if result.statuses:
                    break
                continue
            except OSError:
                data = b""
            if not data:
                result.closed = True
                break
            result.first = result.first or data[:200]
            for line in data.split(b"\r\n"):
                if line.startswith(b"HTTP/1.") and line[9:12].isdigit():
                    result.statuses.append(int(line[9:12]))
    result.seconds = time.monotonic() - started
    return result


def bad_request_line(s: Surface, rng: random.Random) -> bytes:
    line = rng.choice(
        [
            os.urandom(rng.randrange(1, 100)),
            b"GET",
            b"GET / HTTP/1.1 extra",
            b"G\x00T / HTTP/1.1",
            b"GET / HTTX/1.1",
            b"GET / HTTP/1.10",
            b"GET /a b HTTP/1.1",
            b"GET /\x01\x7f HTTP/1.1",
            b"GET /\xff\xfe HTTP/1.1",
            b"OPTIONS * HTTP/1.1",
            b"CONNECT 127.0.0.1:1 HTTP/1.1",
            b"X" * 5000 + b" / HTTP/1.1",
            b" GET / HTTP/1.1",
        ]
    )
    return line + b"\r\nHost: x\r\nAuthorization: Bearer " + s.token.encode() + b"\r\n\r\n"


def conflicting_length(s: Surface, rng: random.Random) -> bytes:
    codings = [b"chunked", b"Chunked", b" chunked", b"chunked, identity", b"gzip, chunked"]
    lengths = [b"5", b"-1", b"+5", b"0x10", b"5 5", b"99999999999999999999", b"abc", b"1e3"]
    headers = [b"Content-Length: " + rng.choice(lengths)]
    if rng.random() < 0.5:
        headers.append(b"Transfer-Encoding: " + rng.choice(codings))
    if rng.random() < 0.5:
        headers.append(b"Content-Length: " + rng.choice(lengths))
    rng.shuffle(headers)
    return s.head(s.path.encode(), b"".join(h + b"\r\n" for h in headers)) + b"0\r\n\r\nhello"


def oversized_head(s: Surface, rng: random.Random) -> bytes:
    choice = rng.randrange(3)
    if choice == 0:
        return s.head(s.path.encode(), b"X-Big: " + b"y" * rng.choice([70_000, 300_000]) + b"\r\n")
    if choice == 1:
        return s.head(s.path.encode(), b"".join(b"X-%d: v\r\n" % i for i in range(10_000)))
    return s.head(s.path.encode() + b"?q=" + b"z" * rng.choice([9_000, 100_000]), b"")


def bad_chunks(s: Surface, rng: random.Random) -> bytes:
    body = rng.choice(
        [
            b"zz\r\n",
            b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
            b"5\r\nabc\r\n",
            b"5;ext=\x00\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n",
            b"-1\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"3\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nBad Trailer\r\n\r\n",
            b"5\nhello\n0\n\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
        ]
    )
    return s.head(s.path.encode(), b"Transfer-Encoding: chunked\r\n") + body


def non_utf8_headers(s: Surface, rng: random.Random) -> bytes:
    junk = rng.choice([b"\xff\xfe", b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\x7f"])
    choice = rng.randrange(5)
    if choice == 0:
        return s.head(s.path.encode(), b"X-Junk: a" + junk + b"b\r\nContent-Length: 0\r\n")
    if choice == 1:
        return b"GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % (
            s.path.encode(),
            junk + s.token.encode(),
        )
    if choice == 2:
        return s.head(s.path.encode() + b"%ff%fe%00" + junk, b"Content-Length: 0\r\n")
    if choice == 3:
        return s.head(s.path.encode(), b"X" + junk + b"Name: v\r\nContent-Length: 0\r\n")
    return s.request(rng, extra=b"Content-Type: application/json; charset=" + junk + b"\r\n")


def odd_bodies(s: Surface, rng: random.Random) -> bytes:
    body = rng.choice(
        [
            b"[" * 100_000,
            b'{"text": ' * 3000 + b"1" + b"}" * 3000,
            b'{"text": 1e999}',
            b'{"text": NaN, "times": Infinity}',
            b'{"text": "\xff\xfe"}',
            b'{"text": "\\ud800"}',
            b'{"text": "a", "times": 1e400}',
            b'{"text": "a", "times": 99999999999999999999999999}',
            b'{"text": "a", "times": -1}',
            b'{"text": ["a"], "times": "2"}',
            b'{"text": "a", "text": "b"}',
            os.urandom(rng.randrange(1, 3000)),
            b"",
            b"null",
            b'"text"',
            b"{" + b'"a": 1,' * 500 + b'"text": "x"}',
        ]
    )
    return s.request(rng, body=body)


def truncated(s: Surface, rng: random.Random) -> bytes:
    whole = s.request(rng)
    return whole[: rng.randrange(1, len(whole))]


def bit_flipped(s: Surface, rng: random.Random) -> bytes:
    data = bytearray(s.request(rng))
    for _ in range(rng.randrange(1, 4)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def unusual_request_line(s: Surface, rng: random.Random) -> bytes:
    """Old versions and lenient forms, which a server may serve."""
    path = s.path.encode()
    line = rng.choice(
        [
            b"GET " + path,
            b"GET %s HTTP/0.9" % path,
            b"GET %s HTTP/1.0" % path,
            b"GET %s HTTP/2.0" % path,
            b"GET http://x%s HTTP/1.1" % path,
            b"GET  %s  HTTP/1.1" % path,
        ]
    )
    return line + b"\r\nAuthorization: Bearer " + s.token.encode() + b"\r\n\r\n"


def pipelined(s: Surface, rng: random.Random) -> bytes:
    good = s.request(random.Random(0), extra=b"Connection: keep-alive\r\n")
    return good + rng.choice(MALFORMED)(s, rng)


MALFORMED: list[Callable[[Surface, random.Random], bytes]] = [
    bad_request_line,
    conflicting_length,
    oversized_head,
    bad_chunks,
]
"""Requests no server may serve: each ends with a refusal (or a close)."""
ODD = [odd_bodies, truncated, bit_flipped, pipelined, unusual_request_line, non_utf8_headers]
"""Requests that may be served, or refused, but never with 500."""
MAYBE_INCOMPLETE = {truncated, bit_flipped, pipelined, bad_chunks, conflicting_length}
"""Requests whose body may be shorter than announced: they end with a half-close."""


def http_failure(name: str, data: bytes, answer: Exchange, malformed: bool) -> str | None:
    what = f"{name} on {data[:120]!r} ({len(data)} bytes)"
    if not answer.statuses and not answer.closed:
        return f"no answer and no close within {HTTP_DEADLINE_S:g} s: {what}"
    if 500 in answer.statuses:
        return f"500: {what}: {answer.first!r}"
    if malformed and answer.statuses and answer.statuses[-1] < 400:
        return f"served {answer.statuses}: {what}"
    return None


def fuzz_http(surface: Surface, vitals: Vitals, rng: random.Random) -> list[str]:
    """Sends :data:`HTTP_PER_SURFACE` requests and two slow ones; returns the failures."""
    cases = []
    for i in range(HTTP_PER_SURFACE):
        generate = rng.choice(MALFORMED if i % 2 else ODD)
        cases.append(
            (
                generate.__name__,
                generate(surface, rng),
                generate in MALFORMED,
                generate in MAYBE_INCOMPLETE,
            )
        )
    slow = surface.request(random.Random(1))
    failures: list[str] = []
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        # a head a byte every 0.2 s for 3 s, then the rest at once
        dribble = pool.submit(
            exchange, surface.port, [*(slow[i : i + 1] for i in range(15)), slow[15:]], 0.2
        )
        answers = pool.map(lambda c: (c, exchange(surface.port, [c[1]], half_close=c[3])), cases)
        for (name, data, malformed, _), answer in answers:
            if problem := http_failure(name, data, answer, malformed):
                failures.append(problem)
        answer = dribble.result()
        if not answer.statuses or answer.statuses[-1] >= 500:
            failures.append(f"a head sent slowly got {answer.statuses}")
    vitals.sent[surface.name] += len(cases) + 1
    print(
        f"[fuzz seed={SEED}] {surface.name}: {len(cases) + 1} requests in "
        f"{time.monotonic() - started:.1f} s"
    )
    return failures


def abandoned_head(port: int) -> Exchange:
    """Half a request head, then silence with the connection open."""
    result = Exchange()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=HTTP_DEADLINE_S) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
        try:
            data = sock.recv(65536)
        except TimeoutError:
            data = None
        except OSError:
            data = b""
    if data is not None:
        result.closed = True
        result.first = data[:200]
        if data.startswith(b"HTTP/1."):
            result.statuses.append(int(data[9:12]))
    result.seconds = time.monotonic() - started
    return result


@pytest.fixture(scope="module")
def gateway(home: ControllerHome, deployment: ct.Deployment) -> Surface:
    url = urlsplit(deployment.url)
    assert url.port is not None
    return Surface(
        "gateway", url.port, deployment.token or "", f"{url.path}/echo", b'{"text": "hi"}'
    )


@pytest.fixture(scope="module")
def dashboard(home: ControllerHome) -> Surface:
    client = get_client()
    status = client.call(client.stub.ControllerStatus, pb.ControllerStatusRequest())
    port = urlsplit(status.dashboard).port
    assert port is not None, status.dashboard
    return Surface("dashboard", port, token_of(home), "/api/dispatches", b"")


@pytest.mark.parametrize("surface", ["gateway", "dashboard"])
def test_malformed_http_gets_a_refusal_or_a_close_never_a_500_or_a_hang(
    surface: str, request: pytest.FixtureRequest, vitals: Vitals
) -> None:
    target: Surface = request.getfixturevalue(surface)
    rng = random.Random(f"{SEED}-{surface}")
    failures = fuzz_http(target, vitals, rng)
    vitals.check(surface)
    assert not failures, f"seed {SEED}: {len(failures)} failed:\n" + "\n".join(failures[:40])


def test_a_client_that_stops_mid_head_is_answered_or_closed_in_bounded_time(
    gateway: Surface, dashboard: Surface
) -> None:
    with ThreadPoolExecutor(2) as pool:
        answers = dict(
            zip(
                ["gateway", "dashboard"],
                pool.map(abandoned_head, [gateway.port, dashboard.port]),
                strict=True,
            )
        )
    for surface, answer in answers.items():
        print(f"[fuzz] {surface}: a half head got {answer.statuses} after {answer.seconds:.1f} s")
    for surface, answer in answers.items():
        assert answer.closed, f"{surface} held a half request head for {answer.seconds:.0f} s"
        assert answer.statuses in ([], [408]), (surface, answer)
