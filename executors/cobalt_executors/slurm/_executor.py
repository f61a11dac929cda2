"""The Slurm executor: agents in ``sbatch`` allocations.

**Pilot mode (the default).** When a task finds no agent with room, the executor
submits a *pilot*: one ``sbatch`` job that runs an agent, sized for that task (at
least ``pilot_cpus`` and ``pilot_memory``, its GPUs mapped to the site's gres types,
a walltime of at least ``pilot_time``). The agent dials the controller and keeps
warm workers, so the tasks after the first start in milliseconds, not in the
second or more that Slurm takes to start a job. Pilots grow while tasks wait, up to
``max_pilots``. A pilot is cancelled after it has been idle for ``idle_timeout_s``.
A task goes only to a pilot whose remaining walltime covers its time limit.

**Replicas.** A deployment's replica serves until it is stopped, so it has no
time limit to fit: it goes only to a pilot with at least half of ``replica_time``
left, and the pilot submitted for it has a walltime of ``replica_time`` (within
the partition's limit). A pilot that runs a replica is never idle, so the idle
timeout does not cancel it; once the replica stops (undeployed, scaled down), the
pilot is idle and is cancelled like any other. When its walltime ends, Slurm ends
the job, the replica is reported lost, and the deployment starts another.

**Job-per-task mode** (``mode = "job_per_task"``). Each task gets a job sized
exactly for it, and the job ends with the task. Use it for long, isolated GPU jobs,
where a fresh allocation is worth its start-up time.

Slurm is used as it is: ``sbatch`` submits, ``scontrol show node`` gives the
capacity that decides at dispatch whether a task can ever run (Slurm itself
accepts an impossible ``-c 3`` on a 2-CPU node and leaves it pending forever),
``squeue`` follows the pilots' own jobs at a low rate, and ``scancel`` ends them.
Nothing polls for task liveness: a pilot that ends, or is cancelled from outside,
closes its agent's stream, and its tasks are reported ``agent_lost`` and retried.
``sacct`` is never used, since it needs slurmdbd.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cobalt_common.errors import Error, SpecError
from cobalt_common.executor_types import SLURM
from cobalt_common.hardware import (
    HardwareGiven,
    HardwareSpec,
    parse_duration_s,
    parse_memory_mb,
)
from cobalt_executors.base import ExecutorContext, TaskSubmission
from cobalt_executors.remote import AgentInfo, RemoteExecutor
from cobalt_executors.slurm._capacity import Capacity
from cobalt_executors.slurm._cli import SlurmCli
from cobalt_executors.slurm._sbatch import SbatchOptions

log = logging.getLogger("cobalt.executors")

MODES = ("pilot", "job_per_task")
ENDED = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
    }
)
WATCH_S = 0.5
"""How often pilots are looked after (idle ones cancelled, squeue read)."""
SQUEUE_EVERY_S = 3.0
"""How often ``squeue`` is asked about pilots that have not attached yet."""
CAPACITY_EVERY_S = 60.0
"""How often the partition's nodes are read again, so that nodes added, resized or
removed count without a restart."""
CAPACITY_RETRY_S = 5.0
"""How often they are read while the cluster cannot be read at all."""
QUEUE_ALLOWANCE_S = 7 * 86400.0
"""How long a pilot may wait in Slurm's queue and still attach: its credential lasts
its walltime plus this. A pilot that waited longer is refused, ends, and a new one
(with a new credential) is submitted if tasks still wait."""
REPLICA_SHARE = 0.5
"""A replica goes only to a pilot with at least this share of ``replica_time`` left."""


@dataclass(slots=True)
class _Pilot:
    pilot_id: str
    job_id: str
    shape: HardwareSpec
    submitted_at: float
    expires_at: float
    """When its walltime ends if it starts at once (its agent counts from its start)."""
    single: bool
    attached: bool = False
    cancelled: bool = False


def _positive(options: dict[str, Any], key: str, default: float, name: str) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise SpecError(f"executor {name!r}: {key} must be a positive number, not {value!r}.")
    return float(value)


class SlurmExecutor(RemoteExecutor):
    """Runs tasks on a Slurm cluster through agents in ``sbatch`` allocations.

    Options (``config.toml`` only): ``slurm_conf`` (the cluster's ``slurm.conf``;
    default: Slurm's own lookup), ``mode`` (``pilot`` or ``job_per_task``),
    ``partition``, ``account``, ``qos``, ``gpu_types`` (cobalt GPU name to the
    site's gres type, e.g. ``{h100 = "h100_80gb"}``), ``sbatch_options`` (extra
    options, each starting with ``--``), ``time_margin`` (seconds added to a
    task's time limit for ``--time``; cobalt enforces the limit itself),
    ``python`` (the interpreter with cobalt on the compute nodes; default this
    one's path), ``max_pilots`` (8), ``pilot_cpus`` (1), ``pilot_memory``
    ("1GB"), ``pilot_time`` ("1h"), ``replica_time`` (the walltime of a pilot
    submitted for a deployment's replica; "12h"), ``idle_timeout_s`` (60),
    ``pilot_log_dir`` (a folder the compute nodes can write each pilot's own
    output to; default: none), ``emulate_gpus`` (true on clusters whose GPUs are
    stand-ins: agents then label them emulated), and the remote executors'
    ``reconnect_grace_s`` and ``blob_dir``.
    """

    type_name = SLURM.name
    accepted_options = SLURM.options | SLURM.config_only

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        opts = self.options
        self.mode = str(opts.get("mode", "pilot"))
        if self.mode not in MODES:
            raise SpecError(
                f"executor {name!r}: mode must be one of {', '.join(MODES)}, not {self.mode!r}."
            )
        self.sbatch = SbatchOptions.from_options(opts)
        self.python = str(opts.get("python") or sys.executable)
        if "\n" in self.python or not self.python:
            raise SpecError(f"executor {name!r}: python must be a path, not {self.python!r}.")
        self.max_pilots = int(_positive(opts, "max_pilots", 8, name))
        self.pilot_cpus = _positive(opts, "pilot_cpus", 1, name)
        self.pilot_memory_mb = parse_memory_mb(
            opts.get("pilot_memory", "1GB"), option=f"executor {name!r} pilot_memory"
        )
        self.pilot_time_s = parse_duration_s(
            opts.get("pilot_time", "1h"), option=f"executor {name!r} pilot_time"
        )
        self.replica_time_s = parse_duration_s(
            opts.get("replica_time", "12h"), option=f"executor {name!r} replica_time"
        )
        self.idle_timeout_s = _positive(opts, "idle_timeout_s", 60, name)
        emulate = opts.get("emulate_gpus", False)
        if not isinstance(emulate, bool):
            raise SpecError(f"executor {name!r}: emulate_gpus must be true or false.")
        self.emulate_gpus = emulate
        log_dir = opts.get("pilot_log_dir", "")
        if not isinstance(log_dir, str) or "\n" in log_dir or "%" in log_dir:
            raise SpecError(f"executor {name!r}: pilot_log_dir must be a folder, not {log_dir!r}.")
        self.pilot_log_dir = log_dir
        conf = opts.get("slurm_conf")
        self.cli = SlurmCli(str(conf) if conf else None)
        self.capacity: Capacity | None = None
        self.problem = ""
        """Why the cluster cannot be used now (slurmctld unreachable, say); "" when it can."""
        self._pilots: dict[str, _Pilot] = {}
        self._pilot_lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._squeued = 0.0
        self._capacity_read = 0.0

    # -- life ------------------------------------------------------------------------

    def setup(self, context: ExecutorContext) -> None:
        super().setup(context)
        self.refresh_capacity()
        self.pool.on_attach(self._attached)
        self.pool.task_limit = self._task_limit
        self.pool.replica_time_left_s = lambda: REPLICA_SHARE * self._replica_walltime_s()
        self._watcher = threading.Thread(
            target=self._watch, name=f"cobalt-slurm-{self.name}", daemon=True
        )
        self._watcher.start()

    def refresh_capacity(self) -> None:
        """Reads the partition's nodes again (``scontrol show node``). When they cannot
        be read, what was read last still counts, and :attr:`problem` says why."""
        self._capacity_read = time.monotonic()
        try:
            capacity = Capacity.of(self.cli.nodes(), self.cli.partitions(), self.sbatch)
        except Error as exc:
            if str(exc) != self.problem:  # once per problem, not once per try
                log.error("executor %s: cannot read the Slurm cluster: %s", self.name, exc)
            self.problem = str(exc)
            return
        before = self.capacity.describe_largest() if self.capacity is not None else ""
        if before and capacity.describe_largest() != before:
            log.info(
                "executor %s: the cluster changed; largest node now %s",
                self.name,
                capacity.describe_largest(),
            )
        self.capacity = capacity
        self.problem = ""

    def teardown(self) -> None:
        self._stopping.set()
        with self._pilot_lock:
            pilots = list(self._pilots.values())
            self._pilots.clear()
        for pilot in pilots:
            self._cancel(pilot, "the controller is stopping")
        super().teardown()

    # -- the executor interface --------------------------------------------------------

    def can_ever_run(self, spec: HardwareSpec) -> bool:
        return self.capacity is not None and self.capacity.can_ever_run(spec)

    def capacity_words(self, spec: HardwareSpec) -> str:
        if self.capacity is None:
            return f"the Slurm cluster cannot be read: {self.problem}"
        return self.capacity.refusal(spec) or f"largest node {self.capacity.describe_largest()}"

    def try_submit(self, task: TaskSubmission) -> HardwareGiven | None:
        given = super().try_submit(task)
        if given is None and not self._stopping.is_set():
            self._grow(task)
        return given

    def describe(self) -> tuple[str, str]:
        total, free = super().describe()
        with self._pilot_lock:
            waiting = sum(1 for p in self._pilots.values() if not p.attached)
            running = len(self._pilots) - waiting
        largest = self.capacity.describe_largest() if self.capacity else self.problem
        where = f"Slurm ({self.mode}; {running} pilot(s) running, {waiting} queued; " + (
            f"largest node {largest})"
        )
        return f"{where}: {total}", free

    # -- pilots ------------------------------------------------------------------------

    def _within_partition(self, walltime: float, *, needed: float = 0.0) -> float:
        """``walltime`` within the partition's limit less the margin that ``--time``
        adds (a ``pilot_time`` beyond it would make every pilot's ``sbatch`` fail),
        but never below ``needed``."""
        most = self.capacity.max_time_s if self.capacity is not None else None
        if most is None:
            return walltime
        return max(min(walltime, max(most - self.sbatch.time_margin_s, most / 2)), needed)

    def _replica_walltime_s(self) -> float:
        """The walltime of a pilot submitted for a replica: ``replica_time``, within
        the partition's limit."""
        return self._within_partition(self.replica_time_s)

    def _shape(self, task: TaskSubmission) -> HardwareSpec:
        """The pilot (or job) to submit for ``task``: its walltime is the agent's
        to use; ``--time`` adds the margin to it."""
        spec = task.hardware
        limit = spec.time_limit_s or 0.0
        if self.mode == "job_per_task":
            walltime = (
                self._replica_walltime_s()
                if task.replica
                else self._within_partition(self.pilot_time_s)
            )
            return HardwareSpec(
                cpus=max(spec.cpus, 1.0),
                memory_mb=spec.memory_mb or self.pilot_memory_mb,
                gpu=spec.gpu,
                gpus=spec.gpus,
                time_limit_s=(limit or walltime) + self.sbatch.time_margin_s,
            )
        needed = limit + 2 * self.sbatch.time_margin_s
        walltime = self._within_partition(max(self.pilot_time_s, needed), needed=needed)
        return HardwareSpec(
            cpus=max(spec.cpus, self.pilot_cpus),
            memory_mb=max(spec.memory_mb, self.pilot_memory_mb),
            gpu=spec.gpu,
            gpus=spec.gpus,
            time_limit_s=self._replica_walltime_s() if task.replica else walltime,
        )

    def _needs(self, task: TaskSubmission) -> HardwareSpec:
        """What a pilot must offer ``task``: its hardware, and as time, its limit or,
        for a replica, the walltime an agent must have left to be given it."""
        if not task.replica:
            return task.hardware
        least = REPLICA_SHARE * self._replica_walltime_s()
        return dataclasses.replace(task.hardware, time_limit_s=least)

    def _grow(self, task: TaskSubmission) -> None:
        """Submits a pilot for a task that found no room, unless one on its way fits it."""
        if self.capacity is None or not self.capacity.can_ever_run(task.hardware):
            return
        shape, needs = self._shape(task), self._needs(task)
        with self._pilot_lock:
            if self._stopping.is_set():
                return
            live = [p for p in self._pilots.values() if not p.cancelled]
            # One job on its way that fits is enough: the scheduler asks again each
            # round while the task waits, and in job-per-task mode the next job is
            # submitted once this one has started.
            if any(not p.attached and _covers(p.shape, needs) for p in live):
                return
            if len(live) >= self.max_pilots:
                return
            pilot_id = f"p{uuid.uuid4().hex[:10]}"
            now = time.time()
            pilot = _Pilot(
                pilot_id,
                "",
                shape,
                now,
                now + (shape.time_limit_s or self.pilot_time_s),
                single=self.mode == "job_per_task",
            )
            self._pilots[pilot_id] = pilot
        try:
            arguments = self.capacity.sbatch_arguments(shape, name=f"{self.name}-{pilot_id}")
            arguments.append(f"--output={self._pilot_output()}")
            pilot.job_id = self.cli.submit(arguments, self._script(pilot))
        except Error as exc:
            with self._pilot_lock:
                self._pilots.pop(pilot_id, None)
            self.problem = str(exc)
            log.error("executor %s: could not submit a pilot: %s", self.name, exc)
            return
        log.info(
            "executor %s: pilot %s is Slurm job %s (%s)",
            self.name,
            pilot_id,
            pilot.job_id,
            shape.describe(),
        )
        if pilot.cancelled:  # teardown came while sbatch ran, before the job had an id
            self._cancel(pilot, "the controller stopped while it was submitted")

    def _pilot_output(self) -> str:
        """Where a pilot's own output goes: ``pilot_log_dir`` (a folder the compute
        nodes can write), else nowhere; never the controller's working directory."""
        if not self.pilot_log_dir:
            return "/dev/null"
        return f"{self.pilot_log_dir.rstrip('/')}/cobalt-pilot-%j.out"

    def _script(self, pilot: _Pilot) -> str:
        endpoint = self.context.agents
        if endpoint is None:
            raise SpecError(f"executor {self.name!r} needs a controller that serves agents.")
        # The job may wait in the queue before its walltime starts to run.
        ttl = (pilot.expires_at - time.time()) + QUEUE_ALLOWANCE_S
        token = endpoint.mint(self.name, pilot.pilot_id, ttl)
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
        quoted = " ".join(shlex.quote(a) for a in argv)
        # The walltime counts from the job's start, not from sbatch: a pilot that
        # waited in the queue still has all of it.
        walltime = round(pilot.expires_at - pilot.submitted_at)
        return (
            "#!/bin/sh\n"
            f"# cobalt pilot {pilot.pilot_id} of executor {self.name}\n"
            f"export COBALT_AGENT_TOKEN={shlex.quote(token)}\n"
            f'exec {quoted} --agent-id "{pilot.pilot_id}-$SLURM_JOB_ID" '
            f'--work-dir "${{TMPDIR:-/tmp}}/cobalt-agent-$SLURM_JOB_ID" '
            f'--expires-at "$(($(date +%s) + {walltime}))"\n'
        )

    def _task_limit(self, info: AgentInfo) -> int | None:
        with self._pilot_lock:
            pilot = self._pilots.get(info.allocation)
        return 1 if pilot is not None and pilot.single else None

    def _attached(self, info: AgentInfo) -> None:
        with self._pilot_lock:
            pilot = self._pilots.get(info.allocation)
            if pilot is None:
                pilot = self._adopt(info)
            if pilot is not None:
                pilot.attached = True
                log.info(
                    "executor %s: pilot %s attached %.2f s after sbatch",
                    self.name,
                    pilot.pilot_id,
                    time.time() - pilot.submitted_at,
                )

    def _adopt(self, info: AgentInfo) -> _Pilot | None:
        """A pilot a previous controller submitted, whose agent came back: this
        controller looks after it from now on (under the lock)."""
        prefix = f"{info.allocation}-"
        job_id = info.agent_id[len(prefix) :] if info.agent_id.startswith(prefix) else ""
        if not info.allocation or not job_id.isdigit():
            return None
        shape = HardwareSpec(
            cpus=info.cpus,
            memory_mb=info.memory_mb,
            gpu=info.gpus[0].type if info.gpus else None,
            gpus=len(info.gpus),
        )
        pilot = _Pilot(
            info.allocation,
            job_id,
            shape,
            time.time(),
            info.expires_at,
            single=self.mode == "job_per_task",
        )
        pilot.attached = True
        self._pilots[info.allocation] = pilot
        log.info("executor %s: took over pilot %s (job %s)", self.name, info.allocation, job_id)
        return pilot

    def _cancel(self, pilot: _Pilot, why: str) -> None:
        pilot.cancelled = True
        if not pilot.job_id:
            return
        try:
            self.cli.cancel(pilot.job_id)
            log.info(
                "executor %s: cancelled pilot %s (job %s): %s",
                self.name,
                pilot.pilot_id,
                pilot.job_id,
                why,
            )
        except Error as exc:
            log.warning("executor %s: scancel %s failed: %s", self.name, pilot.job_id, exc)

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_S):
            try:
                self.look_after()
            except Exception:
                log.exception("executor %s: looking after pilots failed", self.name)

    def look_after(self) -> None:
        """One round of the watcher: idle pilots go, ended ones are forgotten, and
        the cluster's nodes are read again when it is time."""
        self._release_idle()
        if time.time() - self._squeued >= SQUEUE_EVERY_S:
            self._squeued = time.time()
            self._forget_ended()
        self.reread_when_due()

    def reread_when_due(self) -> None:
        """Reads the cluster's nodes again every :data:`CAPACITY_EVERY_S`, or every
        :data:`CAPACITY_RETRY_S` while they cannot be read."""
        readable = self.capacity is not None and not self.problem
        every = CAPACITY_EVERY_S if readable else CAPACITY_RETRY_S
        if time.monotonic() - self._capacity_read >= every:
            self.refresh_capacity()

    def _release_idle(self) -> None:
        for info, ran, idle_s in self.pool.idle():
            with self._pilot_lock:
                pilot = self._pilots.get(info.allocation)
            if pilot is None or pilot.cancelled:
                continue
            if pilot.single:
                if ran:  # one job per task: it ends with its task
                    self._cancel(pilot, "its task ended")
                elif idle_s >= self.idle_timeout_s:
                    self._cancel(pilot, f"no task came for {idle_s:.0f} s")
            elif idle_s >= self.idle_timeout_s:
                self._cancel(pilot, f"idle for {idle_s:.0f} s")

    def _forget_ended(self) -> None:
        with self._pilot_lock:
            pilots = [p for p in self._pilots.values() if p.job_id]
        if not pilots:
            return
        try:
            states = self.cli.jobs([p.job_id for p in pilots])
        except Error as exc:
            log.warning("executor %s: squeue failed: %s", self.name, exc)
            return
        for pilot in pilots:
            state = states.get(pilot.job_id)
            if state is not None and state.state not in ENDED:
                continue
            with self._pilot_lock:
                self._pilots.pop(pilot.pilot_id, None)
            if not pilot.attached and not pilot.cancelled:
                why = f"{state.state} ({state.reason})" if state is not None else "gone"
                log.error(
                    "executor %s: pilot %s (job %s) ended before its agent attached: %s",
                    self.name,
                    pilot.pilot_id,
                    pilot.job_id,
                    why,
                )


def _covers(shape: HardwareSpec, spec: HardwareSpec) -> bool:
    """Whether a pilot of ``shape`` could run a task of ``spec``."""
    gpus_ok = not spec.gpu or (shape.gpu == spec.gpu and shape.gpus >= spec.gpus)
    time_ok = (shape.time_limit_s or 0) >= (spec.time_limit_s or 0)
    return shape.cpus >= spec.cpus and shape.memory_mb >= spec.memory_mb and gpus_ok and time_ok
