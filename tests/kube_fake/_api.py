"""The API server's verbs on stored objects: create, get, list and delete, with the
namespace check, validation, admission and the deletion semantics of each resource.

Deletion mirrors the registry: a pod that is bound and not finished is deleted gracefully
(``deletionTimestamp`` now + grace, ``deletionGracePeriodSeconds``; the grace is the
request's ``gracePeriodSeconds``, else the pod's ``terminationGracePeriodSeconds``) and
removed once its processes are gone and its finalizers empty; an unbound or finished pod, or
grace 0, is removed at once. A pod's delete answers the pod; a Secret's, and a Job's
removed at once, answer a ``Status`` of ``Success``. A Job's delete honours
``propagationPolicy`` (query or body; or ``orphanDependents``): ``Background`` removes the
Job and leaves its pods to the garbage collector, ``Foreground`` keeps the Job (finalizer
``foregroundDeletion``) until its pods are gone, ``Orphan`` (the default for batch/v1 Jobs)
strips the pods' ownerReferences and leaves them running.
"""

from __future__ import annotations

import base64
import copy
import json
import time
from typing import Any

from . import _objects
from ._admission import Admission
from ._decode import decode_body
from ._errors import (
    ApiError,
    already_exists,
    bad_request,
    invalid,
    invalid_object,
    not_found,
    not_supported,
)
from ._kinds import JOBS, NAMESPACES, PODS, SECRETS, Resource
from ._kubelet import Kubelet
from ._meta import Json, timestamp
from ._selectors import SelectorError, fields_match, labels_match, parse_fields, parse_labels
from ._store import Store

_MODELS = {"pods": "V1Pod", "secrets": "V1Secret", "jobs": "V1Job"}
_DELETE_OPTIONS = Resource("deleteoptions", "DeleteOptions", "meta.k8s.io", "v1", False, False)
_POLICIES = ("Foreground", "Background", "Orphan")
TERMINAL = ("Succeeded", "Failed")


def success(resource: Resource, obj: Json) -> Json:
    details = resource.details(obj["metadata"]["name"])
    details["uid"] = obj["metadata"]["uid"]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


