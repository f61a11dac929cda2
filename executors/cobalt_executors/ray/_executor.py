"""The Ray executor: cobalt agents on a user's existing Ray cluster.

At setup the executor starts a small Ray driver beside the controller
(:mod:`cobalt_executors.ray._driver`) that connects to the cluster at
``address``. For each alive node the driver reports, the executor mints an
agent credential and asks the driver for an agent actor pinned to that node
(``NodeAffinitySchedulingStrategy``, not soft) holding the node's CPUs, memory
and GPUs; the actor runs ``python -m cobalt_executors.agent`` as a subprocess
with those as its declared hardware, and the agent dials the controller like
any other. Tasks, cancels and time limits then go over the agent's stream, and
the agent stops a task by killing its process group.

Nodes that join get an agent at the driver's next report (every 2 s). A node or
actor that dies kills its agent, whose stream closes: its tasks are reported
``agent_lost`` and retried. An agent that ended is started again on its node
after :data:`RESTART_AFTER_S` while the node lives. If the driver itself ends,
its actors end with it, and the executor starts a new driver.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

from cobalt_common.errors import ExecutorError, SpecError
from cobalt_common.executor_types import RAY
from cobalt_common.hardware import HardwareSpec
from cobalt_executors.base import ExecutorContext
from cobalt_executors.ray._nodes import NodeShape, gpu_resources
from cobalt_executors.remote import RemoteExecutor

log = logging.getLogger("cobalt.executors")

CONNECT_TIMEOUT_S = 20.0
"""How long setup waits for the driver's first report of the cluster's nodes. Ray's
``ray.init`` waits minutes for an address where nothing answers; the controller
starts after this long regardless, and the executor refuses tasks, saying why,
until the driver reports the nodes."""
RESTART_AFTER_S = 5.0
"""How long after an agent ended a new one is started on its node."""
AGENT_TTL_S = 30 * 86400.0
"""How long an agent's credential lasts: agents live as long as their nodes."""
_STOP_DRIVER_S = 20.0


