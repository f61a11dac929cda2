"""The stub executor: an executor without processes, driven by a test.

It keeps a real inventory (the same :class:`~cobalt_executors.base.Inventory`
and :class:`~cobalt_executors.base.Allocation` every executor uses), records
each :class:`~cobalt_executors.base.TaskSubmission` it accepts, and reports an
outcome when the test says so. It never starts a process and never unpickles
a payload, so a scheduler or a deployment manager can be exercised in a unit
test, as dramatiq's ``StubBroker`` and httpx's ``MockTransport`` let their
users test without a broker or a network.

It is not in :mod:`cobalt_executors.registry`: a configuration file or a
client cannot name it, so a controller never waits on a task that nothing
would ever run. Tests construct it directly::

    from cobalt_executors.stub import StubExecutor

    stub = StubExecutor("stub", {"cpus": 2, "emulate_gpus": {"h100": 1}})
    stub.setup(ExecutorContext(inline_limit=1024, report=outcomes.append))
    given = stub.try_submit(submission)      # reserves 1 CPU, say
    stub.complete(submission.task_key, b"pickled output")   # reports it, frees the CPU

Driving outcomes:

- :meth:`StubExecutor.complete` and :meth:`StubExecutor.fail` end a running
  task. An output larger than the context's ``inline_limit`` is written to
  its ``output_location`` and reported by location, as a worker does, when
  workers can write there; otherwise it is reported inline.
  :meth:`~StubExecutor.cancel` ends it as the controller's cancel does
  (``cancelled``, or ``timed_out`` for the reason ``time_limit``).
- The automatic mode (``auto=`` at construction or :meth:`~StubExecutor.set_auto`)
  completes every task as it is submitted: with the given bytes, or with what
  a callable returns for the submission. A callable may return None to leave
  the task running for the test, or raise to fail it with the traceback.
  Such an outcome is reported before ``try_submit`` returns, as a worker fast
  enough could.
- :meth:`~StubExecutor.wait_submitted` waits until a scheduler running on
  another thread has submitted a number of tasks.

Each submitted task is reported exactly once, whatever the order of
``complete``, ``fail``, ``cancel`` and ``teardown``; ending a task that is no
longer running is a no-op for ``cancel`` (as in every executor) and a
:class:`~cobalt_common.errors.NotFoundError` for ``complete`` and ``fail``
(a test that does so has a mistake). Thread-safe.

Options:
    cpus: CPU capacity (default 4).
    memory: memory capacity in MB or as "16GB" (default 16 GB).
    gpus: GPUs it has, e.g. ``{"h100": 2}``: given as real (not emulated).
    emulate_gpus: GPUs it pretends to have, e.g. ``{"a100": 1}``: labelled
        emulated, as the local executor's.
    GPU indices count from 0, the real ones first.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cobalt_common.errors import NotFoundError, SpecError
from cobalt_common.hardware import HardwareGiven, parse_gpu_type, parse_memory_mb
from cobalt_common.payloads import sha256_hex
from cobalt_common.status import Status
from cobalt_executors._inventory import Allocation, GpuDevice, Inventory
from cobalt_executors._runtime.payloads import put_output, to_wire
from cobalt_executors._stopped import stopped
from cobalt_executors.base import (
    Executor,
    OutcomeStatus,
    PayloadRef,
    TaskOutcome,
    TaskSubmission,
)

__all__ = ["AutoOutcome", "StubExecutor"]

AutoOutcome = bytes | Callable[[TaskSubmission], bytes | None]
"""What the automatic mode does with a submitted task: complete it with these
bytes as output, or call this with the submission (bytes: complete with them;
None: leave it running; an exception: fail it with the traceback)."""


@dataclass(frozen=True, slots=True)
class _Held:
    task: TaskSubmission
    allocation: Allocation


def _gpu_table(name: str, option: str, value: object) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"executor {name!r}: {option} must be a table such as {{h100 = 2}}.")
    return {
        parse_gpu_type(str(gpu), option=f"executor {name!r} {option}"): int(count)
        for gpu, count in value.items()
    }


class StubExecutor(Executor):
    """An executor whose tasks run nowhere; a test decides how each one ends."""

    type_name = "stub"
    accepted_options = frozenset({"cpus", "memory", "gpus", "emulate_gpus"})

    def __init__(
        self,
        name: str = "stub",
        options: Mapping[str, Any] | None = None,
        *,
        auto: AutoOutcome | None = None,
    ) -> None:
        super().__init__(name, options)
        opts = self.options
        devices: list[GpuDevice] = []
        for option, emulated in (("gpus", False), ("emulate_gpus", True)):
            for gpu, count in _gpu_table(name, option, opts.get(option)).items():
                devices += [GpuDevice(len(devices) + i, gpu, emulated) for i in range(count)]
        memory = opts.get("memory")
        self._inventory = Inventory(
            cpus=float(opts.get("cpus", 4)),
            memory_mb=parse_memory_mb(memory, option="memory") if memory else 16384,
            gpus=tuple(devices),
        )
        self._auto = auto
        self._changed = threading.Condition(self._lock)
        self._running: dict[str, _Held] = {}
        self._submitted: list[TaskSubmission] = []
        self._refused: list[TaskSubmission] = []
        self._reported: list[TaskOutcome] = []
        self._cancels: list[tuple[str, str]] = []
        self._closing = False

    # -- the executor interface ------------------------------------------------------

    def inventory(self) -> Inventory:
        return self._inventory

    def try_submit(self, task: TaskSubmission) -> HardwareGiven | None:
        with self._changed:
            allocation = None if self._closing else self._inventory.allocate(task.hardware)
            if allocation is None:
                self._refused.append(task)
                return None
            self._running[task.task_key] = _Held(task, allocation)
            self._submitted.append(task)
            auto = self._auto
            self._changed.notify_all()
        if auto is not None:
            self._run_auto(task, auto)
        return allocation.given()

    def cancel(self, task_key: str, reason: str) -> None:
        """Ends a running task as stopped for ``reason``; a no-op for any other."""
        with self._lock:
            self._cancels.append((task_key, reason))
        self._end(task_key, lambda held: self._stopped(held, reason))

    def teardown(self) -> None:
        """Refuses new tasks and reports each running one as killed, once."""
        with self._lock:
            self._closing = True
            keys = list(self._running)
        for key in keys:
            self._end(key, lambda held: self._stopped(held, f"executor {self.name!r} stopped"))

    # -- driving outcomes --------------------------------------------------------------

    def set_auto(self, auto: AutoOutcome | None) -> None:
        """Completes tasks submitted from now on at once (see the module's docstring);
        None: leaves them running for :meth:`complete` and :meth:`fail`."""
        with self._lock:
            self._auto = auto

    def complete(
        self, task_key: str, output: bytes = b"", *, stdout: str = "", stderr: str = ""
    ) -> TaskOutcome:
        """Reports a running task completed with ``output`` (opaque bytes)."""
        return self._must_end(
            task_key, lambda held: self._completed(held, output, stdout=stdout, stderr=stderr)
        )

    def fail(
        self,
        task_key: str,
        error: str = "the task failed",
        *,
        reason: str = "exception",
        stdout: str = "",
        stderr: str = "",
    ) -> TaskOutcome:
        """Reports a running task failed: ``reason`` ``exception`` for the task's own
        error (``error`` is its traceback), ``killed`` for a worker that died."""
        return self._must_end(
            task_key,
            lambda held: self._outcome(
                held, Status.FAILED, error=error, reason=reason, stdout=stdout, stderr=stderr
            ),
        )

    # -- what happened -----------------------------------------------------------------

    @property
    def submitted(self) -> list[TaskSubmission]:
        """Every task accepted by :meth:`try_submit`, in order (ended ones too)."""
        with self._lock:
            return list(self._submitted)

    @property
    def refused(self) -> list[TaskSubmission]:
        """Every task :meth:`try_submit` returned None for, in order."""
        with self._lock:
            return list(self._refused)

    @property
    def reported(self) -> list[TaskOutcome]:
        """Every outcome reported, in order."""
        with self._lock:
            return list(self._reported)

    @property
    def cancels(self) -> list[tuple[str, str]]:
        """Every :meth:`cancel` call as ``(task_key, reason)``, running or not."""
        with self._lock:
            return list(self._cancels)

    def running(self) -> list[str]:
        """Keys of the tasks submitted and not yet reported, in submission order."""
        with self._lock:
            return list(self._running)

    def given(self, task_key: str) -> HardwareGiven:
        """The hardware a running task holds."""
        with self._lock:
            held = self._running.get(task_key)
        if held is None:
            raise self._not_running(task_key)
        return held.allocation.given()

    def wait_submitted(self, count: int, timeout: float = 10.0) -> list[TaskSubmission]:
        """Waits until at least ``count`` tasks were accepted; returns them all.

        Raises:
            TimeoutError: fewer were accepted within ``timeout`` seconds.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._submitted) >= count, timeout):
                raise TimeoutError(
                    f"stub executor {self.name!r} accepted {len(self._submitted)} task(s) "
                    f"in {timeout:g}s, not {count}; refused: {len(self._refused)}."
                )
            return list(self._submitted)

    # -- internals ---------------------------------------------------------------------

    def _run_auto(self, task: TaskSubmission, auto: AutoOutcome) -> None:
        if isinstance(auto, bytes):
            self.complete(task.task_key, auto)
            return
        try:
            output = auto(task)
        except Exception as exc:
            error = "".join(traceback.format_exception(exc))
            self._end(
                task.task_key,
                lambda held: self._outcome(held, Status.FAILED, error=error, reason="exception"),
            )
            return
        if output is not None:
            self._end(task.task_key, lambda held: self._completed(held, output))

    def _completed(
        self, held: _Held, output: bytes, *, stdout: str = "", stderr: str = ""
    ) -> TaskOutcome:
        """Puts a large output where a worker would (the context's output
        location, when workers can write there); a small one stays inline."""
        sha, ctx = sha256_hex(output), self.context
        location = ctx.output_location
        if len(output) > ctx.inline_limit and put_output(sha, output, to_wire(location)):
            ref = PayloadRef(sha, None, len(output), location)
        else:
            ref = PayloadRef(sha, bytes(output), len(output))
        return self._outcome(held, Status.COMPLETED, output=ref, stdout=stdout, stderr=stderr)

    def _stopped(self, held: _Held, reason: str) -> TaskOutcome:
        status, reason, error = stopped(held.task.name, held.task.hardware, reason)
        return self._outcome(held, status, error=error, reason=reason)

    @staticmethod
    def _outcome(
        held: _Held,
        status: OutcomeStatus,
        *,
        output: PayloadRef | None = None,
        error: str = "",
        reason: str = "",
        stdout: str = "",
        stderr: str = "",
    ) -> TaskOutcome:
        now = time.time()
        return TaskOutcome(
            task_key=held.task.task_key,
            status=status,
            output=output,
            error=error,
            stdout=stdout,
            stderr=stderr,
            started_at=now,
            ended_at=now,
            reason=reason,
            hardware_given=held.allocation.given(),
        )

    def _end(self, task_key: str, build: Callable[[_Held], TaskOutcome]) -> TaskOutcome | None:
        """Ends ``task_key`` if it runs: frees its hardware, then reports it (once)."""
        with self._changed:
            held = self._running.pop(task_key, None)
            if held is None:
                return None
            self._inventory.release(held.allocation)
            outcome = build(held)
            self._reported.append(outcome)
            self._changed.notify_all()
        self.context.report(outcome)
        return outcome

    def _must_end(self, task_key: str, build: Callable[[_Held], TaskOutcome]) -> TaskOutcome:
        outcome = self._end(task_key, build)
        if outcome is None:
            raise self._not_running(task_key)
        return outcome

    def _not_running(self, task_key: str) -> NotFoundError:
        with self._lock:
            ended = any(o.task_key == task_key for o in self._reported)
        state = "has already been reported" if ended else "was never submitted"
        return NotFoundError(
            f"task {task_key!r} of stub executor {self.name!r} {state}; running tasks: "
            f"{', '.join(self.running()) or 'none'}."
        )