class Api:
    def __init__(
        self, store: Store, namespaces: set[str], admission: Admission, kubelet: Kubelet
    ) -> None:
        self.store = store
        self.namespaces = namespaces
        self.admission = admission
        self.kubelet = kubelet

    def _check_namespace(self, namespace: str) -> None:
        if namespace not in self.namespaces:
            raise not_found(NAMESPACES, namespace)

    # -- create ---------------------------------------------------------------------------

    def create(
        self, resource: Resource, namespace: str, body: Any, strict: bool
    ) -> tuple[Json, list[str]]:
        """POST: decode (400), namespace (404), prepare and validate (422), admission (403),
        store (409). Returns the stored object and the decoder's warnings."""
        decoded, warnings = decode_body(resource, _MODELS[resource.plural], body, strict)
        return self.create_object(resource, namespace, decoded), warnings

    def create_object(self, resource: Resource, namespace: str, obj: Json) -> Json:
        self._check_namespace(namespace)
        obj = copy.deepcopy(obj)
        if resource is PODS:
            _objects.prepare_pod(obj, namespace)
        elif resource is SECRETS:
            _objects.prepare_secret(obj, namespace)
        else:
            _objects.prepare_job(obj, namespace)
        with self.store.lock:
            self.admission.admit(resource, obj, self.store.items(PODS.plural, namespace))
            name = obj["metadata"]["name"]
            if self.store.peek(resource.plural, namespace, name) is not None:
                raise already_exists(resource, name)
            return self.store.add(resource.plural, obj)

    # -- read -----------------------------------------------------------------------------

    def get(self, resource: Resource, namespace: str, name: str) -> Json:
        found = self.store.get(resource.plural, namespace, name)
        if found is None:
            raise not_found(resource, name)
        return found

    def list(self, resource: Resource, namespace: str | None, query: dict[str, str]) -> Json:
        try:
            labels = parse_labels(query.get("labelSelector", ""))
            fields = parse_fields(query.get("fieldSelector", ""), resource.plural)
        except SelectorError as error:
            raise bad_request(str(error)) from None
        limit = _int_query(query, "limit")
        start = ""
        if query.get("continue"):
            try:
                token = json.loads(base64.b64decode(query["continue"]))
                start = str(token["start"])
            except (ValueError, KeyError, TypeError):
                raise bad_request(
                    "continue key is not valid: illegal base64 data or JSON"
                ) from None
        with self.store.lock:
            rv = self.store.rv
            items = []
            for obj in self.store.items(resource.plural, namespace):
                key = f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
                if start and key <= start:
                    continue
                if labels_match(labels, obj) and fields_match(fields, obj):
                    items.append((key, copy.deepcopy(obj)))
        meta: Json = {"resourceVersion": str(rv)}
        if limit is not None and 0 < limit < len(items):
            meta["continue"] = base64.b64encode(
                json.dumps({"rv": rv, "start": items[limit - 1][0]}).encode()
            ).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        for _, obj in items:
            obj.pop("kind", None)
            obj.pop("apiVersion", None)
        return {
            "kind": resource.list_kind,
            "apiVersion": resource.api_version,
            "metadata": meta,
            "items": [obj for _, obj in items],
        }

    # -- delete ---------------------------------------------------------------------------

    def delete(
        self, resource: Resource, namespace: str, name: str, query: dict[str, str], body: Any
    ) -> Json:
        options = _delete_options(query, body)
        with self.store.lock:
            current = self.store.peek(resource.plural, namespace, name)
            if current is None:
                raise not_found(resource, name)
            _check_preconditions(options, current)
            if resource is PODS:
                return self.delete_pod(namespace, name, options.get("gracePeriodSeconds"))
            if resource is JOBS:
                return self._delete_job(current, options)
            removed = self.store.remove(resource.plural, namespace, name)
            assert removed is not None
            return success(resource, removed)

    def delete_pod(self, namespace: str, name: str, grace: int | None) -> Json:
        """A pod's graceful (or immediate) deletion; returns the pod."""
        with self.store.lock:
            pod = self.store.peek(PODS.plural, namespace, name)
            if pod is None:
                raise not_found(PODS, name)
            meta, spec = pod["metadata"], pod["spec"]
            if grace is not None and grace < 0:
                grace = 1
            if grace is None:
                grace = int(spec.get("terminationGracePeriodSeconds", 30))
            phase = (pod.get("status") or {}).get("phase")
            if not spec.get("nodeName") or phase in TERMINAL:
                grace = 0
            if "deletionTimestamp" in meta and grace >= meta.get("deletionGracePeriodSeconds", 0):
                return copy.deepcopy(pod)
            if grace == 0 and not meta.get("finalizers"):
                self.kubelet.kill_now(meta["uid"])
                removed = self.store.remove(PODS.plural, namespace, name)
                assert removed is not None
                return removed
            when = timestamp(time.time() + grace)

            def mark(obj: Json) -> None:
                obj["metadata"]["deletionTimestamp"] = when
                obj["metadata"]["deletionGracePeriodSeconds"] = grace

            updated = self.store.update(PODS.plural, namespace, name, mark)
            assert updated is not None
            return updated

    def _delete_job(self, job: Json, options: Json) -> Json:
        meta = job["metadata"]
        policy = options.get("propagationPolicy")
        if policy is None:
            orphan = options.get("orphanDependents")
            policy = "Background" if orphan is False else "Orphan"
        if "deletionTimestamp" in meta:
            return copy.deepcopy(job)
        if policy == "Background":
            removed = self.store.remove(JOBS.plural, meta["namespace"], meta["name"])
            assert removed is not None
            return success(JOBS, removed)
        finalizer = "foregroundDeletion" if policy == "Foreground" else "orphan"

        def mark(obj: Json) -> None:
            obj["metadata"]["deletionTimestamp"] = timestamp()
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            finalizers = obj["metadata"].setdefault("finalizers", [])
            if finalizer not in finalizers:
                finalizers.append(finalizer)

        updated = self.store.update(JOBS.plural, meta["namespace"], meta["name"], mark)
        assert updated is not None
        return updated


def _int_query(query: dict[str, str], key: str) -> int | None:
    text = query.get(key)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise bad_request(f'invalid value for {key}: "{text}" is not an integer') from None


def _delete_options(query: dict[str, str], body: Any) -> Json:
    """DeleteOptions from the body and the query (the query's win where both are given)."""
    options: Json = {}
    if body is not None:
        options, _ = decode_body(_DELETE_OPTIONS, "V1DeleteOptions", body, strict=False)
    grace = _int_query(query, "gracePeriodSeconds")
    if grace is not None:
        options["gracePeriodSeconds"] = grace
    if query.get("propagationPolicy"):
        options["propagationPolicy"] = query["propagationPolicy"]
    if "orphanDependents" in query:
        options["orphanDependents"] = query["orphanDependents"] == "true"
    errors = []
    policy = options.get("propagationPolicy")
    if policy is not None and policy not in _POLICIES:
        errors.append(not_supported("propagationPolicy", policy, _POLICIES))
    if policy is not None and "orphanDependents" in options:
        errors.append(
            invalid(
                "propagationPolicy",
                policy,
                "orphanDependents and deletionPropagation cannot be both set",
            )
        )
    if errors:
        raise invalid_object(_DELETE_OPTIONS, "", errors)
    return options


def _check_preconditions(options: Json, current: Json) -> None:
    wanted = options.get("preconditions") or {}
    meta = current["metadata"]
    for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        if wanted.get(key) and wanted[key] != meta.get(key):
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: {label} in precondition: {wanted[key]}, {label} in object "
                f"meta: {meta.get(key)}",
                {"name": meta["name"], "kind": ""},
            )
