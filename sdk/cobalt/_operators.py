"""Python operators on task outputs, recorded as ``OPERATION`` nodes.

Inside a lattice, ``out + 1``, ``-out`` or ``out == 10`` cannot be computed:
``out`` is a :class:`~cobalt._graph.NodeRef`. As in Covalent, each such
expression becomes a small builtin node of the graph that applies the
operator to the real values once its operands are computed. The node runs
the function from :mod:`operator` (pickled by reference, so workers need
nothing extra) and is named after the expression, such as ``add + 1``.

The tables below are the whole vocabulary: each entry gives the method names
that :class:`~cobalt._graph.NodeRef` implements, the function the node runs
and the symbol its name shows.

Example:
    >>> from cobalt._electron import electron
    >>> from cobalt._lattice import lattice
    >>> add = electron(lambda x, y: x + y)
    >>> graph = lattice(lambda: add(1, 2) * 10 == 30).build_graph()
    >>> [node.name for node in graph.nodes if node.kind == "operation"]
    ['<lambda> * 10', '(<lambda> * 10) == 30']
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, NamedTuple


class BinaryOperator(NamedTuple):
    """``a <symbol> b``: ``forward`` is ``a``'s method, ``reflected`` is ``b``'s."""

    forward: str
    reflected: str
    function: Callable[[Any, Any], Any]
    symbol: str


class UnaryOperator(NamedTuple):
    """``<symbol>a``, or ``abs(a)``: ``method`` is ``a``'s method."""

    method: str
    function: Callable[[Any], Any]
    template: str


ARITHMETIC = (
    BinaryOperator("__add__", "__radd__", operator.add, "+"),
    BinaryOperator("__sub__", "__rsub__", operator.sub, "-"),
    BinaryOperator("__mul__", "__rmul__", operator.mul, "*"),
    BinaryOperator("__truediv__", "__rtruediv__", operator.truediv, "/"),
    BinaryOperator("__floordiv__", "__rfloordiv__", operator.floordiv, "//"),
    BinaryOperator("__mod__", "__rmod__", operator.mod, "%"),
    BinaryOperator("__pow__", "__rpow__", operator.pow, "**"),
    BinaryOperator("__matmul__", "__rmatmul__", operator.matmul, "@"),
    BinaryOperator("__and__", "__rand__", operator.and_, "&"),
    BinaryOperator("__or__", "__ror__", operator.or_, "|"),
    BinaryOperator("__xor__", "__rxor__", operator.xor, "^"),
    BinaryOperator("__lshift__", "__rlshift__", operator.lshift, "<<"),
    BinaryOperator("__rshift__", "__rrshift__", operator.rshift, ">>"),
)
"""Binary operators; Python calls ``reflected`` on the right operand when the left
one (a literal) does not know how to combine with a task output."""

COMPARISONS = (
    BinaryOperator("__eq__", "__eq__", operator.eq, "=="),
    BinaryOperator("__ne__", "__ne__", operator.ne, "!="),
    BinaryOperator("__lt__", "__gt__", operator.lt, "<"),
    BinaryOperator("__le__", "__ge__", operator.le, "<="),
    BinaryOperator("__gt__", "__lt__", operator.gt, ">"),
    BinaryOperator("__ge__", "__le__", operator.ge, ">="),
)
"""Comparisons; Python reflects ``1 < out`` as ``out > 1``, so each is one method and
the node keeps the operands in the order Python gave them."""

UNARY = (
    UnaryOperator("__neg__", operator.neg, "-{}"),
    UnaryOperator("__pos__", operator.pos, "+{}"),
    UnaryOperator("__abs__", operator.abs, "abs({})"),
    UnaryOperator("__invert__", operator.invert, "~{}"),
)

_LITERAL_CHARS = 24


def operand_label(value: Any, node_name: Callable[[Any], str | None]) -> str:
    """How an operand reads in a node's name: a task's name, or a short literal."""
    name = node_name(value)
    if name is not None:
        return name
    text = repr(value)
    return text if len(text) <= _LITERAL_CHARS else text[: _LITERAL_CHARS - 3] + "..."