class RayExecutor(RemoteExecutor):
    """Runs tasks on a Ray cluster, one cobalt agent per node.

    Options (``config.toml`` only): ``address`` (the cluster's address, e.g.
    ``"10.0.0.5:6379"``; required), ``token_file`` (the file with the cluster's
    authentication token, given to Ray as ``RAY_AUTH_TOKEN_PATH``; default:
    Ray's own lookup), ``gpu_resources`` (cobalt GPU name to Ray resource:
    ``"GPU"`` for Ray's own GPUs, any other name for a custom resource counted
    as emulated GPUs), ``python`` (the interpreter with cobalt on the nodes;
    default: the Ray worker's), and the remote executors' ``reconnect_grace_s``,
    ``blob_dir`` and ``prefetch``. ``agents_per_node`` (default 1) splits each
    node into that many agents, each holding an equal share of its CPUs, memory
    and GPUs (GPUs that do not divide evenly are left to Ray).
    """

    type_name = RAY.name
    accepted_options = RAY.options | RAY.config_only

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        address = self.options.get("address")
        if not isinstance(address, str) or not address or "\n" in address:
            raise SpecError(
                f"executor {name!r}: address must be the Ray cluster's address, such as "
                f'"10.0.0.5:6379", not {address!r}.'
            )
        self.address = address
        token_file = self.options.get("token_file", "")
        if not isinstance(token_file, str) or "\n" in token_file:
            raise SpecError(f"executor {name!r}: token_file must be a path, not {token_file!r}.")
        self.token_file = token_file
        self.gpu_resources = gpu_resources(self.options.get("gpu_resources"))
        python = self.options.get("python", "")
        if not isinstance(python, str) or "\n" in python:
            raise SpecError(f"executor {name!r}: python must be a path, not {python!r}.")
        self.python = python
        share = self.options.get("agents_per_node", 1)
        if isinstance(share, bool) or not isinstance(share, int) or not 1 <= share <= 64:
            raise SpecError(
                f"executor {name!r}: agents_per_node must be a whole number from 1 to 64, "
                f"not {share!r}."
            )
        self.agents_per_node = share
        self._connecting = f"still connecting to the Ray cluster at {address}"
        self.problem = self._connecting
        """Why no node is known, or "" once the driver reports them."""
        self.nodes: dict[str, NodeShape] = {}
        """Each alive node's agents (one shape for all of a node's agents), by Ray
        node id, as last reported."""
        self._agents: dict[str, str] = {}
        """``<Ray node id>/<index>`` -> the allocation of the agent in that slot."""
        self._ended_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._reported = threading.Event()
        self._driver: subprocess.Popen[str] | None = None
        self._keeper: threading.Thread | None = None

    # -- setup and teardown --------------------------------------------------------------

    def setup(self, context: ExecutorContext) -> None:
        if importlib.util.find_spec("ray") is None:
            raise ExecutorError(
                f"executor {self.name!r} needs Ray on the controller's machine: "
                "install cobalt's `ray` extra (pip install 'cobalt[ray]')."
            )
        if context.agents is None:
            raise SpecError(f"executor {self.name!r} needs a controller that serves agents.")
        super().setup(context)
        self._keeper = threading.Thread(
            target=self._keep_driver, name=f"cobalt-ray-{self.name}", daemon=True
        )
        self._keeper.start()
        if not self._reported.wait(CONNECT_TIMEOUT_S):
            log.error(
                "executor %s: no report from the Ray cluster at %s within %.0f s: %s",
                self.name,
                self.address,
                CONNECT_TIMEOUT_S,
                self.problem,
            )

    def teardown(self) -> None:
        self._stopping.set()
        driver = self._driver
        if driver is not None:
            self._close_stdin(driver)  # the driver stops its agents and exits
            try:
                driver.wait(_STOP_DRIVER_S)
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait()
        if self._keeper is not None:
            self._keeper.join(_STOP_DRIVER_S)
        super().teardown()

    @staticmethod
    def _close_stdin(driver: subprocess.Popen[str]) -> None:
        if driver.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                driver.stdin.close()

    def _log_path(self) -> Path | None:
        folder = self.context.work_dir
        if folder is None:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"ray-driver-{self.name}.log"

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.token_file:
            env["RAY_AUTH_TOKEN_PATH"] = self.token_file
            env["RAY_AUTH_MODE"] = "token"
        return env

    def _keep_driver(self) -> None:
        """Runs the driver, and a new one after it ends, until teardown."""
        while not self._stopping.is_set():
            try:
                driver = self._start_driver()
            except OSError as exc:
                self.problem = f"the Ray driver could not start: {exc}"
                self._reported.set()
                log.error("executor %s: %s", self.name, self.problem)
                self._stopping.wait(RESTART_AFTER_S)
                continue
            self._driver = driver
            if self._stopping.is_set():  # teardown came while it started
                self._close_stdin(driver)
            assert driver.stdout is not None
            for line in driver.stdout:
                self._on_message(line)
            status = driver.wait()
            with self._lock:  # its actors ended with it; the nodes seen last still count
                self._agents.clear()
            if self._stopping.is_set():
                return
            if self.problem in ("", self._connecting):
                self.problem = f"the Ray driver exited with status {status}"
            self._reported.set()
            log.error("executor %s: %s; starting another", self.name, self.problem)
            self._stopping.wait(RESTART_AFTER_S)

    def _start_driver(self) -> subprocess.Popen[str]:
        path = self._log_path()
        stderr: IO[bytes] | int = open(path, "ab") if path else subprocess.DEVNULL  # noqa: SIM115
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "cobalt_executors.ray._driver", "--address", self.address],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=self._environment(),
                text=True,
            )
        finally:
            if not isinstance(stderr, int):
                stderr.close()

    def _send(self, message: dict[str, Any]) -> None:
        driver = self._driver
        if driver is None or driver.stdin is None:
            return
        try:
            driver.stdin.write(json.dumps(message) + "\n")
            driver.stdin.flush()
        except (OSError, ValueError) as exc:
            log.warning("executor %s: cannot reach the Ray driver: %s", self.name, exc)

    # -- the driver's reports ------------------------------------------------------------

    def _on_message(self, line: str) -> None:
        try:
            message = json.loads(line)
            kind = message["kind"]
        except (ValueError, KeyError, TypeError):
            log.warning("executor %s: the Ray driver said %r", self.name, line[:200])
            return
        if kind == "nodes":
            self._on_nodes(message["nodes"])
        elif kind == "ended":
            self._on_ended(str(message["allocation"]), str(message["why"]))
        elif kind == "error":
            self.problem = str(message["message"])
            log.error("executor %s: Ray: %s", self.name, self.problem)

    def _on_nodes(self, nodes: list[dict[str, Any]]) -> None:
        shapes = {
            str(node["id"]): NodeShape.of(
                str(node["id"]), node["resources"], self.gpu_resources
            ).share(self.agents_per_node)
            for node in nodes
        }
        now = time.monotonic()
        starts: list[tuple[str, NodeShape]] = []
        with self._lock:
            self.nodes = shapes
            for node_id, shape in shapes.items():
                for index in range(self.agents_per_node if shape.cpus >= 1 else 0):
                    slot = f"{node_id}/{index}"
                    recent = now - self._ended_at.get(slot, -RESTART_AFTER_S) < RESTART_AFTER_S
                    if slot not in self._agents and not recent:
                        self._agents[slot] = f"ray-{node_id[:12]}-{index}-{uuid.uuid4().hex[:6]}"
                        starts.append((self._agents[slot], shape))
        self.problem = ""
        for allocation, shape in starts:
            self._start_agent(allocation, shape)
        self._reported.set()

    def _on_ended(self, allocation: str, why: str) -> None:
        with self._lock:
            for slot, held in list(self._agents.items()):
                if held == allocation:
                    del self._agents[slot]
                    self._ended_at[slot] = time.monotonic()
        if not self._stopping.is_set():
            log.warning("executor %s: agent %s ended: %s", self.name, allocation, why)

    def _start_agent(self, allocation: str, shape: NodeShape) -> None:
        endpoint = self.context.agents
        assert endpoint is not None
        argv = [
            "--controller",
            endpoint.address,
            "--executor",
            self.name,
            "--allocation",
            allocation,
            "--agent-id",
            allocation,
            "--cpus",
            f"{shape.cpus:g}",
            "--workers",
            str(max(1, int(shape.cpus))),
            "--memory",
            f"{shape.memory_mb}MB",
        ]
        if endpoint.fingerprint:
            argv += ["--fingerprint", endpoint.fingerprint]
        if shape.emulated and shape.gpu:
            argv += ["--emulate-gpus", json.dumps({shape.gpu: shape.gpus})]
        token = endpoint.mint(self.name, allocation, AGENT_TTL_S)
        self._send(
            {
                "kind": "start",
                "allocation": allocation,
                "node": shape.node_id,
                "cpus": shape.cpus,
                "memory_bytes": shape.memory_mb * 2**20,
                "gpus": 0 if shape.emulated else shape.gpus,
                "resources": shape.ray_resources(),
                "argv": argv,
                "env": {"COBALT_AGENT_TOKEN": token},
                "python": self.python,
            }
        )
        log.info("executor %s: agent %s on Ray node %s", self.name, allocation, shape.describe())

    # -- the executor interface ----------------------------------------------------------

    def can_ever_run(self, spec: HardwareSpec) -> bool:
        with self._lock:
            shapes = list(self.nodes.values())
        return any(shape.covers(spec) for shape in shapes) or self.pool.can_ever_run(spec)

    def capacity_words(self, spec: HardwareSpec) -> str:
        with self._lock:
            shapes = list(self.nodes.values())
        if not shapes:
            return f"the Ray cluster at {self.address} cannot be read: {self.problem or 'no node'}"
        return "Ray nodes: " + "; ".join(sorted({s.describe() for s in shapes}))

    def describe(self) -> tuple[str, str]:
        total, free = super().describe()
        with self._lock:
            count = len(self.nodes)
        return f"Ray at {self.address} ({count} node(s)): {total}", free
