"""The workflow graph of a dispatch, collapsed and laid out for the browser.

A 2,000-way fan-out drawn node by node is a grey smear, so tasks are grouped
before they are drawn: tasks of the same function whose inputs come from the
same groups are siblings of one fan-out and become one node, ``"square ×2000"``.
A map over a pipeline stays a pipeline of groups (``"load ×500"`` then
``"train ×500"``), and a reduce stays one node under its group. Runs of the
same function called one after another (``x = step(x)`` in a loop) become one
node as well. Small groups stay expanded, so a short workflow shows every task.

Only electrons and sublattices are drawn. Parameters vanish, and the graph's
plumbing (collections, attribute and item access) is looked through: a task
fed by ``[f(i) for i in ...]`` gets an edge from each ``f``.

The layout is layered, top to bottom: a node's layer is one more than its
deepest parent's, and each node sits as close as it can under the middle of
its parents.

Example:
    >>> import json
    >>> from cobalt_controller.state import NodeRow
    >>> def node(i, name, kind, parents=()):
    ...     inputs = json.dumps([[p, k, "", False] for k, p in enumerate(parents)])
    ...     return NodeRow("d", i, name, kind, "PENDING", inputs=inputs)
    >>> rows = [node(0, "n", "parameter")]
    >>> rows += [node(i, "square", "electron", [0]) for i in range(1, 2001)]
    >>> rows.append(node(2001, "[...]", "collection", range(1, 2001)))
    >>> rows.append(node(2002, "total", "electron", [2001]))
    >>> [(n["label"], n["count"]) for n in build(rows)["nodes"]]
    [('square ×2000', 2000), ('total', 1)]
"""  # noqa: RUF002

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cobalt_controller.dashboard._views import TASK_KINDS
from cobalt_controller.state import NodeRow

MIN_GROUP = 4
"""Sibling tasks of one function from this many on are drawn as one node."""
MAX_NODES = 150
"""Past this many nodes, every group of two or more siblings is drawn as one node."""
MIN_SEQUENCE = 3
"""Calls of one function in a row from this many on are drawn as one node."""

NODE_H = 40
LAYER_GAP = 44
NODE_GAP = 18
MARGIN = 12

TIMES = "\u00d7"
"""The multiplication sign of group labels: ``"square ×2000"``."""  # noqa: RUF001

_EMPTY: frozenset[int] = frozenset()


@dataclass(slots=True)
class _Group:
    kind: str
    name: str
    parents: frozenset[int]
    members: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Shown:
    """One drawn node: a task, a group of sibling tasks, or a sequence."""

    kind: str
    name: str
    members: list[int]
    sequence: bool = False
    parents: set[int] = field(default_factory=set)
    children: set[int] = field(default_factory=set)


def _parents(node: NodeRow) -> list[int]:
    try:
        return [int(item[0]) for item in json.loads(node.inputs or "[]")]
    except (ValueError, TypeError, IndexError, KeyError):
        return []


def _union(sets: list[frozenset[int]]) -> frozenset[int]:
    if not sets:
        return _EMPTY
    if len(sets) == 1:
        return sets[0]
    return frozenset().union(*sets)


def _parents_first(nodes: Sequence[NodeRow], parents: dict[int, list[int]]) -> list[NodeRow]:
    """The nodes with every parent before its children. Ids do not give this order:
    a task is numbered before the parameters and collections made from its arguments."""
    by_id = {n.node_id: n for n in nodes}
    ordered = [n for n in nodes if not parents[n.node_id]]  # parameters, mostly
    placed = {n.node_id for n in ordered}
    expanded_ids: set[int] = set()
    for n in nodes:
        if n.node_id in placed:
            continue
        if all(p in placed for p in parents[n.node_id]):  # the common case: no search
            placed.add(n.node_id)
            ordered.append(n)
            continue
        stack = [(n.node_id, False)]
        while stack:
            node_id, expanded = stack.pop()
            if node_id in placed or node_id not in by_id:
                continue
            if expanded:
                placed.add(node_id)
                ordered.append(by_id[node_id])
                continue
            if node_id in expanded_ids:  # only a malformed, cyclic graph comes back here
                continue
            expanded_ids.add(node_id)
            stack.append((node_id, True))
            stack.extend((p, False) for p in reversed(parents[node_id]) if p not in placed)
    return ordered


