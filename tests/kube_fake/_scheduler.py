"""The scheduler's filters and its ``FailedScheduling`` message, for the fake's nodes.

A pod binds to the first node, by name, that passes, in the default profile's order:
TaintToleration (``NoSchedule`` and ``NoExecute`` taints the pod does not tolerate),
NodeAffinity (``nodeSelector`` only; ``affinity`` is not read), NodeResourcesFit (cpu,
memory, ``nvidia.com/gpu`` and any other resource requested, and pods, against the node's
allocatable less the requests of the non-terminal pods bound to it). A pod that fits nowhere
keeps ``PodScheduled: False``, reason ``Unschedulable`` and the real message, e.g.
``0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No
preemption victims found for incoming pod.``. Preemption itself is not done, and scoring
(spreading pods over nodes) is not modelled.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

from ._meta import Json, new_uid, timestamp
from ._podspec import pod_amounts
from ._quantity import parse_quantity

TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True, slots=True)
class NodeShape:
    """A node of the fake cluster: its allocatable cpus, memory (MiB), GPUs
    (``nvidia.com/gpu``), extra labels and taints (``{"key", "value", "effect"}``)."""

    name: str
    cpus: float = 4
    memory_mb: int = 8192
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()


def node_object(shape: NodeShape, kubelet_version: str) -> Json:
    """A Node as a kubelet registers one: capacity equal to allocatable, Ready, address
    127.0.0.1, the well-known labels."""
    cpus = parse_quantity(str(shape.cpus)).canonical()
    resources = {
        "cpu": cpus,
        "memory": f"{shape.memory_mb * 1024}Ki",
        "pods": "110",
        "ephemeral-storage": "100Gi",
    }
    if shape.gpus:
        resources["nvidia.com/gpu"] = str(shape.gpus)
    labels = {
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": shape.name,
        "kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        **shape.labels,
    }
    now = timestamp()
    spec: Json = {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}
    if shape.taints:
        spec["taints"] = [dict(taint) for taint in shape.taints]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": shape.name,
            "uid": new_uid(),
            "creationTimestamp": now,
            "labels": labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": shape.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": new_uid(),
                "containerRuntimeVersion": "containerd://2.1.0",
                "kernelVersion": "6.8.0",
                "kubeProxyVersion": "",
                "kubeletVersion": kubelet_version,
                "machineID": new_uid().replace("-", ""),
                "operatingSystem": "linux",
                "osImage": "Ubuntu 24.04 LTS",
                "systemUUID": new_uid(),
            },
        },
    }


def tolerates(tolerations: list[Json], taint: Json) -> bool:
    for toleration in tolerations:
        effect = toleration.get("effect", "")
        if effect and effect != taint.get("effect"):
            continue
        key = toleration.get("key", "")
        operator = toleration.get("operator", "Equal")
        if not key and operator == "Exists":
            return True
        if key != taint.get("key"):
            continue
        if operator == "Exists" or toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def _reasons(pod: Json, node: Json, used: dict[str, Fraction]) -> tuple[list[str], bool]:
    """Why ``pod`` does not fit ``node`` (empty when it does), and whether preempting other
    pods could help."""
    spec = pod["spec"]
    for taint in node["spec"].get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(
            spec.get("tolerations") or [], taint
        ):
            value = taint.get("value", "")
            return [f"node(s) had untolerated taint {{{taint.get('key', '')}: {value}}}"], False
    labels = node["metadata"].get("labels") or {}
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(key) != value for key, value in selector.items()):
        return ["node(s) didn't match Pod's node affinity/selector"], False
    allocatable = {
        name: parse_quantity(text).value for name, text in node["status"]["allocatable"].items()
    }
    requests = pod_amounts(spec, "requests")
    reasons = []
    if used.get("pods", Fraction(0)) + 1 > allocatable.get("pods", Fraction(0)):
        reasons.append("Too many pods")
    for name in sorted(requests):
        wanted = requests[name]
        if wanted and used.get(name, Fraction(0)) + wanted > allocatable.get(name, Fraction(0)):
            reasons.append(f"Insufficient {name}")
    return reasons, True


def used_on(node_name: str, pods: list[Json]) -> dict[str, Fraction]:
    """The requests of the non-terminal pods bound to a node, and their count as ``pods``."""
    used: dict[str, Fraction] = {"pods": Fraction(0)}
    for pod in pods:
        if pod["spec"].get("nodeName") != node_name:
            continue
        if (pod.get("status") or {}).get("phase") in TERMINAL:
            continue
        used["pods"] += 1
        for name, value in pod_amounts(pod["spec"], "requests").items():
            used[name] = used.get(name, Fraction(0)) + value
    return used


def place(pod: Json, nodes: list[Json], pods: list[Json]) -> tuple[str | None, str]:
    """The node ``pod`` binds to, or None and the scheduler's message."""
    if not nodes:
        return None, "no nodes available to schedule pods"
    counts: Counter[str] = Counter()
    helpful = 0
    for node in nodes:
        name = node["metadata"]["name"]
        reasons, preemptable = _reasons(pod, node, used_on(name, pods))
        if not reasons:
            return name, ""
        counts.update(reasons)
        helpful += preemptable
    total = len(nodes)
    listed = ", ".join(sorted(f"{count} {reason}" for reason, count in counts.items()))
    preemption = []
    if helpful:
        preemption.append(f"{helpful} No preemption victims found for incoming pod")
    if total - helpful:
        preemption.append(f"{total - helpful} Preemption is not helpful for scheduling")
    return None, (
        f"0/{total} nodes are available: {listed}. preemption: 0/{total} nodes are "
        f"available: {', '.join(sorted(preemption))}."
    )
