"""What a replica reports to the autoscaler: CPU and GPU utilization.

CPU utilization is the process's CPU time over wall time since the last
reading, divided by the CPUs it was given. GPU utilization comes from
``nvidia-smi`` for the replica's ``CUDA_VISIBLE_DEVICES``, read at most once a
second; it is ``None`` without GPUs, with emulated GPUs, or when
``nvidia-smi`` cannot be run.

Example:
    >>> meter = UsageMeter(cpus=2)
    >>> 0.0 <= meter.cpu_utilization() <= 1.0
    True
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

_GPU_CACHE_S = 1.0


class UsageMeter:
    """Utilization readings for one replica process.

    Args:
        cpus: the CPUs allotted to the replica (readings are a share of them).
    """

    def __init__(self, cpus: float) -> None:
        self.cpus = cpus if cpus > 0 else 1.0
        self._cpu_at = (time.monotonic(), time.process_time())
        self._gpu: tuple[float, float | None] | None = None

    def cpu_utilization(self) -> float:
        """Share of the allotted CPUs used since the previous call (0 to 1)."""
        wall, cpu = time.monotonic(), time.process_time()
        last_wall, last_cpu = self._cpu_at
        self._cpu_at = (wall, cpu)
        if wall <= last_wall:
            return 0.0
        return max(0.0, min(1.0, (cpu - last_cpu) / (wall - last_wall) / self.cpus))

    async def gpu_utilization(self) -> float | None:
        """Mean utilization of the replica's GPUs (0 to 1), or None when there is none to read."""
        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
        if not devices or os.environ.get("COBALT_GPUS_EMULATED") == "1":
            return None
        now = time.monotonic()
        if self._gpu is not None and now - self._gpu[0] < _GPU_CACHE_S:
            return self._gpu[1]
        value = await asyncio.to_thread(read_nvidia_smi, devices)
        self._gpu = (time.monotonic(), value)
        return value


def read_nvidia_smi(devices: str) -> float | None:
    """``nvidia-smi``'s utilization of ``devices`` (comma-separated), averaged, as 0 to 1."""
    command = [
        "nvidia-smi",
        "--query-gpu=utilization.gpu",
        "--format=csv,noheader,nounits",
        "-i",
        devices,
    ]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=5, check=True).stdout
        values = [float(line) for line in out.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return max(0.0, min(1.0, sum(values) / len(values) / 100)) if values else None
