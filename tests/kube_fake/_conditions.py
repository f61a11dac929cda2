"""Status conditions, kept as the controllers keep them: ``lastTransitionTime`` changes only
when a condition's status does."""

from __future__ import annotations

from ._meta import Json, timestamp


def set_condition(
    status: Json,
    kind: str,
    value: bool,
    reason: str = "",
    message: str = "",
    *,
    probe: bool = True,
) -> None:
    """Sets condition ``kind`` of ``status.conditions`` to ``"True"``/``"False"``. Pod
    conditions carry ``lastProbeTime: null``, as the kubelet and scheduler write them; Job
    conditions carry a ``lastProbeTime`` too, set when the condition is written."""
    conditions: list[Json] = status.setdefault("conditions", [])
    text = "True" if value else "False"
    for condition in conditions:
        if condition["type"] == kind:
            if condition["status"] != text:
                condition["lastTransitionTime"] = timestamp()
            condition["status"] = text
            _reason(condition, reason, message)
            return
    condition = {"type": kind, "status": text}
    condition["lastProbeTime"] = timestamp() if probe else None
    condition["lastTransitionTime"] = timestamp()
    _reason(condition, reason, message)
    conditions.append(condition)


def _reason(condition: Json, reason: str, message: str) -> None:
    for key, value in (("reason", reason), ("message", message)):
        if value:
            condition[key] = value
        else:
            condition.pop(key, None)


def condition(status: Json, kind: str) -> Json | None:
    for item in status.get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def is_true(status: Json, kind: str) -> bool:
    found = condition(status, kind)
    return found is not None and found.get("status") == "True"
