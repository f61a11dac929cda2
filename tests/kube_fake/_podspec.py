"""A pod spec's defaults and validation, as ``pkg/apis/core/v1/defaults.go`` and
``pkg/apis/core/validation`` apply them, for the fields the fake acts on.

Defaults: ``restartPolicy: Always``, ``terminationGracePeriodSeconds: 30``, ``dnsPolicy``,
``schedulerName``, ``serviceAccountName: default``, the two ``NoExecute`` tolerations the
DefaultTolerationSeconds admission plugin adds, each container's ``imagePullPolicy``,
``terminationMessagePath``/``Policy``, and requests defaulted from limits.

Validated: containers (at least one, DNS-1123 label names, no duplicates, an image in pods),
``env`` and ``envFrom`` sources, resource names and quantities (requests not above limits;
extended resources such as ``nvidia.com/gpu`` whole numbers with requests equal to limits),
``restartPolicy``, ``activeDeadlineSeconds``, ``terminationGracePeriodSeconds``,
``nodeSelector``, ``tolerations``, volume mounts naming a volume. Other fields are kept as
sent and not checked.
"""

from __future__ import annotations

from fractions import Fraction

from . import _validation as check
from ._errors import FieldError, duplicate, invalid, not_supported, required
from ._meta import Json
from ._quantity import parse_quantity

