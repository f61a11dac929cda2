"""Inventory accounting, and finding GPUs with ``nvidia-smi``.

This machine has no GPU: detection is tested with a fake ``nvidia-smi``, an
executable script that prints what the real one prints.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from cobalt_common.hardware import HardwareSpec
from cobalt_executors import HardwareGiven, Inventory
from cobalt_executors.base import GpuDevice
from cobalt_executors.local import LocalExecutor
from cobalt_executors.local._gpus import detect_gpus, parse_nvidia_smi

pytestmark = pytest.mark.unit

H100_SMI = "0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA H100 80GB HBM3, 81559\n"
A100_80_SMI = "0, NVIDIA A100-SXM4-80GB, 81920\n"
A100_40_SMI = "0, NVIDIA A100-SXM4-40GB, 40960\n"
L4_SMI = "0, NVIDIA L4, 23034\n"
UNKNOWN_SMI = "0, NVIDIA GeForce RTX 4090, 24564\n"


def _inventory(*gpus: GpuDevice, cpus: float = 8, memory_mb: int = 65536) -> Inventory:
    return Inventory(cpus=cpus, memory_mb=memory_mb, gpus=gpus)


def _h100s(count: int, *, emulated: bool = False, start: int = 0) -> tuple[GpuDevice, ...]:
    return tuple(GpuDevice(start + i, "h100", emulated) for i in range(count))


# -- allocation -------------------------------------------------------------------


def test_a_cpu_task_takes_its_cpus_and_memory_until_released() -> None:
    inventory = _inventory(cpus=4, memory_mb=8192)
    allocation = inventory.allocate(HardwareSpec(cpus=3, memory_mb=6144))
    assert allocation is not None
    assert inventory.allocate(HardwareSpec(cpus=2)) is None, "only 1 CPU is free"
    assert inventory.allocate(HardwareSpec(cpus=1, memory_mb=4096)) is None, "only 2 GB are free"
    assert inventory.allocate(HardwareSpec(cpus=1, memory_mb=2048)) is not None
    inventory.release(allocation)
    assert inventory.describe(free=True) == "3 CPU, 6 GB, no GPU"
    assert inventory.allocate(HardwareSpec(cpus=4)) is None, "1 CPU is still taken"
    assert inventory.allocate(HardwareSpec(cpus=3, memory_mb=6144)) is not None


def test_fractional_cpus_add_up_exactly() -> None:
    inventory = _inventory(cpus=1)
    allocations = [inventory.allocate(HardwareSpec(cpus=0.1)) for _ in range(10)]
    assert all(a is not None for a in allocations)
    assert inventory.allocate(HardwareSpec(cpus=0.1)) is None


def test_release_never_frees_more_than_the_capacity() -> None:
    inventory = _inventory(cpus=2, memory_mb=1024)
    allocation = inventory.allocate(HardwareSpec(cpus=2, memory_mb=1024))
    assert allocation is not None
    inventory.release(allocation)
    inventory.release(allocation)
    assert inventory.describe(free=True) == inventory.describe()
    assert inventory.allocate(HardwareSpec(cpus=2.5)) is None


def test_gpu_tasks_get_distinct_devices_of_their_type_lowest_index_first() -> None:
    inventory = _inventory(*_h100s(2), GpuDevice(2, "a100-80gb"))
    first = inventory.allocate(HardwareSpec(gpu="h100", gpus=1))
    second = inventory.allocate(HardwareSpec(gpu="h100", gpus=1))
    assert first is not None and second is not None
    assert first.given().gpu_indices == (0,)
    assert second.given().gpu_indices == (1,)
    assert inventory.allocate(HardwareSpec(gpu="h100", gpus=1)) is None, "both H100s are taken"
    a100 = inventory.allocate(HardwareSpec(gpu="a100-80gb", gpus=1))
    assert a100 is not None and a100.given().gpu_indices == (2,)
    inventory.release(first)
    again = inventory.allocate(HardwareSpec(gpu="h100", gpus=1))
    assert again is not None and again.given().gpu_indices == (0,)


def test_a_multi_gpu_task_waits_until_enough_devices_are_free() -> None:
    inventory = _inventory(*_h100s(4))
    one = inventory.allocate(HardwareSpec(gpu="h100", gpus=1))
    assert one is not None
    assert inventory.allocate(HardwareSpec(gpu="h100", gpus=4)) is None
    three = inventory.allocate(HardwareSpec(gpu="h100", gpus=3))
    assert three is not None and three.given().gpu_indices == (1, 2, 3)
    inventory.release(one)
    inventory.release(three)
    four = inventory.allocate(HardwareSpec(gpu="h100", gpus=4))
    assert four is not None and four.given().gpu_indices == (0, 1, 2, 3)


def test_a_gpu_task_that_fits_no_gpu_takes_no_cpu_either() -> None:
    inventory = _inventory(*_h100s(1), cpus=2)
    assert inventory.allocate(HardwareSpec(gpu="h100", gpus=2, cpus=1)) is None
    assert inventory.allocate(HardwareSpec(cpus=2)) is not None, "nothing was reserved"


def test_what_a_task_was_given_names_the_gpu_type_indices_and_emulation() -> None:
    emulated = _inventory(*_h100s(2, emulated=True, start=3))
    allocation = emulated.allocate(HardwareSpec(gpu="h100", gpus=2, cpus=4, memory_mb=49152))
    assert allocation is not None
    assert allocation.given() == HardwareGiven(
        cpus=4, memory_mb=49152, gpu="h100", gpu_indices=(3, 4), emulated=True
    )
    assert allocation.given().describe() == "2x H100 80GB (emulated), 4 CPU, 48 GB"
    cpu_only = _inventory().allocate(HardwareSpec(cpus=1))
    assert cpu_only is not None
    assert cpu_only.given() == HardwareGiven(cpus=1, memory_mb=0)


def test_real_gpus_are_not_labelled_emulated() -> None:
    inventory = _inventory(*_h100s(1))
    allocation = inventory.allocate(HardwareSpec(gpu="h100", gpus=1))
    assert allocation is not None and not allocation.given().emulated


def test_concurrent_allocations_never_hand_out_a_device_twice() -> None:
    inventory = _inventory(*_h100s(8), cpus=64)
    given: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(4):
            allocation = inventory.allocate(HardwareSpec(gpu="h100", gpus=1))
            if allocation is not None:
                with lock:
                    given.extend(allocation.given().gpu_indices)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(given) == list(range(8))


@pytest.mark.parametrize(
    ("spec", "fits"),
    [
        (HardwareSpec(cpus=8, memory_mb=65536), True),
        (HardwareSpec(cpus=8.5), False),
        (HardwareSpec(cpus=1, memory_mb=65537), False),
        (HardwareSpec(gpu="h100", gpus=2), True),
        (HardwareSpec(gpu="h100", gpus=3), False),
        (HardwareSpec(gpu="a100-80gb", gpus=1), False),
        (HardwareSpec(gpu="b200", gpus=1), False),
        (HardwareSpec(cpus=0), True),
    ],
    ids=[
        "exactly-all",
        "too-many-cpus",
        "too-much-memory",
        "all-gpus",
        "too-many-gpus",
        "other-gpu-type",
        "unknown-gpu-type",
        "nothing",
    ],
)
def test_can_ever_fit_compares_a_spec_with_the_whole_idle_executor(
    spec: HardwareSpec, fits: bool
) -> None:
    inventory = _inventory(*_h100s(2, emulated=True))
    assert inventory.can_ever_fit(spec) is fits


def test_can_ever_fit_ignores_what_is_taken_now() -> None:
    inventory = _inventory(*_h100s(1), cpus=1)
    assert inventory.allocate(HardwareSpec(gpu="h100", gpus=1, cpus=1)) is not None
    assert inventory.can_ever_fit(HardwareSpec(gpu="h100", gpus=1, cpus=1))
    assert inventory.allocate(HardwareSpec(gpu="h100", gpus=1, cpus=1)) is None


def test_describe_counts_gpus_by_type_and_emulation() -> None:
    inventory = _inventory(*_h100s(2, emulated=True), GpuDevice(2, "l4"), cpus=16, memory_mb=262144)
    assert inventory.describe() == "16 CPU, 256 GB, 2x h100 (emulated), 1x l4"
    assert inventory.allocate(HardwareSpec(gpu="h100", gpus=1)) is not None
    assert inventory.describe(free=True) == "15 CPU, 256 GB, 1x h100 (emulated), 1x l4"


# -- nvidia-smi ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (H100_SMI, [GpuDevice(0, "h100"), GpuDevice(1, "h100")]),
        (A100_80_SMI, [GpuDevice(0, "a100-80gb")]),
        (A100_40_SMI, [GpuDevice(0, "a100-40gb")]),
        (L4_SMI, [GpuDevice(0, "l4")]),
        (UNKNOWN_SMI, [GpuDevice(0, "nvidia-geforce-rtx-4090")]),
        ("", []),
    ],
    ids=["h100", "a100-80gb", "a100-40gb", "l4", "unknown-model", "no-gpus"],
)
def test_nvidia_smi_output_parses_into_devices(output: str, expected: list[GpuDevice]) -> None:
    assert parse_nvidia_smi(output) == expected


def test_nvidia_smi_lines_that_are_not_devices_are_skipped() -> None:
    output = (
        "index, name, memory.total [MiB]\n"
        "\n"
        "No devices were found\n"
        "3, NVIDIA L4, 23034\n"
        "  7 ,  NVIDIA H100 PCIe , 81559  \n"
    )
    assert parse_nvidia_smi(output) == [GpuDevice(3, "l4"), GpuDevice(7, "h100")]


def _fake_nvidia_smi(directory: Path, output: str, *, exit_code: int = 0) -> Path:
    """An executable ``nvidia-smi`` that records its arguments and prints ``output``."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "nvidia-smi"
    lines = [
        "#!/bin/sh",
        f'echo "$@" > "{directory}/args"',
        "cat <<'EOF'",
        f"{output}EOF",
        f"exit {exit_code}",
    ]
    script.write_text("\n".join(lines) + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


@pytest.fixture(autouse=True)
def _all_gpus_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_detect_gpus_runs_nvidia_smi_with_the_csv_query(tmp_path: Path) -> None:
    script = _fake_nvidia_smi(tmp_path / "bin", H100_SMI)
    assert detect_gpus(str(script)) == [GpuDevice(0, "h100"), GpuDevice(1, "h100")]
    args = (tmp_path / "bin" / "args").read_text().split()
    assert args == ["--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits"]


FOUR_SMI = "".join(f"{i}, NVIDIA H100 80GB HBM3, 81559, GPU-{i}{i}aa-{i}\n" for i in range(4))


@pytest.mark.parametrize(
    ("cuda_visible", "indices"),
    [
        ("2,3", [2, 3]),  # a Slurm job's GPUs on a node that does not confine them
        ("3,1", [3, 1]),
        ("GPU-11aa-1,GPU-33", [1, 3]),  # UUIDs, or their prefixes, as CUDA takes them
        ("1,7,2", [1]),  # as for CUDA, the list ends at an entry that names no GPU
        ("1,1", [1]),
        ("", []),
        ("-1", []),
        ("NoDevFiles", []),
    ],
)
def test_an_agent_offers_only_the_gpus_cuda_visible_devices_leaves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cuda_visible: str, indices: list[int]
) -> None:
    script = _fake_nvidia_smi(tmp_path / "bin", FOUR_SMI)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", cuda_visible)
    assert [d.index for d in detect_gpus(str(script))] == indices


