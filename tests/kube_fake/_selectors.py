"""Label and field selectors, with the grammar of ``k8s.io/apimachinery/pkg/labels`` and
``pkg/fields``.

Label selectors: comma-joined requirements ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
``k notin (a,b)``, ``k``, ``!k``, ``k>1``, ``k<1``. Field selectors: ``f=v``, ``f==v``,
``f!=v`` over the fields each resource supports (:data:`FIELDS`); any other field is the
API server's 400 ``field label not supported``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import _validation
from ._meta import Json

_SPECIAL = set("!=<>(),")


class SelectorError(ValueError):
    """A selector that does not parse; its text is what the API server answers."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...]

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.operator in ("=", "==", "in"):
            return present and value in self.values
        if self.operator in ("!=", "notin"):
            return not present or value not in self.values
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if not present:
            return False
        try:
            number = int(value)
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.operator == ">" else number < bound


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char.isspace():
            index += 1
        elif char in _SPECIAL:
            pair = text[index : index + 2]
            if pair in ("==", "!="):
                out.append(pair)
                index += 2
            else:
                out.append(char)
                index += 1
        else:
            start = index
            while index < len(text) and not text[index].isspace() and text[index] not in _SPECIAL:
                index += 1
            out.append(text[start:index])
    return out


def _check_key(key: str) -> None:
    messages = _validation.qualified_name(key)
    if messages:
        raise SelectorError(
            f'unable to parse requirement: key: Invalid value: "{key}": {messages[0]}'
        )


def _check_value(index: int, key: str, value: str) -> None:
    messages = _validation.label_value(value)
    if messages:
        raise SelectorError(
            f"unable to parse requirement: values[{index}][{key}]: "
            f'Invalid value: "{value}": {messages[0]}'
        )


def parse_labels(text: str) -> list[Requirement]:
    tokens = _tokens(text)
    position = 0

    def peek() -> str:
        return tokens[position] if position < len(tokens) else ""

    def take() -> str:
        nonlocal position
        token = peek()
        position += 1
        return token

    requirements: list[Requirement] = []
    while position < len(tokens):
        negated = peek() == "!"
        if negated:
            take()
        key = take()
        if not key or key in _SPECIAL or key in ("==", "!="):
            raise SelectorError(f"found '{key}', expected: identifier")
        _check_key(key)
        following = peek()
        if following in ("", ","):
            requirements.append(Requirement(key, "!" if negated else "exists", ()))
        elif negated:
            raise SelectorError(f"found '{following}', expected: ',' or 'end of string'")
        elif following in ("in", "notin"):
            take()
            if take() != "(":
                raise SelectorError("found '" + tokens[position - 1] + "', expected: '('")
            values: list[str] = []
            while True:
                token = take()
                if token == ")":
                    if not values or tokens[position - 2] == ",":
                        values.append("")
                    break
                if token == ",":
                    if not values or tokens[position - 2] in ("(", ","):
                        values.append("")
                    continue
                if token == "" or token in _SPECIAL:
                    raise SelectorError(f"found '{token}', expected: ',', ')' or identifier")
                values.append(token)
            for index, value in enumerate(values):
                _check_value(index, key, value)
            requirements.append(Requirement(key, following, tuple(values)))
        elif following in ("=", "==", "!=", ">", "<"):
            take()
            value = peek()
            if value in ("", ","):
                value = ""
            else:
                take()
            if following in (">", "<"):
                try:
                    int(value)
                except ValueError:
                    raise SelectorError(
                        f"unable to parse requirement: for 'Gt', 'Lt' operators, the value "
                        f"must be an integer: {value!r}"
                    ) from None
            else:
                _check_value(0, key, value)
            requirements.append(Requirement(key, following, (value,)))
        else:
            raise SelectorError(f"found '{following}', expected: in, notin, =, ==, !=, gt, lt")
        if position < len(tokens):
            separator = take()
            if separator != ",":
                raise SelectorError(f"found '{separator}', expected: ',' or 'end of string'")
    return requirements


def labels_match(requirements: list[Requirement], obj: Json) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(requirement.matches(labels) for requirement in requirements)


def _get(*path: str) -> Callable[[Json], str]:
    def read(obj: Json) -> str:
        value: object = obj
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return "" if value is None else str(value)

    return read


_COMMON = {
    "metadata.name": _get("metadata", "name"),
    "metadata.namespace": _get("metadata", "namespace"),
}
FIELDS: dict[str, dict[str, Callable[[Json], str]]] = {
    "pods": {
        **_COMMON,
        "spec.nodeName": _get("spec", "nodeName"),
        "spec.restartPolicy": _get("spec", "restartPolicy"),
        "spec.schedulerName": _get("spec", "schedulerName"),
        "spec.serviceAccountName": _get("spec", "serviceAccountName"),
        "status.phase": _get("status", "phase"),
        "status.podIP": _get("status", "podIP"),
        "status.nominatedNodeName": _get("status", "nominatedNodeName"),
    },
    "secrets": {**_COMMON, "type": _get("type")},
    "events": {
        **_COMMON,
        "involvedObject.kind": _get("involvedObject", "kind"),
        "involvedObject.namespace": _get("involvedObject", "namespace"),
        "involvedObject.name": _get("involvedObject", "name"),
        "involvedObject.uid": _get("involvedObject", "uid"),
        "involvedObject.apiVersion": _get("involvedObject", "apiVersion"),
        "involvedObject.resourceVersion": _get("involvedObject", "resourceVersion"),
        "involvedObject.fieldPath": _get("involvedObject", "fieldPath"),
        "reason": _get("reason"),
        "reportingComponent": _get("reportingComponent"),
        "source": _get("source", "component"),
        "type": _get("type"),
    },
    "jobs": {**_COMMON, "status.successful": _get("status", "succeeded")},
    "nodes": {**_COMMON, "spec.unschedulable": _get("spec", "unschedulable")},
    "namespaces": {**_COMMON, "status.phase": _get("status", "phase")},
}


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    read: Callable[[Json], str]
    equal: bool
    value: str

    def matches(self, obj: Json) -> bool:
        return (self.read(obj) == self.value) == self.equal


def parse_fields(text: str, resource: str) -> list[FieldRequirement]:
    supported = FIELDS[resource]
    out = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        for operator in ("!=", "==", "="):
            if operator in part:
                field, value = part.split(operator, 1)
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        field = field.strip()
        if field not in supported:
            raise SelectorError(f"field label not supported: {field}")
        out.append(FieldRequirement(supported[field], operator != "!=", value.strip()))
    return out


def fields_match(requirements: list[FieldRequirement], obj: Json) -> bool:
    return all(requirement.matches(obj) for requirement in requirements)
