from __future__ import annotations

import json
from datetime import timedelta

import pytest

from cobalt_common.errors import SpecError
from cobalt_common.hardware import (
    GPU_TYPES,
    HardwareSpec,
    format_duration,
    format_memory,
    gpu_type_from_device_name,
    parse_duration_s,
    parse_gpu_type,
    parse_memory_mb,
)

pytestmark = pytest.mark.unit


def test_catalog_holds_the_common_datacenter_gpus() -> None:
    expected = {
        "h100",
        "h200",
        "b200",
        "a100-80gb",
        "a100-40gb",
        "l40s",
        "l4",
        "t4",
        "a10g",
        "v100",
    }
    assert expected <= set(GPU_TYPES)
    assert GPU_TYPES["h100"].display_name == "H100 80GB"
    assert GPU_TYPES["h100"].memory_gb == 80
    assert GPU_TYPES["a100-40gb"].memory_gb == 40


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("h100", "h100"),
        ("H100", "h100"),
        ("h100-80gb", "h100"),
        ("H100_80GB", "h100"),
        ("a100", "a100-40gb"),
        ("A100 80GB", "a100-80gb"),
        ("a100_40gb", "a100-40gb"),
        ("  l40s ", "l40s"),
        ("T4", "t4"),
    ],
)
def test_gpu_types_parse_to_canonical_names(written: str, canonical: str) -> None:
    assert parse_gpu_type(written) == canonical


def test_unknown_gpu_type_lists_valid_types() -> None:
    with pytest.raises(SpecError) as info:
        parse_gpu_type("rtx9090")
    message = str(info.value)
    assert "gpu='rtx9090'" in message
    assert all(name in message for name in GPU_TYPES)


def test_unknown_gpu_type_suggests_a_close_match() -> None:
    with pytest.raises(SpecError, match='Did you mean "h100"'):
        parse_gpu_type("h1000")


def test_unknown_gpu_type_names_the_given_option() -> None:
    with pytest.raises(SpecError, match="emulate_gpus='x9'"):
        parse_gpu_type("x9", option="emulate_gpus")


def test_gpu_type_must_be_a_string() -> None:
    with pytest.raises(SpecError, match="gpu must be a GPU type name"):
        parse_gpu_type(100)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("device", "canonical"),
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H100 PCIe", "h100"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA A100 80GB PCIe", "a100-80gb"),
        ("NVIDIA L4", "l4"),
        ("Tesla T4", "t4"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA B200", "b200"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA A10G", "a10g"),
        ("Tesla V100-SXM2-16GB", "v100"),
    ],
)
def test_nvidia_smi_device_names_map_to_canonical_types(device: str, canonical: str) -> None:
    assert gpu_type_from_device_name(device) == canonical


@pytest.mark.parametrize("device", ["NVIDIA L40", "NVIDIA GeForce RTX 4090", "NVIDIA A10", ""])
def test_devices_outside_the_catalog_map_to_none(device: str) -> None:
    assert gpu_type_from_device_name(device) is None


@pytest.mark.parametrize(
    ("written", "megabytes"),
    [
        (4096, 4096),
        ("48GB", 48 * 1024),
        ("48 GB", 48 * 1024),
        ("48gb", 48 * 1024),
        ("48G", 48 * 1024),
        ("16GiB", 16 * 1024),
        ("512MB", 512),
        ("512", 512),
        ("1.5TB", 1536 * 1024),
        ("1.5GB", 1536),
        ("0.5MB", 1),
    ],
)
def test_memory_sizes_parse_to_megabytes(written: int | str, megabytes: int) -> None:
    assert parse_memory_mb(written) == megabytes


def test_a_gigabyte_is_1024_megabytes_in_every_spelling() -> None:
    assert parse_memory_mb("1GB") == parse_memory_mb("1GiB") == parse_memory_mb("1024MB") == 1024