def test_detect_gpus_finds_nvidia_smi_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_nvidia_smi(tmp_path / "bin", A100_80_SMI + L4_SMI.replace("0,", "1,"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert detect_gpus() == [GpuDevice(0, "a100-80gb"), GpuDevice(1, "l4")]


def test_no_nvidia_smi_means_no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert detect_gpus() == []
    assert detect_gpus(str(tmp_path / "empty" / "nvidia-smi")) == []


def test_a_failing_nvidia_smi_means_no_gpus(tmp_path: Path) -> None:
    script = _fake_nvidia_smi(
        tmp_path / "bin", "NVIDIA-SMI has failed because it couldn't communicate\n", exit_code=9
    )
    assert detect_gpus(str(script)) == []


def test_the_local_executor_numbers_emulated_gpus_after_the_real_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_nvidia_smi(tmp_path / "bin", H100_SMI)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    executor = LocalExecutor("gpu", {"emulate_gpus": {"L4": 2}, "cpus": 4, "memory": "64GB"})
    try:
        inventory = executor.inventory()
        assert inventory.gpus == (
            GpuDevice(0, "h100"),
            GpuDevice(1, "h100"),
            GpuDevice(2, "l4", emulated=True),
            GpuDevice(3, "l4", emulated=True),
        )
        assert inventory.describe() == "4 CPU, 64 GB, 2x h100, 2x l4 (emulated)"
        assert executor.can_ever_run(HardwareSpec(gpu="h100", gpus=2, cpus=4))
        assert not executor.can_ever_run(HardwareSpec(gpu="h100", gpus=3))
    finally:
        executor.teardown()


def test_the_local_executor_without_gpus_or_emulation_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    executor = LocalExecutor("local", {"cpus": 2, "memory": 4096})
    try:
        assert executor.inventory().gpus == ()
        assert executor.inventory().describe() == "2 CPU, 4 GB, no GPU"
    finally:
        executor.teardown()
