"""Ray nodes as the agents cobalt starts on them.

A Ray node advertises resources: ``CPU``, ``memory`` (bytes), ``GPU`` with an
``accelerator_type:<TYPE>`` marker that Ray sets from the GPUs it detects, and
any custom resources its ``ray start --resources`` declared. The Ray executor
starts one agent per node that holds all of its CPUs, its memory and its GPUs,
and this module says what that agent asks Ray for and offers cobalt.

GPUs come from the executor's ``gpu_resources`` table, cobalt GPU name to Ray
resource name:

- ``"GPU"``: Ray's own GPUs (real devices; the agent sees those Ray gives it in
  ``CUDA_VISIBLE_DEVICES``).
- any other name (``"GPU_L4"``): a custom resource counting GPUs, as clusters
  declare GPUs that Ray does not detect, or stand-ins on machines without any.
  The agent offers them as emulated GPUs of that name.

A GPU the table does not name is found as Ray finds it: ``GPU`` on a node whose
``accelerator_type:<NAME>`` marker matches the cobalt name (``h100`` matches
``accelerator_type:H100``).

Example:
    >>> table = gpu_resources({"l4": "GPU_L4"})
    >>> shape = NodeShape.of("n1", {"CPU": 4.0, "memory": 8 * 2**30, "GPU_L4": 2.0}, table)
    >>> shape.describe(), shape.ray_resources()
    ('4 CPUs, 8192 MB, 2 x l4 (emulated)', {'GPU_L4': 2.0})
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cobalt_common.errors import SpecError
from cobalt_common.hardware import HardwareSpec, parse_gpu_type

__all__ = ["NodeShape", "gpu_resources"]

RAY_GPU = "GPU"
ACCELERATOR = "accelerator_type:"
_RESOURCE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")


def gpu_resources(value: object) -> Mapping[str, str]:
    """The ``gpu_resources`` option checked: cobalt GPU names to Ray resource names."""
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise SpecError(
            f"Ray executor option gpu_resources={value!r} must be a table from cobalt GPU names "
            'to Ray resource names, such as {h100 = "GPU", l4 = "GPU_L4"}.'
        )
    table: dict[str, str] = {}
    for gpu, resource in value.items():
        name = parse_gpu_type(gpu, option="gpu_resources key")
        if not isinstance(resource, str) or _RESOURCE.fullmatch(resource) is None:
            raise SpecError(
                f"Ray executor option gpu_resources[{gpu!r}]={resource!r} must be a Ray "
                'resource name: "GPU" for Ray\'s own GPUs, or a custom resource such as "GPU_L4".'
            )
        if resource in ("CPU", "memory", "object_store_memory"):
            raise SpecError(f"gpu_resources[{gpu!r}] cannot be Ray's {resource!r} resource.")
        table[name] = resource
    return MappingProxyType(table)


@dataclass(frozen=True, slots=True)
class NodeShape:
    """What one Ray node's agent holds and offers."""

    node_id: str
    cpus: float
    memory_mb: int
    gpu: str | None = None
    gpus: int = 0
    gpu_resource: str = ""
    """The Ray resource the GPUs are held as ("" without GPUs)."""

    @staticmethod
    def of(node_id: str, resources: Mapping[str, float], table: Mapping[str, str]) -> NodeShape:
        """The agent of a node with ``resources`` (Ray's totals), under ``table``."""
        cpus = float(resources.get("CPU", 0.0))
        memory_mb = int(float(resources.get("memory", 0.0)) // 2**20)
        for gpu, resource in table.items():
            count = int(resources.get(resource, 0.0))
            if count >= 1:
                return NodeShape(node_id, cpus, memory_mb, gpu, count, resource)
        count = int(resources.get(RAY_GPU, 0.0))
        if count >= 1:
            for key in sorted(resources):  # a "GPU" the table maps was found above
                gpu = key[len(ACCELERATOR) :].lower()
                if key.startswith(ACCELERATOR) and gpu:
                    return NodeShape(node_id, cpus, memory_mb, gpu, count, RAY_GPU)
        return NodeShape(node_id, cpus, memory_mb)

    @property
    def emulated(self) -> bool:
        """Whether the GPUs are a custom resource, which the agent offers as emulated."""
        return bool(self.gpu) and self.gpu_resource != RAY_GPU

    def ray_resources(self) -> dict[str, float]:
        """The custom resources the agent's actor holds (CPUs, memory and Ray's
        GPUs are asked for by their own actor options)."""
        return {self.gpu_resource: float(self.gpus)} if self.emulated else {}

    def share(self, parts: int) -> NodeShape:
        """One of ``parts`` equal agents of this node: a share of its CPUs, memory
        and GPUs, the GPUs in whole devices (none when fewer than ``parts``).

        Example:
            >>> NodeShape("n", 8.0, 16384, "l4", 2, "GPU_L4").share(2).describe()
            '4 CPUs, 8192 MB, 1 x l4 (emulated)'
        """
        if parts <= 1:
            return self
        gpus = self.gpus // parts
        return NodeShape(
            self.node_id,
            self.cpus / parts,
            self.memory_mb // parts,
            self.gpu if gpus else None,
            gpus,
            self.gpu_resource if gpus else "",
        )

    def covers(self, spec: HardwareSpec) -> bool:
        """Whether this node's agent could ever run ``spec``."""
        if spec.cpus > self.cpus + 1e-9 or spec.memory_mb > self.memory_mb:
            return False
        return not spec.gpu or (spec.gpu == self.gpu and spec.gpus <= self.gpus)

    def describe(self) -> str:
        words = f"{self.cpus:g} CPUs, {self.memory_mb} MB"
        if self.gpu:
            words += f", {self.gpus} x {self.gpu}" + (" (emulated)" if self.emulated else "")
        return words
