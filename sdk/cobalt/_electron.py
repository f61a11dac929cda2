"""``@ct.electron``: a function that runs as one task, on the hardware it asks for.

Options are validated when the decorator runs (see
:func:`cobalt._options.parse_options`). An option an electron leaves unset
(:data:`~cobalt._sentinel.UNSET`) is inherited from the lattice that calls
it; ``gpu=None`` explicitly asks for no GPU.

Example:
    >>> from cobalt._electron import electron
    >>> @electron(gpu="h100", cpus=24, memory="48GB", time_limit="18h")
    ... def train(data: list[float]) -> float:
    ...     return sum(data)
    >>> train.hardware().describe()
    '1x H100, 24 CPUs, 48 GB, limit 18h'
    >>> train([1.0, 2.0])  # outside a lattice it runs here, as a plain function
    3.0
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar, Unpack, cast, overload

from cobalt import _html as h
from cobalt._deps import DepsCall
from cobalt._executor_args import TaskSettings
from cobalt._executors import Executor
from cobalt._graph import GraphBuilder, NodeKind, NodeRef, current_builder
from cobalt._lattice import Lattice, check_arguments, signature_of
from cobalt._options import Options, OptionsKwargs, TaskOptions, misuse_message, parse_options
from cobalt._runtime.sublattice import SublatticeCall
from cobalt._runtime.task import TaskCallable
from cobalt_common.errors import GraphError, SpecError
from cobalt_common.hardware import HardwareSpec
from cobalt_common.pricing import LIST_PRICES, format_usd, parse_prices

P = ParamSpec("P")
R = TypeVar("R")


class _Prepared(NamedTuple):
    kind: NodeKind
    name: str
    function: TaskCallable | SublatticeCall
    options: TaskOptions
    injected: tuple[str, ...]


class Electron(Generic[P, R]):
    """A function that runs as one task of a lattice.

    Attributes:
        function: the decorated function (or, for a sublattice, the lattice).
        options: the options the user set; :data:`UNSET` for the others.
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
        self._sublattice = SublatticeCall(function) if isinstance(function, Lattice) else None
        hooks = {"deps_pip", "deps_bash", "call_before", "call_after"} & set(options.given())
        if self._sublattice is not None and hooks:
            raise SpecError(
                f"electron '{self._name}' wraps a lattice, which runs no code of its own, so "
                f"{sorted(hooks)[0]} does nothing here; set it on the sublattice's electrons or "
                "its @ct.lattice(...)."
            )

    def hardware(self, lattice_defaults: Options | None = None) -> HardwareSpec:
        """Return the resolved hardware spec, given the options of the calling lattice."""
        merged = self.options.over(lattice_defaults or Options())
        default_cpus = 0.0 if self._sublattice is not None else 1.0
        return merged.hardware(default_cpus=default_cpus, owner=f"electron '{self._name}'")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        builder = current_builder()
        if builder is None:
            return self.function(*args, **kwargs)
        return cast(R, self._record(builder, args, kwargs))

    def _record(
        self, builder: GraphBuilder, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> NodeRef:
        swap = builder.replacements.get(self._name)
        if swap is not None and swap is not self:
            builder.replaced.add(self._name)
            if not isinstance(swap, Electron):
                wrap = functools.partial(Electron, swap, self.options)
                swap = builder.memo(("replacement", self._name), wrap)
            if swap is not self:
                ref = swap._record(builder, args, kwargs)
                builder.replaced_nodes.add(ref._node_id)
                return ref
        defaults = builder.defaults
        prepared = builder.memo((self, id(defaults)), lambda: self._prepare(defaults))
        clash = sorted(set(kwargs) & set(prepared.injected))
        if clash:
            raise GraphError(
                f"task '{self._name}' gets {clash[0]!r} from its call_before "
                f"DepsCall(retval_keyword={clash[0]!r}); do not pass it as an argument too."
            )
        injected = dict.fromkeys(prepared.injected)
        check_arguments("electron", self._name, self._signature, args, {**kwargs, **injected})
        return builder.record(
            prepared.kind, prepared.name, prepared.function, args, kwargs, prepared.options
        )

    def _prepare(self, defaults: Options) -> _Prepared:
        merged = self.options.over(defaults)
        owner = f"electron '{self._name}'"
        if self._sublattice is not None:
            options = merged.task_options(default_cpus=0.0, owner=owner)
            name = f":sublattice:{self._name}"
            return _Prepared(NodeKind.SUBLATTICE, name, self._sublattice, options, ())
        before, after = merged.hooks()
        injected = tuple(
            dep.retval_keyword for dep in before if isinstance(dep, DepsCall) and dep.retval_keyword
        )
        executor = merged.executor
        settings = executor.settings if isinstance(executor, Executor) else TaskSettings()
        task = TaskCallable(
            self.function,
            before,
            after,
            workdir=settings.workdir,
            log_files=(settings.log_stdout, settings.log_stderr),
        )
        options = merged.task_options(owner=owner)
        return _Prepared(NodeKind.ELECTRON, self._name, task, options, injected)

    def _repr_html_(self) -> str:
        """Its hardware spec and what that costs per hour, for a notebook cell."""
        try:
            spec = self.hardware()
        except SpecError:
            return f"<div><b>{h.esc(self._name)}</b>: GPU type from its lattice</div>"
        executor = self.options.given().get("executor")
        options = getattr(executor, "options", {})
        if "prices" in options:
            table = parse_prices(options["prices"])
            where = f"on {getattr(executor, 'name', 'its executor')}"
        else:
            table, where = LIST_PRICES, "at list prices (your own hardware is free unless priced)"
        rate = table.rate_usd_per_hour(
            cpus=spec.cpus, memory_mb=spec.memory_mb, gpu=spec.gpu, gpus=spec.gpus
        )
        kind = "sublattice electron" if self._sublattice is not None else "electron"
        return (
            f"<div><b>{h.esc(self._name)}</b> <span style='color:#757575'>{kind}</span>"
            f"<div>{h.esc(spec.describe())}</div>"
            f"<div>{h.esc(format_usd(rate))}/h {h.esc(where)}</div></div>"
        )

    def __repr__(self) -> str:
        try:
            spec = self.hardware().describe()
        except SpecError:
            spec = "GPU type from its lattice"
        extra = "".join(
            f", {name}={value!r}"
            for name, value in self.options.given().items()
            if name in ("retries", "executor")
        )
        kind = "sublattice electron" if self._sublattice is not None else "electron"
        return f"<{kind} {self._name}: {spec}{extra}>"


@overload
def electron(function: Callable[P, R], /, **options: Unpack[OptionsKwargs]) -> Electron[P, R]: ...


@overload
def electron(
    function: None = None, /, **options: Unpack[OptionsKwargs]
) -> Callable[[Callable[P, R]], Electron[P, R]]: ...


def electron(function: object = None, /, **options: Any) -> Any:
    """Make a function a task: bare (``@ct.electron``) or with options.

    Args:
        function: the function (given when used bare, or as ``ct.electron(f)``).
            A lattice makes a sublattice: ``ct.electron(ct.lattice(f))``.
        **options: see :class:`OptionsKwargs`. ``gpu`` (a type such as
            ``"h100"``, or ``None``), ``gpus`` (count, 1 when ``gpu`` is set),
            ``cpus``, ``memory`` (MB or ``"48GB"``), ``time_limit`` (seconds or
            ``"18h"``), ``retries``, ``executor`` (a name or descriptor;
            ``None``: the controller places it), ``deps_pip``, ``deps_bash``,
            ``call_before`` and ``call_after``. Unset options are inherited
            from the lattice.

    Raises:
        SpecError: an option is unknown or invalid, or the positional
            argument is not a function.

    Example:
        >>> @electron(gpu="a100", retries=2)
        ... def embed(text: str) -> list[float]:
        ...     return [float(len(text))]
        >>> embed
        <electron embed: 1x A100 40GB, 1 CPU, retries=2>
    """
    if function is not None and not callable(function):
        raise SpecError(misuse_message("electron", function))
    name = getattr(function, "__name__", None)
    parsed = parse_options(f"electron '{name}'" if name else "@ct.electron(...)", options)
    if function is not None:
        return Electron(function, parsed)

    def decorate(function: Callable[P, R]) -> Electron[P, R]:
        if not callable(function):
            raise SpecError(misuse_message("electron", function))
        return Electron(function, parsed)

    return decorate
