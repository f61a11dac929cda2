"""The graph a lattice builds, and the machinery that records it.

While :meth:`Lattice.build_graph` runs the lattice function, a
:class:`GraphBuilder` is active in a context variable. Calling an electron
then records a node and returns a :class:`NodeRef`, a placeholder for the
task's output. Every argument of a node is a parent node: literals become
``PARAMETER`` nodes, lists, tuples and dicts holding refs become
``COLLECTION`` nodes, ``ref.attr`` / ``ref[key]`` become ``GETATTR`` /
``GETITEM`` nodes, and operators (``ref + 1``, ``ref == 10``) become
``OPERATION`` nodes.

Node ids are numbered as Covalent numbers them: a node gets its id before
the nodes made from its arguments, so in ``return add(1, 2)`` node 0 is
``add`` and nodes 1 and 2 its parameters. A parent may therefore have a
larger id than its child; the graph is acyclic all the same.

Example:
    >>> from cobalt._electron import electron
    >>> from cobalt._lattice import lattice
    >>> add = electron(lambda x, y: x + y)
    >>> graph = lattice(lambda a: [add(a, 1)]).build_graph(5)
    >>> [f"{node.kind}:{node.name}" for node in graph.nodes]
    ['electron:<lambda>', 'parameter::parameter:', 'parameter::parameter:', 'collection::list:']
"""

from __future__ import annotations

import contextlib
import dataclasses
import dis
import enum
import operator
import sys
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, NoReturn, SupportsIndex, TypeVar, cast

from cobalt import _operators
from cobalt._options import Options, TaskOptions
from cobalt_common.errors import GraphError
from cobalt_common.hardware import HardwareSpec

T = TypeVar("T")


class NodeKind(enum.StrEnum):
    """What a node of the graph does."""

    ELECTRON = "electron"
    PARAMETER = "parameter"
    COLLECTION = "collection"
    GETATTR = "getattr"
    GETITEM = "getitem"
    SUBLATTICE = "sublattice"
    OPERATION = "operation"


BUILTIN_OPTIONS = TaskOptions(HardwareSpec(cpus=0), retries=0, executor=None)
"""Options of the nodes cobalt adds itself (parameters, collections, lookups, operators)."""


@dataclass(slots=True)
class GraphNode:
    """One node; ``function(*args, **kwargs)`` over the parents' outputs gives its output."""

    node_id: int
    kind: NodeKind
    name: str
    function: Callable[..., Any] | None
    value: Any = None
    args: list[int] = field(default_factory=list)
    kwargs: dict[str, int] = field(default_factory=dict)
    waits: list[int] = field(default_factory=list)
    options: TaskOptions = BUILTIN_OPTIONS


@dataclass(slots=True)
class Graph:
    """A built lattice: its nodes in creation order and the node holding the result."""

    name: str
    nodes: list[GraphNode]
    output: int
    replaced: set[int] = field(default_factory=set)
    """Nodes whose electron was swapped for another (``ct.redispatch``)."""
    stored_functions: dict[str, str] = field(default_factory=dict)
    """sha256 of the pickled function already stored on the controller, by function
    key, for the electrons not in ``replaced``: a function that came back from a
    stored lattice is sent by that address, not pickled again, since pickling the
    same function twice can give other bytes (pickle's memo follows object identity)."""


def _collect_list(*items: Any) -> list[Any]:
    return list(items)


def _collect_tuple(*items: Any) -> tuple[Any, ...]:
    return items


def _collect_namedtuple(cls: Callable[..., T], *items: Any) -> T:
    return cls(*items)


def _collect_dict(keys: Sequence[Any], *values: Any) -> dict[Any, Any]:
    return dict(zip(keys, values, strict=True))


