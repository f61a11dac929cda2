"""The API server's ``Status`` errors, built as ``k8s.io/apimachinery/pkg/api/errors`` builds them.

Every refusal the fake sends is an :class:`ApiError`, written to the wire as a ``Status`` object
(``kind``, ``apiVersion``, ``metadata``, ``status: Failure``, ``message``, ``reason``,
``details``, ``code``), which the official client's ``ApiException`` carries in ``.body``.
Field errors (:class:`FieldError`) print as ``field.Error`` does: ``spec.restartPolicy:
Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._kinds import Resource
from ._meta import Json

_TYPE_TEXT = {
    "Invalid": "Invalid value",
    "Required": "Required value",
    "NotSupported": "Unsupported value",
    "Duplicate": "Duplicate value",
    "Forbidden": "Forbidden",
    "TooLong": "Too long",
    "NotFound": "Not found",
}
_NO_VALUE = {"Required", "Forbidden", "TooLong"}


def go_quote(value: Any) -> str:
    """A value as Go's ``%q`` (strings) or ``%v`` (numbers) prints it in a field error."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class FieldError:
    """One ``field.Error``: its type (``Invalid``, ``Required``, ...), the field's path, the
    offending value and the detail."""

    type: str
    field: str
    value: Any = None
    detail: str = ""

    @property
    def reason(self) -> str:
        """The ``details.causes[].reason``: ``FieldValueInvalid``, ``FieldValueRequired``, ..."""
        return f"FieldValue{self.type}"

    def body(self) -> str:
        text = _TYPE_TEXT[self.type]
        if self.type not in _NO_VALUE:
            text = f"{text}: {go_quote(self.value)}"
        if self.detail:
            text = f"{text}: {self.detail}"
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError("Invalid", field, value, detail)


def required(field: str, detail: str = "") -> FieldError:
    return FieldError("Required", field, None, detail)


def not_supported(field: str, value: Any, supported: Sequence[str]) -> FieldError:
    listed = ", ".join(json.dumps(choice) for choice in supported)
    return FieldError("NotSupported", field, value, f"supported values: {listed}")


def duplicate(field: str, value: Any) -> FieldError:
    return FieldError("Duplicate", field, value)


class ApiError(Exception):
    """A refusal, answered with ``code`` and a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: Json | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Json:
        out: Json = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:
            out["reason"] = self.reason
        if self.details is not None:
            out["details"] = self.details
        out["code"] = self.code
        return out


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f"{resource.qualified_resource} {go_quote(name)} not found",
        resource.details(name),
    )


def already_exists(resource: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f"{resource.qualified_resource} {go_quote(name)} already exists",
        resource.details(name),
    )


def forbidden(resource: Resource, name: str, why: str) -> ApiError:
    target = f"{resource.qualified_resource} {go_quote(name)}" if name else resource.plural
    return ApiError(403, "Forbidden", f"{target} is forbidden: {why}", resource.details(name))


def invalid_object(resource: Resource, name: str, errors: Sequence[FieldError]) -> ApiError:
    """422 Invalid, with one cause per field error (duplicates dropped, as Go's aggregate does)."""
    unique = list(dict.fromkeys(errors))
    texts = [str(error) for error in unique]
    listed = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details: Json = {"name": name}
    if resource.group:
        details["group"] = resource.group
    details["kind"] = resource.kind
    details["causes"] = [
        {"reason": error.reason, "message": error.body(), "field": error.field} for error in unique
    ]
    message = f"{resource.qualified_kind} {go_quote(name)} is invalid: {listed}"
    return ApiError(422, "Invalid", message, details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def undecodable(resource: Resource, why: str) -> ApiError:
    """400 for a body that does not decode into the resource's type (a wrong JSON type, a
    malformed quantity, base64 that is not): the decoder's words, as the API server sends."""
    kind = resource.kind
    return bad_request(
        f'{kind} in version "{resource.version}" cannot be handled as a {kind}: {why}'
    )


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def no_route() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def method_not_allowed(method: str, what: str) -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource "
        f"({method} {what} is not served by this fake API server)",
        {},
    )


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)
