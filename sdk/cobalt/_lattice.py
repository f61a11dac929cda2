"""``@ct.lattice``: a workflow of electrons.

A lattice's options (:mod:`cobalt._options`) are the defaults its electrons
inherit. Called directly, a lattice runs here as a plain function;
:meth:`Lattice.build_graph` runs it once while recording every electron call
as a node. A lattice called as an electron is a sublattice, run by
:class:`~cobalt._runtime.sublattice.SublatticeCall` in a worker.

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
    >>> graph.nodes[graph.output].name, graph.nodes[0].options.hardware.describe()
    (':list:', '1x L4, 1 CPU, limit 1h')
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, Unpack, overload

from cobalt._executors import ExecutorLike
from cobalt._graph import BUILTIN_OPTIONS, Graph, GraphBuilder, NodeKind, current_builder
from cobalt._options import (
    Options,
    OptionsKwargs,
    misuse_message,
    parse_executor,
    parse_options,
)
from cobalt_common.errors import GraphError, SpecError

P = ParamSpec("P")
R = TypeVar("R")


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
        workflow_executor: where the nodes cobalt adds to assemble values
            (collections, lookups) run; ``None``: wherever the controller
            places them.
    """

    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, R]

    def __init__(
        self,
        function: Callable[P, R],
        options: Options,
        workflow_executor: ExecutorLike | None = None,
    ) -> None:
        functools.update_wrapper(self, function, updated=())
        self.function = function
        self.options = options
        self.workflow_executor = workflow_executor
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
        return self.build_replacing({}, args, kwargs)

    def build_replacing(
        self,
        replacements: Mapping[str, Callable[..., Any]],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
    ) -> Graph:
        """:meth:`build_graph`, calling ``replacements[name]`` wherever the function
        calls an electron of that name (a plain function there keeps the options of
        the electron it replaces).

        Raises:
            GraphError: as :meth:`build_graph`, or a name in ``replacements`` is not
                the name of an electron the lattice calls.
        """
        check_arguments("lattice", self._name, self._signature, args, kwargs)
        builtin = dataclasses.replace(BUILTIN_OPTIONS, executor=self.workflow_executor)
        builder = GraphBuilder(self._name, self.options, builtin)
        builder.replacements = replacements
        with builder.active():
            result = self.function(*args, **kwargs)
        unused = sorted(set(replacements) - builder.replaced)
        if unused:
            called = sorted({n.name for n in builder.nodes if n.kind is NodeKind.ELECTRON})
            raise GraphError(
                f"replace_electrons names {', '.join(map(repr, unused))}, but lattice "
                f"'{self._name}' calls no electron of that name; it calls "
                f"{', '.join(map(repr, called)) or 'none'}. Keys are the electrons' function names."
            )
        return builder.finish(result)

    def __repr__(self) -> str:
        given = self.options.given()
        spec = self.options.hardware().describe() if given else "no defaults"
        return f"<lattice {self._name}: {spec}>"


@overload
def lattice(
    function: Callable[P, R],
    /,
    *,
    workflow_executor: ExecutorLike | None = None,
    **options: Unpack[OptionsKwargs],
) -> Lattice[P, R]: ...


@overload
def lattice(
    function: None = None,
    /,
    *,
    workflow_executor: ExecutorLike | None = None,
    **options: Unpack[OptionsKwargs],
) -> Callable[[Callable[P, R]], Lattice[P, R]]: ...


def lattice(function: object = None, /, *, workflow_executor: Any = None, **options: Any) -> Any:
    """Make a function a workflow: bare (``@ct.lattice``) or with default options.

    Args:
        function: the workflow function (given when used bare).
        workflow_executor: where the nodes cobalt adds to assemble values run
            (the lists, tuples and dicts of task outputs, and lookups such as
            ``out["key"]``): an executor's name or descriptor, as ``executor=``.
            This is what Covalent's option of that name becomes: Covalent runs
            the lattice function again there to assemble its output, while
            cobalt assembles it in these nodes. ``None`` (the default): the
            controller places them.
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
    owner = f"lattice '{name}'" if name else "@ct.lattice(...)"
    parsed = parse_options(owner, options)
    where = parse_executor(workflow_executor, f"{owner} workflow_executor")
    if function is not None:
        return Lattice(function, parsed, where)

    def decorate(function: Callable[P, R]) -> Lattice[P, R]:
        if not callable(function):
            raise SpecError(misuse_message("lattice", function))
        return Lattice(function, parsed, where)

    return decorate
