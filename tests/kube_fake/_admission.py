"""Validating admission after an object passes validation: webhooks, then ResourceQuota.

A webhook (``FakeKubernetes.deny``) sees every create and may refuse it; the refusal is
what the API server makes of a webhook's ``allowed: false``: ``admission webhook "NAME"
denied the request: MESSAGE``, code 403. A quota (``FakeKubernetes.set_quota``) counts the
namespace's non-terminal pods as the ResourceQuota admission plugin does, refusing a pod
that would exceed it (``exceeded quota: compute, requested: limits.cpu=4, used:
limits.cpu=2, limited: limits.cpu=4``) or that leaves out a constrained cpu or memory value
(``failed quota: compute: must specify limits.cpu for: main``). Only pods are counted;
quotas on object counts (``count/jobs.batch``) are not served.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from ._errors import ApiError, forbidden
from ._kinds import PODS, Resource
from ._meta import Json
from ._podspec import container_amounts, pod_amounts
from ._quantity import from_value, parse_quantity

TERMINAL = ("Succeeded", "Failed")
_CONSTRAINED = ("cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory")


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """What a validating webhook is shown: ``operation`` is ``CREATE``; ``resource`` the
    plural (``pods``, ``jobs``, ``secrets``); ``object`` the object as it will be stored."""

    operation: str
    resource: str
    namespace: str
    name: str
    object: Json


Check = Callable[[AdmissionRequest], str | None]
"""A webhook's decision: None admits, a message denies."""


@dataclass(frozen=True, slots=True)
class Webhook:
    name: str
    check: Check
    code: int = 403


@dataclass(slots=True)
class Quota:
    """A ResourceQuota's ``spec.hard``, keyed as the API is (``limits.cpu``, ``pods``,
    ``requests.nvidia.com/gpu``, ...)."""

    name: str
    hard: dict[str, Fraction] = field(default_factory=dict)


def pod_usage(pod: Json) -> dict[str, Fraction]:
    """What one pod counts against a quota."""
    spec = pod["spec"]
    requests, limits = pod_amounts(spec, "requests"), pod_amounts(spec, "limits")
    usage: dict[str, Fraction] = {"pods": Fraction(1)}
    for name, value in requests.items():
        usage[f"requests.{name}"] = value
        if name in ("cpu", "memory", "ephemeral-storage"):
            usage[name] = value
    for name, value in limits.items():
        usage[f"limits.{name}"] = value
    return usage


def _missing(pod: Json, constrained: list[str]) -> str:
    missing: dict[str, list[str]] = {}
    for container in pod["spec"].get("containers") or []:
        requests = container_amounts(container, "requests")
        limits = container_amounts(container, "limits")
        for resource in constrained:
            group, _, name = resource.rpartition(".")
            present = name in limits if group == "limits" else name in requests
            if not present:
                missing.setdefault(resource, []).append(container.get("name", ""))
    return "; ".join(
        f"{resource} for: {','.join(sorted(names))}" for resource, names in sorted(missing.items())
    )


def _pretty(values: dict[str, Fraction], keys: list[str], forms: dict[str, str]) -> str:
    return ",".join(
        f"{key}={from_value(values.get(key, Fraction(0)), forms.get(key, 'DecimalSI'))}"
        for key in sorted(keys)
    )


class Admission:
    def __init__(self) -> None:
        self.webhooks: list[Webhook] = []
        self.quotas: dict[str, Quota] = {}

    def set_quota(self, namespace: str, name: str, hard: dict[str, str]) -> None:
        if not hard:
            self.quotas.pop(namespace, None)
            return
        self.quotas[namespace] = Quota(
            name, {key: parse_quantity(value).value for key, value in hard.items()}
        )

    def admit(self, resource: Resource, obj: Json, namespace_pods: list[Json]) -> None:
        meta = obj["metadata"]
        request = AdmissionRequest(
            "CREATE", resource.plural, meta.get("namespace", ""), meta["name"], obj
        )
        for hook in self.webhooks:
            message = hook.check(request)
            if message is not None:
                raise ApiError(
                    hook.code, "", f'admission webhook "{hook.name}" denied the request: {message}'
                )
        if resource is PODS:
            self._quota(obj, namespace_pods)

    def _quota(self, pod: Json, namespace_pods: list[Json]) -> None:
        quota = self.quotas.get(pod["metadata"]["namespace"])
        if quota is None:
            return
        name = pod["metadata"]["name"]
        constrained = [key for key in _CONSTRAINED if key in quota.hard]
        missing = _missing(pod, constrained)
        if missing:
            raise forbidden(PODS, name, f"failed quota: {quota.name}: must specify {missing}")
        requested = pod_usage(pod)
        used: dict[str, Fraction] = {}
        for other in namespace_pods:
            if (other.get("status") or {}).get("phase") in TERMINAL:
                continue
            for key, value in pod_usage(other).items():
                used[key] = used.get(key, Fraction(0)) + value
        exceeded = [
            key
            for key, limit in quota.hard.items()
            if key in requested and used.get(key, Fraction(0)) + requested[key] > limit
        ]
        if exceeded:
            forms = {key: "BinarySI" for key in exceeded if key.endswith("memory")}
            raise forbidden(
                PODS,
                name,
                f"exceeded quota: {quota.name}, "
                f"requested: {_pretty(requested, exceeded, forms)}, "
                f"used: {_pretty(used, exceeded, forms)}, "
                f"limited: {_pretty(quota.hard, exceeded, forms)}",
            )
