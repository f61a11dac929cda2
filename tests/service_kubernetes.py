"""A Kubernetes cluster for the Kubernetes executor's tests: the in-process fake API
server (``tests/kube_fake``), whose pods run as local processes, served to the real
``kubernetes`` client. No real API server can run where the tests run; the docs
(docs/executors-kubernetes.md) say what the fake does and does not mirror.

The cluster has one node of the executor contract's size (4 CPUs, 8192 MiB, two
GPUs labelled as L4s, tainted as GPU nodes usually are) and one pullable image.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kube_fake import FakeKubernetes, NodeShape

IMAGE = "registry.example/cobalt-worker:test"
NAMESPACE = "cobalt"
L4_LABEL = "NVIDIA-L4"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
NODE = NodeShape(
    "gpu-node-1",
    cpus=4,
    memory_mb=8192,
    gpus=2,
    labels={"nvidia.com/gpu.product": L4_LABEL},
    taints=(GPU_TAINT,),
)
KUBERNETES_VERSION = "1.37.0"


def fake_cluster(root: Path, node: NodeShape | None = NODE) -> FakeKubernetes:
    return FakeKubernetes(node=node, images={IMAGE}, root=root, grace_cap_s=2.0)


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[FakeKubernetes]:
    """The GPU node (tainted: only GPU pods tolerate it) and a small CPU node."""
    with fake_cluster(tmp_path / "cluster") as fake:
        fake.add_node("cpu-node-1", cpus=2, memory_mb=4096)
        yield fake
        check_manifests(fake)


def kube_options(fake: FakeKubernetes, home: Path, **overrides: Any) -> dict[str, Any]:
    """A Kubernetes executor's options for ``fake``: its kubeconfig, the test image,
    this interpreter as the image's Python, L4s that the agent emulates."""
    options: dict[str, Any] = {
        "kubeconfig": str(fake.kubeconfig(home / "kubeconfig", namespace=NAMESPACE)),
        "namespace": NAMESPACE,
        "image": IMAGE,
        "python": sys.executable,
        "gpu_types": {"l4": L4_LABEL},
        "emulate_gpus": True,
        "largest_node": {"cpus": 4, "memory": "8GB", "gpus": 2},
    }
    options.update(overrides)
    return options


def check_manifests(fake: FakeKubernetes) -> None:
    """Every pod, Job and Secret the executor sent is valid in strict mode against
    the pinned Kubernetes schema."""
    for request in fake.requests:
        if request.method == "POST" and isinstance(request.body, dict):
            kubernetes_validate.validate(request.body, KUBERNETES_VERSION, strict=True)
