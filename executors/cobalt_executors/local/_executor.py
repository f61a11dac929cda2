"""The local executor: warm worker processes on the controller's machine."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cobalt_common.errors import SpecError
from cobalt_common.executor_types import LOCAL
from cobalt_common.hardware import HardwareGiven, format_memory, parse_gpu_type, parse_memory_mb
from cobalt_common.payloads import BlobLocation
from cobalt_common.status import Status
from cobalt_common.v1 import worker_pb2
from cobalt_executors._inventory import Allocation, GpuDevice, Inventory, describe_hardware
from cobalt_executors._machine import host_cpus, host_memory_mb
from cobalt_executors._runtime.payloads import to_wire
from cobalt_executors._stopped import STOP_STATUS, stopped
from cobalt_executors.base import (
    Executor,
    ExecutorContext,
    OutcomeStatus,
    PayloadRef,
    TaskOutcome,
    TaskSubmission,
)
from cobalt_executors.local._gpus import detect_gpus
from cobalt_executors.local._inventory import LocalInventory
from cobalt_executors.local._logdirs import make_log_dir
from cobalt_executors.local._process import WorkerProcess


@dataclass(slots=True)
class _Running:
    task: TaskSubmission
    worker: WorkerProcess
    allocation: Allocation
    stop_reason: str = ""
    peak_mb: int = 0


_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
_MEMORY_CHECK_S = 0.2


def _location(payload: PayloadRef) -> worker_pb2.BlobLocation:
    if payload.location is None:
        raise ValueError(
            f"payload {payload.sha256} has neither bytes nor a location: the controller "
            "must give one or the other."
        )
    return to_wire(payload.location)


def _rss_mb(pid: int) -> int:
    """Resident memory of a process in MB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(int(f.read().split()[1]) * _PAGE_MB)
    except (OSError, ValueError, IndexError):
        return 0


