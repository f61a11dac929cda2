"""``ct.redispatch``: run a dispatch again from its id alone, as Covalent does.

A dispatch keeps its pickled lattice and inputs (see
:func:`cobalt._submit.add_source`). Redispatching fetches and unpickles the
lattice here, builds its graph again with new arguments (or the ones it was
dispatched with), with some electrons swapped for others, and dispatches it.
With ``reuse_previous_results=True`` the controller marks every task whose
function and inputs are unchanged as completed with the earlier output,
instead of running it (:mod:`cobalt_controller.dispatch._reuse`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cobalt._client import Client, get_client
from cobalt._dispatch import lattice_of
from cobalt._pickling import loads
from cobalt._submit import create
from cobalt_common.errors import DispatchError, NotFoundError, SpecError
from cobalt_common.v1 import controller_pb2 as pb


def redispatch(
    dispatch_id: str,
    replace_electrons: Mapping[str, Callable[..., Any]] | None = None,
    reuse_previous_results: bool = False,
) -> Callable[..., str]:
    """Returns a function that dispatches the lattice of ``dispatch_id`` again and
    returns the new dispatch's id.

    Called with no arguments it uses the arguments of the earlier dispatch;
    called with some, it uses those instead.

    Args:
        dispatch_id: a dispatch of the current controller.
        replace_electrons: electrons to call instead of the lattice's own, by
            function name: ``{"train": train_v2}``. A plain function keeps
            the options (hardware, retries, ...) of the electron it replaces;
            it must take the same arguments.
        reuse_previous_results: tasks whose function and inputs are those of
            a task the earlier dispatch completed are not run again: they end
            ``COMPLETED`` with its output, at no cost and with no attempt, and
            their ``placement`` names the task they came from. A replaced
            electron and everything that depends on it, and every task fed by
            a changed argument, run again. Do not use it for tasks whose
            result varies from run to run (random numbers, the clock).

    Raises:
        NotFoundError: the current controller knows no such dispatch.
        DispatchError: the dispatch kept no lattice to run again.
        GraphError: a name in ``replace_electrons`` is not an electron the
            lattice calls, or the arguments do not fit it.

    Example:
        >>> import cobalt as ct
        >>> @ct.electron
        ... def train_v2(data):
        ...     return sum(data)
        >>> new_id = ct.redispatch(  # doctest: +SKIP
        ...     dispatch_id, replace_electrons={"train": train_v2}, reuse_previous_results=True
        ... )()
    """
    if not isinstance(dispatch_id, str) or not dispatch_id:
        raise SpecError(f"dispatch_id must be the id ct.dispatch returned; got {dispatch_id!r}.")
    replacements = _check_replacements(replace_electrons)
    reuse = bool(reuse_previous_results)

    def submit(*args: Any, **kwargs: Any) -> str:
        client = get_client(start=True)
        earlier = _earlier(client, dispatch_id)
        lattice = lattice_of(
            loads(_fetch(client, earlier.lattice_sha256), f"the lattice of dispatch {dispatch_id}"),
            "ct.redispatch",
        )
        if not args and not kwargs and earlier.inputs_sha256:
            inputs = loads(
                _fetch(client, earlier.inputs_sha256),
                f"the inputs of dispatch {dispatch_id}",
                client.fetch_sha256,
            )
            args, kwargs = tuple(inputs["args"]), dict(inputs["kwargs"])
        graph = lattice.build_replacing(replacements, args, kwargs)
        graph.stored_functions = _stored_functions(client, dispatch_id)
        source = (lattice, args, kwargs)
        resp = create(client, graph, source=source, reuse=dispatch_id if reuse else "")
        return resp.dispatch_id

    return submit


def _check_replacements(
    replace_electrons: Mapping[str, Callable[..., Any]] | None,
) -> dict[str, Callable[..., Any]]:
    if replace_electrons is None:
        return {}
    if not isinstance(replace_electrons, Mapping):
        raise SpecError(
            "replace_electrons must map electron names to new electrons, such as "
            f'{{"train": train_v2}}; got {type(replace_electrons).__name__}.'
        )
    for name, new in replace_electrons.items():
        if not isinstance(name, str) or not name:
            raise SpecError(
                f"replace_electrons keys are electrons' function names (strings); got {name!r}."
            )
        if not callable(new):
            raise SpecError(
                f"replace_electrons[{name!r}] must be an electron or a function; got "
                f"{type(new).__name__}."
            )
    return dict(replace_electrons)


def _earlier(client: Client, dispatch_id: str) -> pb.Dispatch:
    """The earlier dispatch, which must have kept its lattice."""
    try:
        earlier = client.dispatch_get(dispatch_id).dispatch
    except NotFoundError:
        raise NotFoundError(
            f"no dispatch {dispatch_id} on the current controller, so there is nothing to "
            "redispatch. ct.redispatch runs a dispatch of the controller of the current "
            "COBALT_HOME again: point COBALT_HOME at the one that ran it (`cobalt dispatches` "
            "lists a controller's dispatches)."
        ) from None
    if not earlier.lattice_sha256:
        raise DispatchError(
            f"dispatch {dispatch_id} kept no lattice to run again: an older cobalt made it, "
            "or its lattice could not be pickled. Dispatch the lattice itself with "
            "ct.dispatch(lattice)(...)."
        )
    return earlier


def _stored_functions(client: Client, dispatch_id: str) -> dict[str, str]:
    """The earlier dispatch's pickled functions by function key, where a key names one."""
    found: dict[str, set[str]] = {}
    for task in client.task_list(dispatch_id):
        if task.function_key and task.function_sha256:
            found.setdefault(task.function_key, set()).add(task.function_sha256)
    return {key: shas.pop() for key, shas in found.items() if len(shas) == 1}


def _fetch(client: Client, sha256: str) -> bytes:
    return client.fetch_sha256(sha256)
