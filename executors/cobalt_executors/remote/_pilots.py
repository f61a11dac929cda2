"""Pilot executors: agents in allocations the executor asks a cluster manager for.

When a task finds no agent with room, the executor asks its cluster manager for a
*pilot*: one allocation (a Slurm job, a Kubernetes pod) that runs an agent, sized
for that task (at least ``pilot_cpus`` and ``pilot_memory``, its GPUs, a walltime of
at least ``pilot_time``). The agent dials the controller and keeps warm workers, so
the tasks after the first start in milliseconds, not in the seconds the cluster
manager takes to start an allocation. Pilots grow while tasks wait, up to
``max_pilots``, and end after ``idle_timeout_s`` without work. A task goes only to a
pilot whose remaining walltime covers its time limit.

A deployment's replica serves until it is stopped: it goes only to a pilot with at
least half of ``replica_time`` left, and the pilot started for it has a walltime of
``replica_time``. A pilot that runs a replica is never idle.

In ``job_per_task`` mode each pilot takes one task and ends with it: an allocation
sized exactly for the task, for long isolated jobs.

:class:`PilotExecutor` keeps the pilots; a subclass says how one is started
(:meth:`PilotExecutor.launch`), ended (:meth:`PilotExecutor.end`) and recognised
after a controller restart (:meth:`PilotExecutor.adopted_handle`), and what the
cluster could ever run (:meth:`PilotExecutor.fits_cluster`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from cobalt_common.errors import Error, SpecError
from cobalt_common.hardware import HardwareGiven, HardwareSpec, parse_duration_s, parse_memory_mb
from cobalt_executors.base import ExecutorContext, TaskSubmission
from cobalt_executors.remote._executor import RemoteExecutor
from cobalt_executors.remote._pool import AgentInfo

log = logging.getLogger("cobalt.executors")

MODES = ("pilot", "job_per_task")
WATCH_S = 0.5
"""How often pilots are looked after (idle ones ended, the cluster asked about them)."""
REPLICA_SHARE = 0.5
"""A replica goes only to a pilot with at least this share of ``replica_time`` left."""
QUEUE_ALLOWANCE_S = 7 * 86400.0
"""How long a pilot may wait in the cluster's queue and still attach: its credential
lasts its walltime plus this. A pilot that waited longer is refused, ends, and a new
one (with a new credential) is started if tasks still wait."""


@dataclass(slots=True)
class Pilot:
    """One allocation the executor asked for.

    Attributes:
        pilot_id: cobalt's id, the agent's ``--allocation``.
        handle: the cluster's name for it (a Slurm job id, a pod or Job name); ""
            until the cluster manager has answered.
        shape: what it holds; ``time_limit_s`` is its walltime.
        expires_at: when its walltime ends if it starts at once.
        single: it takes one task and ends with it (``job_per_task``).
    """

    pilot_id: str
    handle: str
    shape: HardwareSpec
    submitted_at: float
    expires_at: float
    single: bool
    attached: bool = False
    cancelled: bool = False


def positive(options: dict[str, Any], key: str, default: float, name: str) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise SpecError(f"executor {name!r}: {key} must be a positive number, not {value!r}.")
    return float(value)


class PilotExecutor(RemoteExecutor):
    """Keeps the pilots of an executor whose agents run in allocations it asks for.

    Options (besides the remote executors'): ``mode`` (``pilot`` or
    ``job_per_task``), ``python`` (the interpreter with cobalt where pilots run),
    ``max_pilots`` (8), ``pilot_cpus`` (1), ``pilot_memory`` ("1GB"), ``pilot_time``
    ("1h"), ``replica_time`` ("12h"), ``idle_timeout_s`` (60) and ``emulate_gpus``
    (true where the cluster's GPUs are stand-ins: agents then label them emulated).
    """

    words: ClassVar[str] = "pilot"
    """How logs name the cluster's side of a pilot ("job", "pod")."""
    default_python: ClassVar[str] = "python"

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        opts = self.options
        self.mode = str(opts.get("mode", "pilot"))
        if self.mode not in MODES:
            raise SpecError(
                f"executor {name!r}: mode must be one of {', '.join(MODES)}, not {self.mode!r}."
            )
        self.python = str(opts.get("python") or self.default_python)
        if "\n" in self.python or not self.python:
            raise SpecError(f"executor {name!r}: python must be a path, not {self.python!r}.")
        self.max_pilots = int(positive(opts, "max_pilots", 8, name))
        self.pilot_cpus = positive(opts, "pilot_cpus", 1, name)
        self.pilot_memory_mb = parse_memory_mb(
            opts.get("pilot_memory", "1GB"), option=f"executor {name!r} pilot_memory"
        )
        self.pilot_time_s = parse_duration_s(
            opts.get("pilot_time", "1h"), option=f"executor {name!r} pilot_time"
        )
        self.replica_time_s = parse_duration_s(
            opts.get("replica_time", "12h"), option=f"executor {name!r} replica_time"
        )
        self.idle_timeout_s = positive(opts, "idle_timeout_s", 60, name)
        emulate = opts.get("emulate_gpus", False)
        if not isinstance(emulate, bool):
            raise SpecError(f"executor {name!r}: emulate_gpus must be true or false.")
        self.emulate_gpus = emulate
        self._pilots: dict[str, Pilot] = {}
        self._pilot_lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- what a cluster manager says ----------------------------------------------------

    @property
    def time_margin_s(self) -> float:
        """Seconds the cluster's own walltime adds to a pilot's, as a backstop to
        cobalt's limits."""
        return 0.0

    @abstractmethod
    def fits_cluster(self, spec: HardwareSpec) -> bool:
        """Whether the cluster could ever give a pilot of ``spec``."""

    def within_limit(self, walltime: float, *, needed: float = 0.0) -> float:
        """``walltime`` cut to what the cluster allows, but never below ``needed``."""
        return max(walltime, needed)

    @abstractmethod
    def launch(self, pilot: Pilot) -> str:
        """Asks the cluster manager for ``pilot``; returns its handle, or raises
        :class:`Error` with the cluster's reason."""

    @abstractmethod
    def end(self, pilot: Pilot) -> None:
        """Ends ``pilot`` on the cluster; raises :class:`Error` when it cannot."""

    @abstractmethod
    def adopted_handle(self, info: AgentInfo) -> str | None:
        """The handle of a pilot a previous controller started, whose agent came back;
        None when the agent is not one of this executor's pilots."""

    def pilot_failed(self, pilot: Pilot, why: str) -> None:
        """``pilot`` could not be started (:meth:`launch` raised)."""

    # -- life ------------------------------------------------------------------------

    def setup(self, context: ExecutorContext) -> None:
        super().setup(context)
        self.pool.on_attach(self._attached)
        self.pool.task_limit = self._task_limit
        self.pool.replica_time_left_s = lambda: REPLICA_SHARE * self.replica_walltime_s()
        self._watcher = threading.Thread(
            target=self._watch, name=f"cobalt-{self.type_name}-{self.name}", daemon=True
        )
        self._watcher.start()

    def teardown(self) -> None:
        self._stopping.set()
        with self._pilot_lock:
            pilots = list(self._pilots.values())
            self._pilots.clear()
        for pilot in pilots:
            self.cancel_pilot(pilot, "the controller is stopping")
        super().teardown()

    def try_submit(self, task: TaskSubmission) -> HardwareGiven | None:
        given = super().try_submit(task)
        if given is None and not self._stopping.is_set():
            self._grow(task)
        return given

    def pilot_counts(self) -> tuple[int, int]:
        """Pilots running (their agent attached) and on their way."""
        with self._pilot_lock:
            waiting = sum(1 for p in self._pilots.values() if not p.attached)
            return len(self._pilots) - waiting, waiting

    def pilots(self) -> list[Pilot]:
        with self._pilot_lock:
            return list(self._pilots.values())

    def pilot(self, pilot_id: str) -> Pilot | None:
        with self._pilot_lock:
            return self._pilots.get(pilot_id)

    def forget(self, pilot: Pilot) -> None:
        with self._pilot_lock:
            self._pilots.pop(pilot.pilot_id, None)

    # -- shapes ------------------------------------------------------------------------

    def replica_walltime_s(self) -> float:
        """The walltime of a pilot started for a replica: ``replica_time``, within the
        cluster's limit."""
        return self.within_limit(self.replica_time_s)

    def shape_for(self, task: TaskSubmission) -> HardwareSpec:
        """The pilot to start for ``task``: its walltime is the agent's to use; the
        cluster's own limit adds :attr:`time_margin_s` to it."""
        spec = task.hardware
        limit = spec.time_limit_s or 0.0
        if self.mode == "job_per_task":
            walltime = (
                self.replica_walltime_s() if task.replica else self.within_limit(self.pilot_time_s)
            )
            return HardwareSpec(
                cpus=max(spec.cpus, 1.0),
                memory_mb=spec.memory_mb or self.pilot_memory_mb,
                gpu=spec.gpu,
                gpus=spec.gpus,
                time_limit_s=(limit or walltime) + self.time_margin_s,
            )
        needed = limit + 2 * self.time_margin_s
        walltime = self.within_limit(max(self.pilot_time_s, needed), needed=needed)
        return HardwareSpec(
            cpus=max(spec.cpus, self.pilot_cpus),
            memory_mb=max(spec.memory_mb, self.pilot_memory_mb),
            gpu=spec.gpu,
            gpus=spec.gpus,
            time_limit_s=self.replica_walltime_s() if task.replica else walltime,
        )

    def needs_of(self, task: TaskSubmission) -> HardwareSpec:
        """What a pilot must offer ``task``: its hardware, and as time, its limit or,
        for a replica, the walltime an agent must have left to be given it."""
        if not task.replica:
            return task.hardware
        least = REPLICA_SHARE * self.replica_walltime_s()
        return dataclasses.replace(task.hardware, time_limit_s=least)

    # -- pilots ------------------------------------------------------------------------

    def _grow(self, task: TaskSubmission) -> None:
        """Starts a pilot for a task that found no room, unless one on its way fits it."""
        if not self.fits_cluster(task.hardware):
            return
        shape, needs = self.shape_for(task), self.needs_of(task)
        with self._pilot_lock:
            if self._stopping.is_set():
                return
            live = [p for p in self._pilots.values() if not p.cancelled]
            # One pilot on its way that fits is enough: the scheduler asks again each
            # round while the task waits, and in job-per-task mode the next one is
            # started once this one has.
            if any(not p.attached and covers(p.shape, needs) for p in live):
                return
            if len(live) >= self.max_pilots:
                return
            pilot_id = f"p{uuid.uuid4().hex[:10]}"
            now = time.time()
            pilot = Pilot(
                pilot_id,
                "",
                shape,
                now,
                now + (shape.time_limit_s or self.pilot_time_s),
                single=self.mode == "job_per_task",
            )
            self._pilots[pilot_id] = pilot
        try:
            pilot.handle = self.launch(pilot)
        except Error as exc:
            self.forget(pilot)
            log.error("executor %s: could not start a pilot: %s", self.name, exc)
            self.pilot_failed(pilot, str(exc))
            return
        log.info(
            "executor %s: pilot %s is %s %s (%s)",
            self.name,
            pilot_id,
            self.words,
            pilot.handle,
            shape.describe(),
        )
        if pilot.cancelled:  # teardown came while it was asked for, before it had a handle
            self.cancel_pilot(pilot, "the controller stopped while it was started")

    def credential(self, pilot: Pilot) -> str:
        """A credential for ``pilot``'s agent: it lasts the pilot's walltime and the
        time it may wait in the cluster's queue."""
        endpoint = self.context.agents
        if endpoint is None:
            raise SpecError(f"executor {self.name!r} needs a controller that serves agents.")
        ttl = (pilot.expires_at - time.time()) + QUEUE_ALLOWANCE_S
        return endpoint.mint(self.name, pilot.pilot_id, ttl)

    def agent_argv(self, pilot: Pilot) -> list[str]:
        """The agent's command line (without its id, work folder and walltime end,
        which only the allocation knows); the credential is never on it."""
        endpoint = self.context.agents
        if endpoint is None:
            raise SpecError(f"executor {self.name!r} needs a controller that serves agents.")
        shape = pilot.shape
        argv = [
            self.python,
            "-m",
            "cobalt_executors.agent",
            "--controller",
            endpoint.address,
            "--executor",
            self.name,
            "--allocation",
            pilot.pilot_id,
            "--cpus",
            f"{shape.cpus:g}",
            "--workers",
            str(max(1, int(shape.cpus))),
            "--memory",
            f"{shape.memory_mb}MB",
        ]
        if endpoint.fingerprint:
            argv += ["--fingerprint", endpoint.fingerprint]
        if self.emulate_gpus and shape.gpu:
            argv += ["--emulate-gpus", json.dumps({shape.gpu: shape.gpus})]
        return argv

    def walltime_s(self, pilot: Pilot) -> int:
        """The pilot's walltime, counted from its start (a pilot that waited in the
        queue still has all of it)."""
        return round(pilot.expires_at - pilot.submitted_at)

    def _task_limit(self, info: AgentInfo) -> int | None:
        pilot = self.pilot(info.allocation)
        return 1 if pilot is not None and pilot.single else None

    def _attached(self, info: AgentInfo) -> None:
        with self._pilot_lock:
            pilot = self._pilots.get(info.allocation)
            if pilot is None:
                pilot = self._adopt(info)
            if pilot is not None:
                pilot.attached = True
                log.info(
                    "executor %s: pilot %s attached %.2f s after it was asked for",
                    self.name,
                    pilot.pilot_id,
                    time.time() - pilot.submitted_at,
                )

    def _adopt(self, info: AgentInfo) -> Pilot | None:
        """A pilot a previous controller started, whose agent came back: this
        controller looks after it from now on (under the lock)."""
        handle = self.adopted_handle(info) if info.allocation else None
        if not handle:
            return None
        shape = HardwareSpec(
            cpus=info.cpus,
            memory_mb=info.memory_mb,
            gpu=info.gpus[0].type if info.gpus else None,
            gpus=len(info.gpus),
        )
        pilot = Pilot(
            info.allocation,
            handle,
            shape,
            time.time(),
            info.expires_at,
            single=self.mode == "job_per_task",
        )
        pilot.attached = True
        self._pilots[info.allocation] = pilot
        log.info(
            "executor %s: took over pilot %s (%s %s)",
            self.name,
            info.allocation,
            self.words,
            handle,
        )
        return pilot

    def cancel_pilot(self, pilot: Pilot, why: str) -> None:
        pilot.cancelled = True
        if not pilot.handle:
            return
        try:
            self.end(pilot)
            log.info(
                "executor %s: ended pilot %s (%s %s): %s",
                self.name,
                pilot.pilot_id,
                self.words,
                pilot.handle,
                why,
            )
        except Error as exc:
            log.warning(
                "executor %s: could not end %s %s: %s", self.name, self.words, pilot.handle, exc
            )

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_S):
            try:
                self.look_after()
            except Exception:
                log.exception("executor %s: looking after pilots failed", self.name)

    def look_after(self) -> None:
        """One round of the watcher: idle pilots end. Subclasses add their own."""
        self.release_idle()

    def release_idle(self) -> None:
        for info, ran, idle_s in self.pool.idle():
            pilot = self.pilot(info.allocation)
            if pilot is None or pilot.cancelled:
                continue
            if pilot.single:
                if ran:  # one job per task: it ends with its task
                    self.cancel_pilot(pilot, "its task ended")
                elif idle_s >= self.idle_timeout_s:
                    self.cancel_pilot(pilot, f"no task came for {idle_s:.0f} s")
            elif idle_s >= self.idle_timeout_s:
                self.cancel_pilot(pilot, f"idle for {idle_s:.0f} s")


def covers(shape: HardwareSpec, spec: HardwareSpec) -> bool:
    """Whether a pilot of ``shape`` could run a task of ``spec``."""
    gpus_ok = not spec.gpu or (shape.gpu == spec.gpu and shape.gpus >= spec.gpus)
    time_ok = (shape.time_limit_s or 0) >= (spec.time_limit_s or 0)
    return shape.cpus >= spec.cpus and shape.memory_mb >= spec.memory_mb and gpus_ok and time_ok
