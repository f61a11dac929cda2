"""The options ``@ct.electron``, ``@ct.lattice`` and ``@ct.service`` take, validated where written.

A lattice's options are the defaults its electrons inherit. :class:`OptionsKwargs`
is what users write; :func:`parse_options` checks it into :class:`Options`, what
they set, with :data:`~cobalt._sentinel.UNSET` for the rest; a graph node
carries the resolved :class:`TaskOptions`.

Example:
    >>> options = parse_options("electron 'train'", {"gpu": "h100", "time_limit": "2h"})
    >>> options.over(parse_options("lattice 'sweep'", {"cpus": 8})).hardware().describe()
    '1x H100, 8 CPUs, limit 2h'
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypedDict, TypeVar

from cobalt._deps import Deps, DepsBash, DepsPip, as_deps_bash, as_deps_pip, as_hooks
from cobalt._executors import Executor, ExecutorLike
from cobalt._sentinel import UNSET, UnsetType
from cobalt_common.errors import SpecError
from cobalt_common.hardware import (
    MAX_GPUS,
    MAX_RETRIES,
    DurationLike,
    HardwareSpec,
    MemoryLike,
    parse_duration_s,
    parse_gpu_type,
    parse_memory_mb,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """A node's resolved options: hardware, retries and executor (``None``: any)."""

    hardware: HardwareSpec
    retries: int
    executor: str | Executor | None


class OptionsKwargs(TypedDict, total=False):
    """The options ``@ct.electron`` and ``@ct.lattice`` accept; any may be left out."""

    gpu: str | None
    gpus: int
    cpus: float
    memory: MemoryLike
    time_limit: DurationLike
    retries: int
    executor: ExecutorLike | None
    deps_pip: DepsPip | Sequence[str]
    deps_bash: DepsBash | str | Sequence[str]
    call_before: Deps | Sequence[Deps]
    call_after: Deps | Sequence[Deps]


