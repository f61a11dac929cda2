"""Remote failures as exceptions in the notebook, and re-running a task locally.

Built from the records a controller reports (:mod:`cobalt._records`), below
:class:`~cobalt.Result`, whose ``raise_for_status`` and ``rerun_locally`` call
in here with the client the Result came from.
"""

from __future__ import annotations

import linecache
import re
from typing import Any

import cloudpickle

from cobalt._client import Client
from cobalt._deps import DepsCall
from cobalt._records import Status, TaskRecord
from cobalt._runtime.task import TaskCallable, as_keywords
from cobalt_common.errors import NotFoundError, TaskFailedError
from cobalt_common.v1 import controller_pb2 as pb

TAIL_LINES = 20
_FRAME = re.compile(r'^(\s*)File "(.+)", line (\d+), in .+$')
_REASONS = {
    "exception": "raised an exception",
    "time_limit": "hit its time limit",
    "timed_out": "hit its time limit",
    "out_of_memory": "ran out of memory",
    "killed": "was killed by a signal",
    "cancelled": "was cancelled",
    "lost": "lost its inputs",
}

_last_failure: TaskFailedError | None = None


def last_failure() -> TaskFailedError | None:
    """The last :class:`~cobalt.TaskFailedError` a dispatch raised in this process, or None.

    After a failure in a notebook cell there is no ``exc`` to inspect: this is
    it (as is ``sys.last_value`` when nothing caught it). Its ``result`` is the
    failed dispatch's :class:`~cobalt.Result`.

    Example: in the cell after one where ``ct.dispatch_sync(wf)(...)`` raised::

        failure = ct.last_failure()
        failure.task_name, failure.reason               # ("parse_scores", "exception")
        failure.result.rerun_locally(failure.node_id)   # raises here; %debug steps in
    """
    return _last_failure


def remember(exc: TaskFailedError) -> TaskFailedError:
    """Records ``exc`` as the process's :func:`last_failure`; returns it for ``raise``."""
    global _last_failure
    _last_failure = exc
    return exc


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


FAILED = (Status.FAILED, Status.TIMED_OUT)
"""The statuses of a task that make its dispatch raise."""


def dispatch_failure(
    dispatch_id: str, name: str, status: Status, error: str, result: object
) -> TaskFailedError:
    """The exception for a failed dispatch none of whose tasks failed (its graph, say)."""
    return TaskFailedError(
        f"dispatch {dispatch_id} ({name}) ended {status}:\n{error}",
        dispatch_id=dispatch_id,
        result=result,
    )


def in_sublattice(inner: TaskFailedError, task: TaskRecord) -> TaskFailedError:
    """``inner``, raised in the child dispatch of sublattice ``task``, saying so."""
    inner.args = (f"in sublattice {task.name!r} (node {task.node_id}): {inner.args[0]}",)
    return inner


def with_local_source(traceback_text: str) -> str:
    """Fills in source lines the worker could not show, from this process's caches.

    Code defined in a notebook cell lives in the kernel, not on the worker:
    the remote traceback names the cell's file and line but shows no code.
    The kernel that dispatched has the cell's text, so the line is added here.
    """
    lines = traceback_text.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        out.append(line)
        frame = _FRAME.match(line)
        if frame is None:
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if following.startswith(frame.group(1) + "  ") and not _FRAME.match(following):
            continue  # the worker showed the line itself
        source = linecache.getline(frame.group(2), int(frame.group(3))).strip()
        if source:
            out.append(f"{frame.group(1)}  {source}")
    return "\n".join(out) + ("\n" if traceback_text.endswith("\n") else "")


def task_failure(
    dispatch_id: str, task: TaskRecord, *, more: int = 0, result: object = None
) -> TaskFailedError:
    """The exception for failed ``task``, with its traceback, the end of its logs and how
    to re-run it here; ``more`` other tasks failed too; ``result`` is the dispatch's."""
    reason = task.reason or ("time_limit" if task.status == Status.TIMED_OUT else "exception")
    error = with_local_source(task.error)
    lines = [
        f"task {task.name!r} (node {task.node_id}) of dispatch {dispatch_id} "
        f"{_REASONS.get(reason, reason)}.",
    ]
    if error:
        lines += ["", error.rstrip("\n")]
    for stream, text in (("stdout", task.stdout), ("stderr", task.stderr)):
        if text.strip():
            lines += ["", f"--- last {TAIL_LINES} lines of its {stream} ---", _tail(text)]
    if more:
        lines += ["", f"{more} other task(s) failed too; result.tasks lists them all."]
    lines += [
        "",
        f"ct.last_failure().result.rerun_locally({task.node_id}) runs this task here, with the "
        "inputs it received, so you can step into it with a debugger. ct.last_failure() is "
        "this error (also `exc` in an except block, or sys.last_value after an uncaught one); "
        "its .result is the dispatch's Result.",
    ]
    return TaskFailedError(
        "\n".join(lines),
        node_id=task.node_id,
        task_name=task.name,
        remote_traceback=error,
        reason=reason,
        dispatch_id=dispatch_id,
        stdout=_tail(task.stdout),
        stderr=_tail(task.stderr),
        result=result,
    )


def rerun_locally(client: Client, dispatch_id: str, node_id: int) -> Any:
    """Runs one task of a dispatch in this process with the inputs it actually received."""
    record, _ = _node(client, dispatch_id, node_id)
    if record.kind != "electron" or not record.function_sha256:
        raise NotFoundError(
            f"node {node_id} of dispatch {dispatch_id} is a {record.kind}, not an "
            "electron; rerun_locally takes the node id of an electron from result.tasks."
        )
    function = cloudpickle.loads(client.fetch_payload(pb.Payload(sha256=record.function_sha256)))
    args: dict[int, Any] = {}
    kwargs: dict[str, Any] = {}
    for parent, position, keyword, wait_only in record.inputs:
        if wait_only:
            continue
        parent_record, output = _node(client, dispatch_id, parent)
        if output is None:
            raise NotFoundError(
                f"task {record.name!r} (node {node_id}) never received the output of node "
                f"{parent} ({parent_record.name}, {parent_record.status}), so it cannot be "
                "re-run with the inputs it had."
            )
        value = cloudpickle.loads(output)
        if position >= 0:
            args[position] = value
        else:
            kwargs[keyword] = value
    ordered = [args[i] for i in sorted(args)]
    if isinstance(function, TaskCallable):
        # Only the hooks that hand the function a value run here; deps_pip and
        # deps_bash prepared the remote machine, not this one.
        hooks = [d for d in function.before if isinstance(d, DepsCall) and d.retval_keyword]
        kwargs.update(as_keywords((str(d.retval_keyword), d.run()) for d in hooks))
        function = function.fn
    return function(*ordered, **kwargs)


def _node(client: Client, dispatch_id: str, node_id: int) -> tuple[TaskRecord, bytes | None]:
    task, output = client.node_get(dispatch_id, node_id)
    return TaskRecord.from_pb(task), output
