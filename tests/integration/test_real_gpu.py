"""The local executor on a machine with real NVIDIA GPUs.

A real controller finds the GPUs with ``nvidia-smi`` and gives each GPU task a
worker whose ``CUDA_VISIBLE_DEVICES`` names its GPU. These tests check that
from inside the task, through the CUDA driver itself (``libcuda``) and, where
it is installed, PyTorch: the task sees exactly the GPU its record says it was
given, identified by its PCI bus id as ``nvidia-smi`` reports it, and a real
GPU that two local executors list runs one task at a time.

Where ``nvidia-smi`` is absent or lists no GPU, every test here skips, in CI
too (``CI=true``): CI machines have no GPU, so it is not a missing service.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import cobalt as ct
from cobalt_common.hardware import HardwareSpec, gpu_type_from_device_name
from cobalt_executors.local._gpus import detect_gpus

pytestmark = pytest.mark.integration

CONFIG_TOML = """\
[controller]
retry_backoff_s = 0.05

[executors.local]
type = "local"
workers = 2
"""
"""One local executor and nothing emulated: every GPU it offers is a real one."""

TWO_EXECUTORS_TOML = """\
[controller]
retry_backoff_s = 0.05

[executors.first]
type = "local"
workers = 1

[executors.second]
type = "local"
workers = 1
emulate_gpus = { h100 = 1 }
"""
"""Two local executors that both list this machine's real GPUs; the second also emulates one."""

_SMI_QUERY = ["--query-gpu=index,name,pci.bus_id", "--format=csv,noheader"]
_CUDA_ERROR_NO_DEVICE = 100
_GPU_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "COBALT_GPU_TYPE",
    "COBALT_GPU_INDICES",
    "COBALT_GPUS_EMULATED",
)


@dataclass(frozen=True)
class SmiGpu:
    """One row of ``nvidia-smi --query-gpu=index,name,pci.bus_id``."""

    index: int
    name: str
    pci_bus_id: str


@dataclass(frozen=True)
class Machine:
    """This machine's GPUs, and the type the tests dispatch to."""

    raw_csv: str
    gpus: tuple[SmiGpu, ...]
    gpu_type: str

    @property
    def of_type(self) -> tuple[SmiGpu, ...]:
        return tuple(g for g in self.gpus if gpu_type_from_device_name(g.name) == self.gpu_type)


def _pci(bus_id: str) -> tuple[int, ...]:
    """A PCI bus id as numbers: nvidia-smi writes ``00000000:18:00.0``, CUDA ``0000:18:00.0``."""
    domain, bus, rest = bus_id.strip().split(":")
    device, function = rest.split(".")
    return tuple(int(part, 16) for part in (domain, bus, device, function))


@pytest.fixture(scope="module")
def machine() -> Machine:
    """The GPUs ``nvidia-smi`` lists; skips the module where there are none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        pytest.skip("no nvidia-smi on PATH: this machine has no NVIDIA GPU to test on")
    try:
        proc = subprocess.run(
            [exe, *_SMI_QUERY], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"nvidia-smi could not be run ({exc}): no usable NVIDIA GPU here")
    if proc.returncode != 0:
        pytest.skip(
            f"nvidia-smi exited {proc.returncode} ({proc.stdout.strip() or proc.stderr.strip()}):"
            " no usable NVIDIA GPU here"
        )
    gpus = []
    for line in proc.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            gpus.append(SmiGpu(int(parts[0]), parts[1], parts[2]))
    if not gpus:
        pytest.skip(f"nvidia-smi lists no GPU (it printed {proc.stdout.strip()!r})")
    known = [t for t in (gpu_type_from_device_name(g.name) for g in gpus) if t]
    if not known:
        pytest.skip(f"no GPU here is of a type cobalt knows: {[g.name for g in gpus]}")
    print(f"nvidia-smi {' '.join(_SMI_QUERY)}:\n{proc.stdout}")
    return Machine(raw_csv=proc.stdout, gpus=tuple(gpus), gpu_type=known[0])


@pytest.fixture(scope="module")
def gpu_controller(machine: Machine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A controller whose one local executor holds this machine's real GPUs."""
    from conftest import ControllerHome

    with ControllerHome(tmp_path_factory.mktemp("cobalt-gpu-home"), CONFIG_TOML).serving() as home:
        yield home