def _count(minimum: int, maximum: int) -> Callable[[Any, str], int]:
    def parse(value: Any, option: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SpecError(f"{option}={value!r} must be an integer of at least {minimum}.")
        if value > maximum:
            raise SpecError(f"{option}={value!r} must be at most {maximum}.")
        return value

    return parse


def _cpus(value: Any, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
        raise SpecError(f"{option}={value!r} must be a positive number of CPU cores, such as 4.")
    return float(value)


def parse_executor(value: Any, option: str) -> ExecutorLike | None:
    """An executor's name, a descriptor, or ``None`` (the controller places the task)."""
    if value is None or isinstance(value, Executor) or (isinstance(value, str) and value):
        return value
    raise SpecError(
        f"{option}={value!r} must name an executor of the controller's config or an "
        'executor type (such as "local"), be an executor such as ct.LocalExecutor(...), '
        "or be None."
    )


_PARSERS: Mapping[str, Callable[[Any, str], Any]] = {
    "gpu": lambda value, option: None if value is None else parse_gpu_type(value, option=option),
    "gpus": _count(1, MAX_GPUS),
    "cpus": _cpus,
    "memory": lambda value, option: parse_memory_mb(value, option=option),
    "time_limit": lambda value, option: parse_duration_s(value, option=option),
    "retries": _count(0, MAX_RETRIES),
    "executor": parse_executor,
    "deps_pip": as_deps_pip,
    "deps_bash": as_deps_bash,
    "call_before": as_hooks,
    "call_after": as_hooks,
}
OPTION_NAMES = tuple(_PARSERS)
"""Every option an electron or lattice accepts."""


def _or(value: T | UnsetType, default: T) -> T:
    return default if value is UNSET else value


@dataclass(frozen=True, slots=True)
class Options:
    """Options as the user set them, parsed; :data:`UNSET` marks the rest.

    ``memory`` is in MB and ``time_limit`` in seconds; ``gpu`` is a canonical
    GPU type name, or ``None`` for "no GPU".
    """

    gpu: str | UnsetType | None = UNSET
    gpus: int | UnsetType = UNSET
    cpus: float | UnsetType = UNSET
    memory: int | UnsetType = UNSET
    time_limit: float | UnsetType = UNSET
    retries: int | UnsetType = UNSET
    executor: ExecutorLike | UnsetType | None = UNSET
    deps_pip: DepsPip | UnsetType = UNSET
    deps_bash: DepsBash | UnsetType = UNSET
    call_before: tuple[Deps, ...] | UnsetType = UNSET
    call_after: tuple[Deps, ...] | UnsetType = UNSET

    def given(self) -> dict[str, Any]:
        """Return the options that are set, by name."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in values.items() if value is not UNSET}

    def over(self, defaults: Options) -> Options:
        """Fill unset options from ``defaults``; a GPU type and its count inherit together."""
        merged = {**defaults.given(), **self.given()}
        if self.gpu is not UNSET and self.gpus is UNSET:
            merged.pop("gpus", None)
        return Options(**merged)

    def _executor_defaults(self) -> dict[str, Any]:
        """What a Covalent-style executor descriptor gives its tasks (``gres``,
        ``cpus-per-task``...), for options the electron and lattice leave unset."""
        return self.executor.defaults if isinstance(self.executor, Executor) else {}

    def hardware(self, *, default_cpus: float = 1.0, owner: str = "") -> HardwareSpec:
        """Resolve the hardware spec, unset options taking their defaults."""
        defaults = self._executor_defaults()
        given_gpu, given_gpus = self.gpu, self.gpus
        if given_gpu is UNSET:  # a GPU type and its count inherit together
            given_gpu = defaults.get("gpu", UNSET)
            if given_gpus is UNSET:
                given_gpus = defaults.get("gpus", UNSET)
        gpu = _or(given_gpu, None)
        gpus = _or(given_gpus, 1 if gpu else 0)
        if gpu is None and gpus:
            raise SpecError(
                f'{owner}: gpus={gpus} asks for GPUs but no GPU type is set; add gpu="h100" '
                "(or another type) to the electron or its lattice, or drop gpus."
            )
        return HardwareSpec(
            gpu=gpu,
            gpus=gpus,
            cpus=_or(self.cpus, defaults.get("cpus", default_cpus)),
            memory_mb=_or(self.memory, defaults.get("memory", 0)),
            time_limit_s=_or(self.time_limit, defaults.get("time_limit")),
        )

    def task_options(self, *, default_cpus: float = 1.0, owner: str = "") -> TaskOptions:
        """Resolve everything a node carries: hardware, retries and executor."""
        hardware = self.hardware(default_cpus=default_cpus, owner=owner)
        retries = _or(self.retries, self._executor_defaults().get("retries", 0))
        return TaskOptions(hardware, retries, _or(self.executor, None))

    def hooks(self) -> tuple[tuple[Deps, ...], tuple[Deps, ...]]:
        """Return (before, after): deps_bash, deps_pip and call_before; then call_after."""
        setup = tuple(dep for dep in (self.deps_bash, self.deps_pip) if dep is not UNSET)
        return (*setup, *_or(self.call_before, ())), _or(self.call_after, ())


def parse_options(owner: str, given: Mapping[str, Any]) -> Options:
    """Validate decorator keywords into :class:`Options`, naming ``owner`` in errors."""
    unknown = sorted(set(given) - set(OPTION_NAMES))
    if unknown:
        close = difflib.get_close_matches(unknown[0], OPTION_NAMES, n=1)
        hint = f" Did you mean {close[0]}=?" if close else ""
        raise SpecError(
            f"{owner} got unknown option {unknown[0]!r}.{hint} "
            f"Accepted options: {', '.join(OPTION_NAMES)}."
        )
    parsed = {}
    for name, value in given.items():
        if value is not UNSET:
            try:
                parsed[name] = _PARSERS[name](value, name)
            except SpecError as exc:
                raise SpecError(f"{owner}: {exc}") from None
    options = Options(**parsed)
    if options.gpu is None and options.gpus is not UNSET:
        raise SpecError(
            f"{owner}: gpus={options.gpus} asks for GPUs but gpu=None asks for none; "
            'set gpu to a type such as "h100", or drop gpus.'
        )
    return options


_POSITIONAL_GUESSES: Mapping[str, Callable[[str], object]] = {
    "gpu": parse_gpu_type,
    "memory": parse_memory_mb,
    "time_limit": parse_duration_s,
}


def misuse_message(decorator: str, value: object) -> str:
    """Explain a positional argument that is not a function, suggesting the keyword."""
    if isinstance(value, str) and not value.strip().isdigit():
        for option, parse in _POSITIONAL_GUESSES.items():
            with contextlib.suppress(SpecError):
                parse(value)
                return (
                    f"@ct.{decorator}({value!r}) passes an option without its name. "
                    f'Did you mean @ct.{decorator}({option}="{value}")?'
                )
    return (
        f"@ct.{decorator} takes a function, or keyword options only, got {value!r}. "
        f"Accepted options: {', '.join(OPTION_NAMES)}."
    )
