"""What the API server does to a decoded object on create before it stores it: system
metadata, the resource's defaults and ``PrepareForCreate``, then validation (422 Invalid).

Pods: a fresh ``status`` (``phase: Pending``, ``qosClass``). Secrets: ``type: Opaque``,
``stringData`` folded into ``data``. Jobs: ``generation: 1``, an empty ``status``, defaults
(``parallelism``, ``completions``, ``backoffLimit: 6``, ``completionMode``, ``suspend``,
``podReplacementPolicy``), the generated selector and the four job labels on the template
(``controller-uid``, ``batch.kubernetes.io/controller-uid``, ``job-name``,
``batch.kubernetes.io/job-name``), so a name longer than 63 characters fails as a label
value, as on a real cluster.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

from . import _podspec
from . import _validation as check
from ._errors import ApiError, FieldError, invalid, invalid_object, not_supported, required
from ._kinds import JOBS, PODS, SECRETS
from ._meta import Json, new_uid, random_suffix, timestamp

_SECRET_LIMIT = 1024 * 1024
JOB_LABELS = (
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "controller-uid",
    "job-name",
)


def stamp_metadata(obj: Json, namespace: str | None) -> Json:
    """Names a ``generateName`` object, sets uid, namespace and creationTimestamp and clears
    what a client may not set (``rest.BeforeCreate`` and ``FillObjectMetaSystemFields``)."""
    meta: Json = obj.setdefault("metadata", {})
    if meta.get("resourceVersion"):
        raise ApiError(
            500,
            "InternalError",
            "Internal error occurred: resourceVersion should not be set on objects to be created",
        )
    if namespace is not None:
        if meta.get("namespace", namespace) != namespace:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        meta["namespace"] = namespace
    if not meta.get("name") and meta.get("generateName"):
        # names.SimpleNameGenerator: the prefix is cut so that the name stays within 63.
        meta["name"] = meta["generateName"][:58] + random_suffix()
    meta["uid"] = new_uid()
    meta["creationTimestamp"] = timestamp()
    for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"):
        meta.pop(key, None)
    meta.pop("generation", None)
    return meta


def _generate_name_errors(meta: Json, name_check: Callable[[str], list[str]]) -> list[FieldError]:
    prefix = meta.get("generateName", "")
    if not prefix:
        return []
    trimmed = prefix[:-1] if prefix.endswith("-") else prefix
    return check.each("metadata.generateName", prefix, lambda _: name_check(trimmed))


def prepare_pod(pod: Json, namespace: str, *, generated_by: str = "") -> Json:
    meta = stamp_metadata(pod, namespace)
    pod["apiVersion"], pod["kind"] = "v1", "Pod"
    spec = pod.setdefault("spec", {})
    _podspec.default_pod_spec(spec)
    _podspec.add_default_tolerations(spec)
    errors = check.object_meta(meta, check.dns1123_subdomain)
    errors.extend(_generate_name_errors(meta, check.dns1123_subdomain))
    errors.extend(_podspec.validate_pod_spec(spec, "spec", is_pod=True))
    if errors:
        raise invalid_object(PODS, meta.get("name", ""), errors)
    pod["status"] = {"phase": "Pending", "qosClass": _podspec.qos_class(spec)}
    return pod


def prepare_secret(secret: Json, namespace: str) -> Json:
    meta = stamp_metadata(secret, namespace)
    secret["apiVersion"], secret["kind"] = "v1", "Secret"
    secret.setdefault("type", "Opaque")
    data: dict[str, str] = secret.setdefault("data", {})
    for key, text in (secret.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(text.encode()).decode()
    if not data:
        secret.pop("data")
    errors = check.object_meta(meta, check.dns1123_subdomain)
    errors.extend(_generate_name_errors(meta, check.dns1123_subdomain))
    total = 0
    for key in sorted(data):
        errors.extend(check.each(f"data[{key}]", key, check.config_key))
        total += len(base64.b64decode(data[key]))
    if total > _SECRET_LIMIT:
        errors.append(
            FieldError("TooLong", "data", None, f"must have at most {_SECRET_LIMIT} bytes")
        )
    if secret["type"] == "kubernetes.io/dockerconfigjson":
        config = data.get(".dockerconfigjson")
        if config is None:
            errors.append(required("data[.dockerconfigjson]"))
        else:
            try:
                json.loads(base64.b64decode(config))
            except ValueError as error:
                errors.append(
                    invalid("data[.dockerconfigjson]", "<secret contents redacted>", str(error))
                )
    if errors:
        raise invalid_object(SECRETS, meta.get("name", ""), errors)
    return secret


def _nonnegative(spec: Json, field: str, path: str) -> list[FieldError]:
    value = spec.get(field)
    if value is not None and value < 0:
        return [invalid(f"{path}.{field}", value, "must be greater than or equal to 0")]
    return []


def prepare_job(job: Json, namespace: str) -> Json:
    meta = stamp_metadata(job, namespace)
    job["apiVersion"], job["kind"] = "batch/v1", "Job"
    meta["generation"] = 1
    spec = job.setdefault("spec", {})
    template = spec.setdefault("template", {})
    template_meta = template.setdefault("metadata", {})
    pod_spec = template.setdefault("spec", {})
    user_labels = dict(template_meta.get("labels") or {})
    if user_labels and not meta.get("labels"):
        meta["labels"] = user_labels
    if "parallelism" not in spec and "completions" not in spec:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    _podspec.default_pod_spec(pod_spec)
    errors: list[FieldError] = []
    if spec.get("selector") and not spec.get("manualSelector"):
        errors.append(invalid("spec.selector", spec["selector"], "`selector` not auto-generated"))
    name, uid = meta.get("name", ""), meta["uid"]
    labels = template_meta.setdefault("labels", {})
    labels.setdefault("batch.kubernetes.io/controller-uid", uid)
    labels.setdefault("batch.kubernetes.io/job-name", name)
    labels.setdefault("controller-uid", uid)
    labels.setdefault("job-name", name)
    if not spec.get("manualSelector"):
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    errors.extend(check.object_meta(meta, check.dns1123_subdomain))
    errors.extend(_generate_name_errors(meta, check.dns1123_subdomain))
    errors.extend(check.labels(labels, "spec.template.metadata.labels"))
    for field in (
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ):
        errors.extend(_nonnegative(spec, field, "spec"))
    if spec["completionMode"] not in ("NonIndexed", "Indexed"):
        errors.append(
            not_supported("spec.completionMode", spec["completionMode"], ("NonIndexed", "Indexed"))
        )
    errors.extend(_podspec.validate_pod_spec(pod_spec, "spec.template.spec", is_pod=False))
    policy = pod_spec.get("restartPolicy")
    if policy in _podspec.RESTART_POLICIES and policy not in ("OnFailure", "Never"):
        errors.append(
            not_supported("spec.template.spec.restartPolicy", policy, ("OnFailure", "Never"))
        )
    if errors:
        raise invalid_object(JOBS, name, errors)
    job["status"] = {}
    return job