RESTART_POLICIES = ("Always", "OnFailure", "Never")
FIELD_PATHS = (
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)
RESOURCE_FIELDS = (
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
)
_STANDARD = {"cpu", "memory", "ephemeral-storage"}
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
DEFAULT_TOLERATIONS = [
    {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
    {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
]


def _pull_policy(image: str) -> str:
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def default_container(container: Json) -> None:
    container.setdefault("imagePullPolicy", _pull_policy(container.get("image", "")))
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    resources = container.setdefault("resources", {})
    limits = resources.get("limits") or {}
    if limits:
        requests = resources.setdefault("requests", {})
        for name, value in limits.items():
            requests.setdefault(name, value)
    for variable in container.get("env") or []:
        field_ref = (variable.get("valueFrom") or {}).get("fieldRef")
        if field_ref is not None:
            field_ref.setdefault("apiVersion", "v1")


def default_pod_spec(spec: Json) -> None:
    """The API server's defaults, then the mutations of the ServiceAccount and
    DefaultTolerationSeconds admission plugins."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = account
    spec["serviceAccount"] = account
    for container in spec.get("containers") or []:
        default_container(container)
    for container in spec.get("initContainers") or []:
        default_container(container)


def add_default_tolerations(spec: Json) -> None:
    tolerations = spec.setdefault("tolerations", [])
    keys = {(t.get("key"), t.get("effect")) for t in tolerations}
    for toleration in DEFAULT_TOLERATIONS:
        if (toleration["key"], "NoExecute") not in keys:
            tolerations.append(dict(toleration))


def _resources(resources: Json, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    limits: dict[str, str] = resources.get("limits") or {}
    requests: dict[str, str] = resources.get("requests") or {}
    for group, values in (("limits", limits), ("requests", requests)):
        for name in sorted(values):
            where = f"{path}.{group}[{name}]"
            if name not in _STANDARD and not name.startswith("hugepages-") and "/" not in name:
                errors.append(
                    invalid(where, name, "must be a standard resource type or fully qualified")
                )
                continue
            amount = parse_quantity(values[name]).value
            if amount < 0:
                errors.append(invalid(where, values[name], "must be greater than or equal to 0"))
            if _extended(name) and amount.denominator != 1:
                errors.append(invalid(where, values[name], "must be an integer"))
    for name in sorted(requests):
        request = parse_quantity(requests[name])
        if name in limits:
            limit = parse_quantity(limits[name])
            if _extended(name) and request.value != limit.value:
                errors.append(
                    invalid(
                        f"{path}.requests",
                        str(request),
                        f"must be equal to {name} limit of {limit}",
                    )
                )
            elif request.value > limit.value:
                errors.append(
                    invalid(
                        f"{path}.requests",
                        str(request),
                        f"must be less than or equal to {name} limit of {limit}",
                    )
                )
        elif _extended(name):
            errors.append(
                required(f"{path}.limits", "Limit must be set for non overcommitable resources")
            )
    return errors


def _extended(name: str) -> bool:
    """Resources that cannot be overcommitted: anything fully qualified outside
    ``kubernetes.io/`` (``nvidia.com/gpu``), and hugepages."""
    return name.startswith("hugepages-") or ("/" in name and not name.startswith("kubernetes.io/"))


def _env(container: Json, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for index, variable in enumerate(container.get("env") or []):
        where = f"{path}.env[{index}]"
        name = variable.get("name", "")
        if not name:
            errors.append(required(f"{where}.name"))
        else:
            errors.extend(check.each(f"{where}.name", name, check.env_var_name))
        source = variable.get("valueFrom")
        if source is None:
            continue
        sources = [
            key
            for key in (
                "fieldRef",
                "resourceFieldRef",
                "configMapKeyRef",
                "secretKeyRef",
                "fileKeyRef",
            )
            if key in source
        ]
        if variable.get("value"):
            errors.append(
                invalid(f"{where}.valueFrom", "", "may not be specified when `value` is not empty")
            )
        if not sources:
            errors.append(
                invalid(
                    f"{where}.valueFrom",
                    "",
                    "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` "
                    "or `secretKeyRef`",
                )
            )
        elif len(sources) > 1:
            errors.append(
                invalid(
                    f"{where}.valueFrom", "", "may not have more than one field specified at a time"
                )
            )
        for ref_name in ("secretKeyRef", "configMapKeyRef"):
            ref = source.get(ref_name)
            if ref is None:
                continue
            ref_path = f"{where}.valueFrom.{ref_name}"
            if not ref.get("name"):
                errors.append(required(f"{ref_path}.name"))
            if not ref.get("key"):
                errors.append(required(f"{ref_path}.key"))
            else:
                errors.extend(check.each(f"{ref_path}.key", ref["key"], check.config_key))
        field_ref = source.get("fieldRef")
        if field_ref is not None:
            field_path = field_ref.get("fieldPath", "")
            ref_path = f"{where}.valueFrom.fieldRef.fieldPath"
            if not field_path:
                errors.append(required(ref_path))
            elif field_path.split("[", 1)[0] not in FIELD_PATHS or (
                "[" in field_path
                and not field_path.startswith(("metadata.labels[", "metadata.annotations["))
            ):
                errors.append(not_supported(ref_path, field_path, FIELD_PATHS))
        resource_ref = source.get("resourceFieldRef")
        if resource_ref is not None:
            resource = resource_ref.get("resource", "")
            if resource not in RESOURCE_FIELDS:
                errors.append(
                    not_supported(
                        f"{where}.valueFrom.resourceFieldRef.resource", resource, RESOURCE_FIELDS
                    )
                )
    for index, source in enumerate(container.get("envFrom") or []):
        where = f"{path}.envFrom[{index}]"
        refs = [key for key in ("secretRef", "configMapRef") if key in source]
        if len(refs) != 1:
            errors.append(invalid(where, "", "must specify one of: `configMapRef` or `secretRef`"))
        for ref in refs:
            if not (source[ref] or {}).get("name"):
                errors.append(required(f"{where}.{ref}.name"))
    return errors


def _containers(spec: Json, path: str, is_pod: bool, volumes: set[str]) -> list[FieldError]:
    errors: list[FieldError] = []
    containers = spec.get("containers") or []
    if not containers:
        errors.append(required(f"{path}.containers"))
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(group) or []):
            where = f"{path}.{group}[{index}]"
            name = container.get("name", "")
            if not name:
                errors.append(required(f"{where}.name"))
            else:
                errors.extend(check.each(f"{where}.name", name, check.dns1123_label))
                if name in seen:
                    errors.append(duplicate(f"{where}.name", name))
                seen.add(name)
            image = container.get("image", "")
            if is_pod and not image:
                errors.append(required(f"{where}.image"))
            elif image and image.strip() != image:
                errors.append(
                    invalid(f"{where}.image", image, "must not have leading or trailing whitespace")
                )
            policy = container.get("imagePullPolicy", "")
            if policy not in ("Always", "IfNotPresent", "Never"):
                errors.append(
                    not_supported(
                        f"{where}.imagePullPolicy", policy, ("Always", "IfNotPresent", "Never")
                    )
                )
            errors.extend(_env(container, where))
            errors.extend(_resources(container.get("resources") or {}, f"{where}.resources"))
            for mount_index, mount in enumerate(container.get("volumeMounts") or []):
                mount_name = mount.get("name", "")
                if mount_name not in volumes:
                    errors.append(
                        FieldError(
                            "NotFound", f"{where}.volumeMounts[{mount_index}].name", mount_name
                        )
                    )
    return errors


def _tolerations(spec: Json, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for index, toleration in enumerate(spec.get("tolerations") or []):
        where = f"{path}.tolerations[{index}]"
        key = toleration.get("key", "")
        operator = toleration.get("operator", "Equal")
        if key:
            errors.extend(check.each(f"{where}.key", key, check.qualified_name))
        elif operator != "Exists":
            errors.append(
                invalid(
                    f"{where}.operator",
                    operator,
                    "operator must be Exists when `key` is empty, which means "
                    '"match all values and all keys"',
                )
            )
        if operator == "Exists" and toleration.get("value"):
            errors.append(
                invalid(
                    f"{where}.operator",
                    toleration,
                    "value must be empty when `operator` is 'Exists'",
                )
            )
        elif operator not in ("Exists", "Equal"):
            errors.append(not_supported(f"{where}.operator", operator, ("Equal", "Exists")))
        effect = toleration.get("effect", "")
        if effect and effect not in _EFFECTS:
            errors.append(not_supported(f"{where}.effect", effect, _EFFECTS))
        if "tolerationSeconds" in toleration and effect != "NoExecute":
            errors.append(
                invalid(
                    f"{where}.effect",
                    effect,
                    "effect must be 'NoExecute' when `tolerationSeconds` is set",
                )
            )
    return errors


def validate_pod_spec(spec: Json, path: str, *, is_pod: bool) -> list[FieldError]:
    """The errors in a (defaulted) pod spec; ``is_pod`` is False for a Job's template, where
    an image may be left for a webhook to fill in."""
    volumes: set[str] = set()
    errors: list[FieldError] = []
    for index, volume in enumerate(spec.get("volumes") or []):
        name = volume.get("name", "")
        if not name:
            errors.append(required(f"{path}.volumes[{index}].name"))
        elif name in volumes:
            errors.append(duplicate(f"{path}.volumes[{index}].name", name))
        volumes.add(name)
    errors.extend(_containers(spec, path, is_pod, volumes))
    policy = spec.get("restartPolicy", "")
    if policy not in RESTART_POLICIES:
        errors.append(not_supported(f"{path}.restartPolicy", policy, RESTART_POLICIES))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and not 1 <= deadline <= 2**31 - 1:
        errors.append(
            invalid(
                f"{path}.activeDeadlineSeconds",
                deadline,
                "must be between 1 and 2147483647, inclusive",
            )
        )
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and grace < 0:
        errors.append(
            invalid(
                f"{path}.terminationGracePeriodSeconds", grace, "must be greater than or equal to 0"
            )
        )
    errors.extend(check.labels(spec.get("nodeSelector") or {}, f"{path}.nodeSelector"))
    errors.extend(_tolerations(spec, path))
    account = spec.get("serviceAccountName", "")
    if account:
        errors.extend(check.each(f"{path}.serviceAccountName", account, check.dns1123_subdomain))
    for index, secret in enumerate(spec.get("imagePullSecrets") or []):
        if not secret.get("name"):
            errors.append(required(f"{path}.imagePullSecrets[{index}].name"))
    return errors


def container_amounts(container: Json, group: str) -> dict[str, Fraction]:
    values = (container.get("resources") or {}).get(group) or {}
    return {name: parse_quantity(text).value for name, text in values.items()}


def pod_amounts(spec: Json, group: str) -> dict[str, Fraction]:
    """A pod's ``requests`` or ``limits``: the containers' summed, and each init container's
    taken where larger, as the scheduler computes them."""
    total: dict[str, Fraction] = {}
    for container in spec.get("containers") or []:
        for name, value in container_amounts(container, group).items():
            total[name] = total.get(name, Fraction(0)) + value
    for container in spec.get("initContainers") or []:
        for name, value in container_amounts(container, group).items():
            total[name] = max(total.get(name, Fraction(0)), value)
    return total


def qos_class(spec: Json) -> str:
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    requests = [container_amounts(c, "requests") for c in containers]
    limits = [container_amounts(c, "limits") for c in containers]
    if not any(r.get(n) for r in requests + limits for n in ("cpu", "memory")):
        return "BestEffort"
    guaranteed = all(
        name in limit and request.get(name) == limit[name]
        for request, limit in zip(requests, limits, strict=True)
        for name in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"
