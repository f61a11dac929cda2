"""The Ray driver: a small process that the Ray executor starts beside the controller.

``python -m cobalt_executors.ray._driver --address ADDRESS`` connects to the Ray
cluster (``ray.init``) and speaks JSON lines with the controller: on stdout it
reports the cluster's nodes every :data:`NODES_EVERY_S` and each agent actor that
ends; on stdin it takes ``start`` and ``stop`` commands for agent actors. Nothing
it sends is pickled, and nothing it receives is unpickled.

Ray's driver runs here, not in the controller, so that the controller neither
imports ``ray`` nor hosts its threads and signal handlers, and a Ray failure ends
this process only. When stdin closes (the controller stopped or died), the driver
stops every agent and exits; the actors it owns end with it.

Messages out: ``{"kind": "ready"}``, ``{"kind": "nodes", "nodes": [{"id", "ip",
"resources"}]}`` (alive nodes only), ``{"kind": "ended", "allocation", "why"}``,
``{"kind": "error", "message"}``. Messages in: ``{"kind": "start", "allocation",
"node", "cpus", "memory_bytes", "gpus", "resources", "argv", "env", "python"}``
and ``{"kind": "stop", "allocation"}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from typing import IO, Any

NODES_EVERY_S = 2.0
_WAIT_S = 0.5


class Driver:
    """One connection to a Ray cluster and the agent actors started through it."""

    def __init__(self, out: IO[str], address: str) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from cobalt_executors.ray._actor import AgentActor

        self._ray = ray
        self._affinity = NodeAffinitySchedulingStrategy
        self._out = out
        self._out_lock = threading.Lock()
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        self._actor_class: Any = ray.remote(AgentActor)
        self._actors: dict[str, tuple[Any, Any]] = {}
        """allocation -> (actor handle, the ref of its ``run``)."""
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    def send(self, message: dict[str, Any]) -> None:
        with self._out_lock:
            self._out.write(json.dumps(message) + "\n")
            self._out.flush()

    def nodes(self) -> None:
        alive = [
            {
                "id": node["NodeID"],
                "ip": node.get("NodeManagerAddress", ""),
                "resources": node.get("Resources", {}),
            }
            for node in self._ray.nodes()  # type: ignore[no-untyped-call]
            if node.get("Alive")
        ]
        self.send({"kind": "nodes", "nodes": alive})

    def start(self, command: dict[str, Any]) -> None:
        options: dict[str, Any] = {
            "num_cpus": float(command["cpus"]),
            "num_gpus": float(command.get("gpus", 0)),
            "resources": dict(command.get("resources", {})),
            "scheduling_strategy": self._affinity(command["node"], soft=False),
            "max_restarts": 0,
            "max_concurrency": 3,  # threads: ``stop`` runs while ``run`` waits for the agent
            "name": f"cobalt-agent-{command['allocation']}",
        }
        if command.get("memory_bytes"):
            options["memory"] = int(command["memory_bytes"])
        actor = self._actor_class.options(**options).remote()
        ref = actor.run.remote(command["argv"], command["env"], command.get("python", ""))
        with self._lock:
            self._actors[command["allocation"]] = (actor, ref)

    def stop(self, allocation: str) -> None:
        with self._lock:
            entry = self._actors.get(allocation)
        if entry is not None:
            entry[0].stop.remote()

    def watch(self) -> None:
        """Reports nodes and ended actors until :attr:`stopping` is set."""
        last_nodes = 0.0
        while not self.stopping.is_set():
            if time.monotonic() - last_nodes >= NODES_EVERY_S:
                last_nodes = time.monotonic()
                self.nodes()
            with self._lock:
                refs = {ref: allocation for allocation, (_, ref) in self._actors.items()}
            if not refs:
                self.stopping.wait(_WAIT_S)
                continue
            done, _ = self._ray.wait(list(refs), num_returns=1, timeout=_WAIT_S)
            for ref in done:
                allocation = refs[ref]
                try:
                    why = f"the agent exited with status {self._ray.get(ref)}"
                except Exception as exc:  # the actor or its node died
                    why = f"its Ray actor ended: {type(exc).__name__}: {str(exc)[:300]}"
                with self._lock:
                    self._actors.pop(allocation, None)
                self.send({"kind": "ended", "allocation": allocation, "why": why})

    def close(self) -> None:
        """Stops every agent (their process groups), then leaves the cluster."""
        self.stopping.set()
        with self._lock:
            entries = list(self._actors.values())
            self._actors.clear()
        stops = [actor.stop.remote() for actor, _ in entries]
        if stops:
            self._ray.wait(stops, num_returns=len(stops), timeout=10)
        for actor, _ in entries:
            self._ray.kill(actor)
        self._ray.shutdown()


def _read_commands(driver: Driver, stdin: IO[str]) -> None:
    for line in stdin:
        try:
            command = json.loads(line)
            if command["kind"] == "start":
                driver.start(command)
            elif command["kind"] == "stop":
                driver.stop(command["allocation"])
        except Exception as exc:
            driver.send({"kind": "error", "message": f"{type(exc).__name__}: {exc}"})
    driver.stopping.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cobalt_executors.ray._driver")
    parser.add_argument("--address", required=True, help="the Ray cluster's address")
    args = parser.parse_args(argv)
    # stdout is the channel to the controller: whatever Ray prints goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        driver = Driver(out, args.address)
    except Exception as exc:
        out.write(json.dumps({"kind": "error", "message": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 2
    driver.send({"kind": "ready"})
    reader = threading.Thread(target=_read_commands, args=(driver, sys.stdin), daemon=True)
    reader.start()
    try:
        driver.watch()
    finally:
        driver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
