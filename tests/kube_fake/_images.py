"""Image references and pulls, with the messages containerd and the kubelet give.

A reference is normalized as containerd does (``python:3.11`` is
``docker.io/library/python:3.11``, no tag means ``:latest``) before it is looked up among
the fake's pullable images. A private image pulls only for a pod whose
``imagePullSecrets`` name a ``kubernetes.io/dockerconfigjson`` Secret with credentials for
the image's registry.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

from ._meta import Json

Secrets = Callable[[str], Json | None]
"""A Secret by name in the pod's namespace."""


def normalize(reference: str) -> str:
    name, _, digest = reference.partition("@")
    tag = ""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        domain, path = parts[0], "/".join(parts[1:])
    else:
        domain, path = "docker.io", name
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    if not tag and not digest:
        tag = "latest"
    out = f"{domain}/{path}"
    if tag:
        out += f":{tag}"
    if digest:
        out += f"@{digest}"
    return out


def registry(reference: str) -> str:
    return normalize(reference).split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class Pull:
    """A pull's outcome: ``ok``, or the waiting reason and the kubelet's message."""

    ok: bool
    reason: str = ""
    message: str = ""


def _has_credentials(pod: Json, host: str, secrets: Secrets) -> bool:
    for ref in pod["spec"].get("imagePullSecrets") or []:
        secret = secrets(ref.get("name", ""))
        if secret is None or secret.get("type") != "kubernetes.io/dockerconfigjson":
            continue
        try:
            config = json.loads(base64.b64decode((secret.get("data") or {})[".dockerconfigjson"]))
        except (KeyError, ValueError):
            continue
        auths = config.get("auths") if isinstance(config, dict) else None
        for server in auths if isinstance(auths, dict) else {}:
            bare = server.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
            if bare == host or (
                host == "docker.io" and bare in ("index.docker.io", "registry-1.docker.io")
            ):
                return True
    return False


def pull(pod: Json, image: str, pullable: set[str], private: set[str], secrets: Secrets) -> Pull:
    reference = normalize(image)
    pullable = {normalize(ref) for ref in pullable}
    private = {normalize(ref) for ref in private}
    container = pod["spec"]["containers"][0]
    if container.get("imagePullPolicy") == "Never" and reference not in pullable:
        return Pull(
            False,
            "ErrImageNeverPull",
            f'Container image "{image}" is not present with pull policy of Never',
        )
    if reference in private and not _has_credentials(pod, registry(image), secrets):
        host = registry(image)
        repository = reference.split("/", 1)[1].split(":", 1)[0].split("@", 1)[0]
        return Pull(
            False,
            "ErrImagePull",
            f'rpc error: code = Unknown desc = failed to pull and unpack image "{reference}": '
            f'failed to resolve reference "{reference}": failed to authorize: failed to fetch '
            f"anonymous token: unexpected status from GET request to https://{host}/token?"
            f"scope=repository%3A{repository.replace('/', '%2F')}%3Apull&service={host}: "
            "401 Unauthorized",
        )
    if reference in pullable or reference in private:
        return Pull(True)
    return Pull(
        False,
        "ErrImagePull",
        f'rpc error: code = NotFound desc = failed to pull and unpack image "{reference}": '
        f'failed to resolve reference "{reference}": {reference}: not found',
    )
