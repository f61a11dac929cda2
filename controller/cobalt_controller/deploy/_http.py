"""The pieces of HTTP/1.1 messages the gateway's server (``_server``) parses and writes.

Kept apart from the connection logic so that each stays small: a parsed
:class:`Request` with its body as the handler reads it, and the head lines of
answers, formatted once (status lines) or once a second (``Date``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol
from urllib.parse import unquote

import httptools


class Sender(Protocol):
    """Where :meth:`Request.read` sends ``100 Continue``."""

    def send(self, data: bytes) -> None: ...


class BadRequest(Exception):
    """The request could not be parsed or was refused whole: the answer is ``status``
    (400 unless a limit of :class:`HttpLimits` says otherwise) and the connection closes."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HttpLimits:
    """What a client may make the server hold before any handler (and so any token
    check) sees its request. Bodies are bounded by each handler (``max_body_bytes``).

    Attributes:
        max_url_bytes: the request target; a longer one gets 414. 8 KiB, the
            line limit of nginx and aiohttp: longer URLs are not sent by real clients.
        max_head_bytes: the request target and header lines together; a larger
            head gets 431. 64 KiB, room for large cookies and tracing headers.
        head_timeout_s: from the connection's start, or from a request's first
            byte, its whole head must arrive within this, or the answer is 408
            (nothing, if no byte came) and the connection closes: a client that
            sends its head a byte at a time holds a connection this long at most.
        max_connections: open connections in all; one more is answered 503 and
            closed at once.
        max_connections_per_client: open connections from one IP address; one
            more is answered 503 and closed at once. Clients behind one proxy or
            NAT share it, so it is far above what one SDK client opens (256).
    """

    max_url_bytes: int = 8 * 1024
    max_head_bytes: int = 64 * 1024
    head_timeout_s: float = 10.0
    max_connections: int = 8192
    max_connections_per_client: int = 1024


class Request:
    """One parsed request: ``headers`` has lower-case names, ``path`` is percent-decoded."""

    __slots__ = (
        "_parts",
        "_waiter",
        "bad",
        "bad_status",
        "complete",
        "discard",
        "headers",
        "http10",
        "keep_alive",
        "limit",
        "method",
        "path",
        "size",
        "too_large",
        "url",
    )

    def __init__(self) -> None:
        self.url = b""
        self.method = ""
        self.path = ""
        self.headers: dict[str, str] = {}
        self.keep_alive = True
        self.http10 = False
        self.size = 0
        self.limit = sys.maxsize
        self.complete = False
        self.too_large = False
        self.discard = False
        self.bad = ""
        self.bad_status = 400
        self._parts: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None

    async def read(self, limit: int, conn: Sender) -> bytes | int:
        """The whole body, or its size so far (an ``int``) once that is over ``limit``.

        Raises:
            BadRequest: the body was malformed.
        """
        self.limit = limit
        length = self.headers.get("content-length")
        if length is not None and int(length) > limit:
            self.refuse()
            return int(length)
        if not self.complete and not self.size and self.headers.get("expect") == "100-continue":
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        while True:
            if self.size > limit:
                self.refuse()
                return self.size
            if self.bad:
                raise BadRequest(self.bad)
            if self.complete:
                break
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def refuse(self) -> None:
        """The body is over the limit: keep none of it, and close after the answer."""
        self.too_large = True
        self.drop()

    def drop(self) -> None:
        """The rest of the body is of no use: drop it as it comes."""
        self.discard = True
        self._parts = []

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def add(self, body: bytes) -> None:
        if self.discard:
            return
        self._parts.append(body)
        self.size += len(body)
        if self.size > self.limit:
            self.refuse()
            self.wake()


def parse_path(url: bytes) -> str:
    if not url.startswith(b"/"):  # absolute form: http://host/path
        url = httptools.parse_url(url).path or b"/"
    path = url.split(b"?", 1)[0].split(b"#", 1)[0]
    text = path.decode("utf-8", "surrogateescape")
    return unquote(text, errors="surrogateescape") if "%" in text else text


def json_error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason}\r\n".encode()
    return line


_date_second = 0
_date_line = b""


def date_line() -> bytes:
    """The ``Date`` header line, formatted once a second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
    return _date_line


END_OF_HEAD = {
    (False, False): b"\r\n",
    (False, True): b"Connection: close\r\n\r\n",
    (True, False): b"Connection: keep-alive\r\n\r\n",
    (True, True): b"Connection: close\r\n\r\n",
}
"""(HTTP/1.0 client, closing) -> the end of the head."""
