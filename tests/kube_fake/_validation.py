"""Name, label and key checks, with the messages of ``k8s.io/apimachinery``'s
``util/validation`` and ``api/validation``."""

from __future__ import annotations

import re
from collections.abc import Callable

from ._errors import FieldError, invalid, required
from ._meta import Json

_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_FMT = _LABEL_FMT + "(\\." + _LABEL_FMT + ")*"
_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_VALUE_FMT = "(" + _QNAME_FMT + ")?"
_CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"

_LABEL_RE = re.compile(_LABEL_FMT)
_SUBDOMAIN_RE = re.compile(_SUBDOMAIN_FMT)
_QNAME_RE = re.compile(_QNAME_FMT)
_VALUE_RE = re.compile(_VALUE_FMT)
_CONFIG_KEY_RE = re.compile(_CONFIG_KEY_FMT)


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    text = message + " (e.g. "
    for index, example in enumerate(examples):
        if index:
            text += " or "
        text += f"'{example}', "
    return text + f"regex used for validation is '{fmt}')"


def max_len(length: int) -> str:
    return f"must be no more than {length} characters"


def dns1123_label(value: str) -> list[str]:
    errors = []
    if len(value) > 63:
        errors.append(max_len(63))
    if not _LABEL_RE.fullmatch(value):
        if _SUBDOMAIN_RE.fullmatch(value):
            errors.append("must not contain dots")
        else:
            errors.append(
                _regex_error(
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-', and must start and end with an alphanumeric character",
                    _LABEL_FMT,
                    "my-name",
                    "123-abc",
                )
            )
    return errors


def dns1123_subdomain(value: str) -> list[str]:
    errors = []
    if len(value) > 253:
        errors.append(max_len(253))
    if not _SUBDOMAIN_RE.fullmatch(value):
        errors.append(
            _regex_error(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
                _SUBDOMAIN_FMT,
                "example.com",
            )
        )
    return errors


_QNAME_MESSAGE = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character"
)


def qualified_name(value: str) -> list[str]:
    """A label key or annotation key: an optional DNS subdomain prefix, ``/``, a name."""
    errors: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend("prefix part " + message for message in dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + _regex_error(_QNAME_MESSAGE, _QNAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part " + max_len(63))
    if not _QNAME_RE.fullmatch(name):
        errors.append(
            "name part " + _regex_error(_QNAME_MESSAGE, _QNAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errors


def label_value(value: str) -> list[str]:
    errors = []
    if len(value) > 63:
        errors.append(max_len(63))
    if not _VALUE_RE.fullmatch(value):
        errors.append(
            _regex_error(
                "a valid label must be an empty string or consist of alphanumeric characters, "
                "'-', '_' or '.', and must start and end with an alphanumeric character",
                _VALUE_FMT,
                "MyValue",
                "my_value",
                "12345",
            )
        )
    return errors


def env_var_name(value: str) -> list[str]:
    """Environment variable names as validated since relaxed validation became the default:
    any printable ASCII but ``=``."""
    if not value or any(not (32 <= ord(char) <= 126) or char == "=" for char in value):
        return [
            "a valid environment variable name must consist only of printable ASCII "
            "characters other than '='"
        ]
    return []


def config_key(value: str) -> list[str]:
    """A key of a Secret's ``data``."""
    errors = []
    if len(value) > 253:
        errors.append(max_len(253))
    if not _CONFIG_KEY_RE.fullmatch(value):
        errors.append(
            _regex_error(
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                _CONFIG_KEY_FMT,
                "key.name",
                "KEY_NAME",
                "key-name",
            )
        )
    if value == ".":
        errors.append("must not be '.'")
    elif value == "..":
        errors.append("must not be '..'")
    elif value.startswith(".."):
        errors.append("must not start with '..'")
    return errors


def each(field: str, value: str, check: Callable[[str], list[str]]) -> list[FieldError]:
    """One ``Invalid`` field error per message ``check`` gives for ``value``."""
    return [invalid(field, value, message) for message in check(value)]


def labels(values: dict[str, str], field: str) -> list[FieldError]:
    errors = []
    for key in sorted(values):
        errors.extend(each(field, key, qualified_name))
        errors.extend(each(field, values[key], label_value))
    return errors


def object_meta(meta: Json, name_check: Callable[[str], list[str]]) -> list[FieldError]:
    """``metadata``: the name (or generateName) by the resource's rule, labels and annotation
    keys. Called after a generateName has been turned into a name."""
    errors: list[FieldError] = []
    name = meta.get("name", "")
    if not name:
        errors.append(required("metadata.name", "name or generateName is required"))
    else:
        errors.extend(each("metadata.name", name, name_check))
    errors.extend(labels(meta.get("labels") or {}, "metadata.labels"))
    for key in sorted(meta.get("annotations") or {}):
        for message in qualified_name(key.lower()):
            errors.append(invalid("metadata.annotations", key, message))
    return errors
