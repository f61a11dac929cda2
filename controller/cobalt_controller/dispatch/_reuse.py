"""A new dispatch takes over the results of an earlier one where nothing changed.

``ct.redispatch(..., reuse_previous_results=True)`` names the earlier dispatch.
Each node gets a Merkle key: a parameter's is the sha256 of its pickled value;
any other node's is the sha256 of its kind, its pickled function's sha256 and,
for each input, its position, keyword, whether it only orders, and the key of
the node it comes from. Equal keys mean the same function of the same values,
all the way up. A task of the new dispatch whose key is that of a task the
earlier one completed is marked completed with that task's output, at no cost
and with no attempt; a changed function or argument changes the keys of every
task below it, so those run again.

The controller compares content addresses only; it never unpickles anything.
A task that draws random numbers or reads the clock gives other results on
another run, which reuse cannot know: such workflows should not reuse.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import TypeAlias

from cobalt_controller._payloads import Payloads
from cobalt_controller.dispatch._model import COMPLETED, PARAMETER, Task
from cobalt_controller.state import REUSED, NodeRow
from cobalt_executors import PayloadRef

InputShape: TypeAlias = tuple[int, int, str, bool]
"""One input: parent node id, position (-1 for a keyword), keyword, wait only."""
NodeShape: TypeAlias = tuple[str, str, str, Sequence[InputShape]]
"""What a node's key is made of: kind, function sha256, value sha256, inputs."""


def merkle_keys(nodes: Sequence[NodeShape]) -> list[str]:
    """One key per node, in node order.

    Ids are not an order (a task is numbered before the parameters made from
    its arguments), so each key is made after its parents'. A node in a cycle,
    or with an input that is not a node, gets "", as does every node below it:
    "" matches nothing.

    Example:
        >>> call = ("electron", "f", "", [(1, 0, "", False)])
        >>> a = merkle_keys([call, ("parameter", "", "v1", ())])
        >>> b = merkle_keys([call, ("parameter", "", "v2", ())])
        >>> a[0] == b[0], len(a[0])
        (False, 64)
    """
    return _walk(nodes)[0]


def _walk(nodes: Sequence[NodeShape]) -> tuple[list[str], list[int]]:
    """The keys, and the node ids with every parent before its children."""
    n = len(nodes)
    keys = [""] * n
    order: list[int] = []
    state = [0] * n  # 0: not seen, 1: its parents are being keyed, 2: keyed
    for root in range(n):
        stack = [(root, False)]
        while stack:
            i, parents_keyed = stack.pop()
            if state[i] == 2:
                continue
            if parents_keyed or state[i] == 1:  # state 1 here: i is its own ancestor
                keys[i] = _key(nodes[i], keys) if parents_keyed else ""
                state[i] = 2
                order.append(i)
                continue
            state[i] = 1
            stack.append((i, True))
            stack.extend((p, False) for p, *_ in nodes[i][3] if 0 <= p < n and state[p] != 2)
    return keys, order


def _key(node: NodeShape, keys: list[str]) -> str:
    kind, function_sha, value_sha, inputs = node
    if kind == PARAMETER:
        parts: list[object] = [PARAMETER, value_sha]
    else:
        edges = []
        for parent, position, keyword, wait_only in inputs:
            parent_key = keys[parent] if 0 <= parent < len(keys) else ""
            if not parent_key:
                return ""
            edges.append((position, keyword, wait_only, parent_key))
        parts = [kind, function_sha, sorted(edges)]
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


def task_shapes(tasks: Sequence[Task]) -> list[NodeShape]:
    """The shapes of a new dispatch's tasks, as :func:`merkle_keys` takes them."""
    return [
        (
            t.kind,
            t.fn_sha,
            t.output.sha256 if t.kind == PARAMETER and t.output is not None else "",
            [(i.parent, i.position, i.keyword, i.wait_only) for i in t.inputs],
        )
        for t in tasks
    ]


def row_shapes(rows: Sequence[NodeRow]) -> list[NodeShape]:
    """The shapes of a stored dispatch's nodes; unreadable inputs match nothing."""
    shapes: list[NodeShape] = []
    for row in rows:
        try:
            stored = json.loads(row.inputs)
            inputs = [(int(p), int(pos), str(kw), bool(w)) for p, pos, kw, w in stored]
        except (ValueError, TypeError):
            inputs = [(-1, 0, "", False)]
        shapes.append((row.kind, row.function_sha256, row.value_sha256, inputs))
    return shapes


def reuse_results(
    tasks: list[Task], previous_id: str, previous: Sequence[NodeRow], payloads: Payloads
) -> int:
    """Marks the tasks of a new dispatch that the earlier one already completed.

    A task is reused when its key is the key of a completed node of
    ``previous`` whose output is still stored, and every task it depends on
    was reused too. Each waiting count is then recounted. Returns how many
    tasks were reused.
    """
    done: dict[str, NodeRow] = {}
    for key, row in zip(merkle_keys(row_shapes(previous)), previous, strict=True):
        if key and row.kind != PARAMETER and row.status == COMPLETED and row.output_sha256:
            done.setdefault(key, row)
    if not done:
        return 0
    gone = payloads.missing({row.output_sha256 for row in done.values()})
    now = time.time()
    reused = 0
    keys, order = _walk(task_shapes(tasks))
    for t in (tasks[i] for i in order):
        match = done.get(keys[t.node_id]) if keys[t.node_id] else None
        if t.kind == PARAMETER or match is None or match.output_sha256 in gone:
            continue
        if any(tasks[i.parent].status != COMPLETED for i in t.inputs):
            continue
        t.status = COMPLETED
        t.output = PayloadRef(match.output_sha256, None, 0)
        t.reason = REUSED
        t.placement = f"reused from dispatch {previous_id} node {match.node_id}"
        # It took no time: its start is its end, as Covalent marks a reused node.
        t.started_at = t.ended_at = now
        reused += 1
    if reused:
        for t in tasks:
            if t.status != COMPLETED:
                t.waiting = len({i.parent for i in t.inputs if tasks[i.parent].status != COMPLETED})
    return reused
