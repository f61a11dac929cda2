"""Inventory accounting: what an executor has, what is free, what a task got."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from cobalt_common.hardware import HardwareGiven, HardwareSpec, format_memory

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One GPU an executor can hand out."""

    index: int
    type: str
    emulated: bool = False


@dataclass(frozen=True, slots=True)
class Allocation:
    """What one task holds while it runs; released when it ends."""

    cpus: float
    memory_mb: int
    gpus: tuple[GpuDevice, ...] = ()

    def given(self) -> HardwareGiven:
        gpu_type = self.gpus[0].type if self.gpus else None
        return HardwareGiven(
            cpus=self.cpus,
            memory_mb=self.memory_mb,
            gpu=gpu_type,
            gpu_indices=tuple(d.index for d in self.gpus),
            emulated=any(d.emulated for d in self.gpus),
        )


@dataclass(slots=True)
class Inventory:
    """Capacity and free resources of one executor (thread-safe)."""

    cpus: float
    memory_mb: int
    gpus: tuple[GpuDevice, ...] = ()
    _free_cpus: float = field(init=False)
    _free_memory: int = field(init=False)
    _free_gpus: list[GpuDevice] = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._free_cpus = self.cpus
        self._free_memory = self.memory_mb
        self._free_gpus = list(self.gpus)

    def can_ever_fit(self, spec: HardwareSpec) -> bool:
        """Whether the whole, idle executor could run ``spec``."""
        if spec.cpus > self.cpus + _EPS or spec.memory_mb > self.memory_mb:
            return False
        if spec.gpu:
            return sum(1 for d in self.gpus if d.type == spec.gpu) >= spec.gpus
        return True

    def allocate(self, spec: HardwareSpec) -> Allocation | None:
        """Reserves ``spec`` if it fits in what is free now, else returns None."""
        with self._lock:
            if spec.cpus > self._free_cpus + _EPS or spec.memory_mb > self._free_memory:
                return None
            devices: tuple[GpuDevice, ...] = ()
            if spec.gpu and spec.gpus:
                matching = [d for d in self._free_gpus if d.type == spec.gpu]
                if len(matching) < spec.gpus:
                    return None
                devices = tuple(matching[: spec.gpus])
                for d in devices:
                    self._free_gpus.remove(d)
            self._free_cpus -= spec.cpus
            self._free_memory -= spec.memory_mb
            return Allocation(spec.cpus, spec.memory_mb, devices)

    def reserve(self, given: HardwareGiven) -> Allocation | None:
        """Reserves exactly ``given`` (its GPUs by index) if all of it is free now, else
        returns None: the hardware of a task this executor did not start, such as a
        replica that survived a controller restart (see :meth:`Executor.adopt`)."""
        with self._lock:
            if given.cpus > self._free_cpus + _EPS or given.memory_mb > self._free_memory:
                return None
            by_index = {d.index: d for d in self._free_gpus}
            devices = tuple(by_index.get(i) for i in given.gpu_indices)
            if any(d is None or d.type != given.gpu for d in devices):
                return None
            found = tuple(d for d in devices if d is not None)
            for d in found:
                self._free_gpus.remove(d)
            self._free_cpus -= given.cpus
            self._free_memory -= given.memory_mb
            return Allocation(given.cpus, given.memory_mb, found)

    def release(self, allocation: Allocation) -> None:
        with self._lock:
            self._free_cpus = min(self.cpus, self._free_cpus + allocation.cpus)
            self._free_memory = min(self.memory_mb, self._free_memory + allocation.memory_mb)
            self._free_gpus.extend(allocation.gpus)
            self._free_gpus.sort(key=lambda d: d.index)

    @staticmethod
    def combined(parts: list[Inventory]) -> Inventory:
        """A snapshot of several inventories as one (capacity and what is free now),
        for an executor whose room is spread over machines; reserving from it
        reserves nothing on them."""
        gpus = tuple(g for p in parts for g in p.gpus)
        whole = Inventory(sum(p.cpus for p in parts), sum(p.memory_mb for p in parts), gpus)
        free = [p.free_now() for p in parts]
        whole._free_cpus = sum(f[0] for f in free)
        whole._free_memory = sum(f[1] for f in free)
        whole._free_gpus = [g for f in free for g in f[2]]
        return whole

    def free_now(self) -> tuple[float, int, list[GpuDevice]]:
        """CPUs, memory (MB) and GPUs free now."""
        with self._lock:
            return self._free_cpus, self._free_memory, list(self._free_gpus)

    def describe(self, *, free: bool = False) -> str:
        if free:
            cpus, memory, devices = self.free_now()
        else:
            cpus, memory, devices = self.cpus, self.memory_mb, list(self.gpus)
        return describe_hardware(cpus, memory, devices, has_gpus=bool(self.gpus))


def describe_hardware(
    cpus: float | None, memory_mb: int | None, devices: list[GpuDevice], *, has_gpus: bool
) -> str:
    """CPUs, memory and GPUs in words; a part given as None is left out.

    Example:
        >>> describe_hardware(None, 2048, [GpuDevice(0, "h100", True)], has_gpus=True)
        '2 GB, 1x h100 (emulated)'
    """
    parts = []
    if cpus is not None:
        parts.append(f"{cpus:g} CPU")
    if memory_mb is not None:
        parts.append(format_memory(memory_mb))
    by_type: dict[tuple[str, bool], int] = {}
    for d in devices:
        by_type[(d.type, d.emulated)] = by_type.get((d.type, d.emulated), 0) + 1
    for (gpu_type, emulated), count in sorted(by_type.items()):
        parts.append(f"{count}x {gpu_type}" + (" (emulated)" if emulated else ""))
    if not has_gpus:
        parts.append("no GPU")
    return ", ".join(parts)