class NodeRef:
    """The future output of a task, returned by electrons called inside a lattice.

    Attribute access and indexing record ``GETATTR`` / ``GETITEM`` nodes;
    ``a, b = ref`` records one ``GETITEM`` per name. Arithmetic, comparisons
    and unary operators record ``OPERATION`` nodes (see :mod:`cobalt._operators`),
    so ``return out == 10`` returns the real comparison. Anything that needs the
    real value now (truth value, ``len``, ``int()``, iterating without a known
    length, calling, pickling) raises :class:`GraphError`. A ref hashes by
    identity, since ``==`` builds a node rather than comparing.
    """

    __slots__ = ("_builder", "_node_id")
    _builder: GraphBuilder
    _node_id: int

    def __init__(self, builder: GraphBuilder, node_id: int) -> None:
        object.__setattr__(self, "_builder", builder)
        object.__setattr__(self, "_node_id", node_id)

    def _name(self) -> str:
        return self._builder.nodes[self._node_id].name

    def __getattr__(self, name: str) -> NodeRef:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._builder.lookup(NodeKind.GETATTR, self, name)

    def __getitem__(self, key: Any) -> NodeRef:
        return self._builder.lookup(NodeKind.GETITEM, self, key)

    def __iter__(self) -> Iterator[NodeRef]:
        count = _unpack_count(sys._getframe(1))
        if count is None:
            self._unknown("iterated over", "Index it (out[0]) or unpack it (a, b = out)")
        return iter([self[index] for index in range(count)])

    def __bool__(self) -> bool:
        self._unknown(
            "used in if/while/and/or/not (nor in `if out == 10:`: comparing an output "
            "records a node, it does not compare now)",
            "Move the condition into an electron, or the branches into a sublattice "
            "(ct.electron(ct.lattice(f))) that receives the value",
        )

    def __len__(self) -> int:
        self._unknown("measured with len()", "Return the length from an electron")

    def __contains__(self, item: object) -> bool:
        self._unknown("searched with `in`", "Do the membership test inside an electron")

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._unknown(
            "called (a method call such as out.keys(), or dict(out), needs the value)",
            "Call it inside an electron",
        )

    def __int__(self) -> NoReturn:
        self._converted("int()")

    def __float__(self) -> NoReturn:
        self._converted("float()")

    def __complex__(self) -> NoReturn:
        self._converted("complex()")

    def __index__(self) -> NoReturn:
        self._converted("an integer index (operator.index, range, slicing a list)")

    def __round__(self, ndigits: int | None = None) -> NoReturn:
        self._converted("round()")

    def __trunc__(self) -> NoReturn:
        self._converted("math.trunc()")

    def __floor__(self) -> NoReturn:
        self._converted("math.floor()")

    def __ceil__(self) -> NoReturn:
        self._converted("math.ceil()")

    def __hash__(self) -> int:
        return id(self)

    def __setattr__(self, name: str, value: Any) -> None:
        self._unknown("given attributes", "Build the object inside an electron")

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise GraphError(
            f"the output of task '{self._name()}' was about to be pickled as a literal value; "
            "pass it to electrons directly, or inside a list, tuple or dict, so cobalt can "
            "wire it as a dependency."
        )

    def __copy__(self) -> NodeRef:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> NodeRef:
        return self

    def __repr__(self) -> str:
        return f"<NodeRef {self._node_id}: {self._name()}>"

    def _converted(self, how: str) -> NoReturn:
        self._unknown(
            f"converted with {how}",
            "Convert it inside the electron that uses it, or use arithmetic (out + 1), "
            "which cobalt records as a node",
        )

    def _unknown(self, what: str, instead: str) -> NoReturn:
        raise GraphError(
            f"the output of task '{self._name()}' cannot be {what} while lattice "
            f"'{self._builder.name}' is being built: it is not computed yet. {instead}; "
            "electrons receive real values."
        )


def _binary(op: _operators.BinaryOperator, reflected: bool) -> Callable[[NodeRef, Any], Any]:
    def method(self: NodeRef, other: Any) -> NodeRef:
        operands = (other, self) if reflected else (self, other)
        return self._builder.operation(op.function, op.symbol, operands)

    method.__name__ = op.reflected if reflected else op.forward
    return method


def _unary(op: _operators.UnaryOperator) -> Callable[[NodeRef], Any]:
    def method(self: NodeRef) -> NodeRef:
        return self._builder.operation(op.function, op.template, (self,))

    method.__name__ = op.method
    return method


# The operator methods come from the tables of cobalt._operators, the one list of them.
for _op in _operators.ARITHMETIC:
    setattr(NodeRef, _op.forward, _binary(_op, reflected=False))
    setattr(NodeRef, _op.reflected, _binary(_op, reflected=True))
for _op in _operators.COMPARISONS:
    setattr(NodeRef, _op.forward, _binary(_op, reflected=False))
for _unary_op in _operators.UNARY:
    setattr(NodeRef, _unary_op.method, _unary(_unary_op))
del _op, _unary_op


def _unpack_count(frame: FrameType) -> int | None:
    for instruction in dis.get_instructions(frame.f_code):
        if instruction.offset == frame.f_lasti:
            return int(instruction.arg or 0) if instruction.opname == "UNPACK_SEQUENCE" else None
    return None


