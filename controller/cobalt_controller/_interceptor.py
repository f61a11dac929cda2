"""The gRPC side of credentials: every call is authorized before its handler runs.

Calls with the user's token go straight to the handler. Calls with a task's
or a replica's credential run through :meth:`Authorizer.authorize` first;
BlobHas answers are narrowed to what the caller may read, and BlobPut
uploads are remembered as the caller's (see :mod:`._authorize`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from cobalt_controller._authorize import UNKNOWN_CREDENTIAL, Authorizer, Denied
from cobalt_controller._credentials import Scope, UserScope
from cobalt_controller.agents._service import UNKNOWN_AGENT_CREDENTIAL

_CODES = {
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
}


def _bearer(details: Any) -> str | None:
    for key, value in details.invocation_metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return None


class CredentialInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer

        def deny(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, UNKNOWN_CREDENTIAL)

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

        def deny_agent(requests: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, UNKNOWN_AGENT_CREDENTIAL)
            yield None

        self._deny_agent = grpc.stream_stream_rpc_method_handler(deny_agent)

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        credential = _bearer(details)
        scope = None if credential is None else self.authorizer.credentials.scope(credential)
        if scope is None or credential is None:
            return self._deny_agent if details.method.endswith("/AgentConnect") else self._deny
        if isinstance(scope, UserScope):
            return continuation(details)
        handler = continuation(details)
        if handler is None:
            return None
        return _Guarded(self.authorizer, credential, details.method.rsplit("/", 1)[-1]).wrap(
            handler
        )


class _Guarded:
    """Wraps one call's handler so that it runs only once the call is authorized."""

    def __init__(self, authorizer: Authorizer, credential: str, rpc: str) -> None:
        self.authorizer = authorizer
        self.credential = credential
        self.rpc = rpc

    def check(self, request: Any, context: grpc.ServicerContext) -> Scope:
        answer = self.authorizer.authorize(self.credential, self.rpc, request)
        if isinstance(answer, Denied):
            context.abort(_CODES[answer.status], answer.message)
            raise AssertionError("unreachable")
        return answer

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
                scope = self.check(request, context)
                response = inner(request, context)
                if self.rpc == "BlobHas":
                    unreadable = self.authorizer.unreadable(scope, request.sha256)
                    missing = sorted(set(response.missing) | unreadable)
                    del response.missing[:]
                    response.missing.extend(missing)
                return response

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            def unary_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                self.check(request, context)
                yield from inner_stream(request, context)

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
        if handler.stream_unary is not None:
            inner_upload = handler.stream_unary

            def stream_unary(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                self.check(None, context)
                response = inner_upload(requests, context)
                if self.rpc == "BlobPut" and response.sha256:
                    self.authorizer.credentials.note_upload(self.credential, response.sha256)
                return response

            return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)
        inner_both = handler.stream_stream

        def stream_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            self.check(None, context)
            yield from inner_both(requests, context)

        return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)
