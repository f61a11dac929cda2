"""The manifests the Kubernetes executor writes: a pilot pod, a Job, and the Secret
that carries an agent's credential.

Every choice here is one the API server or a cluster operator relies on:

- requests equal limits, CPUs in cores or millicores and memory in ``Mi`` (the
  pod's QoS class is Guaranteed, and the memory limit is what cobalt promised);
- GPUs as ``limits: {nvidia.com/gpu: N}``, a node selector on the GPU product
  label (``gpu_types`` maps cobalt's GPU names to the cluster's values) and the
  toleration GPU nodes' taint usually asks for;
- ``restartPolicy: Never``, ``activeDeadlineSeconds`` as a backstop to cobalt's
  own time limit, and for Jobs ``backoffLimit: 0`` (cobalt retries, not the Job
  controller) and ``ttlSecondsAfterFinished``;
- the credential in a Secret, read into the agent's environment: never on a
  command line, where ``kubectl describe pod`` and every process list show it;
- no service account token in the pod unless a service account is named: the
  agent never talks to the Kubernetes API.

Example:
    >>> options = PodOptions.from_options("k8s", {"image": "registry.example/cobalt-worker:1"})
    >>> from cobalt_common.hardware import HardwareSpec
    >>> spec = pod_spec(options, HardwareSpec(cpus=1.5, memory_mb=2048), ["python"], "s", 60)
    >>> spec["containers"][0]["resources"]["limits"]
    {'cpu': '1500m', 'memory': '2048Mi'}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cobalt_common.errors import SpecError
from cobalt_common.hardware import GPU_TYPES, HardwareSpec, parse_memory_mb
from cobalt_executors.kubernetes._names import (
    check_label_key,
    check_label_value,
    check_subdomain,
    cpu_quantity,
    dns_label,
    is_quantity,
    memory_quantity,
)

Manifest = dict[str, Any]

TOKEN_KEY = "token"
TOKEN_VARIABLE = "COBALT_AGENT_TOKEN"
CONTAINER = "agent"
MANAGED_BY = "app.kubernetes.io/managed-by"
EXECUTOR_LABEL = "cobalt.dev/executor"
PILOT_LABEL = "cobalt.dev/pilot"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
GPU_TOLERATION: Manifest = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _strings(value: object, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SpecError(f"{what} must be a table of strings, not {value!r}.")
    return dict(value)


def _names(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{what} must be a list of names, not {value!r}.")
    return tuple(check_subdomain(v, what) for v in value)


@dataclass(frozen=True, slots=True)
class PodOptions:
    """What every pod of one executor shares, checked once when it is configured."""

    executor: str
    namespace: str
    image: str
    image_pull_policy: str = ""
    image_pull_secrets: tuple[str, ...] = ()
    service_account: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    gpu_types: tuple[tuple[str, str], ...] = ()
    gpu_label: str = "nvidia.com/gpu.product"
    gpu_resource: str = "nvidia.com/gpu"
    ttl_after_finished_s: int = 600

    @staticmethod
    def from_options(executor: str, opts: dict[str, Any]) -> PodOptions:
        where = f"executor {executor!r}"
        namespace = check_subdomain(str(opts.get("namespace", "default")), f"{where} namespace")
        image = opts.get("image")
        if not isinstance(image, str) or not image or any(c.isspace() for c in image):
            raise SpecError(
                f'{where} needs image = "...": the worker image its pods run (build it '
                "from the repository's docker/worker.Dockerfile), not {image!r}."
            )
        policy = str(opts.get("image_pull_policy", ""))
        if policy and policy not in PULL_POLICIES:
            raise SpecError(
                f"{where}: image_pull_policy must be one of {', '.join(PULL_POLICIES)}, "
                f"not {policy!r}."
            )
        account = str(opts.get("service_account", ""))
        if account:
            check_subdomain(account, f"{where} service_account")
        labels = _strings(opts.get("labels", {}), f"{where} labels")
        for key, value in labels.items():
            check_label_key(key, f"{where} label")
            check_label_value(value, f"{where} label {key}")
        annotations = _strings(opts.get("annotations", {}), f"{where} annotations")
        for key in annotations:
            check_label_key(key, f"{where} annotation")
        selector = _strings(opts.get("node_selector", {}), f"{where} node_selector")
        for key, value in selector.items():
            check_label_key(key, f"{where} node_selector")
            check_label_value(value, f"{where} node_selector {key}")
        gpu_types = _strings(opts.get("gpu_types", {}), f"{where} gpu_types")
        for name, value in gpu_types.items():
            if name not in GPU_TYPES:
                raise SpecError(
                    f"{where} gpu_types names {name!r}, which is not a cobalt GPU type; "
                    f"known: {', '.join(sorted(GPU_TYPES))}."
                )
            check_label_value(value, f"{where} gpu_types {name}")
        gpu_label = check_label_key(
            str(opts.get("gpu_label", "nvidia.com/gpu.product")), f"{where} gpu_label"
        )
        gpu_resource = check_label_key(
            str(opts.get("gpu_resource", "nvidia.com/gpu")), f"{where} gpu_resource"
        )
        ttl = opts.get("ttl_after_finished_s", 600)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 30 * 86400:
            raise SpecError(
                f"{where}: ttl_after_finished_s must be whole seconds from 0 to 2592000, "
                f"not {ttl!r}."
            )
        return PodOptions(
            executor=executor,
            namespace=namespace,
            image=image,
            image_pull_policy=policy,
            image_pull_secrets=_names(
                opts.get("image_pull_secrets", []), f"{where} image_pull_secrets"
            ),
            service_account=account,
            labels=tuple(sorted(labels.items())),
            annotations=tuple(sorted(annotations.items())),
            node_selector=tuple(sorted(selector.items())),
            gpu_types=tuple(sorted(gpu_types.items())),
            gpu_label=gpu_label,
            gpu_resource=gpu_resource,
            ttl_after_finished_s=ttl,
        )

    @property
    def executor_label(self) -> str:
        return dns_label(self.executor)

    @property
    def selector(self) -> str:
        """The label selector of this executor's pods."""
        return f"{MANAGED_BY}=cobalt,{EXECUTOR_LABEL}={self.executor_label}"

    def name_of(self, pilot_id: str) -> str:
        """The pod, Job and Secret name of a pilot: at most 63 characters, since a
        Job's name becomes its pods' label."""
        return f"cobalt-{dns_label(self.executor, most=40)}-{dns_label(pilot_id, most=16)}"

    def gpu_value(self, gpu: str) -> str | None:
        return dict(self.gpu_types).get(gpu)


