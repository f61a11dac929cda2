"""The controller's own machine, shared by every executor that runs tasks on it.

Several local executors on one controller (the configured ones and any number
that clients describe, each with its own emulated GPUs) are views of one
machine. Each keeps its own limits, and the machine's CPUs and memory are
handed out once over all of them, so that two executors never give the same
core to two tasks.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable

from cobalt_common.hardware import format_memory

_EPS = 1e-9


def host_cpus() -> float:
    """CPU cores of this host."""
    return float(os.cpu_count() or 1)


def host_memory_mb() -> int:
    """Physical memory of this host in MB."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024))


class Machine:
    """CPUs, memory and idle warm workers of the controller's machine (thread-safe).

    **Size.** The machine is this host (its CPUs and memory, or the ``cpus`` and
    ``memory_mb`` given), or less where the executors configured on it claim
    less (:meth:`claim`): the largest claim wins, so ``cpus = 2`` in
    ``config.toml`` makes a 2-CPU machine of a 64-core host. After
    :meth:`close` executors sent by clients join without changing it; what they
    leave unset is the machine's.

    **Scaled views.** An executor that states more than the machine has (to
    emulate a bigger box, ``memory = "256GB"`` on a laptop, or room for many
    small replicas) keeps its own limits, and each of its tasks takes a
    proportional share of the machine (:meth:`share`): all its tasks together
    never take more than the whole machine, and a task that fits the executor
    fits the idle machine.

    **Warm workers.** Idle worker processes kept warm over all executors are at
    most the largest number any one executor asks for; beyond that the one idle
    longest is retired, so adding executors does not add idle processes.

    Example:
        >>> m = Machine(cpus=2, memory_mb=4096)
        >>> m.take(1.5, 1024), m.take(1, 0)
        (True, False)
        >>> m.describe(free=True)
        '0.5 CPU, 3 GB'
    """

    def __init__(self, cpus: float | None = None, memory_mb: int | None = None) -> None:
        self.cpus = float(cpus) if cpus is not None else host_cpus()
        self.memory_mb = int(memory_mb) if memory_mb is not None else host_memory_mb()
        self._host = (self.cpus, self.memory_mb)
        self._free_cpus = self.cpus
        self._free_memory = float(self.memory_mb)
        self._claimed = False
        self._closed = False
        self._lock = threading.Lock()
        self.members = 0
        """How many executors have joined (claimed or not)."""
        self._warm_limit = 0
        self._idle: OrderedDict[object, Callable[[], None]] = OrderedDict()

    # -- size ----------------------------------------------------------------------

    def claim(self, cpus: float | None, memory_mb: int | None) -> bool:
        """An executor joins, saying how much it has (None: all of the host).

        Before :meth:`close` the claim sizes the machine (the largest claim
        wins, the host at most) and True is returned; afterwards the machine
        keeps its size and False is returned: the executor is a guest, and
        defaults to the machine.
        """
        with self._lock:
            self.members += 1
            if self._closed:
                return False
            host_cpus_, host_memory = self._host
            want_cpus = min(float(cpus), host_cpus_) if cpus is not None else host_cpus_
            want_memory = min(int(memory_mb), host_memory) if memory_mb is not None else host_memory
            if self._claimed:
                want_cpus = max(want_cpus, self.cpus)
                want_memory = max(want_memory, self.memory_mb)
            self._claimed = True
            self._free_cpus += want_cpus - self.cpus
            self._free_memory += want_memory - self.memory_mb
            self.cpus, self.memory_mb = want_cpus, want_memory
            return True

    def close(self) -> None:
        """Ends sizing: executors that join later do not grow the machine."""
        with self._lock:
            self._closed = True

    def share(self, cpus: float, memory_mb: float, of: tuple[float, int]) -> tuple[float, float]:
        """What a task asking ``cpus``/``memory_mb`` of an executor with limits ``of``
        takes of the machine: the same, or a proportional share of an executor
        larger than the machine.

        Example:
            >>> Machine(cpus=2, memory_mb=8192).share(4, 65536, of=(8, 262144))
            (1.0, 2048.0)
        """
        own_cpus, own_memory = of
        cpu_scale = min(1.0, self.cpus / own_cpus) if own_cpus > 0 else 1.0
        memory_scale = min(1.0, self.memory_mb / own_memory) if own_memory > 0 else 1.0
        return cpus * cpu_scale, memory_mb * memory_scale

    # -- what is taken -------------------------------------------------------------

    def take(self, cpus: float, memory_mb: float) -> bool:
        """Reserves CPUs and memory if they are free now."""
        with self._lock:
            if cpus > self._free_cpus + _EPS or memory_mb > self._free_memory + _EPS:
                return False
            self._free_cpus -= cpus
            self._free_memory -= memory_mb
            return True

    def give(self, cpus: float, memory_mb: float) -> None:
        """Returns what :meth:`take` reserved."""
        with self._lock:
            self._free_cpus = min(self.cpus, self._free_cpus + cpus)
            self._free_memory = min(float(self.memory_mb), self._free_memory + memory_mb)

    def free(self) -> tuple[float, float]:
        """CPUs and memory (MB) free now."""
        with self._lock:
            return max(self._free_cpus, 0.0), max(self._free_memory, 0.0)

    def describe(self, *, free: bool = False) -> str:
        cpus, memory = self.free() if free else (self.cpus, float(self.memory_mb))
        return f"{cpus:g} CPU, {format_memory(int(memory))}"

    # -- warm workers --------------------------------------------------------------

    def want_warm(self, count: int) -> None:
        """An executor would keep ``count`` idle workers; the machine keeps the
        largest such number over all its executors, not their sum."""
        with self._lock:
            self._warm_limit = max(self._warm_limit, count)

    def keep_idle(self, worker: object, retire: Callable[[], None]) -> list[Callable[[], None]]:
        """Records ``worker`` as idle and warm; ``retire`` stops it if it is still idle.

        Returns the ``retire`` calls of the workers idle longest beyond the
        limit (perhaps ``worker`` itself), for the caller to make once it holds
        no lock of its own.
        """
        with self._lock:
            self._idle.pop(worker, None)
            self._idle[worker] = retire
            retired = []
            while len(self._idle) > max(self._warm_limit, 1):
                _, stop = self._idle.popitem(last=False)
                retired.append(stop)
            return retired

    def has_room(self) -> bool:
        """Whether one more idle worker could be kept without retiring another."""
        with self._lock:
            return len(self._idle) < max(self._warm_limit, 1)

    def busy(self, worker: object) -> None:
        """``worker`` left the idle ones: it took a task, exited or was stopped."""
        with self._lock:
            self._idle.pop(worker, None)

    def idle_workers(self) -> int:
        with self._lock:
            return len(self._idle)
