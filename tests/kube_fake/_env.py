"""A container's environment, resolved as the kubelet resolves it: ``envFrom`` first, then
``env`` in order, each value expanding ``$(NAME)`` of the variables before it (``$$`` is a
literal ``$``); then ``command`` and ``args`` expanded against the result.

Sources: ``value``, ``valueFrom.secretKeyRef``, ``valueFrom.fieldRef``,
``valueFrom.resourceFieldRef`` and ``envFrom.secretRef``. The fake serves no ConfigMaps, so
a ``configMapKeyRef`` or ``configMapRef`` that is not ``optional`` fails like a missing one.
A missing Secret or key raises :class:`ConfigError` with the kubelet's message, which it
shows as ``CreateContainerConfigError``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from fractions import Fraction

from . import _validation
from ._meta import Json
from ._podspec import container_amounts
from ._quantity import parse_quantity

Secrets = Callable[[str], Json | None]


class ConfigError(Exception):
    """A reference the kubelet cannot resolve; the message is the kubelet's."""


def expand(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "$" and index + 1 < len(text):
            following = text[index + 1]
            if following == "$":
                out.append("$")
                index += 2
                continue
            if following == "(":
                end = text.find(")", index + 2)
                if end != -1:
                    name = text[index + 2 : end]
                    out.append(env[name] if name in env else text[index : end + 1])
                    index = end + 1
                    continue
        out.append(char)
        index += 1
    return "".join(out)


def _secret_value(secret: Json, key: str) -> str:
    raw = base64.b64decode((secret.get("data") or {})[key])
    return raw.decode("utf-8", errors="surrogateescape")


def _field(pod: Json, path: str) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    if path.startswith(("metadata.labels[", "metadata.annotations[")):
        group, _, rest = path.partition("[")
        key = rest.rstrip("]").strip("'\"")
        return str((meta.get(group.split(".")[1]) or {}).get(key, ""))
    if path in ("metadata.labels", "metadata.annotations"):
        values = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{key}="{values[key]}"' for key in sorted(values))
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIPs": ",".join(ip["ip"] for ip in status.get("hostIPs") or []),
        "status.podIPs": ",".join(ip["ip"] for ip in status.get("podIPs") or []),
    }
    return str(simple.get(path, ""))


def _resource(container: Json, ref: Json, allocatable: Mapping[str, Fraction]) -> str:
    group, _, name = ref["resource"].partition(".")
    amounts = container_amounts(container, group)
    value = amounts.get(name, allocatable.get(name, Fraction(0)))
    divisor = parse_quantity(ref.get("divisor") or "1").value or Fraction(1)
    return str(math.ceil(value / divisor))


def resolve(
    pod: Json,
    container: Json,
    base: Mapping[str, str],
    secrets: Secrets,
    allocatable: Mapping[str, Fraction],
) -> dict[str, str]:
    """The environment the container's process gets; raises :class:`ConfigError`."""
    namespace = pod["metadata"]["namespace"]
    env = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]
            if not ref.get("optional"):
                raise ConfigError(f'configmap "{ref.get("name", "")}" not found')
            continue
        ref = source.get("secretRef") or {}
        secret = secrets(ref.get("name", ""))
        if secret is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'secret "{ref.get("name", "")}" not found')
        for key in sorted(secret.get("data") or {}):
            if not _validation.env_var_name(prefix + key):
                env[prefix + key] = _secret_value(secret, key)
    for variable in container.get("env") or []:
        name = variable["name"]
        source = variable.get("valueFrom")
        if source is None:
            env[name] = expand(variable.get("value", ""), env)
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = secrets(ref["name"])
            if secret is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'secret "{ref["name"]}" not found')
            if ref["key"] not in (secret.get("data") or {}):
                if ref.get("optional"):
                    continue
                raise ConfigError(
                    f"couldn't find key {ref['key']} in Secret {namespace}/{ref['name']}"
                )
            env[name] = _secret_value(secret, ref["key"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            if not ref.get("optional"):
                raise ConfigError(f'configmap "{ref.get("name", "")}" not found')
        elif "fieldRef" in source:
            env[name] = _field(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[name] = _resource(container, source["resourceFieldRef"], allocatable)
    return env
