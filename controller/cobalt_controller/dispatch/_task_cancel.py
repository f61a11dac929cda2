"""Which tasks of a dispatch a ``DispatchCancel`` with ``task_ids`` may name.

Only electrons and sublattices are tasks a user sees (``Result.tasks`` lists
their node ids); parameters, collections and lookups are not, and an id
outside the dispatch is a mistake worth saying so about.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cobalt_common.errors import SpecError
from cobalt_controller.dispatch._model import TASK_KINDS


def check_task_ids(dispatch_id: str, kinds: Sequence[str], task_ids: Iterable[int]) -> list[int]:
    """The ids, each once, in the order given; a :class:`SpecError` for any that is
    not an electron or a sublattice of the dispatch (``kinds``: each node's kind).

    Example:
        >>> check_task_ids("d" * 32, ["parameter", "electron", "electron"], [2, 1, 2])
        [2, 1]
    """
    ids = list(dict.fromkeys(task_ids))
    for node_id in ids:
        if not 0 <= node_id < len(kinds):
            raise SpecError(
                f"dispatch {dispatch_id} has no task {node_id}: its node ids run from 0 to "
                f"{len(kinds) - 1}; Result.tasks lists its tasks and their node ids."
            )
        if kinds[node_id] not in TASK_KINDS:
            raise SpecError(
                f"node {node_id} of dispatch {dispatch_id} is a {kinds[node_id]}, not a task, "
                "so there is nothing of it to cancel; cancel the electrons it feeds or comes "
                "from (Result.tasks lists them and their node ids)."
            )
    return ids
