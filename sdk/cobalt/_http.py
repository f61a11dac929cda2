"""Calling a deployment over HTTP: clients, error mapping and server-sent events.

Answers of 400 and above become :class:`~cobalt.EndpointError` with the
status, error id, field and ``Retry-After`` set; a 401 is also a
:class:`~cobalt.AuthenticationError`, a 404 also a :class:`~cobalt.NotFoundError`.
A stream is read as server-sent events: each ``data:`` line is a JSON value;
``event: error`` raises, ``event: end`` stops.

Example:
    >>> events = list(parse_sse(["data: 1", "", "data: [2]", "", "event: end", "data: null", ""]))
    >>> events
    [('message', '1'), ('message', '[2]'), ('end', 'null')]
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpx

from cobalt_common.errors import (
    EndpointAuthenticationError,
    EndpointError,
    EndpointNotFoundError,
    Error,
)

TIMEOUT = httpx.Timeout(600.0, connect=5.0)
"""Connect within 5 s; an endpoint may take up to 10 minutes to answer."""
LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=60)


def sync_client() -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT, limits=LIMITS, trust_env=False)


def async_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=TIMEOUT, limits=LIMITS, trust_env=False)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def error_for(status: int, content: bytes, headers: httpx.Headers, where: str) -> Error:
    """The exception for an error answer of a deployment (the body is its JSON error)."""
    try:
        data = json.loads(content) if content else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    text = content.decode("utf-8", "replace").strip()[:500]
    message = str(data.get("error") or text or f"HTTP {status}")
    if status == 401:
        return EndpointAuthenticationError(
            f"{where}: {message} (the deployment's token is dep.token; "
            "ct.get_deployment(name) gives a handle with the current one)"
        )
    if status == 404:
        return EndpointNotFoundError(f"{where}: {message}")
    return EndpointError(
        f"{where}: {message}",
        status_code=status,
        error_id=str(data.get("error_id") or ""),
        field=str(data.get("field") or ""),
        retry_after=_retry_after(headers.get("retry-after")),
    )


def check(response: httpx.Response, where: str) -> httpx.Response:
    """``response`` when it succeeded; the mapped exception otherwise (body already read)."""
    if response.status_code >= 400:
        raise error_for(response.status_code, response.content, response.headers, where)
    return response


class _SseDecoder:
    """Collects the lines of one event; a blank line ends it."""

    def __init__(self) -> None:
        self.event, self.data = "message", list[str]()

    def feed(self, line: str) -> tuple[str, str] | None:
        """The finished (event, data) pair when ``line`` ends one, else None."""
        if not line:
            return self.flush()
        if line.startswith("data:"):
            self.data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            self.event = line[6:].strip()
        return None

    def flush(self) -> tuple[str, str] | None:
        done = (self.event, "\n".join(self.data)) if self.data else None
        self.event, self.data = "message", []
        return done


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs from the lines of an event stream."""
    decoder = _SseDecoder()
    for line in lines:
        if (pair := decoder.feed(line)) is not None:
            yield pair
    if (pair := decoder.flush()) is not None:
        yield pair


def sse_value(event: str, data: str, where: str) -> tuple[bool, Any]:
    """(done, value) for one event; raises for ``event: error``."""
    if event == "end":
        return True, None
    value = json.loads(data)
    if event == "error":
        info = value if isinstance(value, dict) else {}
        raise EndpointError(
            f"{where}: {info.get('error', data)}",
            status_code=500,
            error_id=str(info.get("error_id", "")),
        )
    return False, value


async def aparse_sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """:func:`parse_sse` over an async iterator of lines."""
    decoder = _SseDecoder()
    async for line in lines:
        if (pair := decoder.feed(line)) is not None:
            yield pair
    if (pair := decoder.flush()) is not None:
        yield pair
