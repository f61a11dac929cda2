"""The ``dask`` executor: cobalt agents on the workers of a running Dask cluster.

In ``config.toml``::

    [executors.cluster]
    type = "dask"
    address = "tcp://scheduler.lab.example:8786"
    gpu_resources = { h100 = "GPU" }   # workers started with --resources GPU=2

At setup the executor connects a ``distributed.Client`` that refuses pickled
answers (``deserializers=["msgpack"]``: the controller never unpickles what a
cluster sends), reads the scheduler's workers, and starts one cobalt agent on
each as a long-running Dask task pinned to that worker
(:func:`~._agent_task.run_agent`). The agent declares the worker's threads,
memory limit and GPU resources (:mod:`._workers`) and dials the controller like
any other; tasks then flow over its stream, and cancel and time limits kill the
task's process group there, which Dask's own ``future.cancel()`` cannot do.

A watcher reads the scheduler's workers every :data:`WATCH_S`: a worker that
joins gets an agent, and one that leaves has its agent dropped at once, so that
its tasks are reported ``agent_lost`` and retried. The agent itself dies with its
worker's process.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import threading
import uuid
from typing import Any

from cobalt_common.errors import ExecutorError, SpecError
from cobalt_common.executor_types import DASK
from cobalt_common.hardware import HardwareSpec
from cobalt_executors.base import ExecutorContext
from cobalt_executors.dask._agent_task import STOP_GRACE_S, run_agent
from cobalt_executors.dask._workers import WorkerShape, gpu_resources
from cobalt_executors.remote import RemoteExecutor

log = logging.getLogger("cobalt.executors")

WATCH_S = 1.0
"""How often the scheduler's workers are read."""
AGENT_TTL_S = 30 * 86400.0
"""How long an agent's credential lasts: an agent lives as long as its worker."""
AGENTS_FAILED = "agent_failed"
"""The reason of a task failed because no worker of its executor has a working agent."""
EXTRA_HINT = "install cobalt's dask extra (pip install 'cobalt[dask]') on the controller's machine"


def import_distributed(executor: str) -> Any:
    """``distributed``, imported now, or an error that names the extra to install."""
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise SpecError(
            f"executor {executor!r} is of type dask, but Dask's distributed package is "
            f"missing ({exc}); {EXTRA_HINT}."
        ) from None