@pytest.mark.parametrize(
    "bad", [True, -1, 0, "0GB", "-5GB", "lots", "48 GBs", "48PB", 1.5, None, ""]
)
def test_invalid_memory_is_rejected_with_the_option_and_accepted_forms(bad: object) -> None:
    with pytest.raises(SpecError) as info:
        parse_memory_mb(bad, option="memory")  # type: ignore[arg-type]
    assert f"memory={bad!r}" in str(info.value)
    assert '"48GB"' in str(info.value)


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        (90, 90.0),
        (2.5, 2.5),
        (timedelta(hours=2), 7200.0),
        ("18h", 64800.0),
        ("30 minutes", 1800.0),
        ("30m", 1800.0),
        ("2 days", 172800.0),
        ("90s", 90.0),
        ("90", 90.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("01:30:00", 5400.0),
        ("05:30", 330.0),
        ("1-12:00:00", 129600.0),
    ],
)
def test_durations_parse_to_seconds(written: int | float | str | timedelta, seconds: float) -> None:
    assert parse_duration_s(written) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad", [0, -3, True, "0s", "soon", "1h30", "10 parsecs", "1:75", "", timedelta(0), None]
)
def test_invalid_durations_are_rejected_with_the_option_and_accepted_forms(bad: object) -> None:
    with pytest.raises(SpecError) as info:
        parse_duration_s(bad)  # type: ignore[arg-type]
    assert f"time_limit={bad!r}" in str(info.value)
    assert '"HH:MM:SS"' in str(info.value)


@pytest.mark.parametrize(
    ("megabytes", "text"),
    [(512, "512 MB"), (1024, "1 GB"), (49152, "48 GB"), (1536, "1.5 GB"), (2 * 1024**2, "2 TB")],
)
def test_memory_formats_for_people(megabytes: int, text: str) -> None:
    assert format_memory(megabytes) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250 ms"),
        (2.31, "2.3 s"),
        (5, "5 s"),
        (64800, "18h"),
        (5400, "1h 30m"),
        (90, "1m 30s"),
        (172800, "2d"),
    ],
)
def test_durations_format_for_people(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_hardware_spec_describes_itself_in_one_line() -> None:
    spec = HardwareSpec(gpu="h100", gpus=1, cpus=1, memory_mb=48 * 1024, time_limit_s=18 * 3600)
    assert spec.describe() == "1x H100, 1 CPU, 48 GB, limit 18h"
    assert HardwareSpec(cpus=24).describe() == "24 CPUs"
    assert HardwareSpec(cpus=0).describe() == "no requirements"


def test_hardware_spec_defaults_mean_no_requirement() -> None:
    spec = HardwareSpec()
    assert (spec.gpu, spec.gpus, spec.cpus, spec.memory_mb, spec.time_limit_s) == (
        None,
        0,
        1.0,
        0,
        None,
    )


def test_hardware_spec_round_trips_through_json() -> None:
    spec = HardwareSpec(gpu="a100-80gb", gpus=2, cpus=8.5, memory_mb=1024, time_limit_s=60.0)
    assert HardwareSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_hardware_spec_from_dict_ignores_unknown_keys_and_fills_defaults() -> None:
    assert HardwareSpec.from_dict({"cpus": 2, "future_field": 1}) == HardwareSpec(cpus=2)


@pytest.mark.parametrize(
    "fields",
    [
        {"gpu": "h100", "gpus": 0},
        {"gpu": None, "gpus": 1},
        {"gpu": "A100", "gpus": 1},
        {"cpus": -1},
        {"memory_mb": -1},
        {"time_limit_s": 0},
    ],
)
def test_inconsistent_hardware_specs_are_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(SpecError):
        HardwareSpec(**fields)  # type: ignore[arg-type]


def test_the_hardware_pages_gpu_row_names_every_type_and_every_bare_model_alias() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "hardware.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| `gpu` |"))
    for gpu in GPU_TYPES.values():
        bare = [a for a in gpu.aliases if "-" not in a]  # "a100" alone, not "a100-40g"
        for name in (gpu.name, *bare):
            assert f'`"{name}"`' in row, f"docs/hardware.md's gpu row lacks {name!r}"
