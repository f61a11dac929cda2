"""A local executor's inventory: its own limits, over the machine's shared ones."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from cobalt_common.hardware import HardwareGiven, HardwareSpec
from cobalt_executors._inventory import Allocation, GpuDevice, Inventory
from cobalt_executors._machine import Machine

_machine_lock = threading.Lock()
_real_gpus_in_use: set[int] = set()
"""This machine's real GPUs that a task holds, by index, over every local executor."""


@dataclass(slots=True)
class LocalInventory(Inventory):
    """An inventory whose real GPUs, CPUs and memory belong to the machine.

    Every local executor finds all of the machine's GPUs, so two of them (the
    default one and one that emulates GPUs beside the real ones, say) would
    otherwise each give GPU 0 to a task at the same time. A real GPU goes to one
    task at a time, whichever executor places it; emulated GPUs are each
    executor's own.

    CPUs and memory work the same way once the executor has joined a
    :class:`~cobalt_executors._machine.Machine`: a task needs room both in
    this executor's own limits and in the machine, which all local executors
    of the controller share.
    """

    machine: Machine | None = None

    def _share(self, allocation: Allocation) -> tuple[float, float]:
        assert self.machine is not None
        return self.machine.share(
            allocation.cpus, allocation.memory_mb, of=(self.cpus, self.memory_mb)
        )

    def allocate(self, spec: HardwareSpec) -> Allocation | None:
        with _machine_lock:
            with self._lock:
                taken = [
                    d for d in self._free_gpus if not d.emulated and d.index in _real_gpus_in_use
                ]
                for device in taken:
                    self._free_gpus.remove(device)
            try:
                allocation = Inventory.allocate(self, spec)
            finally:
                with self._lock:
                    self._free_gpus.extend(taken)
                    self._free_gpus.sort(key=lambda d: d.index)
            return self._claim(allocation)

    def reserve(self, given: HardwareGiven) -> Allocation | None:
        """Reserves exactly ``given``, in this executor and in the machine; None when a
        part of it is not free (a real GPU another executor's task holds, say)."""
        with _machine_lock:
            real = {d.index for d in self.gpus if not d.emulated}
            if any(i in real and i in _real_gpus_in_use for i in given.gpu_indices):
                return None
            allocation = Inventory.reserve(self, given)
            return self._claim(allocation)

    def _claim(self, allocation: Allocation | None) -> Allocation | None:
        """Takes an allocation's share of the machine and its real GPUs (under the
        machine lock); gives it back and returns None when the machine lacks room."""
        if allocation is None:
            return None
        if self.machine is not None and not self.machine.take(*self._share(allocation)):
            Inventory.release(self, allocation)
            return None
        _real_gpus_in_use.update(d.index for d in allocation.gpus if not d.emulated)
        return allocation

    def release(self, allocation: Allocation) -> None:
        with _machine_lock:
            Inventory.release(self, allocation)
            if self.machine is not None:
                self.machine.give(*self._share(allocation))
            _real_gpus_in_use.difference_update(d.index for d in allocation.gpus if not d.emulated)

    def free_now(self) -> tuple[float, int, list[GpuDevice]]:
        """What a task could get here now: within this executor's limits, what
        the machine has free, and no real GPU that another executor's task holds."""
        cpus, memory, devices = Inventory.free_now(self)
        with _machine_lock:
            devices = [d for d in devices if d.emulated or d.index not in _real_gpus_in_use]
        if self.machine is not None:
            machine_cpus, machine_memory = self.machine.free()
            cpu_scale, memory_scale = self.machine.share(1.0, 1.0, of=(self.cpus, self.memory_mb))
            cpus = min(cpus, machine_cpus / cpu_scale)
            memory = min(memory, int(machine_memory / memory_scale))
        return cpus, memory, devices