class _Builder:
    def __init__(self, nodes: Sequence[NodeRow]) -> None:
        self.parents = {n.node_id: _parents(n) for n in nodes}
        nodes = _parents_first(nodes, self.parents)
        self.rank = {n.node_id: i for i, n in enumerate(nodes)}
        self.group_of: dict[int, int] = {}
        self.groups: list[_Group] = []
        self._hidden_groups: dict[int, frozenset[int]] = {}
        self._hidden_tasks: dict[int, frozenset[int]] = {}
        self._group_sets: dict[int, frozenset[int]] = {}
        keys: dict[tuple[str, str, frozenset[int]], int] = {}
        for n in nodes:
            parent_groups = _union([self._groups_behind(p) for p in self.parents[n.node_id]])
            if n.kind not in TASK_KINDS:
                self._hidden_groups[n.node_id] = parent_groups
                continue
            key = (n.kind, n.name, parent_groups)
            gid = keys.get(key)
            if gid is None:
                gid = keys[key] = len(self.groups)
                self.groups.append(_Group(n.kind, n.name, parent_groups))
            self.groups[gid].members.append(n.node_id)
            self.group_of[n.node_id] = gid

    def _groups_behind(self, node_id: int) -> frozenset[int]:
        gid = self.group_of.get(node_id)
        if gid is None:
            return self._hidden_groups.get(node_id, _EMPTY)
        found = self._group_sets.get(gid)
        if found is None:
            found = self._group_sets[gid] = frozenset((gid,))
        return found

    def task_parents(self, node_id: int) -> frozenset[int]:
        """The tasks whose outputs reach this node, looking through hidden nodes."""
        pending = [p for p in self.parents.get(node_id, ()) if p not in self.group_of]
        todo: set[int] = set()
        while pending:
            p = pending.pop()
            if p in todo or p in self._hidden_tasks:
                continue
            todo.add(p)
            pending.extend(q for q in self.parents.get(p, ()) if q not in self.group_of)
        for h in sorted(todo, key=lambda h: self.rank.get(h, -1)):  # parents before their children
            self._hidden_tasks[h] = self._direct(h)
        return self._direct(node_id)

    def _direct(self, node_id: int) -> frozenset[int]:
        return _union(
            [
                frozenset((p,)) if p in self.group_of else self._hidden_tasks.get(p, _EMPTY)
                for p in self.parents.get(node_id, ())
            ]
        )


def _shown_nodes(b: _Builder) -> list[_Shown]:
    collapse = [len(g.members) >= MIN_GROUP for g in b.groups]
    if sum(1 if c else len(g.members) for c, g in zip(collapse, b.groups, strict=True)) > MAX_NODES:
        collapse = [len(g.members) >= 2 for g in b.groups]
    shown: list[_Shown] = []
    group_node: dict[int, int] = {}
    task_node: dict[int, int] = {}
    for gid, g in enumerate(b.groups):
        if collapse[gid]:
            group_node[gid] = len(shown)
            shown.append(_Shown(g.kind, g.name, g.members))
        else:
            for m in g.members:
                task_node[m] = len(shown)
                shown.append(_Shown(g.kind, g.name, [m]))

    def node_of(task: int) -> int:
        gid = b.group_of[task]
        return group_node[gid] if collapse[gid] else task_node[task]

    for gid, g in enumerate(b.groups):
        if collapse[gid] and all(collapse[p] for p in g.parents):
            child = group_node[gid]
            for p in g.parents:
                shown[child].parents.add(group_node[p])
            continue
        for m in g.members:
            child = node_of(m)
            for t in b.task_parents(m):
                parent = node_of(t)
                if parent != child:
                    shown[child].parents.add(parent)
    for i, s in enumerate(shown):
        for p in s.parents:
            shown[p].children.add(i)
    return _merge_sequences(shown)


def _merge_sequences(shown: list[_Shown]) -> list[_Shown]:
    """Folds runs of single calls of one function, each feeding only the next."""

    def follows(i: int) -> int | None:
        s = shown[i]
        if len(s.members) != 1 or len(s.children) != 1:
            return None
        (j,) = s.children
        n = shown[j]
        if len(n.members) != 1 or len(n.parents) != 1 or (n.kind, n.name) != (s.kind, s.name):
            return None
        return j

    head_of: dict[int, int] = {}
    runs: dict[int, list[int]] = {}
    for i in range(len(shown)):
        if i in head_of:
            continue
        run = [i]
        while (j := follows(run[-1])) is not None:
            run.append(j)
        if len(run) < MIN_SEQUENCE:
            run = [i]
        runs[i] = run
        for j in run:
            head_of[j] = i
    order = sorted(runs)
    index = {head: k for k, head in enumerate(order)}
    merged: list[_Shown] = []
    for head in order:
        run = runs[head]
        first = shown[head]
        merged.append(
            _Shown(
                first.kind,
                first.name,
                [m for j in run for m in shown[j].members],
                sequence=len(run) > 1,
            )
        )
    for head in order:
        k = index[head]
        for j in runs[head]:
            for p in shown[j].parents:
                q = index[head_of[p]]
                if q != k:
                    merged[k].parents.add(q)
                    merged[q].children.add(k)
    return merged


