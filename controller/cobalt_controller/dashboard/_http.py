"""The dashboard's HTTP protocol: uvicorn's httptools parser with a bounded request head.

uvicorn's httptools protocol buffers a request line and headers of any size
before the app sees them. The dashboard answers ``431`` and closes as soon as
the bytes of one request's head pass :data:`MAX_HEAD_BYTES`, counted as they
arrive, so a client cannot make the controller hold a head of many megabytes.
The dashboard serves pages and small JSON reads, so a request and its body
rarely share a read; when they do, the body's bytes count towards the head
limit, which only errs on the side of refusing.

uvicorn times out only an idle connection after an answer; one that sends half
a head, or nothing, was held for ever, and a few hundred of them used up
:data:`~._serve.MAX_CONNECTIONS`. A head must now arrive whole within
:data:`HEAD_TIMEOUT_S`, as in the deployments gateway.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
"""The request line and headers of one request, in bytes."""
HEAD_TIMEOUT_S = 10.0
"""From the connection's start, or from a request's first byte, its whole head must
arrive within this; otherwise the answer is 408 (nothing, if no byte came) and the
connection closes."""


class BoundedHeadProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` that refuses a request head over :data:`MAX_HEAD_BYTES`,
    or one that takes longer than :data:`HEAD_TIMEOUT_S` to arrive."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_body = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)
        super().on_message_begin()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes:
            self._refuse(408, b"Request Timeout")
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if not self._in_body:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, b"Request Header Fields Too Large")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_bytes = 0
        super().on_message_complete()

    def _refuse(self, status: int, message: bytes) -> None:
        self._stop_head_timer()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: %d\r\n" % len(message),
                    b"connection: close\r\n\r\n",
                    message,
                ]
            )
        )
        self.transport.close()
