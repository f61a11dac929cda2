"""The hardware vocabulary shared by the SDK, the controller and the workers.

GPU types, memory sizes and durations are written by users as short strings
(``"h100"``, ``"48GB"``, ``"18h"``) and parsed here, once, into canonical
values: a lowercase GPU type name, whole megabytes and seconds.

Memory units are binary everywhere in cobalt: ``1 GB = 1024 MB`` and
``1 TB = 1024 GB``, so ``"16GB"`` and ``"16GiB"`` are the same size.

Example:
    >>> parse_gpu_type("A100")
    'a100-40gb'
    >>> parse_memory_mb("1.5GB"), parse_duration_s("1h30m")
    (1536, 5400.0)
    >>> HardwareSpec(gpu="h100", gpus=1, cpus=24, memory_mb=49152, time_limit_s=64800).describe()
    '1x H100, 24 CPUs, 48 GB, limit 18h'
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from cobalt_common.errors import SpecError

MemoryLike = int | str
"""A memory size: an ``int`` of megabytes or a string such as ``"48GB"``."""

DurationLike = int | float | str | timedelta
"""A duration: seconds, a ``timedelta`` or a string such as ``"18h"``."""


@dataclass(frozen=True, slots=True)
class GpuType:
    """One GPU model of the catalog.

    Attributes:
        name: the canonical lowercase name, for example ``"a100-80gb"``.
        label: the short name shown in task specs, for example ``"A100 80GB"``.
        display_name: the full name with memory, for example ``"H100 80GB"``.
        memory_gb: the GPU's memory in GB.
        aliases: other accepted spellings (normalized, lowercase).
    """

    name: str
    label: str
    display_name: str
    memory_gb: int
    aliases: tuple[str, ...] = ()


_CATALOG = (
    GpuType("h100", "H100", "H100 80GB", 80, ("h100-80gb", "h100-sxm", "h100-pcie")),
    GpuType("h200", "H200", "H200 141GB", 141, ("h200-141gb",)),
    GpuType("b200", "B200", "B200 192GB", 192, ("b200-192gb",)),
    GpuType("a100-80gb", "A100 80GB", "A100 80GB", 80, ("a100-80g", "a100-sxm4-80gb")),
    GpuType("a100-40gb", "A100 40GB", "A100 40GB", 40, ("a100", "a100-40g", "a100-sxm4-40gb")),
    GpuType("l40s", "L40S", "L40S 48GB", 48, ("l40s-48gb",)),
    GpuType("l4", "L4", "L4 24GB", 24, ("l4-24gb",)),
    GpuType("t4", "T4", "T4 16GB", 16, ("t4-16gb",)),
    GpuType("a10g", "A10G", "A10G 24GB", 24, ("a10g-24gb",)),
    GpuType("v100", "V100", "V100 16GB", 16, ("v100-16gb", "v100-32gb")),
)

GPU_TYPES: Mapping[str, GpuType] = MappingProxyType({gpu.name: gpu for gpu in _CATALOG})
"""The GPU catalog, keyed by canonical name."""

_ALIASES: Mapping[str, str] = MappingProxyType(
    {alias: gpu.name for gpu in _CATALOG for alias in (gpu.name, *gpu.aliases)}
)


def _normalize_gpu(value: str) -> str:
    name = re.sub(r"[\s_]+", "-", value.strip().lower())
    return name.removeprefix("nvidia-")


def parse_gpu_type(value: str, *, option: str = "gpu") -> str:
    """Return the canonical name of a GPU type.

    Case is ignored, and ``_`` or spaces may stand for ``-``.

    Raises:
        SpecError: ``value`` is not a GPU type of :data:`GPU_TYPES`; the
            message lists the valid types and suggests a close match.

    Example:
        >>> parse_gpu_type("H100_80GB")
        'h100'
    """
    if not isinstance(value, str):
        raise SpecError(f'{option} must be a GPU type name such as "h100", got {value!r}.')
    canonical = _ALIASES.get(_normalize_gpu(value))
    if canonical is not None:
        return canonical
    close = difflib.get_close_matches(_normalize_gpu(value), list(_ALIASES), n=1)
    hint = f' Did you mean "{_ALIASES[close[0]]}"?' if close else ""
    raise SpecError(
        f"{option}={value!r} is not a known GPU type.{hint} Valid types: {', '.join(GPU_TYPES)}."
    )


_DEVICE_MODELS = {"h100", "h200", "b200", "a100", "l40s", "l4", "t4", "a10g", "v100"}


def gpu_type_from_device_name(name: str) -> str | None:
    """Map a device name reported by ``nvidia-smi`` to a canonical GPU type.

    Returns ``None`` for a device outside the catalog.

    Example:
        >>> gpu_type_from_device_name("NVIDIA A100-SXM4-80GB")
        'a100-80gb'
        >>> gpu_type_from_device_name("Tesla T4"), gpu_type_from_device_name("NVIDIA L40")
        ('t4', None)
    """
    tokens = re.split(r"[\s\-_]+", name.strip().lower())
    model = next((token for token in tokens if token in _DEVICE_MODELS), None)
    if model == "a100":
        return "a100-80gb" if "80gb" in tokens else "a100-40gb"
    return model


_MEMORY_UNITS_MB = {
    "": 1,
    **dict.fromkeys(("m", "mb", "mib"), 1),
    **dict.fromkeys(("g", "gb", "gib"), 1024),
    **dict.fromkeys(("t", "tb", "tib"), 1024 * 1024),
}
_NUMBER_UNIT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*")
_MEMORY_FORMS = (
    'use an integer number of MB (4096) or a string such as "48GB", "512MB", '
    '"1.5TB" or "16GiB" (1 GB = 1024 MB)'
)


def parse_memory_mb(value: int | str, *, option: str = "memory") -> int:
    """Return a memory size in megabytes (``1 GB = 1024 MB``).

    An ``int`` is megabytes; a string carries a unit: MB, GB, TB (or M, G, T,
    MiB, GiB, TiB, in any case). Fractions round up to a whole MB.

    Raises:
        SpecError: the value is not a positive size in an accepted form.

    Example:
        >>> parse_memory_mb("48 GB"), parse_memory_mb("512mb"), parse_memory_mb(2048)
        (49152, 512, 2048)
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SpecError(f"{option}={value!r} is not a memory size; {_MEMORY_FORMS}.")
    if isinstance(value, int):
        megabytes: float = value
    else:
        match = _NUMBER_UNIT.fullmatch(value.lower())
        if match is None or match[2] not in _MEMORY_UNITS_MB:
            raise SpecError(f"{option}={value!r} is not a memory size; {_MEMORY_FORMS}.")
        megabytes = float(match[1]) * _MEMORY_UNITS_MB[match[2]]
    if megabytes <= 0:
        raise SpecError(f"{option}={value!r} must be positive; {_MEMORY_FORMS}.")
    return math.ceil(megabytes)


