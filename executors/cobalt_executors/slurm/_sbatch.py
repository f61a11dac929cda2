"""A cobalt hardware spec and a Slurm executor's options, as ``sbatch`` options.

- ``gpu``/``gpus`` become ``--gres=gpu:<site type>:N``. The site's gres type of
  each cobalt GPU comes from the ``gpu_types`` table (``{"h100": "h100_80g"}``);
  a GPU the table does not name keeps cobalt's name, and an empty site type
  asks for any GPU (``--gres=gpu:N``).
- ``cpus`` becomes ``--cpus-per-task`` (rounded up to whole CPUs, at least 1).
- ``memory_mb`` becomes ``--mem=<MB>M``; a spec without memory leaves the
  site's default, which on many clusters is the whole node's memory.
- ``time_limit_s`` becomes ``--time`` in whole minutes with ``time_margin_s``
  added: only a backstop, since cobalt enforces the limit itself.
- ``partition``, ``account`` and ``qos`` pass through, and ``sbatch_options``
  are added as given, once checked.
- ``--export=NONE`` always: by default sbatch copies the submitting process's
  whole environment into the job, and that process is the controller, whose
  environment may hold credentials. The job gets the user's login environment
  instead, and its batch script sets what the job needs.

Every value is checked where it enters, with a :class:`SpecError` that lists
what is accepted.

Example:
    >>> from cobalt_common.hardware import HardwareSpec
    >>> options = SbatchOptions.from_options(
    ...     {"partition": "gpu", "gpu_types": {"h100": "h100_80g"}}
    ... )
    >>> options.arguments(HardwareSpec(gpu="h100", gpus=2, cpus=1.5, memory_mb=4096))[1:]
    ['--export=NONE', '--gres=gpu:h100_80g:2', '--cpus-per-task=2', '--mem=4096M']
    >>> job_name("train model (v2)")
    'cobalt-train_model_v2'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from cobalt_common.errors import SpecError
from cobalt_common.hardware import HardwareSpec, parse_duration_s, parse_gpu_type

__all__ = ["OPTIONS", "SbatchOptions", "job_name"]

OPTIONS = frozenset({"partition", "account", "qos", "gpu_types", "sbatch_options", "time_margin"})
"""The executor options this module reads."""

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
_NAME_RULE = "1 to 128 of the characters A-Z a-z 0-9 _ . + - (not starting with . + or -)"
_GRES_TYPE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_GRES_RULE = '1 to 64 of A-Z a-z 0-9 _ . - (or "" for any GPU type)'
_OPTION = re.compile(r"--[A-Za-z][A-Za-z0-9-]*(=[^\n\r\0]*)?")
_MANAGED = {
    "gres": "gpu_types and the task's gpu",
    "gpus": "gpu_types and the task's gpu",
    "gpus-per-node": "gpu_types and the task's gpu",
    "gpus-per-task": "gpu_types and the task's gpu",
    "cpus-per-task": "the task's cpus",
    "mem": "the task's memory",
    "mem-per-cpu": "the task's memory",
    "mem-per-gpu": "the task's memory",
    "time": "the task's time_limit",
    "partition": "the executor's partition option",
    "account": "the executor's account option",
    "qos": "the executor's qos option",
    "job-name": "the task's name",
    "export": "the batch script (cobalt passes --export=NONE; the script sets variables)",
    "parsable": "nothing: cobalt always passes it",
    "wrap": "nothing: cobalt writes the batch script",
}
_DEFAULT_MARGIN_S = 60.0
_JOB_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _name(value: object, option: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        raise SpecError(f"Slurm executor option {option}={value!r} must be {_NAME_RULE}.")
    return value


def _gpu_types(value: object) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise SpecError(
            f"Slurm executor option gpu_types={value!r} must be a table from cobalt GPU names to "
            'the site\'s gres types, such as {"h100": "h100_80g", "a100-80gb": "a100"}.'
        )
    table: dict[str, str] = {}
    for gpu, site in value.items():
        canonical = parse_gpu_type(gpu, option="gpu_types key")
        if not isinstance(site, str) or (site and _GRES_TYPE.fullmatch(site) is None):
            raise SpecError(
                f"Slurm executor option gpu_types[{gpu!r}]={site!r} must be {_GRES_RULE}."
            )
        table[canonical] = site
    return MappingProxyType(table)


def _sbatch_options(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise SpecError(
            f"Slurm executor option sbatch_options={value!r} must be a list of options such as "
            '["--constraint=a100", "--exclusive"].'
        )
    for option in value:
        if not isinstance(option, str) or _OPTION.fullmatch(option) is None:
            raise SpecError(
                f"sbatch option {option!r} must be one long option: --name or --name=value, with "
                "no newline; write each option as its own string."
            )
        key = option[2:].partition("=")[0]
        if key in _MANAGED:
            raise SpecError(f"sbatch option {option!r} is set by cobalt; use {_MANAGED[key]}.")
    return tuple(value)


def _margin(value: object) -> float:
    if value is None:
        return _DEFAULT_MARGIN_S
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float | str | timedelta):
        raise SpecError(
            f"Slurm executor option time_margin={value!r} must be seconds, a timedelta or a "
            'string such as "2m".'
        )
    return parse_duration_s(value, option="Slurm executor option time_margin")


@dataclass(frozen=True, slots=True)
class SbatchOptions:
    """A Slurm executor's options that shape each ``sbatch``, checked.

    Build it with :meth:`from_options` from the executor's option mapping.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpu_types: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    sbatch_options: tuple[str, ...] = ()
    time_margin_s: float = _DEFAULT_MARGIN_S

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SbatchOptions:
        """Checks the options this module reads (:data:`OPTIONS`); others are ignored."""
        return cls(
            partition=_name(options.get("partition"), "partition"),
            account=_name(options.get("account"), "account"),
            qos=_name(options.get("qos"), "qos"),
            gpu_types=_gpu_types(options.get("gpu_types")),
            sbatch_options=_sbatch_options(options.get("sbatch_options")),
            time_margin_s=_margin(options.get("time_margin")),
        )

    def gres_type(self, gpu: str) -> str:
        """The site's gres type of a cobalt GPU name (``""``: any type)."""
        return self.gpu_types.get(gpu, gpu)

    def gres(self, spec: HardwareSpec) -> str | None:
        """The ``--gres`` value of a spec, or None for a spec without GPUs."""
        if spec.gpu is None:
            return None
        site = self.gres_type(spec.gpu)
        return f"gpu:{site}:{spec.gpus}" if site else f"gpu:{spec.gpus}"

    def time_minutes(self, spec: HardwareSpec, max_time_s: float | None = None) -> int | None:
        """``--time`` in whole minutes: the spec's limit plus the margin, rounded up,
        and no more than ``max_time_s`` (the partition's limit) when given."""
        if spec.time_limit_s is None:
            return None
        minutes = max(1, math.ceil((spec.time_limit_s + self.time_margin_s) / 60))
        if max_time_s is not None:
            minutes = min(minutes, max(1, math.floor(max_time_s / 60)))
        return minutes

    def arguments(
        self, spec: HardwareSpec, *, name: str | None = None, max_time_s: float | None = None
    ) -> list[str]:
        """The ``sbatch`` options for one job of ``spec``.

        Args:
            spec: the hardware the job's work needs.
            name: the job's name, sanitized with :func:`job_name`.
            max_time_s: the partition's time limit, which ``--time`` never exceeds.
        """
        args = [
            f"--{key}={value}"
            for key, value in (("partition", self.partition), ("account", self.account))
            if value
        ]
        if self.qos:
            args.append(f"--qos={self.qos}")
        if name is not None:
            args.append(f"--job-name={job_name(name)}")
        args.append("--export=NONE")
        gres = self.gres(spec)
        if gres is not None:
            args.append(f"--gres={gres}")
        args.append(f"--cpus-per-task={max(1, math.ceil(spec.cpus))}")
        if spec.memory_mb:
            args.append(f"--mem={spec.memory_mb}M")
        minutes = self.time_minutes(spec, max_time_s)
        if minutes is not None:
            args.append(f"--time={minutes}")
        return [*args, *self.sbatch_options]


def job_name(text: str, prefix: str = "cobalt-") -> str:
    """A Slurm job name from any text: safe characters only, at most 64 long.

    Example:
        >>> job_name("résumé; rm -rf /"), job_name("")
        ('cobalt-r_sum_rm_-rf', 'cobalt-job')
    """
    body = _JOB_NAME_UNSAFE.sub("_", text).strip("_.-")
    return (prefix + (body or "job"))[:64].rstrip("_.-")
