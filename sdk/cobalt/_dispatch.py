"""``ct.dispatch``, ``ct.dispatch_sync``, ``ct.get_result`` and ``ct.cancel``.

The public calls over lattices and dispatch ids; sending a built graph and
waiting for it is :mod:`cobalt._submit`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal, overload

from cobalt._client import get_client
from cobalt._electron import Electron
from cobalt._lattice import Lattice
from cobalt._progress import wants_view
from cobalt._result import Fetch, Result
from cobalt._submit import WAIT_CHUNK_S, dispatch_graph, wait_showing, wait_until_ended
from cobalt_common.errors import ConfigError, GraphError, SpecError
from cobalt_common.v1 import controller_pb2 as pb


def lattice_of(obj: Any, api: str) -> Lattice[Any, Any]:
    """``obj`` if it is a lattice; a :class:`GraphError` naming ``api`` otherwise."""
    if isinstance(obj, Lattice):
        return obj
    name = getattr(obj, "__name__", type(obj).__name__)
    if isinstance(obj, Electron):
        raise GraphError(
            f"{api} expects a lattice, but {name!r} is an electron. Wrap the call in a "
            "@ct.lattice function, or decorate it with @ct.lattice instead."
        )
    raise GraphError(
        f"{api} expects a @ct.lattice function; got {name!r}. Decorate it with @ct.lattice."
    )


def check_budget(budget_usd: Any) -> float | None:
    """A budget is a positive, finite number of US dollars, or None for none."""
    if budget_usd is None:
        return None
    if (
        isinstance(budget_usd, bool)
        or not isinstance(budget_usd, int | float)
        or not math.isfinite(budget_usd)
        or budget_usd <= 0
    ):
        raise SpecError(
            f"budget_usd must be a positive number of US dollars, such as 25.0; got "
            f"{budget_usd!r}. Leave it out for no budget."
        )
    return float(budget_usd)


def dispatch(
    lattice: Any, *, budget_usd: float | None = None, **options: Any
) -> Callable[..., str]:
    """Returns a function that dispatches ``lattice`` with its arguments and
    returns the dispatch id at once.

    Args:
        lattice: a ``@ct.lattice`` function.
        budget_usd: a hard cap on what the dispatch may cost. A task starts
            only if its worst case (its rate for its whole time limit) fits in
            what is left; when the next task cannot fit, the dispatch ends
            ``BUDGET_EXCEEDED`` and keeps the results it has.

    Example:
        >>> import cobalt as ct
        >>> @ct.lattice
        ... def workflow(x):
        ...     return x
        >>> dispatch_id = ct.dispatch(workflow, budget_usd=5.0)(1)  # doctest: +SKIP
    """
    lat = lattice_of(lattice, "ct.dispatch")
    if options:
        raise GraphError(f"ct.dispatch got unknown option(s): {', '.join(sorted(options))}.")
    budget = check_budget(budget_usd)

    @functools.wraps(lat.function)
    def submit(*args: Any, **kwargs: Any) -> str:
        graph = lat.build_graph(*args, **kwargs)
        source = (lat, args, kwargs)
        return dispatch_graph(graph, budget_usd=budget, source=source)[1].dispatch_id

    return submit


def dispatch_sync(
    lattice: Any,
    *,
    budget_usd: float | None = None,
    raise_on_failure: bool = True,
    progress: bool | None = None,
) -> Callable[..., Result]:
    """Like :func:`dispatch`, but waits and returns the :class:`Result`.

    When a task fails or hits its time limit, it raises
    :class:`~cobalt.TaskFailedError` with the remote traceback, the task's
    name, node id, reason and the end of its output; ``exc.result`` is the
    Result. ``raise_on_failure=False`` returns the failed Result instead.
    A cancelled dispatch, or one stopped by its budget, is returned either way.

    While it waits it shows live progress: a widget in a notebook, a bar on a
    terminal (``progress=False`` turns that off, ``True`` forces the bar).
    """
    lat = lattice_of(lattice, "ct.dispatch_sync")
    budget = check_budget(budget_usd)

    @functools.wraps(lat.function)
    def run(*args: Any, **kwargs: Any) -> Result:
        graph = lat.build_graph(*args, **kwargs)
        source = (lat, args, kwargs)
        if wants_view(progress):
            client, resp = dispatch_graph(graph, budget_usd=budget, source=source)
            result = wait_showing(client, resp.dispatch_id, None, progress)
        else:
            # One request creates the dispatch and waits for it (a first stretch of it).
            client, resp = dispatch_graph(
                graph, wait_s=WAIT_CHUNK_S, budget_usd=budget, source=source
            )
            result = Result.from_pb(resp.result, client)
            if not result.status.ended:
                result = wait_until_ended(client, resp.dispatch_id, None)
        return result.raise_for_status() if raise_on_failure else result

    return run


@overload
def get_result(
    dispatch_id: str,
    wait: bool | float = False,
    dispatcher_addr: str | None = None,
    status_only: Literal[False] = False,
    *,
    raise_on_failure: bool = False,
    progress: bool | None = None,
    workflow_output: bool = True,
    intermediate_outputs: bool = True,
    sublattice_results: bool = True,
    results_dir: str | None = None,
    qelectron_db: bool = False,
) -> Result: ...


@overload
def get_result(
    dispatch_id: str,
    wait: bool | float = False,
    dispatcher_addr: str | None = None,
    *,
    status_only: Literal[True],
    raise_on_failure: bool = False,
    progress: bool | None = None,
    workflow_output: bool = True,
    intermediate_outputs: bool = True,
    sublattice_results: bool = True,
    results_dir: str | None = None,
    qelectron_db: bool = False,
) -> dict[str, Any]: ...


def get_result(
    dispatch_id: str,
    wait: bool | float = False,
    dispatcher_addr: str | None = None,
    status_only: bool = False,
    *,
    raise_on_failure: bool = False,
    progress: bool | None = None,
    workflow_output: bool = True,
    intermediate_outputs: bool = True,
    sublattice_results: bool = True,
    results_dir: str | None = None,
    qelectron_db: bool = False,
) -> Any:
    """The :class:`Result` of a dispatch.

    Args:
        dispatch_id: what :func:`dispatch` returned.
        wait: ``False`` returns the current state at once; ``True`` waits until
            the dispatch ends; a number waits at most that many seconds and
            then raises :class:`~cobalt.WaitTimeoutError`.
        dispatcher_addr: Covalent's server address. cobalt reaches its
            controller through ``COBALT_HOME``, or ``COBALT_CONTROLLER_ADDRESS``
            and ``COBALT_CONTROLLER_TOKEN``; anything but ``None`` is refused
            with that advice.
        status_only: return only ``{"id": dispatch_id, "status": status}``,
            as Covalent does.
        raise_on_failure: raise :class:`~cobalt.TaskFailedError` (with the
            remote traceback) when a task failed, instead of returning.
        progress: while waiting, show live progress (a widget in a notebook,
            a bar on a terminal); ``False`` turns it off.
        workflow_output: ``False``: ``result.result`` stays ``None`` and the
            lattice's output is never downloaded.
        intermediate_outputs: ``False``: ``get_node_result`` and
            ``get_all_node_outputs`` give ``None`` outputs, never downloaded.
        sublattice_results: ``False``: ``get_node_result``'s
            ``"sublattice_result"`` is ``None``.
        results_dir: accepted for Covalent code and unused: the controller
            keeps results, and a Result fetches them when read.
        qelectron_db: must be ``False``: cobalt has no quantum electrons.

    Raises:
        ConfigError: ``dispatcher_addr`` or ``qelectron_db`` was given.
        NotFoundError: no dispatch has this id.
    """
    del results_dir  # results stay with the controller; see the docstring.
    if dispatcher_addr is not None:
        raise ConfigError(
            f"ct.get_result(dispatcher_addr={dispatcher_addr!r}): cobalt reaches its "
            "controller through COBALT_HOME, or COBALT_CONTROLLER_ADDRESS and "
            "COBALT_CONTROLLER_TOKEN for one elsewhere; set those and leave dispatcher_addr out."
        )
    if qelectron_db:
        raise ConfigError(
            "ct.get_result(qelectron_db=True): cobalt has no quantum electrons; leave it out."
        )
    client = get_client()
    if wait is False or wait == 0:
        include = workflow_output and not status_only
        result = Result.from_pb(client.dispatch_get(dispatch_id, include_output=include), client)
    else:
        timeout = None if wait is True else float(wait)
        if wants_view(progress):
            result = wait_showing(client, dispatch_id, timeout, progress)
        else:
            result = wait_until_ended(client, dispatch_id, timeout)
    if status_only:
        return {"id": result.dispatch_id, "status": result.status}
    result._fetch = Fetch(workflow_output, intermediate_outputs, sublattice_results)
    return result.raise_for_status() if raise_on_failure else result


def sync(dispatch_id: str | list[str]) -> None:
    """Waits until the dispatch, or each of a list of dispatches, has ended.

    Raises:
        SpecError: ``dispatch_id`` is neither a string nor a list of strings.
        NotFoundError: no dispatch has one of the ids.
    """
    ids = [dispatch_id] if isinstance(dispatch_id, str) else dispatch_id
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise SpecError(f"ct.sync takes a dispatch id or a list of them, got {dispatch_id!r}.")
    client = get_client()
    for one in ids:
        wait_until_ended(client, one, None)


def cancel(dispatch_id: str, task_ids: Iterable[int] | int | None = None) -> Result:
    """Cancels a dispatch, or only some of its tasks.

    Args:
        dispatch_id: what :func:`dispatch` returned.
        task_ids: node ids of electrons or sublattices (``Result.tasks`` lists
            them). Those running are stopped and those pending never start;
            what depends on them does not run (it ends ``SKIPPED``), and the
            other tasks go on. Tasks that already ended are left as they are.
            The dispatch then ends ``CANCELLED``, unless a task failed.
            Leave it out to cancel the whole dispatch: its running tasks are
            stopped and no more start.

    Raises:
        SpecError: a task id is not a node id of an electron or sublattice of
            the dispatch.
        NotFoundError: the controller knows no such dispatch.
    """
    ids = check_task_ids(task_ids)
    client = get_client()
    resp = client.dispatch_cancel(dispatch_id, ids)
    return Result.from_pb(pb.DispatchGetResponse(dispatch=resp.dispatch), client)


def check_task_ids(task_ids: Iterable[int] | int | None) -> list[int]:
    """``task_ids`` as a list of node ids (none: the whole dispatch), or a SpecError."""
    if task_ids is None:
        return []
    items = [task_ids] if isinstance(task_ids, int) else task_ids
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise SpecError(f"task_ids must be a list of node ids, such as [1, 3]; got {task_ids!r}.")
    ids = list(items)
    for node_id in ids:
        if isinstance(node_id, bool) or not isinstance(node_id, int) or not 0 <= node_id < 2**32:
            raise SpecError(
                f"task_ids holds {node_id!r}, which is not a node id: node ids are whole "
                "numbers from 0 (Result.tasks lists each task's node_id)."
            )
    if not ids:
        raise SpecError(
            "task_ids is empty, so there is no task to cancel; leave it out to cancel the "
            "whole dispatch."
        )
    return ids
