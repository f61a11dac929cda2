"""Covalent's executor arguments, read into what cobalt does with each.

Covalent's executor classes take arguments of four kinds, and each becomes one
thing here:

- **where**: arguments that name a cluster or host (a Slurm login node, a Dask
  scheduler, an SSH host). They become a *match* the controller resolves among
  the executors its ``config.toml`` configures; the controller never connects
  to a place a client names.
- **what a task gets**: resources (``cpus-per-task``, ``mem``, ``gres``,
  ``time``, ``vcpu``...) become the task's hardware defaults, used where the
  electron and its lattice set none.
- **how a task runs**: ``workdir`` and ``log_stdout``/``log_stderr`` travel
  with the task's function and act on the machine where it runs
  (:class:`TaskSettings`).
- **the plugin's own plumbing** (``poll_freq``, ``cache_dir``, ``cleanup``...):
  accepted and unused, since cobalt has no equivalent step and leaving them
  out changes nothing a task sees. An argument whose meaning cobalt cannot
  keep (``conda_env``, ``prerun_commands``...) is refused with what to do
  instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cobalt_common.errors import SpecError
from cobalt_common.hardware import parse_gpu_type, parse_memory_mb


@dataclass(frozen=True, slots=True)
class TaskSettings:
    """How a task runs on its machine, from Covalent's executor arguments.

    Attributes:
        workdir: the directory the task runs in (created when missing); ""
            keeps cobalt's default, the client's working directory where it
            exists there.
        log_stdout: a file the task's stdout is appended to, on the machine
            where the task ran, besides being kept in the task's record.
        log_stderr: the same for stderr.
    """

    workdir: str = ""
    log_stdout: str = ""
    log_stderr: str = ""


def text(owner: str, argument: str, value: Any) -> str:
    """A string argument: None and "" both mean unset."""
    if value is None:
        return ""
    if not isinstance(value, str) or "\n" in value or "\x00" in value:
        raise SpecError(f"{owner} {argument} must be text, got {value!r}.")
    return value


def refuse_set(owner: str, argument: str, value: Any, instead: str) -> None:
    """Refuses an argument whose meaning cobalt cannot keep, unless it is left empty."""
    if value not in (None, "", False, [], {}, ()):
        raise SpecError(f"{owner} does not support {argument}={value!r}: {instead}")


def positive_int(owner: str, argument: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"{owner} {argument} must be a non-negative integer, got {value!r}.")
    return value


def common(
    owner: str,
    *,
    log_stdout: Any,
    log_stderr: Any,
    workdir: Any = None,
    create_unique_workdir: Any = None,
    conda_env: Any = None,
    time_limit: Any = None,
    retries: Any = None,
) -> tuple[TaskSettings, dict[str, Any]]:
    """The arguments every Covalent executor takes: (task settings, defaults)."""
    refuse_set(
        owner,
        "conda_env",
        conda_env,
        "cobalt runs tasks with the Python its controller's config names; install "
        "packages for a task with deps_pip=[...] on the electron.",
    )
    refuse_set(
        owner,
        "create_unique_workdir",
        create_unique_workdir,
        "give each task its own directory with workdir=... on an executor per task, "
        "or leave it unset.",
    )
    defaults: dict[str, Any] = {}
    if time_limit is not None and time_limit != -1:
        if isinstance(time_limit, bool) or not isinstance(time_limit, int | float):
            raise SpecError(f"{owner} time_limit must be seconds, got {time_limit!r}.")
        if time_limit <= 0:
            raise SpecError(f"{owner} time_limit must be positive seconds, got {time_limit!r}.")
        defaults["time_limit"] = float(time_limit)
    if retries is not None and retries != 0:
        defaults["retries"] = positive_int(owner, "retries", retries)
    settings = TaskSettings(
        workdir=text(owner, "workdir", workdir),
        log_stdout=text(owner, "log_stdout", log_stdout),
        log_stderr=text(owner, "log_stderr", log_stderr),
    )
    return settings, defaults


_SLURM_MEMORY = re.compile(r"(\d+(?:\.\d+)?)([KMGT]?)B?", re.IGNORECASE)
_SLURM_UNIT_MB = {"": 1.0, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024}


def slurm_memory_mb(owner: str, value: Any) -> int:
    """Slurm's ``--mem``: MB without a unit, or a K/M/G/T suffix (``"16G"``)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SLURM_MEMORY.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise SpecError(
            f'{owner} options["mem"] must be Slurm memory such as "16G" or 4096 (MB), '
            f"got {value!r}."
        )
    return max(1, round(float(match.group(1)) * _SLURM_UNIT_MB[match.group(2).upper()]))


