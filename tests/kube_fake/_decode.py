"""Decoding a request body into an object of the resource's type, as the API server's JSON
decoder does before any validation.

The schema is the official client's: each model's ``openapi_types`` and ``attribute_map``
(``V1Pod``, ``V1Job``, ...), generated from the same OpenAPI document as the API server's
types. So, as on a real cluster:

* a value of the wrong JSON type is a 400 ``cannot be handled as a Pod: json: cannot
  unmarshal number into Go struct field Container.spec.containers.name of type string``;
* a malformed quantity (``"48GB"``) is a 400 with the quantity grammar's message, and every
  quantity is stored in its canonical form (``"1.5"`` becomes ``1500m``);
* ``data`` of a Secret that is not base64 is a 400 ``illegal base64 data at input byte N``;
* unknown fields are dropped and reported back as ``Warning`` headers
  (``unknown field "spec.foo"``), or refused with ``fieldValidation=Strict``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from kubernetes.client import models

from ._errors import ApiError, undecodable
from ._kinds import Resource
from ._meta import Json
from ._quantity import QuantityError, parse_quantity

_QUANTITY_FIELDS = {
    ("V1ResourceRequirements", "limits"),
    ("V1ResourceRequirements", "requests"),
    ("V1PodSpec", "overhead"),
    ("V1ResourceFieldSelector", "divisor"),
    ("V1EmptyDirVolumeSource", "size_limit"),
}
_GO_TYPES = {"str": "string", "int": "int64", "float": "float64", "bool": "bool"}
_LIST = re.compile(r"List\[(.+)\]")
_DICT = re.compile(r"Dict\[str, (.+)\]")


class _TypeMismatch(Exception):
    pass


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _go_type(type_name: str) -> str:
    if type_name in _GO_TYPES:
        return _GO_TYPES[type_name]
    if match := _LIST.fullmatch(type_name):
        return "[]" + _go_type(match.group(1))
    if match := _DICT.fullmatch(type_name):
        return "map[string]" + _go_type(match.group(1))
    if type_name.startswith("V1"):
        return "v1." + type_name[2:]
    return type_name


class Decoder:
    """Decodes one body; collects the paths of unknown fields it dropped."""

    def __init__(self) -> None:
        self.unknown: list[str] = []

    def _mismatch(self, value: Any, type_name: str, struct: str, path: str) -> _TypeMismatch:
        dotted = re.sub(r"\[[^]]*\]", "", path)
        return _TypeMismatch(
            f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
            f"{struct}.{dotted} of type {_go_type(type_name)}"
        )

    def value(
        self, value: Any, type_name: str, struct: str, path: str, quantity: bool = False
    ) -> Any:
        if value is None:
            return None
        if quantity and type_name == "str":
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise self._mismatch(value, type_name, struct, path)
            try:
                return parse_quantity(value).canonical()
            except QuantityError as error:
                raise _TypeMismatch(str(error)) from None
        if type_name in ("str", "datetime", "date"):
            if not isinstance(value, str):
                raise self._mismatch(value, "str", struct, path)
            return value
        if type_name == "bytes":
            if not isinstance(value, str):
                raise self._mismatch(value, "[]uint8", struct, path)
            _check_base64(value)
            return value
        if type_name == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                raise self._mismatch(value, type_name, struct, path)
            if not -(2**63) <= value < 2**63:
                raise _TypeMismatch(f"json: cannot unmarshal number {value} into Go value")
            return value
        if type_name == "float":
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise self._mismatch(value, type_name, struct, path)
            return value
        if type_name == "bool":
            if not isinstance(value, bool):
                raise self._mismatch(value, type_name, struct, path)
            return value
        if type_name == "object":
            return value
        if match := _LIST.fullmatch(type_name):
            if not isinstance(value, list):
                raise self._mismatch(value, type_name, struct, path)
            inner = match.group(1)
            return [
                self.value(_zero(item, inner), inner, struct, f"{path}[{index}]", quantity)
                for index, item in enumerate(value)
            ]
        if match := _DICT.fullmatch(type_name):
            if not isinstance(value, dict):
                raise self._mismatch(value, type_name, struct, path)
            inner = match.group(1)
            decoded = {}
            for key, item in value.items():
                decoded[key] = self.value(
                    _zero(item, inner), inner, struct, f"{path}[{key}]", quantity
                )
            return decoded
        return self.model(value, type_name, path)

    def model(self, value: Any, type_name: str, path: str) -> Json:
        cls = getattr(models, type_name, None)
        types: dict[str, str] | None = getattr(cls, "openapi_types", None)
        names: dict[str, str] | None = getattr(cls, "attribute_map", None)
        if types is None or names is None:
            return value if isinstance(value, dict) else {}
        struct = type_name[2:] if type_name.startswith("V1") else type_name
        if not isinstance(value, dict):
            raise self._mismatch(value, type_name, struct, path or struct)
        by_json = {json_name: attr for attr, json_name in names.items()}
        decoded: Json = {}
        for key, item in value.items():
            attr = by_json.get(key)
            child = f"{path}.{key}" if path else key
            if attr is None:
                self.unknown.append(child)
                continue
            quantity = (type_name, attr) in _QUANTITY_FIELDS
            result = self.value(item, types[attr], struct, child, quantity)
            if result is not None:
                decoded[key] = result
        return decoded


def _zero(value: Any, type_name: str) -> Any:
    """A JSON null inside a list or map decodes to the element type's zero value in Go."""
    if value is not None:
        return value
    zeros: dict[str, Any] = {"str": "", "int": 0, "float": 0, "bool": False, "bytes": ""}
    if type_name in zeros:
        return zeros[type_name]
    if _LIST.fullmatch(type_name):
        return []
    return {}


def _check_base64(text: str) -> None:
    """Go's ``encoding/base64`` ``StdEncoding``: padded, no whitespace."""
    for index, char in enumerate(text):
        if not (char.isascii() and (char.isalnum() or char in "+/=")):
            raise _TypeMismatch(f"illegal base64 data at input byte {index}")
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _TypeMismatch(f"illegal base64 data at input byte {max(len(text) - 1, 0)}") from None


def decode_body(resource: Resource, model: str, body: Any, strict: bool) -> tuple[Json, list[str]]:
    """The object the body decodes to and the warnings to send; raises the API server's 400."""
    if not isinstance(body, dict):
        raise undecodable(
            resource, f"json: cannot unmarshal {_json_kind(body)} into Go value of type struct"
        )
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if api_version not in (None, "", resource.api_version):
        raise ApiError(
            400,
            "BadRequest",
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({resource.api_version})",
        )
    if kind not in (None, "", resource.kind):
        raise ApiError(
            400,
            "BadRequest",
            f"the kind in the data ({kind}) does not match the expected kind ({resource.kind})",
        )
    decoder = Decoder()
    try:
        decoded = decoder.model(body, model, "")
    except _TypeMismatch as error:
        raise undecodable(resource, str(error)) from None
    if decoder.unknown and strict:
        listed = ", ".join(f'unknown field "{path}"' for path in decoder.unknown)
        raise bad_strict(resource, listed)
    return decoded, [f'unknown field "{path}"' for path in decoder.unknown]


def bad_strict(resource: Resource, listed: str) -> ApiError:
    return ApiError(400, "BadRequest", f"strict decoding error: {listed}")