def _holds_ref(value: object, where: str, seen: set[int]) -> bool:
    """Whether ``value`` nests a NodeRef in lists, tuples or dict values; reject other places."""
    if isinstance(value, NodeRef):
        return True
    if id(value) in seen or isinstance(value, str | bytes | int | float):
        return False
    seen.add(id(value))
    if isinstance(value, list | tuple):
        return any(_holds_ref(item, where, seen) for item in value)
    if isinstance(value, dict):
        if any(_holds_ref(key, where, seen) for key in value):
            raise GraphError(f"{where}: a dict key cannot be a task's output; use it as a value.")
        return any(_holds_ref(item, where, seen) for item in value.values())
    if isinstance(value, set | frozenset) and any(_holds_ref(v, where, seen) for v in value):
        raise GraphError(f"{where}: a set cannot hold a task's output; use a list instead.")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = (getattr(value, f.name) for f in dataclasses.fields(value))
        if any(_holds_ref(item, where, seen) for item in fields):
            raise GraphError(
                f"{where}: {type(value).__name__} holds a task's output; build it inside an "
                "electron, or pass its fields as separate arguments."
            )
    return False


_BUILDER: ContextVar[GraphBuilder | None] = ContextVar("cobalt_graph_builder", default=None)


def current_builder() -> GraphBuilder | None:
    """Return the builder of the lattice being built in this context, if any."""
    return _BUILDER.get()


class GraphBuilder:
    """Records the nodes of one lattice build.

    Args:
        name: the lattice's name.
        defaults: the lattice's options, inherited by the electrons it calls.
        builtin_options: the options of the nodes cobalt adds (collections,
            lookups): no hardware, no retries, and the lattice's
            ``workflow_executor``.
    """

    def __init__(
        self, name: str, defaults: Options, builtin_options: TaskOptions = BUILTIN_OPTIONS
    ) -> None:
        self.name = name
        self.defaults = defaults
        self.builtin_options = builtin_options
        self.nodes: list[GraphNode] = []
        self._memo: dict[Hashable, Any] = {}
        self.replacements: Mapping[str, Callable[..., Any]] = {}
        """Electrons to call instead of those of these names (``ct.redispatch``)."""
        self.replaced: set[str] = set()
        """The names in ``replacements`` that the build called."""
        self.replaced_nodes: set[int] = set()

    @contextlib.contextmanager
    def active(self) -> Iterator[GraphBuilder]:
        """Make this the current builder for the duration of a ``with`` block."""
        token = _BUILDER.set(self)
        try:
            yield self
        finally:
            _BUILDER.reset(token)

    def memo(self, key: Hashable, factory: Callable[[], T]) -> T:
        """Return the value cached under ``key`` for this build, making it once."""
        if key not in self._memo:
            self._memo[key] = factory()
        return cast(T, self._memo[key])

    def record(
        self,
        kind: NodeKind,
        name: str,
        function: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: TaskOptions,
    ) -> NodeRef:
        """Add a task node, then the parents made from the call's arguments."""
        node = self._reserve(kind, name, function, options)
        node.args = [self.node_of(value, f"argument {i} of {name}") for i, value in enumerate(args)]
        node.kwargs = {k: self.node_of(v, f"argument {k!r} of {name}") for k, v in kwargs.items()}
        return NodeRef(self, node.node_id)

    def operation(
        self, function: Callable[..., Any], template: str, operands: Sequence[Any]
    ) -> NodeRef:
        """Add an ``OPERATION`` node applying ``function`` to ``operands`` (see
        :mod:`cobalt._operators`); ``template`` is ``"-{}"`` or a binary symbol."""
        labels = [_operators.operand_label(value, self._operand_name) for value in operands]
        name = f" {template} ".join(labels) if len(labels) == 2 else template.format(*labels)
        if current_builder() is not self:
            raise GraphError(
                f"`{name}` uses an output of lattice '{self.name}' after its build ended; "
                "operators on task outputs work only inside the lattice function."
            )
        node = self._reserve(NodeKind.OPERATION, name, function)
        node.args = [
            self.node_of(value, f"operand {i} of {name}") for i, value in enumerate(operands)
        ]
        return NodeRef(self, node.node_id)

    def _operand_name(self, value: Any) -> str | None:
        if not isinstance(value, NodeRef) or value._builder is not self:
            return None
        node = self.nodes[value._node_id]
        return (
            f"({node.name})" if node.kind is NodeKind.OPERATION and " " in node.name else node.name
        )

    def lookup(self, kind: NodeKind, parent: NodeRef, key: Any) -> NodeRef:
        """Add (once per parent and key) a ``GETATTR`` or ``GETITEM`` node."""
        parent_id = parent._node_id
        try:
            # A ref key stands for its node: comparing refs would build nodes.
            same = key._node_id if isinstance(key, NodeRef) else key
            memo_key: Hashable = (kind, parent_id, type(key), same)
            hash(memo_key)
        except TypeError:
            memo_key = object()
        return self.memo(memo_key, lambda: NodeRef(self, self._lookup(kind, parent_id, key)))

    def _lookup(self, kind: NodeKind, parent_id: int, key: Any) -> int:
        parent = self.nodes[parent_id].name
        label = key._name() if isinstance(key, NodeRef) else repr(key)
        name = f"{parent}.{key}" if kind is NodeKind.GETATTR else f"{parent}[{label}]"
        function = getattr if kind is NodeKind.GETATTR else operator.getitem
        node = self._reserve(kind, name, function)
        node.args = [parent_id, self.node_of(key, f"the key of {name}")]
        return node.node_id

    def node_of(self, value: Any, where: str) -> int:
        """Return the node giving ``value``: the ref's node, a collection or a parameter."""
        if isinstance(value, NodeRef):
            return self._own(value, where)
        if _holds_ref(value, where, set()):
            return self._collection(value, where)
        return self._parameter(value)

    def _collection(self, value: list[Any] | tuple[Any, ...] | dict[Any, Any], where: str) -> int:
        if isinstance(value, dict):
            node = self._reserve(NodeKind.COLLECTION, ":dict:", _collect_dict)
            keys = self._parameter(list(value))
            items = [self.node_of(item, f"{where}[{key!r}]") for key, item in value.items()]
            node.args = [keys, *items]
        elif isinstance(value, list):
            node = self._reserve(NodeKind.COLLECTION, ":list:", _collect_list)
            node.args = [self.node_of(item, f"{where}[{i}]") for i, item in enumerate(value)]
        elif not hasattr(value, "_fields"):
            node = self._reserve(NodeKind.COLLECTION, ":tuple:", _collect_tuple)
            node.args = [self.node_of(item, f"{where}[{i}]") for i, item in enumerate(value)]
        else:
            name = f":{type(value).__name__}:"
            node = self._reserve(NodeKind.COLLECTION, name, _collect_namedtuple)
            cls = self._parameter(type(value))
            items = [self.node_of(item, f"{where}[{i}]") for i, item in enumerate(value)]
            node.args = [cls, *items]
        return node.node_id

    def _own(self, ref: NodeRef, where: str) -> int:
        if ref._builder is not self:
            raise GraphError(
                f"{where} is the output of a task from another lattice build "
                f"('{ref._builder.name}'); call the electron inside lattice '{self.name}'."
            )
        return ref._node_id

    def _reserve(
        self,
        kind: NodeKind,
        name: str,
        function: Callable[..., Any],
        options: TaskOptions | None = None,
    ) -> GraphNode:
        """Number a node before its parents are made, as Covalent does; the caller
        then fills in its ``args`` and ``kwargs``. Without ``options`` it is a node
        cobalt adds, with the lattice's options for those."""
        options = options or self.builtin_options
        node = GraphNode(len(self.nodes), kind, name, function, options=options)
        self.nodes.append(node)
        return node

    def _parameter(self, value: Any) -> int:
        self.nodes.append(
            GraphNode(len(self.nodes), NodeKind.PARAMETER, ":parameter:", None, value)
        )
        return len(self.nodes) - 1

    def depends_on(self, node_id: int, ancestor: int) -> bool:
        """Whether ``ancestor`` is ``node_id`` or one of its (transitive) parents."""
        pending, seen = [node_id], set()
        while pending:
            current = pending.pop()
            if current == ancestor:
                return True
            if current not in seen:
                seen.add(current)
                node = self.nodes[current]
                pending += [*node.args, *node.kwargs.values(), *node.waits]
        return False

    def finish(self, output: Any) -> Graph:
        """Return the graph, with ``output`` (the lattice's return value) as its result."""
        output_id = self.node_of(output, f"the return value of lattice '{self.name}'")
        return Graph(self.name, self.nodes, output_id, self.replaced_nodes)