_DURATION_UNITS_S = {
    **dict.fromkeys(("ms", "msec", "millisecond", "milliseconds"), 0.001),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
    **dict.fromkeys(("w", "week", "weeks"), 604800.0),
}
_CLOCK = re.compile(r"(?:(\d+)-)?(\d+):(\d{1,2})(?::(\d{1,2}(?:\.\d+)?))?")
_DURATION_FORMS = (
    'use seconds (3600), a timedelta, or a string such as "18h", "30m", "1h30m", '
    '"2 days", "90s", "HH:MM:SS" or "MM:SS"'
)


def _parse_duration_text(text: str) -> float | None:
    text = text.strip().lower()
    clock = _CLOCK.fullmatch(text)
    if clock is not None:
        days, first, second, third = clock.groups()
        hours, minutes, seconds = (first, second, third) if third else ("0", first, second)
        if (third and int(minutes) >= 60) or float(seconds) >= 60:
            return None
        return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    bare = _NUMBER_UNIT.fullmatch(text)
    if bare is not None and not bare[2]:
        return float(bare[1])
    total, position = 0.0, 0
    for match in _NUMBER_UNIT.finditer(text):
        if match.start() != position or match[2] not in _DURATION_UNITS_S:
            return None
        total += float(match[1]) * _DURATION_UNITS_S[match[2]]
        position = match.end()
    return total if position == len(text) and text else None


