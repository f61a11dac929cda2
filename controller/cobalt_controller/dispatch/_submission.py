"""What a task is sent to its executor with: its arguments and its environment.

The scheduler builds one :class:`TaskSubmission` per attempt, when it places a
task; the function and the parents' outputs travel as payload references, and
each attempt gets its own credential.
"""

from __future__ import annotations

from cobalt_controller._credentials import Credentials, credential_sha256
from cobalt_controller._payloads import Payloads
from cobalt_controller.dispatch._model import SUBLATTICE, Dispatch, Task
from cobalt_executors import TaskArg, TaskSubmission


def build_submission(
    d: Dispatch, t: Task, payloads: Payloads, credentials: Credentials | None
) -> TaskSubmission:
    """One attempt of ``t``: its function, its parents' outputs and its environment."""
    args = []
    tasks = d.tasks
    for i in t.inputs:
        if not i.wait_only:
            out = tasks[i.parent].output
            assert out is not None
            ref = out if out.data is not None else payloads.ref(out.sha256)
            args.append(TaskArg(i.position, i.keyword, ref))
    return TaskSubmission(
        task_key=t.task_key,
        dispatch_id=d.dispatch_id,
        node_id=t.node_id,
        name=t.name,
        hardware=t.hardware,
        function=payloads.ref(t.fn_sha),
        args=args,
        env=task_env(d, t, credentials),
        long_running=t.kind == SUBLATTICE,
        client_runtime=d.client_runtime,
    )


def task_env(d: Dispatch, t: Task, credentials: Credentials | None) -> dict[str, str]:
    """The variables of one attempt: where it belongs, and its own credential.

    ``COBALT_ATTEMPT_ID`` (``<dispatch>/<node>/<attempt>``) is stable for the
    attempt. Tasks run at least once (one that was running when the
    controller stopped runs again, as a new attempt), so a task keys side
    effects that must not repeat on it, or on its ``<dispatch>/<node>``
    part for once per task (docs/security.md).
    """
    env = {
        "COBALT_DISPATCH_ID": d.dispatch_id,
        "COBALT_NODE_ID": str(t.node_id),
        "COBALT_ATTEMPT_ID": t.task_key,
        "COBALT_WORKING_DIR": d.working_dir,
    }
    if credentials is not None:
        token = credentials.mint(t.task_key, t.scope(d.dispatch_id))
        env["COBALT_CONTROLLER_TOKEN"] = token
        t.credential_sha256 = credential_sha256(token)
    return env