def wait(child: T, parents: Any) -> T:
    """Make ``child`` start only after ``parents`` finished, without passing data.

    Outside a lattice build it returns ``child`` unchanged.

    Args:
        child: the output of an electron called in this lattice.
        parents: one such output or a list of them.

    Raises:
        GraphError: ``child`` or a parent is not a task output of this build,
            or the wait would make a cycle.
    """
    builder = current_builder()
    if builder is None:
        return child
    items = list(parents) if isinstance(parents, list | tuple) else [parents]
    for item in (child, *items):
        if not isinstance(item, NodeRef):
            raise GraphError(
                f"ct.wait(child, parents) takes outputs of electrons called in lattice "
                f"'{builder.name}', got {item!r}; call the electron first and pass its result."
            )
    child_id = builder._own(cast(NodeRef, child), "ct.wait's child")
    node = builder.nodes[child_id]
    for parent in cast(list[NodeRef], items):
        parent_id = builder._own(parent, "ct.wait's parent")
        if builder.depends_on(parent_id, child_id):
            raise GraphError(
                f"ct.wait would make '{node.name}' wait for '{parent._name()}', which itself "
                "depends on it; that is a cycle. Swap child and parents."
            )
        if parent_id not in node.waits:
            node.waits.append(parent_id)
    return child