def parse_duration_s(value: int | float | str | timedelta, *, option: str = "time_limit") -> float:
    """Return a positive duration in seconds.

    Accepts seconds (``int`` or ``float``), a ``timedelta``, unit strings
    (``"18h"``, ``"30 minutes"``, ``"1h30m"``, ``"2 days"``, ``"90s"``) and
    clock strings (``"HH:MM:SS"``, ``"MM:SS"``, Slurm's ``"D-HH:MM:SS"``).

    Raises:
        SpecError: the value is not a positive duration in an accepted form.

    Example:
        >>> parse_duration_s("18h"), parse_duration_s("01:30:00"), parse_duration_s("1h30m")
        (64800.0, 5400.0, 5400.0)
    """
    seconds: float | None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration_text(value)
    else:
        seconds = None
    if seconds is None or not math.isfinite(seconds):
        raise SpecError(f"{option}={value!r} is not a duration; {_DURATION_FORMS}.")
    if seconds <= 0:
        raise SpecError(f"{option}={value!r} must be positive; {_DURATION_FORMS}.")
    return seconds


def _trim(number: float) -> str:
    return f"{number:.1f}".removesuffix(".0")


def format_memory(mb: int) -> str:
    """Format megabytes for people: ``"512 MB"``, ``"48 GB"``, ``"1.5 TB"``.

    Example:
        >>> format_memory(49152), format_memory(512), format_memory(1536)
        ('48 GB', '512 MB', '1.5 GB')
    """
    if mb < 1024:
        return f"{mb} MB"
    if mb < 1024 * 1024:
        return f"{_trim(mb / 1024)} GB"
    return f"{_trim(mb / (1024 * 1024))} TB"


def format_duration(seconds: float) -> str:
    """Format seconds for people: ``"250 ms"``, ``"2.3 s"``, ``"1h 30m"``, ``"18h"``.

    Example:
        >>> format_duration(0.25), format_duration(2.31), format_duration(5400)
        ('250 ms', '2.3 s', '1h 30m')
    """
    if seconds < 0:
        return f"-{format_duration(-seconds)}"
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{_trim(seconds)} s"
    remaining = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)


MAX_GPUS = 1024
"""The most GPUs one task may ask for."""

MAX_CPUS = 1_000_000.0
"""The most CPU cores one task may ask for."""

MAX_MEMORY_MB = 1 << 40
"""The most memory one task may ask for, in MB (an exabyte)."""

MAX_TIME_LIMIT_S = 366 * 86400.0
"""The longest time limit a task may have: a year."""

MAX_RETRIES = 1000
"""The most retries a task may have."""


