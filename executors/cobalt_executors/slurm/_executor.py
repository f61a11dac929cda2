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

import logging
import shlex
import sys
import time
from typing import Any, ClassVar

from cobalt_common.errors import Error, SpecError
from cobalt_common.executor_types import SLURM
from cobalt_common.hardware import HardwareSpec
from cobalt_executors.base import ExecutorContext
from cobalt_executors.remote import AgentInfo, Pilot, PilotExecutor
from cobalt_executors.slurm._capacity import Capacity
from cobalt_executors.slurm._cli import SlurmCli
from cobalt_executors.slurm._sbatch import SbatchOptions

log = logging.getLogger("cobalt.executors")

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
SQUEUE_EVERY_S = 3.0
"""How often ``squeue`` is asked about pilots that have not attached yet."""
CAPACITY_EVERY_S = 60.0
"""How often the partition's nodes are read again, so that nodes added, resized or
removed count without a restart."""
CAPACITY_RETRY_S = 5.0
"""How often they are read while the cluster cannot be read at all."""


class SlurmExecutor(PilotExecutor):
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
    words = "job"
    default_python: ClassVar[str] = sys.executable

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        opts = self.options
        self.sbatch = SbatchOptions.from_options(opts)
        log_dir = opts.get("pilot_log_dir", "")
        if not isinstance(log_dir, str) or "\n" in log_dir or "%" in log_dir:
            raise SpecError(f"executor {name!r}: pilot_log_dir must be a folder, not {log_dir!r}.")
        self.pilot_log_dir = log_dir
        conf = opts.get("slurm_conf")
        self.cli = SlurmCli(str(conf) if conf else None)
        self.capacity: Capacity | None = None
        self.problem = ""
        """Why the cluster cannot be used now (slurmctld unreachable, say); "" when it can."""
        self._squeued = 0.0
        self._capacity_read = 0.0

    # -- life ------------------------------------------------------------------------

    def setup(self, context: ExecutorContext) -> None:
        self.refresh_capacity()
        super().setup(context)

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

    # -- the executor interface --------------------------------------------------------

    def can_ever_run(self, spec: HardwareSpec) -> bool:
        return self.capacity is not None and self.capacity.can_ever_run(spec)

    def capacity_words(self, spec: HardwareSpec) -> str:
        if self.capacity is None:
            return f"the Slurm cluster cannot be read: {self.problem}"
        return self.capacity.refusal(spec) or f"largest node {self.capacity.describe_largest()}"

    def describe(self) -> tuple[str, str]:
        total, free = super().describe()
        running, waiting = self.pilot_counts()
        largest = self.capacity.describe_largest() if self.capacity else self.problem
        where = f"Slurm ({self.mode}; {running} pilot(s) running, {waiting} queued; " + (
            f"largest node {largest})"
        )
        return f"{where}: {total}", free

    # -- pilots as Slurm jobs ------------------------------------------------------------

    @property
    def time_margin_s(self) -> float:
        return self.sbatch.time_margin_s

    def fits_cluster(self, spec: HardwareSpec) -> bool:
        return self.capacity is not None and self.capacity.can_ever_run(spec)

    def within_limit(self, walltime: float, *, needed: float = 0.0) -> float:
        """``walltime`` within the partition's limit less the margin that ``--time``
        adds (a ``pilot_time`` beyond it would make every pilot's ``sbatch`` fail),
        but never below ``needed``."""
        most = self.capacity.max_time_s if self.capacity is not None else None
        if most is None:
            return walltime
        return max(min(walltime, max(most - self.sbatch.time_margin_s, most / 2)), needed)

    def launch(self, pilot: Pilot) -> str:
        if self.capacity is None:
            raise Error(f"the Slurm cluster cannot be read: {self.problem}")
        arguments = self.capacity.sbatch_arguments(
            pilot.shape, name=f"{self.name}-{pilot.pilot_id}"
        )
        arguments.append(f"--output={self._pilot_output()}")
        return self.cli.submit(arguments, self._script(pilot))

    def pilot_failed(self, pilot: Pilot, why: str) -> None:
        self.problem = why

    def end(self, pilot: Pilot) -> None:
        self.cli.cancel(pilot.handle)

    def adopted_handle(self, info: AgentInfo) -> str | None:
        prefix = f"{info.allocation}-"
        job_id = info.agent_id[len(prefix) :] if info.agent_id.startswith(prefix) else ""
        return job_id if job_id.isdigit() else None

    def _pilot_output(self) -> str:
        """Where a pilot's own output goes: ``pilot_log_dir`` (a folder the compute
        nodes can write), else nowhere; never the controller's working directory."""
        if not self.pilot_log_dir:
            return "/dev/null"
        return f"{self.pilot_log_dir.rstrip('/')}/cobalt-pilot-%j.out"

    def _script(self, pilot: Pilot) -> str:
        token = self.credential(pilot)
        quoted = " ".join(shlex.quote(a) for a in self.agent_argv(pilot))
        return (
            "#!/bin/sh\n"
            f"# cobalt pilot {pilot.pilot_id} of executor {self.name}\n"
            f"export COBALT_AGENT_TOKEN={shlex.quote(token)}\n"
            f'exec {quoted} --agent-id "{pilot.pilot_id}-$SLURM_JOB_ID" '
            f'--work-dir "${{TMPDIR:-/tmp}}/cobalt-agent-$SLURM_JOB_ID" '
            f'--expires-at "$(($(date +%s) + {self.walltime_s(pilot)}))"\n'
        )

    def look_after(self) -> None:
        """One round of the watcher: idle pilots go, ended ones are forgotten, and
        the cluster's nodes are read again when it is time."""
        super().look_after()
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

    def _forget_ended(self) -> None:
        pilots = [p for p in self.pilots() if p.handle]
        if not pilots:
            return
        try:
            states = self.cli.jobs([p.handle for p in pilots])
        except Error as exc:
            log.warning("executor %s: squeue failed: %s", self.name, exc)
            return
        for pilot in pilots:
            state = states.get(pilot.handle)
            if state is not None and state.state not in ENDED:
                continue
            self.forget(pilot)
            if not pilot.attached and not pilot.cancelled:
                why = f"{state.state} ({state.reason})" if state is not None else "gone"
                log.error(
                    "executor %s: pilot %s (job %s) ended before its agent attached: %s",
                    self.name,
                    pilot.pilot_id,
                    pilot.handle,
                    why,
                )
