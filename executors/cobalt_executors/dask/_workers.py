"""A Dask worker as the scheduler describes it, and what its agent offers.

The agent on a worker declares the worker's ``nthreads`` as CPUs, its
``memory_limit`` as memory (a worker without a limit leaves the agent to detect
the machine's), and as GPUs the worker's resources that the executor's
``gpu_resources`` table names: ``{h100 = "GPU"}`` turns a worker started with
``--resources GPU=2`` into an agent with two H100s.

Example:
    >>> table = gpu_resources({"L4": "GPU"}, executor="gpus")
    >>> shape = WorkerShape.of(
    ...     "tcp://127.0.0.1:4000",
    ...     {"nthreads": 4, "memory_limit": 8 * 2**30, "resources": {"GPU": 2}},
    ...     table,
    ... )
    >>> shape.cpus, shape.memory_mb, shape.gpus
    (4, 8192, {'l4': 2})
    >>> shape.describe()
    '4 threads, 8192 MB, 2x l4'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cobalt_common.errors import SpecError
from cobalt_common.hardware import HardwareSpec, parse_gpu_type
from cobalt_executors._inventory import GpuDevice, Inventory

_UNLIMITED_MB = 2**40
"""The memory of a worker without a memory limit, for placement checks."""
_RESOURCE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}")


def gpu_resources(value: object, *, executor: str) -> Mapping[str, str]:
    """The ``gpu_resources`` option, checked: cobalt GPU name to Dask resource name."""
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise SpecError(
            f"executor {executor!r}: gpu_resources={value!r} must be a table from cobalt GPU "
            'names to the Dask resources that count them, such as {h100 = "GPU"}.'
        )
    table: dict[str, str] = {}
    for gpu, resource in value.items():
        canonical = parse_gpu_type(str(gpu), option=f"executor {executor!r} gpu_resources key")
        if not isinstance(resource, str) or _RESOURCE.fullmatch(resource) is None:
            raise SpecError(
                f"executor {executor!r}: gpu_resources[{gpu!r}]={resource!r} must be the name "
                "of a Dask worker resource (as in `dask worker --resources GPU=2`)."
            )
        table[canonical] = resource
    if len(set(table.values())) != len(table):
        raise SpecError(
            f"executor {executor!r}: gpu_resources maps two GPU names to one Dask resource; "
            "give each GPU type a resource of its own."
        )
    return MappingProxyType(table)


@dataclass(frozen=True, slots=True)
class WorkerShape:
    """One Dask worker: its address and the hardware its agent declares."""

    address: str
    cpus: int
    memory_mb: int
    """0: the worker has no memory limit, and the agent detects the machine's."""
    gpus: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, address: str, info: Mapping[str, Any], table: Mapping[str, str]) -> WorkerShape:
        """A worker from its entry in ``Client.scheduler_info()["workers"]``."""
        resources = info.get("resources") or {}
        gpus = {
            gpu: int(resources.get(resource, 0))
            for gpu, resource in table.items()
            if int(resources.get(resource, 0)) > 0
        }
        memory = int(info.get("memory_limit") or 0)
        return cls(
            address=address,
            cpus=max(1, int(info.get("nthreads") or 1)),
            memory_mb=memory // 2**20,
            gpus=gpus,
        )

    def inventory(self) -> Inventory:
        """What the worker's agent will offer, before it attaches (a worker without
        a memory limit counts as having as much memory as any task asks)."""
        devices: list[GpuDevice] = []
        for gpu, count in sorted(self.gpus.items()):
            devices += [GpuDevice(len(devices) + i, gpu, emulated=True) for i in range(count)]
        return Inventory(float(self.cpus), self.memory_mb or _UNLIMITED_MB, tuple(devices))

    def fits(self, spec: HardwareSpec) -> bool:
        """Whether the idle worker's agent could run ``spec``."""
        return self.inventory().can_ever_fit(spec)

    def describe(self) -> str:
        """The worker's hardware in words, for messages."""
        memory = f"{self.memory_mb} MB" if self.memory_mb else "no memory limit"
        gpus = "".join(f", {n}x {g}" for g, n in sorted(self.gpus.items()))
        return f"{self.cpus} threads, {memory}{gpus}"
