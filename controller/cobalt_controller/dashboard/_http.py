"""The dashboard's HTTP protocol: uvicorn's httptools parser with a bounded request head.

uvicorn's httptools protocol buffers a request line and headers of any size
before the app sees them. The dashboard answers ``431`` and closes as soon as
the bytes of one request's head pass :data:`MAX_HEAD_BYTES`, counted as they
arrive, so a client cannot make the controller hold a head of many megabytes.
The dashboard serves pages and small JSON reads, so a request and its body
rarely share a read; when they do, the body's bytes count towards the head
limit, which only errs on the side of refusing.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
"""The request line and headers of one request, in bytes."""


class BoundedHeadProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` that refuses a request head over :data:`MAX_HEAD_BYTES`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_body = False

    def data_received(self, data: bytes) -> None:
        if not self._in_body:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_bytes = 0
        super().on_message_complete()

    def _refuse_head(self) -> None:
        message = b"Request Header Fields Too Large"
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[431],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: %d\r\n" % len(message),
                    b"connection: close\r\n\r\n",
                    message,
                ]
            )
        )
        self.transport.close()