def metadata(options: PodOptions, name: str, pilot_id: str) -> Manifest:
    labels = {
        **dict(options.labels),
        "app.kubernetes.io/name": "cobalt-agent",
        MANAGED_BY: "cobalt",
        EXECUTOR_LABEL: options.executor_label,
        PILOT_LABEL: dns_label(pilot_id),
    }
    meta: Manifest = {"name": name, "namespace": options.namespace, "labels": labels}
    annotations = {**dict(options.annotations), "cobalt.dev/executor-name": options.executor}
    meta["annotations"] = annotations
    return meta


def pod_spec(
    options: PodOptions,
    shape: HardwareSpec,
    argv: list[str],
    secret: str,
    deadline_s: int,
) -> Manifest:
    """The pod spec of a pilot of ``shape`` running ``argv``, its credential read
    from Secret ``secret``, ended by Kubernetes ``deadline_s`` after it starts."""
    quantities: dict[str, str] = {
        "cpu": cpu_quantity(shape.cpus),
        "memory": memory_quantity(shape.memory_mb),
    }
    selector = dict(options.node_selector)
    tolerations: list[Manifest] = []
    if shape.gpu:
        quantities[options.gpu_resource] = str(shape.gpus)
        value = options.gpu_value(shape.gpu)
        if value is None:
            raise SpecError(
                f"executor {options.executor!r} has no gpu_types entry for {shape.gpu!r}: add "
                f'{shape.gpu} = "<the value of the {options.gpu_label} label of its nodes>".'
            )
        selector[options.gpu_label] = value
        tolerations.append(dict(GPU_TOLERATION))
    for value in quantities.values():
        if not is_quantity(value):  # cobalt's own writing; a bug if it ever fails
            raise SpecError(f"{value!r} is not a Kubernetes quantity.")
    container: Manifest = {
        "name": CONTAINER,
        "image": options.image,
        "command": argv,
        "env": [
            {
                "name": TOKEN_VARIABLE,
                "valueFrom": {"secretKeyRef": {"name": secret, "key": TOKEN_KEY}},
            }
        ],
        "resources": {"requests": dict(quantities), "limits": dict(quantities)},
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if options.image_pull_policy:
        container["imagePullPolicy"] = options.image_pull_policy
    spec: Manifest = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": max(1, int(deadline_s)),
        "enableServiceLinks": False,
        "automountServiceAccountToken": bool(options.service_account),
        "containers": [container],
    }
    if options.service_account:
        spec["serviceAccountName"] = options.service_account
    if options.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in options.image_pull_secrets]
    if selector:
        spec["nodeSelector"] = selector
    if tolerations:
        spec["tolerations"] = tolerations
    return spec


