"""GPUs on this machine, found with ``nvidia-smi`` when it is present."""

from __future__ import annotations

import os
import shutil
import subprocess

from cobalt_common.hardware import gpu_type_from_device_name
from cobalt_executors._inventory import GpuDevice

_QUERY = ["--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits"]


def _rows(output: str) -> list[tuple[GpuDevice, str]]:
    """Each GPU of ``nvidia-smi --query-gpu=index,name,...`` CSV output, with its
    UUID when the query asked for one (the fourth column)."""
    rows: list[tuple[GpuDevice, str]] = []
    for line in output.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        name = parts[1]
        gpu_type = gpu_type_from_device_name(name) or name.lower().replace(" ", "-")
        uuid = parts[3] if len(parts) > 3 else ""
        rows.append((GpuDevice(index=int(parts[0]), type=gpu_type), uuid))
    return rows


def parse_nvidia_smi(output: str) -> list[GpuDevice]:
    """Parses ``nvidia-smi --query-gpu=index,name,memory.total[,uuid]`` CSV output.

    GPUs whose name cobalt does not know are listed under their own lowercased
    name, so they are still scheduled for tasks that ask for that exact name.

    Example:
        >>> parse_nvidia_smi("0, NVIDIA H100 80GB HBM3, 81559\\n")
        [GpuDevice(index=0, type='h100', emulated=False)]
    """
    return [device for device, _ in _rows(output)]


def visible(rows: list[tuple[GpuDevice, str]], cuda_visible: str | None) -> list[GpuDevice]:
    """The GPUs that ``CUDA_VISIBLE_DEVICES`` leaves this process: all when it is
    unset. Its entries are nvidia-smi indices or GPU UUIDs (a prefix will do, as
    for CUDA); as CUDA does, the list ends at the first entry that names no GPU
    of this machine, so ``""``, ``-1`` and Slurm's ``NoDevFiles`` leave none.

    This is how an agent in a Slurm job on a node that does not confine jobs to
    their GPUs offers only the GPUs of its job.

    Example:
        >>> rows = [(GpuDevice(0, "h100"), "GPU-aa"), (GpuDevice(1, "h100"), "GPU-bb")]
        >>> [d.index for d in visible(rows, "1")], [d.index for d in visible(rows, "GPU-a")]
        ([1], [0])
    """
    if cuda_visible is None:
        return [device for device, _ in rows]
    chosen: list[GpuDevice] = []
    for entry in (e.strip() for e in cuda_visible.split(",")):
        if entry.isdigit():
            found = next((d for d, _ in rows if d.index == int(entry)), None)
        elif entry.startswith("GPU-"):
            found = next((d for d, uuid in rows if uuid.startswith(entry)), None)
        else:
            found = None
        if found is None or found in chosen:
            break
        chosen.append(found)
    return chosen


def detect_gpus(nvidia_smi: str | None = None) -> list[GpuDevice]:
    """This machine's GPUs that this process may use (``CUDA_VISIBLE_DEVICES``, see
    :func:`visible`); an empty list when there is no working nvidia-smi."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, *_QUERY], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return visible(_rows(out.stdout), os.environ.get("CUDA_VISIBLE_DEVICES"))
