"""GPUs on this machine, found with ``nvidia-smi`` when it is present."""

from __future__ import annotations

import shutil
import subprocess
import threading

from cobalt_common.hardware import HardwareSpec, gpu_type_from_device_name
from cobalt_executors._inventory import Allocation, GpuDevice, Inventory

_QUERY = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]


def parse_nvidia_smi(output: str) -> list[GpuDevice]:
    """Parses ``nvidia-smi --query-gpu=index,name,memory.total`` CSV output.

    GPUs whose name cobalt does not know are listed under their own lowercased
    name, so they are still scheduled for tasks that ask for that exact name.

    Example:
        >>> parse_nvidia_smi("0, NVIDIA H100 80GB HBM3, 81559\\n")
        [GpuDevice(index=0, type='h100', emulated=False)]
    """
    devices: list[GpuDevice] = []
    for line in output.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        name = parts[1]
        gpu_type = gpu_type_from_device_name(name) or name.lower().replace(" ", "-")
        devices.append(GpuDevice(index=int(parts[0]), type=gpu_type))
    return devices


def detect_gpus(nvidia_smi: str | None = None) -> list[GpuDevice]:
    """This machine's GPUs; an empty list when there is no working nvidia-smi."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, *_QUERY], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(out.stdout)


_machine_lock = threading.Lock()
_real_gpus_in_use: set[int] = set()
"""This machine's real GPUs that a task holds, by index, over every local executor."""


class LocalInventory(Inventory):
    """An inventory whose real GPUs are shared with the other local executors of the process.

    Every local executor finds all of the machine's GPUs, so two of them (the
    default one and one that emulates GPUs beside the real ones, say) would
    otherwise each give GPU 0 to a task at the same time. A real GPU goes to one
    task at a time, whichever executor places it; emulated GPUs are each
    executor's own.
    """

    def allocate(self, spec: HardwareSpec) -> Allocation | None:
        with _machine_lock:
            with self._lock:
                taken = [
                    d for d in self._free_gpus if not d.emulated and d.index in _real_gpus_in_use
                ]
                for device in taken:
                    self._free_gpus.remove(device)
            try:
                allocation = super().allocate(spec)
            finally:
                with self._lock:
                    self._free_gpus.extend(taken)
                    self._free_gpus.sort(key=lambda d: d.index)
            if allocation is not None:
                _real_gpus_in_use.update(d.index for d in allocation.gpus if not d.emulated)
            return allocation

    def release(self, allocation: Allocation) -> None:
        with _machine_lock:
            super().release(allocation)
            _real_gpus_in_use.difference_update(d.index for d in allocation.gpus if not d.emulated)