def pod_manifest(options: PodOptions, pilot_id: str, spec: Manifest) -> Manifest:
    name = options.name_of(pilot_id)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(options, name, pilot_id),
        "spec": spec,
    }


def job_manifest(options: PodOptions, pilot_id: str, spec: Manifest) -> Manifest:
    """A Job of one pod, never retried by Kubernetes (``backoffLimit: 0``: cobalt
    decides retries), removed ``ttl_after_finished_s`` after it ends."""
    name = options.name_of(pilot_id)
    meta = metadata(options, name, pilot_id)
    template_meta = {"labels": meta["labels"], "annotations": meta["annotations"]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": spec["activeDeadlineSeconds"],
            "ttlSecondsAfterFinished": options.ttl_after_finished_s,
            "template": {"metadata": template_meta, "spec": spec},
        },
    }


def secret_manifest(options: PodOptions, pilot_id: str, token: str) -> Manifest:
    name = options.name_of(pilot_id)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(options, name, pilot_id),
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    }


@dataclass(frozen=True, slots=True)
class LargestNode:
    """The ``largest_node`` option (``{cpus = 64, memory = "256GB", gpus = 8}``): the
    biggest pod the cluster can ever hold, counting nodes an autoscaler may add."""

    cpus: float
    memory_mb: int
    gpus: int

    @staticmethod
    def from_option(executor: str, value: object) -> LargestNode | None:
        if value is None:
            return None
        where = f"executor {executor!r} largest_node"
        if not isinstance(value, dict) or not set(value) <= {"cpus", "memory", "gpus"}:
            raise SpecError(f"{where} must be a table of cpus, memory and gpus, not {value!r}.")
        cpus = value.get("cpus", 1 << 20)
        if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not cpus > 0:
            raise SpecError(f"{where}: cpus must be a positive number, not {cpus!r}.")
        memory = parse_memory_mb(value.get("memory", 1 << 40), option=f"{where} memory")
        gpus = value.get("gpus", 0)
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise SpecError(f"{where}: gpus must be a whole number, not {gpus!r}.")
        return LargestNode(float(cpus), memory, gpus)

    def refusal(self, spec: HardwareSpec) -> str:
        """Why no node could hold a pod of ``spec``; "" when one could."""
        if spec.cpus > self.cpus:
            return f"{spec.cpus:g} CPUs is more than the largest node's {self.cpus:g}"
        if spec.memory_mb > self.memory_mb:
            return f"{spec.memory_mb} MB is more than the largest node's {self.memory_mb} MB"
        if spec.gpus > self.gpus:
            return f"{spec.gpus} GPUs is more than the largest node's {self.gpus}"
        return ""
