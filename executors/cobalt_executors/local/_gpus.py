"""GPUs on this machine, found with ``nvidia-smi`` when it is present."""

from __future__ import annotations

import shutil
import subprocess

from cobalt_common.hardware import gpu_type_from_device_name
from cobalt_executors._inventory import GpuDevice

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