# -- what a task sees, run inside the worker -------------------------------------------


def _cuda_driver_devices() -> dict[str, Any]:
    """The devices the CUDA driver shows this process: names and PCI bus ids."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return {"error": f"no CUDA driver library: {exc}"}
    rc = cuda.cuInit(0)
    if rc == _CUDA_ERROR_NO_DEVICE:
        return {"devices": []}
    if rc != 0:
        return {"error": f"cuInit returned {rc}"}
    count = ctypes.c_int()
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return {"error": "cuDeviceGetCount failed"}
    devices = []
    for ordinal in range(count.value):
        device = ctypes.c_int()
        cuda.cuDeviceGet(ctypes.byref(device), ordinal)
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, len(name), device)
        bus_id = ctypes.create_string_buffer(64)
        cuda.cuDeviceGetPCIBusId(bus_id, len(bus_id), device)
        devices.append({"name": name.value.decode(), "pci_bus_id": bus_id.value.decode()})
    return {"devices": devices}


def _torch_devices() -> dict[str, Any] | None:
    """What PyTorch sees, with a sum computed on the GPU; None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    count = torch.cuda.device_count()
    names = [torch.cuda.get_device_name(i) for i in range(count)]
    total = float(torch.ones(1 << 20, device="cuda").sum().item()) if count else None
    return {"count": count, "names": names, "sum": total}


def what_the_task_sees() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "env": {key: os.environ.get(key) for key in _GPU_ENV},
        "cuda": _cuda_driver_devices(),
        "torch": _torch_devices(),
    }


def hold_the_gpu(seconds: float) -> dict[str, Any]:
    start = time.time()
    time.sleep(seconds)
    return {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}


def _single_task_flow(spec: dict[str, Any]) -> ct.Lattice[[], dict[str, Any]]:
    probe = ct.electron(**spec)(what_the_task_sees)

    @ct.lattice
    def flow() -> dict[str, Any]:
        return probe()

    return flow


# -- tests -----------------------------------------------------------------------------


def test_nvidia_smi_gpus_are_detected_as_real_devices_of_their_type(machine: Machine) -> None:
    devices = detect_gpus()
    print(f"detect_gpus(): {devices}")
    assert [d.index for d in devices] == [g.index for g in machine.gpus]
    for device, gpu in zip(devices, machine.gpus, strict=True):
        assert not device.emulated
        assert device.type == (
            gpu_type_from_device_name(gpu.name) or gpu.name.lower().replace(" ", "-")
        )
    assert sum(d.type == machine.gpu_type for d in devices) == len(machine.of_type)


@pytest.mark.usefixtures("gpu_controller")
def test_each_gpu_task_sees_exactly_the_real_gpu_its_record_names(machine: Machine) -> None:
    gpus = machine.of_type
    probe = ct.electron(gpu=machine.gpu_type)(what_the_task_sees)

    @ct.lattice
    def one_task_per_gpu() -> list[dict[str, Any]]:
        return [probe() for _ in gpus]

    result = ct.dispatch_sync(one_task_per_gpu)()
    assert result.status == ct.Status.COMPLETED, result.error
    print(result.task_table())
    assert "emulated" not in result.task_table()
    by_index = {g.index: g for g in machine.gpus}
    given = []
    for task, seen in zip(result.tasks, result.result, strict=True):
        print(f"{task.name}: given {task.hardware_given}; saw {seen}")
        assert task.executor == "local"
        assert task.hardware_requested == HardwareSpec(gpu=machine.gpu_type, gpus=1, cpus=1.0)
        assert task.hardware_given.gpu == machine.gpu_type
        assert not task.hardware_given.emulated and not task.emulated
        (index,) = task.hardware_given.gpu_indices
        given.append(index)
        assert seen["env"] == {
            "CUDA_VISIBLE_DEVICES": str(index),
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "COBALT_GPU_TYPE": machine.gpu_type,
            "COBALT_GPU_INDICES": str(index),
            "COBALT_GPUS_EMULATED": "0",
        }
        assert "error" not in seen["cuda"], seen["cuda"]
        (device,) = seen["cuda"]["devices"]
        assert _pci(device["pci_bus_id"]) == _pci(by_index[index].pci_bus_id), (
            f"the task was given GPU {index} ({by_index[index].pci_bus_id}) "
            f"but CUDA shows it {device['pci_bus_id']}"
        )
        assert device["name"] == by_index[index].name
        if seen["torch"] is not None:
            assert seen["torch"] == {"count": 1, "names": [device["name"]], "sum": float(1 << 20)}
    assert sorted(given) == sorted(g.index for g in gpus)


