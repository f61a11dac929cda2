"""One table from cobalt's errors to gRPC status codes, and the abort that uses it."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from cobalt_common import errors

_CODES: dict[type[errors.Error], grpc.StatusCode] = {
    errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.ContentAddressError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnsatisfiableError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.SpecError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.DispatchError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.DeploymentError: grpc.StatusCode.FAILED_PRECONDITION,
}


def abort(context: Any, exc: errors.Error) -> NoReturn:
    """Ends the RPC with the status code for ``exc`` and its class name in the
    trailing metadata, which the client turns back into the same exception."""
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), grpc.StatusCode.INTERNAL)
    context.set_trailing_metadata((("cobalt-error", type(exc).__name__),))
    context.abort(code, str(exc))
    raise AssertionError("unreachable")