_SLURM_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def slurm_time_s(owner: str, value: Any) -> float:
    """Slurm's ``--time``: minutes, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value * 60.0
    match = _SLURM_TIME.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise SpecError(
            f'{owner} options["time"] must be a Slurm time such as "2:00:00" or "1-12", '
            f"got {value!r}."
        )
    days, first, second, third = (int(g) if g else None for g in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = days * 86400 + (first or 0) * 3600 + (second or 0) * 60 + (third or 0)
    elif third is not None:  # HH:MM:SS
        seconds = (first or 0) * 3600 + (second or 0) * 60 + third
    elif second is not None:  # MM:SS
        seconds = (first or 0) * 60 + second
    else:  # minutes
        seconds = (first or 0) * 60
    if seconds <= 0:
        raise SpecError(f'{owner} options["time"] must be longer than zero, got {value!r}.')
    return float(seconds)


def slurm_gres(owner: str, value: Any) -> dict[str, Any]:
    """``gpu:TYPE:N`` or ``gpu:TYPE`` into the GPU defaults; a count without a type
    is refused, since cobalt places GPU tasks by type."""
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) not in (2, 3) or parts[0] != "gpu":
        raise SpecError(
            f'{owner} options["gres"] must be "gpu:TYPE:COUNT" such as "gpu:h100:2", got {value!r}.'
        )
    if len(parts) == 2 and parts[1].isdigit():
        raise SpecError(
            f'{owner} options["gres"]={value!r} names no GPU type, and cobalt places GPU '
            f'tasks by type: write "gpu:h100:{parts[1]}" (your GPU type), or set gpu= on '
            "the electron."
        )
    count = parts[2] if len(parts) == 3 else "1"
    if not count.isdigit() or int(count) < 1:
        raise SpecError(f'{owner} options["gres"] GPU count must be positive, got {value!r}.')
    gpu = parse_gpu_type(parts[1], option=f'{owner} options["gres"]')
    return {"gpu": gpu, "gpus": int(count)}


def positive_cpus(owner: str, argument: str, value: Any) -> float:
    """A CPU count: a number, a numeric string, or Kubernetes millicores (``"500m"``)."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        raw = value.strip()
        try:
            number = float(raw[:-1]) / 1000 if raw.endswith("m") else float(raw)
        except ValueError:
            number = None
    if number is None or not number > 0:
        raise SpecError(
            f'{owner} {argument} must be a positive number of CPUs such as 2 or "500m", '
            f"got {value!r}."
        )
    return number


_K8S_UNITS_MB = {
    "Ki": 1 / 1024,
    "Mi": 1.0,
    "Gi": 1024.0,
    "Ti": 1024.0 * 1024,
    "K": 1000 / 1024 / 1024,
    "M": 1000**2 / 1024**2,
    "G": 1000**3 / 1024**2,
    "T": 1000**4 / 1024**2,
}


def kubernetes_memory_mb(owner: str, value: Any) -> int:
    """Kubernetes quantities (``"512Mi"``, ``"1G"``) or cobalt's own (``"4GB"``)."""
    if isinstance(value, str):
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)", value.strip())
        if match is not None and float(match.group(1)) > 0:
            return max(1, round(float(match.group(1)) * _K8S_UNITS_MB[match.group(2)]))
    return parse_memory_mb(value, option=f"{owner} memory")


def options_dict(owner: str, argument: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{owner} {argument} must be a dict, got {value!r}.")
    return value