@pytest.mark.usefixtures("gpu_controller")
def test_a_gpu_worker_stays_warm_for_the_next_task_on_its_gpu(machine: Machine) -> None:
    flow = _single_task_flow({"gpu": machine.gpu_type})
    first, second = ct.dispatch_sync(flow)(), ct.dispatch_sync(flow)()
    assert first.status == second.status == ct.Status.COMPLETED, first.error or second.error
    if first.tasks[0].hardware_given == second.tasks[0].hardware_given:
        assert first.result["pid"] == second.result["pid"], "no new interpreter per task"


@pytest.mark.usefixtures("gpu_controller")
def test_a_cpu_task_sees_no_gpu(machine: Machine) -> None:
    result = ct.dispatch_sync(_single_task_flow({}))()
    assert result.status == ct.Status.COMPLETED, result.error
    seen = result.result
    print(f"CPU task saw {seen}")
    assert result.tasks[0].hardware_given.gpu is None
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == ""
    assert seen["env"]["COBALT_GPU_TYPE"] is None
    assert seen["cuda"] == {"devices": []}
    if seen["torch"] is not None:
        assert seen["torch"]["count"] == 0


@pytest.mark.usefixtures("gpu_controller")
def test_more_gpus_than_the_machine_has_are_refused_at_dispatch(machine: Machine) -> None:
    count = len(machine.of_type)
    flow = _single_task_flow({"gpu": machine.gpu_type, "gpus": count + 1})
    with pytest.raises(ct.UnsatisfiableError) as info:
        ct.dispatch(flow)()
    message = str(info.value)
    print(message)
    asked = HardwareSpec(gpu=machine.gpu_type, gpus=count + 1, cpus=1.0).describe()
    assert asked.split(",")[0] in message
    assert f"{count}x {machine.gpu_type}" in message, "the executor lists its real GPUs"
    assert f"{count}x {machine.gpu_type} (emulated)" not in message


def test_a_real_gpu_listed_by_two_executors_runs_one_task_at_a_time(
    machine: Machine, make_controller_home: Callable[..., Any]
) -> None:
    home = make_controller_home(TWO_EXECUTORS_TOML)
    home.start()
    real = {g.index for g in machine.gpus}
    hold = ct.electron(gpu=machine.gpu_type)(hold_the_gpu)
    tasks = 2 * len(machine.of_type)

    @ct.lattice
    def more_tasks_than_gpus() -> list[dict[str, Any]]:
        return [hold(1.0) for _ in range(tasks)]

    result = ct.dispatch_sync(more_tasks_than_gpus)()
    assert result.status == ct.Status.COMPLETED, result.error
    print(result.task_table())
    spans: dict[int, list[tuple[float, float, str]]] = {}
    for task, seen in zip(result.tasks, result.result, strict=True):
        given = task.hardware_given
        if given.emulated:
            assert seen["visible"] == ""
            continue
        (index,) = given.gpu_indices
        assert index in real and seen["visible"] == str(index)
        spans.setdefault(index, []).append((seen["start"], seen["end"], task.executor))
    for index, held in spans.items():
        held.sort()
        for (_, end, first), (start, _, second) in itertools.pairwise(held):
            assert end <= start, f"GPU {index} ran tasks on {first} and {second} at once"