class DaskExecutor(RemoteExecutor):
    """Runs tasks on cobalt agents that it starts on a Dask cluster's workers.

    Options (``config.toml`` only):
        address: the scheduler, such as ``"tcp://host:8786"`` (required).
        gpu_resources: cobalt GPU name to the Dask worker resource that counts
            them, such as ``{h100 = "GPU"}`` (default: none; workers offer no GPUs).
        emulate_gpus: true on clusters whose GPU resources are stand-ins: agents
            then offer them as emulated GPUs (default false: agents detect the
            machine's own GPUs).
        python: the interpreter with cobalt on the workers' machines (default:
            the controller's own path).
        workers: warm worker processes per agent (default: the worker's threads).
        connect_timeout_s: how long setup waits for the scheduler (default 10).
        reconnect_grace_s, blob_dir, prefetch: as for every remote executor.
    """

    type_name = DASK.name
    accepted_options = DASK.options | DASK.config_only
    unavailable_reason = AGENTS_FAILED

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        opts = self.options
        address = opts.get("address")
        if not isinstance(address, str) or "://" not in address or "\n" in address:
            raise SpecError(
                f"executor {name!r}: address must be the Dask scheduler's address, such as "
                f'"tcp://scheduler.example:8786", not {address!r}.'
            )
        self.address = address
        self.gpu_resources = gpu_resources(opts.get("gpu_resources"), executor=name)
        emulate = opts.get("emulate_gpus", False)
        if not isinstance(emulate, bool):
            raise SpecError(f"executor {name!r}: emulate_gpus must be true or false.")
        self.emulate_gpus = emulate
        self.python = str(opts.get("python") or sys.executable)
        if "\n" in self.python:
            raise SpecError(f"executor {name!r}: python must be a path, not {self.python!r}.")
        workers = opts.get("workers", 0)
        if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= 1024:
            raise SpecError(
                f"executor {name!r}: workers must be a whole number from 1 to 1024 (0 or "
                f"unset: one per Dask worker thread), not {workers!r}."
            )
        self.workers = workers
        timeout = opts.get("connect_timeout_s", 10)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise SpecError(
                f"executor {name!r}: connect_timeout_s must be a positive number, not {timeout!r}."
            )
        self.connect_timeout_s = float(timeout)
        self.client: Any = None
        self._stop_event = f"cobalt-stop-{name}-{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._workers: dict[str, WorkerShape] = {}
        self._allocations: dict[str, str] = {}
        """The allocation id of each worker's agent, by worker address."""
        self._futures: dict[str, Any] = {}
        self._failed: dict[str, str] = {}
        """Why the agent of a worker ended while the worker stayed, by worker address."""
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.problem = ""

    def setup(self, context: ExecutorContext) -> None:
        super().setup(context)
        if context.agents is None:
            raise SpecError(
                f"executor {self.name!r}: this controller serves no agents, so Dask workers "
                "cannot attach; run it with a controller (cobalt controller start)."
            )
        distributed = import_distributed(self.name)
        try:
            self.client = distributed.Client(
                self.address,
                timeout=self.connect_timeout_s,
                deserializers=["msgpack"],
                set_as_default=False,
                name=f"cobalt-{self.name}",
            )
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(
                f"executor {self.name!r}: cannot reach the Dask scheduler at {self.address} "
                f"({exc}); start it (`dask scheduler`) or fix the executor's address."
            ) from None
        self.refresh()
        self._watcher = threading.Thread(
            target=self._watch, name=f"cobalt-dask-{self.name}", daemon=True
        )
        self._watcher.start()

    def refresh(self) -> None:
        """Reads the scheduler's workers: an agent for each new one, and the agent of
        each one that left dropped."""
        try:
            info = self.client.scheduler_info(n_workers=-1)
        except Exception as exc:
            if str(exc) != self.problem:
                log.error("executor %s: cannot read the Dask scheduler: %s", self.name, exc)
            self.problem = f"cannot read the Dask scheduler at {self.address}: {exc}"
            return
        self.problem = ""
        current = {
            address: WorkerShape.of(address, worker, self.gpu_resources)
            for address, worker in info.get("workers", {}).items()
        }
        with self._lock:
            if self._stopping.is_set():
                return
            joined = [w for a, w in current.items() if a not in self._workers]
            left = [a for a in self._workers if a not in current]
            self._workers = current
            for address in left:
                self._failed.pop(address, None)
        for address in left:
            self._forget(address)
        for worker in joined:
            self._start_agent(worker)

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_S):
            try:
                self.refresh()
            except Exception:
                log.exception("executor %s: watching the Dask workers failed", self.name)

    def _argv(self, worker: WorkerShape, allocation: str) -> list[str]:
        endpoint = self.context.agents
        assert endpoint is not None  # checked in setup
        argv = [
            self.python,
            "-m",
            "cobalt_executors.agent",
            "--controller",
            endpoint.address,
            "--executor",
            self.name,
            "--allocation",
            allocation,
            "--agent-id",
            allocation,
            "--cpus",
            str(worker.cpus),
            "--workers",
            str(self.workers or worker.cpus),
        ]
        if worker.memory_mb:
            argv += ["--memory", f"{worker.memory_mb}MB"]
        if endpoint.fingerprint:
            argv += ["--fingerprint", endpoint.fingerprint]
        if self.emulate_gpus and worker.gpus:
            argv += ["--emulate-gpus", json.dumps(worker.gpus)]
        return argv

    def _start_agent(self, worker: WorkerShape) -> None:
        endpoint = self.context.agents
        assert endpoint is not None  # checked in setup
        allocation = f"dask-{uuid.uuid4().hex[:10]}"
        token = endpoint.mint(self.name, allocation, AGENT_TTL_S)
        try:
            future = self.client.submit(
                run_agent,
                self._argv(worker, allocation),
                token,
                self._stop_event,
                key=f"cobalt-agent-{self.name}-{allocation}",
                workers=[worker.address],
                allow_other_workers=False,
                pure=False,
            )
        except Exception as exc:
            log.error(
                "executor %s: could not start an agent on %s: %s", self.name, worker.address, exc
            )
            return
        with self._lock:
            self._allocations[worker.address] = allocation
            self._futures[worker.address] = future
        log.info(
            "executor %s: starting agent %s on Dask worker %s (%s)",
            self.name,
            allocation,
            worker.address,
            worker.describe(),
        )
        future.add_done_callback(lambda f: self._agent_ended(worker.address, allocation, f))

    def _agent_ended(self, address: str, allocation: str, future: Any) -> None:
        with self._lock:
            if self._stopping.is_set() or self._allocations.get(address) != allocation:
                return  # stopping, or the worker left and its agent was dropped
            # Its answer is never read: the client refuses pickled answers, and the
            # agent's own output is in the worker's log.
            why = (
                f"the agent on Dask worker {address} ended ({future.status}); see that "
                f"worker's log (the agent runs {self.python} -m cobalt_executors.agent)"
            )
            self._failed[address] = why
        log.error("executor %s: %s", self.name, why)

    def _forget(self, address: str) -> None:
        with self._lock:
            allocation = self._allocations.pop(address, None)
            future = self._futures.pop(address, None)
        if future is not None:
            future.release()
        if allocation is not None:
            self.pool.drop(allocation, f"Dask worker {address} left the cluster")

    def worker_shapes(self) -> list[WorkerShape]:
        """The scheduler's workers as read last, less those whose agent ended."""
        with self._lock:
            return [w for a, w in self._workers.items() if a not in self._failed]

    def unavailable(self) -> str:
        """Why no worker can run tasks when every worker's agent ended; "" otherwise."""
        with self._lock:
            if not self._workers or len(self._failed) < len(self._workers):
                return ""
            problems = list(self._failed.values())
        if self.pool.agents():
            return ""
        return (
            f"no worker of executor {self.name!r} can run tasks: {'; '.join(problems)}. Fix "
            "the workers' cobalt (or the executor's python option) and restart them."
        )

    # -- the executor interface --------------------------------------------------------

    def can_ever_run(self, spec: HardwareSpec) -> bool:
        workers = self.worker_shapes()
        if not workers and not self.pool.agents() and not self.unavailable():
            return True  # an empty (e.g. adaptive) cluster: tasks wait for workers
        return self.pool.can_ever_run(spec) or any(w.fits(spec) for w in workers)

    def capacity_words(self, spec: HardwareSpec) -> str:
        if self.problem:
            return self.problem
        why = self.unavailable()
        if why:
            return why
        workers = self.worker_shapes()
        shapes = "; ".join(sorted({w.describe() for w in workers})) or "none"
        return f"Dask cluster at {self.address}, workers: {shapes}"

    def describe(self) -> tuple[str, str]:
        total, free = super().describe()
        workers = self.worker_shapes()
        where = f"Dask at {self.address} ({len(workers)} worker(s)"
        where += f"; {self.problem})" if self.problem else ")"
        return f"{where}: {total}", free

    def teardown(self) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=WATCH_S + 5)
        client = self.client
        distributed = sys.modules.get("distributed")
        if client is not None and distributed is not None:
            try:
                distributed.Event(self._stop_event, client=client).set()
            except Exception as exc:
                log.warning("executor %s: could not tell its agents to stop: %s", self.name, exc)
        super().teardown()
        if client is None or distributed is None:
            return
        with self._lock:
            futures = list(self._futures.values())
            self._futures.clear()
        try:
            # Each agent stops within its grace once it sees the event; waiting for
            # that reads no answer, so nothing is unpickled.
            distributed.wait(futures, timeout=STOP_GRACE_S + 5)
        except Exception as exc:
            log.warning("executor %s: agents still running at teardown: %s", self.name, exc)
        for future in futures:
            future.release()
        client.close(timeout=5)
        self.client = None
