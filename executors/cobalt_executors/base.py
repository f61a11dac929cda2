"""The executor interface.

An executor runs tasks the controller placed on it. The controller calls, in
order of an executor's life:

1. ``__init__(name, options)``: options are validated at once against
   :attr:`Executor.accepted_options`; an unknown one raises
   :class:`~cobalt_common.errors.SpecError` listing the accepted ones.
2. :meth:`Executor.setup` with an :class:`ExecutorContext`: where large
   outputs go and the callback to report through. Start pools or connections here.
3. :meth:`Executor.inventory`: total capacity, used by the controller to
   reject at dispatch a task no executor could ever run.
4. :meth:`Executor.try_submit` for each task placed here: reserve its
   hardware from the free inventory and start it, or return ``None`` when it
   does not fit now (the controller retries when something is released).
5. Outcomes are pushed, not polled: the executor calls
   ``context.report(outcome)`` exactly once per submitted task, from any
   thread. An executor whose backend can only be polled runs its own poll
   thread and reports from it.
6. :meth:`Executor.cancel` with a reason (``cancelled`` or ``time_limit``):
   stop the task and report it with that status.
7. :meth:`Executor.teardown`: stop everything this executor started.

After a controller restart, a task attempt the previous controller started
may still run on an agent beyond this machine. The controller offers it to
the executor with :meth:`Executor.reclaim`; an executor that takes it reports
its outcome as if it had started it (or reports it lost). The local executor
takes none: its workers ended with the controller.

After a controller restart, a replica the previous controller started may
still run. The controller counts its hardware with :meth:`Executor.adopt`
(no task is given it) and gives it back with :meth:`Executor.release` when
that replica stops; the executor never reports such a task.

Payloads stay opaque bytes on this side too: the controller never unpickles
them, and neither does an executor. Only the worker runtime does. A payload
comes inline or with a :class:`~cobalt_common.payloads.BlobLocation` that the
worker runtime resolves (``cobalt_executors._runtime.payloads``), so an
executor whose workers run elsewhere passes locations on, not file paths.

A new executor proves itself against the executor contract suite
(``tests/executor_contract.py``); :mod:`cobalt_executors.stub` is the
executor without processes that tests of the controller use.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cobalt_common.errors import SpecError
from cobalt_common.executor_types import COMMON_OPTIONS
from cobalt_common.hardware import HardwareGiven, HardwareSpec
from cobalt_common.payloads import THROUGH_CONTROLLER, BlobLocation
from cobalt_common.pricing import PriceTable, parse_prices
from cobalt_common.status import OutcomeStatus
from cobalt_executors._inventory import Allocation, GpuDevice, Inventory
from cobalt_executors._machine import Machine

__all__ = [
    "Allocation",
    "Executor",
    "ExecutorContext",
    "GpuDevice",
    "HardwareGiven",
    "Inventory",
    "Machine",
    "OutcomeStatus",
    "PayloadRef",
    "TaskArg",
    "TaskOutcome",
    "TaskSubmission",
]


@dataclass(frozen=True, slots=True)
class PayloadRef:
    """Opaque bytes by content address: inline in ``data``, or stored at ``location``.

    A worker anywhere can read a stored payload at its location (a shared
    directory today; see :mod:`cobalt_common.payloads`); an executor passes
    the location on to its worker and never reads the bytes itself.
    """

    sha256: str
    data: bytes | None
    size: int
    location: BlobLocation | None = None
    """Where the bytes are when ``data`` is None."""


@dataclass(frozen=True, slots=True)
class TaskArg:
    """One argument of a task: positional (``position >= 0``) or keyword."""

    position: int
    keyword: str
    payload: PayloadRef


@dataclass(slots=True)
class TaskSubmission:
    """Everything an executor needs to run one attempt of one task."""

    task_key: str
    dispatch_id: str
    node_id: int
    name: str
    hardware: HardwareSpec
    function: PayloadRef
    args: list[TaskArg]
    env: dict[str, str] = field(default_factory=dict)
    long_running: bool = False
    """True for tasks that mostly wait on others (sublattices): they must not
    take a worker slot that the tasks they wait on need."""
    replica: bool = False
    """True for a deployment's replica, a long-running task that serves until it is
    stopped: an executor whose allocations end (a Slurm pilot's walltime) starts it
    only where it has long to live. It stays on the controller's side of the wire."""
    client_runtime: dict[str, str] = field(default_factory=dict)
    """The Python, cloudpickle and cobalt versions of the client that pickled the
    task; an executor whose workers run another interpreter checks them."""


@dataclass(slots=True)
class TaskOutcome:
    """How one attempt ended, reported once per submitted task."""

    task_key: str
    status: OutcomeStatus
    output: PayloadRef | None = None
    error: str = ""
    stdout: str = ""
    stderr: str = ""
    started_at: float = 0.0
    ended_at: float = 0.0
    reason: str = ""
    hardware_given: HardwareGiven = field(default_factory=HardwareGiven)
    on_stored: Callable[[], None] | None = None
    """Called once the controller has stored this outcome (or found it already
    known), so that an executor that keeps outcomes for a restarted controller
    (a remote agent) may forget it."""


@dataclass(frozen=True, slots=True)
class AgentEndpoint:
    """How agents reach the controller, for executors that start agents."""

    address: str
    """Where agents dial (``host:port``)."""
    fingerprint: str
    """The SHA-256 fingerprint of the controller's certificate; empty on loopback,
    where the stream is plain text."""
    mint: Callable[[str, str, float], str]
    """``mint(executor, allocation, ttl_s)``: a credential for one agent."""


@dataclass(frozen=True, slots=True)
class ExecutorContext:
    """What the controller gives an executor at setup."""

    inline_limit: int
    """Outputs larger than this many bytes go to ``output_location``."""
    report: Callable[[TaskOutcome], None]
    """Push one outcome; safe to call from any thread."""
    output_location: BlobLocation = THROUGH_CONTROLLER
    """Where workers put outputs larger than ``inline_limit`` (the blob store's
    :meth:`~cobalt_controller.blobs.BlobStore.output_location`); such an output
    is reported with ``data`` None and this location. The default: outputs
    return inline, and the controller stores them."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables every task gets (for example how to reach the controller)."""
    machine: Machine = field(default_factory=Machine)
    """The controller's own machine, whose CPUs, memory and warm workers the
    executors that run tasks on it (the local ones) share."""
    agents: AgentEndpoint | None = None
    """How agents reach the controller; None where no controller serves agents (tests)."""
    room: Callable[[], None] | None = None
    """Call when room grows without an outcome (an agent attached), so that waiting
    tasks are placed at once; None: the controller finds out at its next round."""
    work_dir: Path | None = None
    """A folder executors keep their own files in (the controller's
    ``<home>/workers``), so that what a killed controller leaves there is found
    and removed at the next start; None: the system's temporary directory."""


class Executor(ABC):
    """Base class of executors. Subclasses set ``type_name`` and
    ``accepted_options`` and implement the abstract methods. A type that
    ``config.toml`` or a client can name reads both from its entry in
    :mod:`cobalt_common.executor_types`, which the SDK's descriptors read too;
    every executor also accepts ``COMMON_OPTIONS`` from there.

    Every executor has a :class:`~cobalt_common.pricing.PriceTable` from its
    ``prices`` option; ``default_prices`` is what it costs unset: ``"zero"``
    for hardware the user owns, ``"list"`` for rented hardware.
    """

    type_name: ClassVar[str] = ""
    accepted_options: ClassVar[frozenset[str]] = frozenset()
    default_prices: ClassVar[str] = "zero"

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        unknown = sorted(set(options) - self.accepted_options - COMMON_OPTIONS)
        if unknown:
            raise SpecError(
                f"executor {name!r} of type {self.type_name!r} does not accept option(s) "
                f"{', '.join(unknown)}; accepted options are: "
                f"{', '.join(sorted(self.accepted_options | COMMON_OPTIONS))}."
            )
        self.name = name
        self.options = options
        self.prices: PriceTable = parse_prices(
            options.get("prices"), where=f"executor {name!r} prices", default=self.default_prices
        )
        self._context: ExecutorContext | None = None
        self._lock = threading.Lock()
        self._given_rates: dict[HardwareGiven, float] = {}
        self._adopted: dict[str, Allocation] = {}

    @property
    def context(self) -> ExecutorContext:
        if self._context is None:
            raise RuntimeError(f"executor {self.name!r} used before setup()")
        return self._context

    def setup(self, context: ExecutorContext) -> None:
        """Prepares the executor; called once before any task."""
        self._context = context

    @abstractmethod
    def inventory(self) -> Inventory:
        """The executor's capacity and free resources."""

    def can_ever_run(self, spec: HardwareSpec) -> bool:
        """Whether an idle executor could run a task with this spec."""
        return self.inventory().can_ever_fit(spec)

    @abstractmethod
    def try_submit(self, task: TaskSubmission) -> HardwareGiven | None:
        """Reserves hardware and starts the task; None when it does not fit now."""

    @abstractmethod
    def cancel(self, task_key: str, reason: str) -> None:
        """Stops a submitted task; it is then reported with status ``reason``."""

    @abstractmethod
    def teardown(self) -> None:
        """Stops everything this executor started."""

    def adopt(self, task_key: str, given: HardwareGiven) -> bool:
        """Counts ``given`` as held by ``task_key``, a task this executor did not start.

        A replica that outlived a controller keeps its hardware (the local
        executor leaves its cgroup alone); the next controller adopts it and
        calls this, so that no task is given that hardware while it runs.
        Returns False, reserving nothing, when a part of ``given`` is not free
        here: then the caller knows the inventory does not count it.

        The default reserves from :meth:`inventory`; an executor whose capacity
        is not one :class:`Inventory` overrides this and :meth:`release`.
        """
        allocation = self.inventory().reserve(given)
        if allocation is None:
            return False
        with self._lock:
            previous = self._adopted.pop(task_key, None)
            self._adopted[task_key] = allocation
        if previous is not None:
            self.inventory().release(previous)
        return True

    def reclaim(self, task_key: str, given: HardwareGiven) -> bool:
        """Takes ``task_key``, which the previous controller started here with ``given``,
        as if this executor had started it: True promises one report of its outcome
        (its own, or a loss); False (the default) means it no longer runs, and the
        controller runs it again."""
        return False

    def release(self, task_key: str) -> None:
        """Gives back what :meth:`adopt` reserved for ``task_key`` (a no-op for others)."""
        with self._lock:
            allocation = self._adopted.pop(task_key, None)
        if allocation is not None:
            self.inventory().release(allocation)

    def reachable_url(self, task_key: str, url: str) -> str:
        """Where the controller reaches ``url``, which the replica ``task_key`` running
        here reported as its own. The URL itself, unless the executor tunnels to
        where its replicas run (an SSH host behind a reverse tunnel).

        Raises:
            cobalt.ExecutorError: the replica cannot be reached from the controller.
        """
        return url

    def capacity_words(self, spec: HardwareSpec) -> str:
        """What this executor has, in words, for a message saying why ``spec`` can
        never run here; an executor that knows the reason better says it."""
        return self.inventory().describe()

    def rate_usd_per_hour(self, spec: HardwareSpec) -> float:
        """What running ``spec`` here costs per hour, before it is placed."""
        return self.prices.rate_usd_per_hour(
            cpus=spec.cpus, memory_mb=spec.memory_mb, gpu=spec.gpu, gpus=spec.gpus
        )

    def given_rate_usd_per_hour(self, given: HardwareGiven) -> float:
        """What the hardware actually given costs per hour; asked once per task, so cached."""
        rate = self._given_rates.get(given)
        if rate is None:
            rate = self._given_rates[given] = self.prices.rate_usd_per_hour(
                cpus=given.cpus,
                memory_mb=given.memory_mb,
                gpu=given.gpu,
                gpus=len(given.gpu_indices),
            )
        return rate

    def describe(self) -> tuple[str, str]:
        """Capacity and free inventory in words, for status displays."""
        inv = self.inventory()
        return inv.describe(), inv.describe(free=True)
