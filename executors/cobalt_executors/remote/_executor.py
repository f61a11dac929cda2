"""Remote executors: the base of every executor whose workers are agents, and the
``agents`` type, whose agents people attach by hand with ``cobalt agent``."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from cobalt_common.errors import SpecError
from cobalt_common.executor_types import AGENTS
from cobalt_common.hardware import HardwareGiven, HardwareSpec
from cobalt_common.payloads import BlobLocation
from cobalt_common.status import Status
from cobalt_common.v1 import agent_pb2
from cobalt_executors._inventory import Inventory
from cobalt_executors._runtime.payloads import to_wire
from cobalt_executors.base import (
    Executor,
    ExecutorContext,
    PayloadRef,
    TaskArg,
    TaskOutcome,
    TaskSubmission,
)
from cobalt_executors.remote._pool import AgentInfo, AgentLink, AgentPool

STORE_MARKER = ".cobalt-store"
"""A file in the controller's blob directory whose random content tells an
agent that it sees the same directory (a shared filesystem), not a namesake."""


def store_id(directory: str) -> str:
    """The blob directory's marker, written once; "" when it cannot be written."""
    path = Path(directory) / STORE_MARKER
    try:
        return path.read_text().strip()
    except OSError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{STORE_MARKER}.{os.getpid()}.tmp")
        tmp.write_text(secrets.token_hex(16))
        os.replace(tmp, path)
        return path.read_text().strip()
    except OSError:
        return ""


