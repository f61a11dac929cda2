"""The control loop: scheduler, kubelet, Job controller and garbage collector, run in turn
on one thread whenever an object changes and at least every tenth of a second."""

from __future__ import annotations

import threading
import time
import traceback

from ._api import Api
from ._conditions import set_condition
from ._events import Recorder
from ._gc import GarbageCollector
from ._jobs import JobController
from ._kinds import NODES, PODS
from ._kubelet import Kubelet
from ._meta import Json
from ._scheduler import place
from ._store import Store

_TICK_S = 0.1


class ControlLoop:
    def __init__(self, store: Store, api: Api, kubelet: Kubelet, recorder: Recorder) -> None:
        self._store = store
        self._kubelet = kubelet
        self._events = recorder
        self._jobs = JobController(store, api, recorder)
        self._gc = GarbageCollector(store, api, kubelet)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="kube-fake-controllers", daemon=True)
        self.errors: list[str] = []
        """Tracebacks of exceptions the loop caught: a bug in the fake, never a test's fault."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._store.lock:
            self._stopping = True
            self._store.changed.notify_all()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with self._store.lock:
            while not self._stopping:
                for _ in range(5):
                    before = self._store.rv
                    try:
                        self.tick(time.time())
                    except Exception:
                        self.errors.append(traceback.format_exc())
                    if self._store.rv == before:
                        break
                self._store.changed.wait(timeout=_TICK_S)

    def tick(self, now: float) -> None:
        self._schedule()
        self._kubelet.sync(now)
        self._jobs.sync(now)
        self._gc.sync()

    def _schedule(self) -> None:
        nodes = list(self._store.items(NODES.plural))
        pods = list(self._store.items(PODS.plural))
        for pod in pods:
            if pod["spec"].get("nodeName") or "deletionTimestamp" in pod["metadata"]:
                continue
            if (pod.get("status") or {}).get("phase") != "Pending":
                continue
            node, message = place(pod, nodes, pods)
            meta = pod["metadata"]
            if node is not None:

                def bind(obj: Json, node: str = node) -> None:
                    obj["spec"]["nodeName"] = node
                    set_condition(obj.setdefault("status", {}), "PodScheduled", True, probe=False)

                bound = self._store.update(PODS.plural, meta["namespace"], meta["name"], bind)
                if bound is not None:
                    pods = [bound if p["metadata"]["uid"] == meta["uid"] else p for p in pods]
                self._events.record(
                    pod,
                    "Scheduled",
                    f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}",
                    component="default-scheduler",
                )
                continue
            current = next(
                (
                    c
                    for c in (pod.get("status") or {}).get("conditions") or []
                    if c["type"] == "PodScheduled"
                ),
                None,
            )
            if current is not None and current.get("message") == message:
                continue

            def unschedulable(obj: Json, message: str = message) -> None:
                set_condition(
                    obj.setdefault("status", {}),
                    "PodScheduled",
                    False,
                    "Unschedulable",
                    message,
                    probe=False,
                )

            self._store.update(PODS.plural, meta["namespace"], meta["name"], unschedulable)
            self._events.record(
                pod, "FailedScheduling", message, warning=True, component="default-scheduler"
            )
