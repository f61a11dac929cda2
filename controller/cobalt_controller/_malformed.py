"""Requests whose bytes are not a valid message are refused with ``INVALID_ARGUMENT``.

grpcio answers a request its deserializer cannot parse (truncated bytes, invalid
UTF-8 in a string field, a length past the end) with ``INTERNAL`` and logs a
traceback for each: a client could fill the controller's log, and its user would
read "internal error" for a mistake of the client's. Here the deserializer never
raises; the handler is not run, and the call ends with ``INVALID_ARGUMENT``
naming the message type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError


class _Malformed:
    """What the deserializer returns for bytes that do not parse."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return _Malformed(str(exc))

    return deserialize


def _refuse(context: grpc.ServicerContext, request: _Malformed, what: str) -> None:
    context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request is not a valid {what} message ({request.reason[:200]}); is the "
        "client's cobalt the same version as the controller's?",
    )


def _checked(requests: Iterator[Any], context: grpc.ServicerContext, what: str) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, _Malformed):
            _refuse(context, request, what)
        yield request


class MalformedRequestInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Put first among the server's interceptors: it wraps whatever handler the
    others choose, so a refusal before parsing (a wrong token) is unchanged."""

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        what = details.method.rsplit("/", 1)[-1] + " request"
        wrapped: Callable[[Any, grpc.ServicerContext], Any]
        if handler.request_streaming:
            behaviour = handler.stream_unary or handler.stream_stream

            def streaming(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                return behaviour(_checked(requests, context, what), context)

            wrapped = streaming
        else:
            behaviour = handler.unary_unary or handler.unary_stream

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                if isinstance(request, _Malformed):
                    _refuse(context, request, what)
                return behaviour(request, context)

            wrapped = unary
        kind = (
            ("stream" if handler.request_streaming else "unary")
            + "_"
            + ("stream" if handler.response_streaming else "unary")
        )
        return handler._replace(
            request_deserializer=_tolerant(handler.request_deserializer), **{kind: wrapped}
        )
