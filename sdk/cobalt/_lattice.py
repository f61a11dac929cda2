"""``@ct.lattice``: a workflow of electrons, and the options both decorators take.

A lattice's options are the defaults its electrons inherit, so the option set
lives here: :class:`OptionsKwargs` (what users write), :class:`Options` (what
they set, parsed, with :data:`~cobalt._sentinel.UNSET` for the rest) and
:func:`parse_options`. Called directly, a lattice runs here as a plain
function; :meth:`Lattice.build_graph` runs it once while recording every
electron call as a node.

Example:
    >>> from cobalt._electron import electron
    >>> from cobalt._lattice import lattice
    >>> @electron
    ... def square(x: int) -> int:
    ...     return x * x
    >>> @lattice(gpu="l4", time_limit="1h")
    ... def squares(n: int) -> list[int]:
    ...     return [square(i) for i in range(n)]
    >>> squares(3)
    [0, 1, 4]
    >>> graph = squares.build_graph(3)
    >>> graph.nodes[graph.output].name, graph.nodes[1].options.hardware.describe()
    (':list:', '1x L4, 1 CPU, limit 1h')
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Generic, ParamSpec, TypedDict, TypeVar, Unpack, overload

from cobalt._deps import Deps, DepsBash, DepsPip, as_deps_bash, as_deps_pip, as_hooks
from cobalt._executors import Executor, ExecutorLike
from cobalt._graph import Graph, GraphBuilder, TaskOptions, current_builder
from cobalt._sentinel import UNSET, UnsetType
from cobalt_common.errors import GraphError, SpecError
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

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


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


def _executor(value: Any, option: str) -> ExecutorLike | None:
    if value is None or isinstance(value, Executor) or (isinstance(value, str) and value):
        return value
    raise SpecError(
        f"{option}={value!r} must name an executor of the controller's config (such as "
        '"local"), be an executor such as ct.LocalExecutor(...), or be None.'
    )


_PARSERS: Mapping[str, Callable[[Any, str], Any]] = {
    "gpu": lambda value, option: None if value is None else parse_gpu_type(value, option=option),
    "gpus": _count(1, MAX_GPUS),
    "cpus": _cpus,
    "memory": lambda value, option: parse_memory_mb(value, option=option),
    "time_limit": lambda value, option: parse_duration_s(value, option=option),
    "retries": _count(0, MAX_RETRIES),
    "executor": _executor,
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

    def hardware(self, *, default_cpus: float = 1.0, owner: str = "") -> HardwareSpec:
        """Resolve the hardware spec, unset options taking their defaults."""
        gpu = _or(self.gpu, None)
        gpus = _or(self.gpus, 1 if gpu else 0)
        if gpu is None and gpus:
            raise SpecError(
                f'{owner}: gpus={gpus} asks for GPUs but no GPU type is set; add gpu="h100" '
                "(or another type) to the electron or its lattice, or drop gpus."
            )
        return HardwareSpec(
            gpu=gpu,
            gpus=gpus,
            cpus=_or(self.cpus, default_cpus),
            memory_mb=_or(self.memory, 0),
            time_limit_s=_or(self.time_limit, None),
        )

    def task_options(self, *, default_cpus: float = 1.0, owner: str = "") -> TaskOptions:
        """Resolve everything a node carries: hardware, retries and executor."""
        hardware = self.hardware(default_cpus=default_cpus, owner=owner)
        return TaskOptions(hardware, _or(self.retries, 0), _or(self.executor, None))

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


def signature_of(function: Callable[..., Any]) -> inspect.Signature | None:
    """Return ``function``'s signature, or ``None`` where Python cannot tell it."""
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):
        return None


def check_arguments(
    kind: str,
    name: str,
    signature: inspect.Signature | None,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> None:
    """Raise :class:`GraphError` when the arguments do not bind to the signature."""
    if signature is None:
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise GraphError(
            f"{kind} '{name}' cannot be called with these arguments: {exc}. "
            f"Its signature is {name}{signature}."
        ) from None


class Lattice(Generic[P, R]):
    """A workflow function whose electron calls become the nodes of a graph.

    Attributes:
        function: the decorated function.
        options: the options the user set, inherited by the lattice's
            electrons; :data:`~cobalt._sentinel.UNSET` for the others.
    """

    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, R]

    def __init__(self, function: Callable[P, R], options: Options) -> None:
        functools.update_wrapper(self, function, updated=())
        self.function = function
        self.options = options
        self._name: str = getattr(function, "__name__", repr(function))
        self._signature = signature_of(function)
        options.hardware(owner=f"lattice '{self._name}'")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here; inside another lattice's build, inline its electrons."""
        builder = current_builder()
        if builder is None:
            return self.function(*args, **kwargs)
        outer = builder.defaults
        builder.defaults = builder.memo((self, id(outer)), lambda: self.options.over(outer))
        try:
            return self.function(*args, **kwargs)
        finally:
            builder.defaults = outer

    def build_graph(self, *args: P.args, **kwargs: P.kwargs) -> Graph:
        """Run the function once with these (real) arguments, recording its graph.

        Raises:
            GraphError: the arguments do not fit the lattice's signature, or
                the function uses a task's output in a way that needs its value.
        """
        check_arguments("lattice", self._name, self._signature, args, kwargs)
        builder = GraphBuilder(self._name, self.options)
        with builder.active():
            result = self.function(*args, **kwargs)
        return builder.finish(result)

    def __repr__(self) -> str:
        given = self.options.given()
        spec = self.options.hardware().describe() if given else "no defaults"
        return f"<lattice {self._name}: {spec}>"


class SublatticeCall:
    """The function of a ``SUBLATTICE`` node: builds and runs the inner lattice.

    Args:
        lattice: the lattice to run with the node's arguments.
    """

    __slots__ = ("lattice",)

    def __init__(self, lattice: Lattice[..., Any]) -> None:
        self.lattice = lattice

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from cobalt._dispatch import run_sublattice

        return run_sublattice(self.lattice, args, kwargs)

    def __repr__(self) -> str:
        return f"SublatticeCall({self.lattice!r})"


@overload
def lattice(function: Callable[P, R], /, **options: Unpack[OptionsKwargs]) -> Lattice[P, R]: ...


@overload
def lattice(
    function: None = None, /, **options: Unpack[OptionsKwargs]
) -> Callable[[Callable[P, R]], Lattice[P, R]]: ...


def lattice(function: object = None, /, **options: Any) -> Any:
    """Make a function a workflow: bare (``@ct.lattice``) or with default options.

    Args:
        function: the workflow function (given when used bare).
        **options: the same options as :func:`~cobalt._electron.electron`;
            they are the defaults of the electrons the lattice calls.

    Raises:
        SpecError: an option is unknown or invalid, or the positional
            argument is not a function.

    Example:
        >>> @lattice(executor="local", retries=1)
        ... def pipeline(x: int) -> int:
        ...     return x
        >>> pipeline.options.retries
        1
    """
    if function is not None and not callable(function):
        raise SpecError(misuse_message("lattice", function))
    name = getattr(function, "__name__", None)
    parsed = parse_options(f"lattice '{name}'" if name else "@ct.lattice(...)", options)
    if function is not None:
        return Lattice(function, parsed)

    def decorate(function: Callable[P, R]) -> Lattice[P, R]:
        if not callable(function):
            raise SpecError(misuse_message("lattice", function))
        return Lattice(function, parsed)

    return decorate