class LocalExecutor(Executor):
    """Runs tasks in warm worker processes on this machine.

    Options:
        workers: warm CPU workers kept started (default: the CPU count).
        cpus: CPU capacity (default: this machine's).
        memory: memory capacity in MB or as "64GB" (default: this machine's).
        emulate_gpus: GPUs to pretend to have, e.g. ``{"h100": 2}``: inventory
            only, labelled emulated in every record.
        cgroups: put each worker in a cgroup v2 of its own where the machine
            allows it (default true); false contains workers by process tree only.
    Real GPUs are found with ``nvidia-smi``; each GPU task gets its own
    ``CUDA_VISIBLE_DEVICES``, and a real GPU runs one task at a time even when
    several local executors list it. No new interpreter is started per task.

    Everything a task starts is killed when the task is stopped (time limit,
    cancel, memory) and when it returns or fails, including children in a
    session of their own and daemons; what can still escape is listed in the
    README's controller section.

    All local executors of a controller share one machine (the context's
    :class:`~cobalt_executors._machine.Machine`): a task needs room in this
    executor's own limits and in the machine's CPUs and memory, and idle warm
    workers over all of them are bounded by the machine, not multiplied by the
    number of executors. Executors sent by clients default to the machine's
    size; configured ones size it.
    """

    type_name = LOCAL.name
    accepted_options = LOCAL.options | LOCAL.config_only

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        opts = self.options
        self._warm = int(opts.get("workers") or os.cpu_count() or 1)
        cgroups = opts.get("cgroups", True)
        if not isinstance(cgroups, bool):
            raise SpecError(f"executor {name!r}: cgroups must be true or false, not {cgroups!r}.")
        self._cgroups = cgroups
        devices = detect_gpus()
        next_index = max((d.index for d in devices), default=-1) + 1
        emulate = opts.get("emulate_gpus") or {}
        if not isinstance(emulate, dict):
            raise SpecError(
                f"executor {name!r}: emulate_gpus must be a table such as {{h100 = 2}}."
            )
        for gpu_type, count in emulate.items():
            canonical = parse_gpu_type(str(gpu_type), option=f"executor {name!r} emulate_gpus")
            for _ in range(int(count)):
                devices.append(GpuDevice(index=next_index, type=canonical, emulated=True))
                next_index += 1
        memory = opts.get("memory")
        self._stated: tuple[float | None, int | None] = (
            float(opts["cpus"]) if opts.get("cpus") else None,
            parse_memory_mb(memory, option="memory") if memory else None,
        )
        self._inventory = LocalInventory(
            cpus=self._stated[0] or host_cpus(),
            memory_mb=self._stated[1] or host_memory_mb(),
            gpus=tuple(devices),
        )
        self._idle: dict[str, list[WorkerProcess]] = {}
        self._running: dict[str, _Running] = {}
        self._busy_slots = 0
        self._workers: set[WorkerProcess] = set()
        self._retired: set[WorkerProcess] = set()
        self._log_dir: Path | None = None
        self._closing = False
        self._watchdog: threading.Thread | None = None
        self._output_location: worker_pb2.BlobLocation | None = None

    def setup(self, context: ExecutorContext) -> None:
        super().setup(context)
        location = context.output_location
        self._output_location = to_wire(location) if location.readable_by_workers else None
        self._log_dir = make_log_dir(context.work_dir)
        machine = context.machine
        stated_cpus, stated_memory = self._stated
        if not machine.claim(stated_cpus, stated_memory):
            # Sent by a client: what it leaves unset is the machine's, as configured.
            self._inventory = LocalInventory(
                cpus=stated_cpus or machine.cpus,
                memory_mb=stated_memory or machine.memory_mb,
                gpus=self._inventory.gpus,
            )
        self._inventory.machine = machine
        machine.want_warm(self._warm)
        retire: list[Callable[[], None]] = []
        with self._lock:
            # Only as many as the machine keeps: workers are started on demand
            # anyway, and warm ones of another executor are not retired for these.
            for _ in range(self._warm):
                if not machine.has_room():
                    break
                retire += self._keep_idle(self._spawn(""))
        for stop in retire:
            stop()

    def set_outputs(self, inline_limit: int, location: BlobLocation) -> None:
        """Changes where later tasks put large outputs (an agent learns it from the
        controller after its workers have started)."""
        self._context = replace(self.context, inline_limit=inline_limit, output_location=location)
        self._output_location = to_wire(location) if location.readable_by_workers else None

    def inventory(self) -> Inventory:
        return self._inventory

    def describe(self) -> tuple[str, str]:
        """Capacity and free inventory in words; the CPUs and memory that are
        the whole machine's read "machine" (the status shows the machine once)."""
        inv, machine = self._inventory, self._inventory.machine
        if machine is None:
            return super().describe()
        cpus_own = inv.cpus != machine.cpus
        memory_own = inv.memory_mb != machine.memory_mb
        if cpus_own and memory_own:
            shared = ""
        elif cpus_own:
            shared = "machine memory"
        elif memory_own:
            shared = "machine CPUs"
        else:
            shared = "machine"
        free_cpus, free_memory, free_gpus = inv.free_now()
        capacity = describe_hardware(
            inv.cpus if cpus_own else None,
            inv.memory_mb if memory_own else None,
            list(inv.gpus),
            has_gpus=bool(inv.gpus),
        )
        free = describe_hardware(
            free_cpus if cpus_own else None,
            free_memory if memory_own else None,
            free_gpus,
            has_gpus=bool(inv.gpus),
        )
        return ", ".join(filter(None, (shared, capacity))), ", ".join(filter(None, (shared, free)))

    def _keep_idle(self, worker: WorkerProcess) -> list[Callable[[], None]]:
        """Puts a worker among the idle ones; returns the machine's retire calls
        (of workers idle longest, any executor's), to make after the lock."""
        self._idle.setdefault(worker.device_key, []).append(worker)
        if worker.device_key or self._closing:
            return []
        return self.context.machine.keep_idle(worker, lambda: self._retire(worker))

    def _retire(self, worker: WorkerProcess) -> None:
        """Stops an idle warm worker the machine no longer keeps (if still idle)."""
        with self._lock:
            pool = self._idle.get(worker.device_key, [])
            if worker not in pool:
                return
            pool.remove(worker)
            self._retired.add(worker)
        worker.shutdown()

    def _spawn(self, device_key: str) -> WorkerProcess:
        assert self._log_dir is not None, "setup() creates the log folder"
        worker = WorkerProcess(
            device_key,
            self._log_dir,
            dict(self.context.env),
            self._on_result,
            self._on_exit,
            cgroups=self._cgroups,
        )
        self._workers.add(worker)
        return worker

    def try_submit(self, task: TaskSubmission) -> HardwareGiven | None:
        slotted = not task.long_running
        with self._lock:
            if self._closing or (
                slotted and self._busy_slots >= max(self._warm, 1) and task.hardware.cpus == 0
            ):
                return None
            allocation = self._inventory.allocate(task.hardware)
            if allocation is None:
                return None
            real = [d for d in allocation.gpus if not d.emulated]
            device_key = ",".join(str(d.index) for d in real)
            pool = self._idle.setdefault(device_key, [])
            worker = pool.pop() if pool else self._spawn(device_key)
            self.context.machine.busy(worker)
            worker.task_key = task.task_key
            self._running[task.task_key] = _Running(task, worker, allocation)
            if slotted and task.hardware.cpus == 0:
                self._busy_slots += 1
        given = allocation.given()
        worker.send(self._command(task, worker, given))
        if task.hardware.memory_mb and self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch_memory, name=f"cobalt-memory-{self.name}", daemon=True
            )
            self._watchdog.start()
        return given

    def _watch_memory(self) -> None:
        """Stops a task whose worker holds more memory than the task asked for.

        Without it, one task could take the machine's memory from the others
        and the kernel's out-of-memory killer would pick who dies.
        """
        while not self._closing:
            time.sleep(_MEMORY_CHECK_S)
            with self._lock:
                limited = [r for r in self._running.values() if r.task.hardware.memory_mb]
            for entry in limited:
                rss = _rss_mb(entry.worker.proc.pid)
                entry.peak_mb = max(entry.peak_mb, rss)
                if rss > entry.task.hardware.memory_mb and not entry.stop_reason:
                    entry.stop_reason = "out_of_memory"
                    entry.worker.kill()

    def _command(
        self, task: TaskSubmission, worker: WorkerProcess, given: HardwareGiven
    ) -> worker_pb2.WorkerCommand:
        ctx = self.context
        env = dict(task.env)
        if given.cpus:
            env["COBALT_CPUS"] = f"{given.cpus:g}"
        if given.gpu:
            env["COBALT_GPU_TYPE"] = given.gpu
            env["COBALT_GPU_INDICES"] = ",".join(map(str, given.gpu_indices))
            env["COBALT_GPUS_EMULATED"] = "1" if given.emulated else "0"
        msg = worker_pb2.WorkerTask(
            task_key=task.task_key,
            function_sha256=task.function.sha256,
            env=env,
            inline_limit=ctx.inline_limit,
        )
        if self._output_location is not None:
            msg.output_location.CopyFrom(self._output_location)
        function, known = task.function, worker.known_functions
        if not known.holds(function.sha256):
            if function.data is not None:
                msg.function_data = function.data
            else:
                msg.function_location.CopyFrom(_location(function))
            known.add(function.sha256)
        forgotten = known.take_forgotten()
        if forgotten:
            msg.forget_functions.extend(forgotten)
        for arg in task.args:
            payload = arg.payload
            if payload.data is not None:
                msg.args.add(
                    position=arg.position,
                    keyword=arg.keyword,
                    sha256=payload.sha256,
                    data=payload.data,
                )
            else:
                msg.args.add(
                    position=arg.position,
                    keyword=arg.keyword,
                    sha256=payload.sha256,
                    location=_location(payload),
                )
        return worker_pb2.WorkerCommand(task=msg)

    def _finish(self, worker: WorkerProcess, task_key: str | None) -> _Running | None:
        with self._lock:
            entry = self._running.pop(task_key, None) if task_key else None
            if entry is None:
                return None
            self._inventory.release(entry.allocation)
            if not entry.task.long_running and entry.task.hardware.cpus == 0:
                self._busy_slots -= 1
            worker.task_key = None
            return entry

    def _on_result(self, worker: WorkerProcess, result: worker_pb2.WorkerResult) -> None:
        entry = self._finish(worker, result.task_key)
        if entry is None:
            return
        if not entry.stop_reason:
            with self._lock:
                retire = self._keep_idle(worker)
            for stop in retire:
                stop()
        output = None
        if not result.ok:
            worker.known_functions.drop(entry.task.function.sha256)
        else:
            if result.output_data or result.output_size == 0:
                output = PayloadRef(result.output_sha256, result.output_data, result.output_size)
            else:
                output = PayloadRef(
                    result.output_sha256, None, result.output_size, self.context.output_location
                )
        self.context.report(
            TaskOutcome(
                task_key=result.task_key,
                status=Status.COMPLETED if result.ok else Status.FAILED,
                output=output,
                error=result.error,
                stdout=result.stdout,
                stderr=result.stderr,
                started_at=result.started_at,
                ended_at=result.ended_at,
                reason=result.reason,
                hardware_given=entry.allocation.given(),
            )
        )

    def _on_exit(self, worker: WorkerProcess, returncode: int | None) -> None:
        stdout, stderr = worker.read_logs()
        entry = self._finish(worker, worker.task_key)
        machine = self.context.machine
        machine.busy(worker)
        retire: list[Callable[[], None]] = []
        with self._lock:
            self._workers.discard(worker)
            pool = self._idle.get(worker.device_key, [])
            if worker in pool:
                pool.remove(worker)
            retired = worker in self._retired
            self._retired.discard(worker)
            refill = (
                not self._closing
                and not retired
                and worker.device_key == ""
                and len(self._idle.get("", [])) + self._cpu_workers_running() < self._warm
                and machine.has_room()
            )
            if refill:
                retire = self._keep_idle(self._spawn(""))
        for stop in retire:
            stop()
        worker.cleanup()
        if entry is None:
            return
        reason = entry.stop_reason
        status: OutcomeStatus
        if reason in STOP_STATUS:
            status, reason, error = stopped(entry.task.name, entry.task.hardware, reason)
        elif reason == "out_of_memory":
            status = Status.FAILED
            error = (
                f"{entry.task.name} used {format_memory(entry.peak_mb)} of memory, more than "
                f"the {format_memory(entry.task.hardware.memory_mb)} it asked for, and was "
                "stopped. Ask for more, for example @ct.electron(memory=...)."
            )
        else:
            status, reason = Status.FAILED, "killed"
            how = f"signal {-returncode}" if returncode and returncode < 0 else f"code {returncode}"
            error = f"the worker running {entry.task.name} exited with {how} before finishing."
        self.context.report(
            TaskOutcome(
                task_key=entry.task.task_key,
                status=status,
                error=error,
                stdout=stdout,
                stderr=stderr,
                ended_at=time.time(),
                reason=reason,
                hardware_given=entry.allocation.given(),
            )
        )

    def _cpu_workers_running(self) -> int:
        return sum(1 for r in self._running.values() if r.worker.device_key == "")

    def cancel(self, task_key: str, reason: str) -> None:
        with self._lock:
            entry = self._running.get(task_key)
            if entry is None:
                return
            entry.stop_reason = reason
        entry.worker.kill()

    def teardown(self) -> None:
        with self._lock:
            self._closing = True
            workers = list(self._workers)
        if self._context is not None:
            for worker in workers:
                self._context.machine.busy(worker)
        for worker in workers:
            if worker.task_key is None:
                worker.shutdown()
            else:
                worker.kill()
        for worker in workers:
            try:
                worker.proc.wait(timeout=5)
            except Exception:
                worker.kill()
        if self._log_dir is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._log_dir)
