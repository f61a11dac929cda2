"""Raw routes: handlers that read the request and write the answer themselves.

An ordinary endpoint is a function whose parameters are read from a JSON
body and whose return value is sent back as JSON. Some protocols need more
say over the answer: the OpenAI-compatible routes of :mod:`cobalt.llm` pick
JSON or server-sent events from the request's ``stream`` field, answer errors
in their own shape and status, and take ``GET``. A raw route gives its
handler the request as bytes and sends the :class:`RawResponse` it returns.

A raw route is declared with a *factory*: it runs once per replica with the
dict the service's initializer returned and gives back the handler, so that
a missing or wrong value fails the replica's start, not each request.

Example:
    >>> import asyncio
    >>> def factory(values):
    ...     async def handler(request: RawRequest) -> RawResponse:
    ...         return RawResponse.json({"greeting": values["greeting"], "method": request.method})
    ...     return handler
    >>> handler = factory({"greeting": "hi"})
    >>> answer = asyncio.run(handler(RawRequest("GET", "/hello", b"")))
    >>> answer.status, answer.body
    (200, b'{"greeting":"hi","method":"GET"}')
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_jsonable_python

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _unreported(exc: BaseException) -> dict[str, str]:
    return {"error": f"{type(exc).__name__}: {exc}", "error_id": ""}


@dataclass(frozen=True, slots=True)
class RawRequest:
    """One request to a raw route.

    Attributes:
        method: ``"GET"`` or ``"POST"``.
        path: the route's path, such as ``"/v1/models"``.
        body: the request body as sent (``b""`` for most GETs).
        request_id: the gateway's id of the request, for logs.
        failed: logs an unexpected exception's traceback to the replica's
            stderr under a new error id, and returns ``{"error": <what
            happened>, "error_id": <id>}`` for the answer.
    """

    method: str
    path: str
    body: bytes
    request_id: str = ""
    failed: Callable[[BaseException], dict[str, str]] = field(default=_unreported, repr=False)


@dataclass(frozen=True, slots=True)
class RawResponse:
    """What a raw route answers: a whole body, or a stream of chunks.

    Attributes:
        status: the HTTP status.
        body: the whole body (when ``stream`` is ``None``).
        content_type: the ``Content-Type`` header.
        stream: chunks sent as they come, each flushed at once; a client that
            goes away stops (``aclose``) it.
    """

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def json(cls, value: Any, status: int = 200) -> RawResponse:
        """``value`` as compact JSON (pydantic models and dataclasses too)."""
        data = json.dumps(value, separators=(",", ":"), default=to_jsonable_python)
        return cls(status, data.encode())

    @classmethod
    def events(cls, chunks: AsyncIterator[bytes]) -> RawResponse:
        """Server-sent events: each chunk is one or more whole ``data: ...\\n\\n`` events."""
        return cls(200, b"", "text/event-stream", chunks)


RawHandler = Callable[[RawRequest], Awaitable[RawResponse]]
"""Answers one request to a raw route, on the replica's event loop."""
RawFactory = Callable[[Mapping[str, Any]], RawHandler]
"""Makes a raw route's handler from the initializer's dict, once per replica."""

_STREAM_HEADERS = [
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def send_whole(
    send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    """Sends a whole answer: one start message and one body message."""
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_raw(
    response: RawResponse,
    receive: Receive,
    send: Send,
    failed: Callable[[BaseException], dict[str, str]],
) -> None:
    """Writes a raw route's answer; a stream is sent chunk by chunk as it is produced.

    ``send`` waits while the client's connection is backed up, so a slow
    reader slows the stream down. When the client goes away the stream is
    closed. A stream that raises is logged through ``failed`` and the error
    is raised again, which cuts the connection: the client can tell that the
    answer is incomplete.
    """
    content_type = response.content_type.encode("latin-1")
    stream = response.stream
    if stream is None:
        await send_whole(send, response.status, response.body, content_type, [])
        return
    headers = [(b"content-type", content_type), *_STREAM_HEADERS]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    gone = asyncio.Event()
    watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
    try:
        async for chunk in stream:
            if gone.is_set():
                return
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except Exception as exc:
        failed(exc)
        raise
    finally:
        watcher.cancel()
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()
