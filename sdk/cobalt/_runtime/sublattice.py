"""What a sublattice's task runs in a worker: its lattice, as a child dispatch.

``ct.electron(ct.lattice(f))`` makes a ``SUBLATTICE`` node whose function is a
:class:`SublatticeCall`. In the worker it builds the inner lattice's graph with
the node's arguments, dispatches it to the controller that runs the task (the
task's environment names it), waits, and returns the child's value.
"""

from __future__ import annotations

import os
from typing import Any

import cloudpickle

from cobalt._client import get_client
from cobalt._lattice import Lattice
from cobalt._submit import create, wait_until_ended
from cobalt_common.errors import TaskFailedError


class SublatticeCall:
    """The function of a ``SUBLATTICE`` node: builds and runs the inner lattice.

    Args:
        lattice: the lattice to run with the node's arguments.
    """

    __slots__ = ("lattice",)

    def __init__(self, lattice: Lattice[..., Any]) -> None:
        self.lattice = lattice

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return run_sublattice(self.lattice, args, kwargs)

    def __repr__(self) -> str:
        return f"SublatticeCall({self.lattice!r})"


def run_sublattice(
    lattice: Lattice[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Runs a sublattice from inside the task that stands for it, as a child dispatch."""
    graph = lattice.build_graph(*args, **kwargs)
    client = get_client()
    parent = None
    if os.environ.get("COBALT_DISPATCH_ID"):
        parent = (os.environ["COBALT_DISPATCH_ID"], int(os.environ.get("COBALT_NODE_ID", "0")))
    dispatch_id = create(client, graph, parent, source=(lattice, args, kwargs)).dispatch_id
    result = wait_until_ended(client, dispatch_id, None)
    if result.status.value != "COMPLETED":
        raise TaskFailedError(
            f"sublattice {graph.name!r} (dispatch {dispatch_id}) ended {result.status}:\n"
            f"{result.error}",
            reason="exception",
        )
    return cloudpickle.loads(client.fetch_payload(result._output)) if result._output else None
