"""Every manifest the Kubernetes executor writes is valid for the API server.

Each is checked in strict mode (no unknown field) against the official OpenAPI
schema of a pinned Kubernetes version, with ``kubernetes-validate``. That schema
does not check names or quantities (it takes a memory of ``"48GB"`` and a pod named
``"My_Pod"``), so those are checked as the API server checks them, here and in
the executor's own options.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from cobalt_common.errors import SpecError
from cobalt_common.hardware import HardwareSpec
from cobalt_executors.kubernetes._manifests import (
    GPU_TOLERATION,
    LargestNode,
    PodOptions,
    job_manifest,
    pod_manifest,
    pod_spec,
    secret_manifest,
)
from cobalt_executors.kubernetes._names import (
    check_label_key,
    check_label_value,
    check_subdomain,
    cpu_quantity,
    dns_label,
    is_label,
    is_quantity,
    memory_quantity,
)

pytestmark = pytest.mark.unit

KUBERNETES_VERSION = "1.37.0"
"""The schema every manifest is checked against (kubernetes-validate ships it)."""

OPTIONS: dict[str, Any] = {
    "image": "registry.example/cobalt-worker:0.1.0",
    "namespace": "ml-team",
    "image_pull_secrets": ["registry-login"],
    "service_account": "cobalt-agent",
    "labels": {"team": "vision", "example.com/cost-centre": "cc-42"},
    "annotations": {"example.com/owner": "ml platform"},
    "node_selector": {"pool": "batch"},
    "gpu_types": {"h100": "NVIDIA-H100-80GB-HBM3", "l4": "NVIDIA-L4"},
    "image_pull_policy": "IfNotPresent",
}
SHAPES = [
    HardwareSpec(cpus=1, memory_mb=1024, time_limit_s=3600),
    HardwareSpec(cpus=1.5, memory_mb=49152, time_limit_s=64800),
    HardwareSpec(gpu="h100", gpus=8, cpus=96, memory_mb=1_048_576, time_limit_s=86400),
    HardwareSpec(gpu="l4", gpus=1, cpus=0.25, memory_mb=300),
]


def strict(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def manifests(options: PodOptions, shape: HardwareSpec) -> list[dict[str, Any]]:
    argv = ["python", "-m", "cobalt_executors.agent", "--controller", "10.0.0.1:7421"]
    name = options.name_of("p0123456789")
    spec = pod_spec(options, shape, argv, name, 3900)
    return [
        pod_manifest(options, "p0123456789", spec),
        job_manifest(options, "p0123456789", spec),
        secret_manifest(options, "p0123456789", "credential"),
    ]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.describe())
@pytest.mark.parametrize("extra", [False, True], ids=["defaults", "every-option"])
def test_every_manifest_is_valid_in_strict_mode(shape: HardwareSpec, extra: bool) -> None:
    given = OPTIONS if extra else {"image": OPTIONS["image"], "gpu_types": OPTIONS["gpu_types"]}
    options = PodOptions.from_options("GPU_Pool.1", given)
    for manifest in manifests(options, shape):
        strict(manifest)
        meta = manifest["metadata"]
        check_subdomain(meta["name"], "name")
        assert len(meta["name"]) <= 63, "a Job's name becomes a label value"
        for key, value in meta["labels"].items():
            check_label_key(key, "label")
            check_label_value(value, f"label {key}")


def test_strict_validation_catches_what_the_schema_knows() -> None:
    options = PodOptions.from_options("k8s", {"image": "worker:1"})
    (pod, _, _) = manifests(options, SHAPES[0])
    pod["spec"]["containers"][0]["unknownField"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        strict(pod)
    del pod["spec"]["containers"]
    with pytest.raises(kubernetes_validate.ValidationError):
        strict(pod)


def test_requests_equal_limits_in_mi_and_millicores() -> None:
    options = PodOptions.from_options("k8s", {"image": "worker:1", "gpu_types": {"h100": "H"}})
    spec = pod_spec(
        options, HardwareSpec(gpu="h100", gpus=2, cpus=1.5, memory_mb=49152), [], "s", 9
    )
    resources = spec["containers"][0]["resources"]
    assert resources["limits"] == resources["requests"]
    assert resources["limits"] == {"cpu": "1500m", "memory": "49152Mi", "nvidia.com/gpu": "2"}
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "H"}
    assert spec["tolerations"] == [GPU_TOLERATION]
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] == 9


def test_a_job_is_never_retried_by_kubernetes_and_is_collected_after_it_ends() -> None:
    options = PodOptions.from_options("k8s", {"image": "worker:1", "ttl_after_finished_s": 120})
    (_, job, _) = manifests(options, SHAPES[0])
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 120
    assert job["spec"]["activeDeadlineSeconds"] == 3900
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_the_credential_is_in_a_secret_and_never_on_the_command_line() -> None:
    options = PodOptions.from_options("k8s", {"image": "worker:1"})
    (pod, _, secret) = manifests(options, SHAPES[0])
    container = pod["spec"]["containers"][0]
    assert "credential" not in repr(container["command"])
    (env,) = container["env"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "token"}
    assert secret["stringData"] == {"token": "credential"}
    assert pod["spec"]["automountServiceAccountToken"] is False, "the agent needs no API token"


def test_a_service_account_keeps_its_token() -> None:
    options = PodOptions.from_options("k8s", {"image": "worker:1", "service_account": "agent"})
    (pod, _, _) = manifests(options, SHAPES[0])
    assert pod["spec"]["serviceAccountName"] == "agent"
    assert pod["spec"]["automountServiceAccountToken"] is True


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("48Gi", True),
        ("49152Mi", True),
        ("500m", True),
        ("1.5", True),
        ("2", True),
        ("1e3", True),
        ("48GB", False),
        ("48 Gi", False),
        ("Gi", False),
        ("1.5.2", False),
        ("", False),
    ],
)
def test_quantities_are_read_as_the_api_server_reads_them(text: str, ok: bool) -> None:
    assert is_quantity(text) is ok


def test_cobalt_writes_cpus_and_memory_as_quantities() -> None:
    assert cpu_quantity(0.25) == "250m" and cpu_quantity(4) == "4" and cpu_quantity(0.0001) == "1m"
    assert memory_quantity(300) == "300Mi"
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(SpecError):
            cpu_quantity(bad)
    with pytest.raises(SpecError):
        memory_quantity(0)


@pytest.mark.parametrize(
    ("text", "label"),
    [("GPU_Pool.1", "gpu-pool-1"), ("--", "x"), ("a" * 80, "a" * 63), ("Ünïcode", "n-code")],
)
def test_names_become_dns_1123_labels(text: str, label: str) -> None:
    assert dns_label(text) == label and is_label(label)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({}, "needs image"),
        ({"image": "has space:1"}, "needs image"),
        ({"image": "w:1", "namespace": "Not_A_Namespace"}, "not a valid Kubernetes name"),
        ({"image": "w:1", "image_pull_policy": "Sometimes"}, "image_pull_policy"),
        ({"image": "w:1", "labels": {"team": "x" * 64}}, "label value"),
        ({"image": "w:1", "labels": {"bad key!": "x"}}, "Kubernetes key"),
        ({"image": "w:1", "labels": ["team"]}, "table of strings"),
        ({"image": "w:1", "gpu_types": {"h200x": "H"}}, "not a cobalt GPU type"),
        ({"image": "w:1", "gpu_types": {"h100": "NVIDIA H100"}}, "label value"),
        ({"image": "w:1", "image_pull_secrets": "login"}, "list of names"),
        ({"image": "w:1", "image_pull_secrets": ["Login"]}, "not a valid Kubernetes name"),
        ({"image": "w:1", "ttl_after_finished_s": -1}, "ttl_after_finished_s"),
        ({"image": "w:1", "service_account": "a b"}, "not a valid Kubernetes name"),
    ],
)
def test_bad_options_are_refused_with_what_to_write(options: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        PodOptions.from_options("k8s", options)


def test_a_gpu_with_no_gpu_types_entry_says_what_to_add() -> None:
    options = PodOptions.from_options("k8s", {"image": "w:1"})
    with pytest.raises(SpecError, match=r'h100 = "<the value of the nvidia.com/gpu.product'):
        pod_spec(options, HardwareSpec(gpu="h100", gpus=1, memory_mb=1), [], "s", 1)


def test_the_largest_node_refuses_what_no_node_holds() -> None:
    largest = LargestNode.from_option("k8s", {"cpus": 8, "memory": "32GB", "gpus": 2})
    assert largest is not None
    assert largest.refusal(HardwareSpec(cpus=8, memory_mb=32768, gpu="l4", gpus=2)) == ""
    assert "9 CPUs" in largest.refusal(HardwareSpec(cpus=9))
    assert "MB" in largest.refusal(HardwareSpec(memory_mb=32769))
    assert "3 GPUs" in largest.refusal(HardwareSpec(gpu="l4", gpus=3))
    assert LargestNode.from_option("k8s", None) is None
    for bad in ({"cpu": 1}, {"cpus": 0}, {"gpus": 1.5}, {"memory": "lots"}, [8]):
        with pytest.raises(SpecError):
            LargestNode.from_option("k8s", bad)