def _check_count(value: object, field: str, most: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise SpecError(f"HardwareSpec {field}={value!r} must be a whole number from 0 to {most}.")


def _check_number(value: object, field: str, least: float, most: float) -> None:
    """Refuses NaN and infinities too: no comparison with them holds."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not least <= value <= most
    ):
        raise SpecError(
            f"HardwareSpec {field}={value!r} must be a finite number from {least:g} to {most:g}."
        )


@dataclass(frozen=True, slots=True)
class HardwareSpec:
    """What one task needs to run.

    Attributes:
        gpu: canonical GPU type, or ``None`` for no GPU.
        gpus: how many GPUs of that type (0 when ``gpu`` is ``None``).
        cpus: CPU cores, possibly fractional.
        memory_mb: memory in MB; 0 means no stated requirement.
        time_limit_s: wall-clock limit in seconds, or ``None`` for none.

    Example:
        >>> spec = HardwareSpec(gpu="h100", gpus=1, memory_mb=49152, time_limit_s=64800)
        >>> spec.describe()
        '1x H100, 1 CPU, 48 GB, limit 18h'
        >>> HardwareSpec.from_dict(spec.to_dict()) == spec
        True
    """

    gpu: str | None = None
    gpus: int = 0
    cpus: float = 1.0
    memory_mb: int = 0
    time_limit_s: float | None = None

    def __post_init__(self) -> None:
        if self.gpu is not None and self.gpu not in GPU_TYPES:
            raise SpecError(f"HardwareSpec gpu={self.gpu!r} is not a canonical GPU type name.")
        _check_count(self.gpus, "gpus", MAX_GPUS)
        if (self.gpu is None) != (self.gpus == 0):
            raise SpecError(
                f"HardwareSpec gpu={self.gpu!r} and gpus={self.gpus!r} disagree; "
                "gpus must be positive with a GPU type and 0 without one."
            )
        _check_number(self.cpus, "cpus", 0.0, MAX_CPUS)
        _check_count(self.memory_mb, "memory_mb", MAX_MEMORY_MB)
        if self.time_limit_s is not None:
            _check_number(self.time_limit_s, "time_limit_s", 0.0, MAX_TIME_LIMIT_S)
            if self.time_limit_s <= 0:
                raise SpecError(
                    f"HardwareSpec time_limit_s={self.time_limit_s!r} must be positive or None."
                )

    def describe(self) -> str:
        """Return a one-line summary such as ``"1x H100, 24 CPUs, 48 GB, limit 18h"``."""
        parts = []
        if self.gpu is not None:
            parts.append(f"{self.gpus}x {GPU_TYPES[self.gpu].label}")
        if self.cpus:
            cpus = f"{self.cpus:.2f}".rstrip("0").removesuffix(".")  # 0.25 CPU, 1.5 CPUs
            parts.append(f"{cpus} CPU{'s' if self.cpus > 1 else ''}")
        if self.memory_mb:
            parts.append(format_memory(self.memory_mb))
        if self.time_limit_s is not None:
            parts.append(f"limit {format_duration(self.time_limit_s)}")
        return ", ".join(parts) or "no requirements"

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as a JSON-able dict."""
        return {
            "gpu": self.gpu,
            "gpus": self.gpus,
            "cpus": self.cpus,
            "memory_mb": self.memory_mb,
            "time_limit_s": self.time_limit_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HardwareSpec:
        """Rebuild a spec from :meth:`to_dict`'s output; missing keys take defaults.

        Unknown keys are ignored, so a newer peer may add fields.
        """
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**known)


def gpu_label(gpu: str | None, emulated: bool = False) -> str:
    """How a GPU type is shown: ``"H100 (emulated)"``, ``"A100 80GB"`` or ``"no GPU"``.

    Example:
        >>> gpu_label("h100", emulated=True), gpu_label("")
        ('H100 (emulated)', 'no GPU')
    """
    if not gpu:
        return "no GPU"
    label = GPU_TYPES[gpu].label if gpu in GPU_TYPES else gpu
    return f"{label} (emulated)" if emulated else label


@dataclass(frozen=True, slots=True)
class HardwareGiven:
    """The hardware a task was actually given."""

    cpus: float = 0.0
    memory_mb: int = 0
    gpu: str | None = None
    gpu_indices: tuple[int, ...] = ()
    emulated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as stored with a task and sent by an agent."""
        return {
            "cpus": self.cpus,
            "memory_mb": self.memory_mb,
            "gpu": self.gpu,
            "gpu_indices": list(self.gpu_indices),
            "emulated": self.emulated,
        }

    def describe(self) -> str:
        parts: list[str] = []
        if self.gpu:
            name = GPU_TYPES[self.gpu].display_name if self.gpu in GPU_TYPES else self.gpu
            parts.append(
                f"{len(self.gpu_indices)}x {name}" + (" (emulated)" if self.emulated else "")
            )
        parts.append(f"{self.cpus:g} CPU")
        if self.memory_mb:
            parts.append(format_memory(self.memory_mb))
        return ", ".join(parts)