class RemoteExecutor(Executor):
    """An executor whose tasks run on agents that dial the controller.

    Subclasses start agents where their cluster manager gives room (and may
    override :meth:`wants_agents`); this base places tasks on connected agents,
    reports lost ones, and takes back tasks that outlived a controller.

    Options (config only):
        reconnect_grace_s: how long, after a controller restart, a task that ran on
            an agent waits for that agent to come back (default 30).
        blob_dir: where agents see the controller's blob directory on a shared
            filesystem (default: the same path). Agents that do not see it fetch
            and store payloads through the controller.
        prefetch: CPU tasks each agent may hold queued beyond its free room, at
            most, so that a worker that frees starts the next task at once
            (default 64; 0: none). An agent holds only about 20 ms of its work
            queued, judged by how long its tasks run, so long tasks do not pile up
            on one agent while another has room. A queued task is billed from when
            it really starts.
    """

    default_prefetch: ClassVar[int] = 64
    unavailable_reason: ClassVar[str] = "agent_failed"
    """The reason of a task failed at once because :meth:`unavailable` says why."""

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        grace = self.options.get("reconnect_grace_s", 30.0)
        if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace <= 86400:
            raise SpecError(
                f"executor {name!r}: reconnect_grace_s must be a number of seconds from 0 to "
                f"86400, not {grace!r}."
            )
        self._grace = float(grace)
        blob_dir = self.options.get("blob_dir", "")
        if not isinstance(blob_dir, str) or "\n" in blob_dir:
            raise SpecError(f"executor {name!r}: blob_dir must be a path, not {blob_dir!r}.")
        self._blob_dir = blob_dir
        prefetch = self.options.get("prefetch", self.default_prefetch)
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 0 <= prefetch <= 1024:
            raise SpecError(
                f"executor {name!r}: prefetch must be a whole number from 0 to 1024, "
                f"not {prefetch!r}."
            )
        self._prefetch = prefetch
        self._pool: AgentPool | None = None
        self._store_id = ""

    def setup(self, context: ExecutorContext) -> None:
        super().setup(context)
        self._pool = AgentPool(
            self.name, context.report, reconnect_grace_s=self._grace, prefetch=self._prefetch
        )
        room = context.room
        if room is not None:
            self._pool.on_attach(lambda _: room())
        if context.output_location.kind == "directory":
            self._store_id = store_id(context.output_location.address)

    @property
    def pool(self) -> AgentPool:
        if self._pool is None:
            raise RuntimeError(f"executor {self.name!r} used before setup()")
        return self._pool

    # -- the agent service calls these -------------------------------------------------

    def welcome(self) -> agent_pb2.AgentWelcome:
        """What a newly connected agent is told: where outputs go."""
        location = self.context.output_location
        if location.kind == "directory" and self._blob_dir:
            location = BlobLocation.directory(self._blob_dir)
        return agent_pb2.AgentWelcome(
            inline_limit=self.context.inline_limit,
            output_location=to_wire(location),
            store_id=self._store_id,
        )

    def attach(self, link: AgentLink, info: AgentInfo) -> list[str]:
        return self.pool.attach(link, info)

    def detach(self, link: AgentLink, why: str) -> None:
        self.pool.detach(link, why)

    def outcome(self, link: AgentLink, msg: agent_pb2.AgentOutcome) -> None:
        self.pool.outcome(link, msg)

    # -- the executor interface ----------------------------------------------------------

    def inventory(self) -> Inventory:
        return self.pool.summary()

    def can_ever_run(self, spec: HardwareSpec) -> bool:
        return self.pool.can_ever_run(spec)

    def unavailable(self) -> str:
        """Why none of this executor's machines can run tasks, until someone fixes
        them (every host refused, every agent failed to start); "" while one can,
        or may once it has started."""
        return ""

    def try_submit(self, task: TaskSubmission) -> HardwareGiven | None:
        """Starts ``task`` on an agent with room; when :meth:`unavailable` says none
        ever will, the task fails at once with that reason instead of waiting."""
        if self._blob_dir:
            task = _relocated(task, self._blob_dir)
        given = self.pool.submit(task)
        if given is not None:
            return given
        why = self.unavailable()
        return self.fail_now(task, why) if why else None

    def fail_now(self, task: TaskSubmission, why: str) -> HardwareGiven:
        """Fails ``task`` at once with ``why`` (and :attr:`unavailable_reason`); what
        :meth:`try_submit` returns for it."""
        self.context.report(
            TaskOutcome(
                task_key=task.task_key,
                status=Status.FAILED,
                error=why,
                ended_at=time.time(),
                reason=self.unavailable_reason,
            )
        )
        return HardwareGiven()

    def cancel(self, task_key: str, reason: str) -> None:
        self.pool.cancel(task_key, reason)

    def reclaim(self, task_key: str, given: HardwareGiven) -> bool:
        self.pool.reclaim(task_key, given)
        return True

    def adopt(self, task_key: str, given: HardwareGiven) -> bool:
        return self.pool.adopt(task_key, given)

    def release(self, task_key: str) -> None:
        self.pool.release(task_key)

    def describe(self) -> tuple[str, str]:
        return self.pool.describe()

    def teardown(self) -> None:
        if self._pool is not None:
            self._pool.close("the controller is stopping")


def _relocated(task: TaskSubmission, blob_dir: str) -> TaskSubmission:
    """``task`` with directory locations at the path agents see them."""

    def moved(ref: PayloadRef) -> PayloadRef:
        if ref.location is None or ref.location.kind != "directory":
            return ref
        return replace(ref, location=BlobLocation.directory(blob_dir))

    args = [TaskArg(a.position, a.keyword, moved(a.payload)) for a in task.args]
    return replace(task, function=moved(task.function), args=args)


class AgentsExecutor(RemoteExecutor):
    """Machines attached by hand: each runs ``cobalt agent --controller ADDRESS
    --token TOKEN --executor NAME`` and brings the hardware it detects or declares.

    Tasks wait while no agent is connected; once agents are, a task that none of
    them could ever run is refused at dispatch.
    """

    type_name = AGENTS.name
    accepted_options = AGENTS.options | AGENTS.config_only

    def can_ever_run(self, spec: HardwareSpec) -> bool:
        return not self.pool.agents() or self.pool.can_ever_run(spec)