def _width(s: _Shown, label: str) -> int:
    # Room for the label, and for a group's "1,234/2,000 done · 12 running".
    sub = 2 * len(f"{len(s.members):,}") + 16 if len(s.members) > 1 else 0
    return max(96, min(260, 7 * max(len(label), sub) + 30))


def _label(s: _Shown) -> str:
    return f"{s.name} {TIMES}{len(s.members)}" if len(s.members) > 1 else s.name


def _runs(members: list[int]) -> list[list[int]]:
    """``[1, 2, 3, 7]`` as ``[[1, 3], [7, 7]]``: compact for 100,000-task groups."""
    out: list[list[int]] = []
    for m in sorted(members):
        if out and out[-1][1] == m - 1:
            out[-1][1] = m
        else:
            out.append([m, m])
    return out


def _layout(shown: list[_Shown]) -> tuple[list[dict[str, Any]], int, int]:
    layer = [0] * len(shown)
    indegree = [len(s.parents) for s in shown]
    ready = [i for i, d in enumerate(indegree) if d == 0]
    order: list[int] = []
    while ready:
        i = ready.pop()
        order.append(i)
        for c in shown[i].children:
            layer[c] = max(layer[c], layer[i] + 1)
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    layers: dict[int, list[int]] = {}
    for i in range(len(shown)):
        layers.setdefault(layer[i], []).append(i)
    widths = [_width(s, _label(s)) for s in shown]
    center = [0.0] * len(shown)
    for depth in sorted(layers):
        members = layers[depth]
        wanted: dict[int, float] = {}
        for i in members:
            ps = shown[i].parents
            if ps:
                wanted[i] = sum(center[p] for p in ps) / len(ps)
        members.sort(key=lambda i: (wanted.get(i, 0.0), i))
        right: float | None = None
        for i in members:
            half = widths[i] / 2
            want = wanted.get(i)
            if right is None:
                mid = half if want is None else want
            else:
                mid = max(right + NODE_GAP + half, want if want is not None else float("-inf"))
            center[i] = mid
            right = mid + half
        if wanted:
            # Pushing nodes apart moved them right; centre the layer under its parents.
            placed = sum(center[i] for i in wanted) / len(wanted)
            shift = sum(wanted.values()) / len(wanted) - placed
            for i in members:
                center[i] += shift
    left = min((center[i] - widths[i] / 2 for i in range(len(shown))), default=0.0)
    nodes: list[dict[str, Any]] = []
    width = height = 0
    for i, s in enumerate(shown):
        x = round(center[i] - widths[i] / 2 - left) + MARGIN
        y = layer[i] * (NODE_H + LAYER_GAP) + MARGIN
        width = max(width, x + widths[i] + MARGIN)
        height = max(height, y + NODE_H + MARGIN)
        nodes.append(
            {
                "id": i,
                "label": _label(s),
                "name": s.name,
                "kind": s.kind,
                "count": len(s.members),
                "sequence": s.sequence,
                "members": _runs(s.members),
                "x": x,
                "y": y,
                "w": widths[i],
                "h": NODE_H,
            }
        )
    return nodes, width, height


def build(nodes: Sequence[NodeRow]) -> dict[str, Any]:
    """The drawable graph: collapsed nodes with positions, and edges between them.

    Returns:
        ``{"nodes": [...], "edges": [[parent, child], ...], "width", "height",
        "tasks"}``; each node has ``label``, ``count``, ``members`` (node ids as
        inclusive ``[first, last]`` runs) and its box ``x, y, w, h``.
    """
    builder = _Builder(nodes)
    shown = _shown_nodes(builder)
    laid_out, width, height = _layout(shown)
    edges = sorted([p, i] for i, s in enumerate(shown) for p in s.parents)
    return {
        "nodes": laid_out,
        "edges": edges,
        "width": width,
        "height": height,
        "tasks": len(builder.group_of),
    }
