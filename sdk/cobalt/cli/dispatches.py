"""``cobalt dispatches``: recent dispatches with their cost, each sublattice under its parent.

A sublattice runs as a dispatch of its own, and its cost is also counted in
the dispatch that ran it. The listing puts it right under that parent,
marked ``└``, and says "in parent's" beside its cost, so that nobody adds it
twice. A sublattice whose parent is older than the listing reaches names the
parent instead ("part of ...").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from cobalt._client import get_client
from cobalt._dispatch import cancel
from cobalt._records import count_words, status_from_pb
from cobalt._result import format_cost, format_table
from cobalt_common.hardware import format_duration
from cobalt_common.pricing import format_usd
from cobalt_common.v1 import controller_pb2 as pb

CHILD = "└ "
IN_PARENT = "(in parent's)"
HEADER = ("dispatch", "name", "status", "created", "duration", "cost", "tasks", "by status")


def nest(dispatches: Sequence[pb.Dispatch]) -> list[tuple[int, pb.Dispatch]]:
    """Each dispatch with its depth, sublattices right under their parent (oldest first).

    The others keep their order; a sublattice whose parent is not among
    ``dispatches`` is one of them, at depth 0.
    """
    listed = {d.dispatch_id for d in dispatches}

    def parent_listed(d: pb.Dispatch) -> bool:
        return d.parent_dispatch_id in listed and d.parent_dispatch_id != d.dispatch_id

    children: dict[str, list[pb.Dispatch]] = {}
    for d in sorted(dispatches, key=lambda d: d.created_at):
        if parent_listed(d):
            children.setdefault(d.parent_dispatch_id, []).append(d)
    nested: list[tuple[int, pb.Dispatch]] = []
    pending = [(0, d) for d in reversed(dispatches) if not parent_listed(d)]
    while pending:
        depth, d = pending.pop()
        nested.append((depth, d))
        pending.extend((depth + 1, c) for c in reversed(children.get(d.dispatch_id, [])))
    return nested


def _row(depth: int, d: pb.Dispatch) -> tuple[str, ...]:
    took = format_duration(d.ended_at - d.started_at) if d.ended_at and d.started_at else "-"
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.created_at))
    cost = format_cost(d.cost_usd, d.emulated)
    if d.budget_usd:
        cost += f" of {format_usd(d.budget_usd)}"
    name = d.name
    if d.parent_dispatch_id:
        cost += f" {IN_PARENT}"
        if not depth:
            name += f" (part of {d.parent_dispatch_id})"
    return (
        "  " * max(depth - 1, 0) + (CHILD if depth else "") + d.dispatch_id,
        name,
        str(status_from_pb(d.status)),
        created,
        took,
        cost,
        str(d.task_count),
        count_words(d.status_counts),
    )


def format_dispatches(dispatches: Sequence[pb.Dispatch]) -> str:
    """The listing: a table, and a note on sublattices' cost when there are any."""
    nested = nest(dispatches)
    table = format_table(HEADER, [_row(depth, d) for depth, d in nested], right=(4, 5, 6))
    if not any(d.parent_dispatch_id for d in dispatches):
        return table
    note = f"{CHILD.strip()} marks a sublattice: a dispatch of its own, under the one that ran it"
    if any(d.parent_dispatch_id and not depth for depth, d in nested):
        note += " (or marked 'part of' it, when that one is not listed)"
    return (
        f"{table}\n\n{note}. A cost marked {IN_PARENT} is already included "
        "in its parent's cost: do not add it again."
    )


def _dispatches(args: argparse.Namespace) -> int:
    client = get_client()
    resp = client.call(client.stub.DispatchList, pb.DispatchListRequest(limit=args.limit))
    print(format_dispatches(resp.dispatches))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    result = cancel(args.dispatch_id, args.task or None)
    what = f"task(s) {', '.join(map(str, args.task))} of " if args.task else ""
    print(f"cancelled {what}dispatch {result.dispatch_id}: now {result.status}")
    return 0


def add_parser(sub: Any) -> None:
    """Adds ``cobalt dispatches`` (and ``cobalt dispatches cancel``) to the command line."""
    ls = sub.add_parser("dispatches", help="list recent dispatches with their cost")
    ls.add_argument("--limit", type=int, default=20)
    ls.set_defaults(fn=_dispatches)
    actions = ls.add_subparsers(dest="action")
    stop = actions.add_parser("cancel", help="cancel a dispatch, or only some of its tasks")
    stop.add_argument("dispatch_id")
    stop.add_argument(
        "--task",
        type=int,
        action="append",
        default=[],
        metavar="NODE_ID",
        help="cancel only this task (repeat for more); its dependents do not run",
    )
    stop.set_defaults(fn=_cancel)
