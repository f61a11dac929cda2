"""The kubelet of every node: pulls, starts, watches and stops each pod's container as a
local process, and writes the pod's status as the kubelet does.

A bound pod is accepted (``startTime``, ``hostIP``, ``podIP`` 127.0.0.1, sandbox and
initialization conditions), its image is pulled (``ErrImagePull``, then
``ImagePullBackOff``, retried every two seconds), its environment resolved
(``CreateContainerConfigError`` while a Secret or key is missing, retried), then its first
container's ``command + args`` runs in a new session (so the whole process group can be
signalled), in a fresh folder (or ``workingDir`` when that exists), with ``PATH``,
``HOME`` (the folder) and ``HOSTNAME`` (the pod's name) plus the container's environment,
its output appended to the pod's log file. An executable that cannot be started is
``StartError`` with exit code 128, as runc reports it.

When the process exits, the rest of its group is killed (as the runtime kills a container's
cgroup) and the pod is ``Succeeded`` (exit 0) or ``Failed`` with the container
``terminated`` (``Completed`` or ``Error``, the exit code, 128 + the signal for a signal).
Stopping (deletion, ``activeDeadlineSeconds``, eviction) sends SIGTERM to the group and
SIGKILL when the grace period is over; the fake caps that wait at ``grace_cap_s``.

Not modelled: processes that leave the group with a session of their own, restarts
(``restartPolicy`` Always and OnFailure end like Never), init containers and every
container after the first (not run, no status), probes, volumes (accepted, not mounted),
resource limits (not enforced: nothing is OOM-killed).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import _env, _images
from ._conditions import set_condition
from ._events import Recorder
from ._kinds import NODES, PODS, SECRETS
from ._meta import Json, random_hex, timestamp
from ._quantity import parse_quantity
from ._store import Store

TERMINAL = ("Succeeded", "Failed")
POD_IP = "127.0.0.1"
_BACKOFF_S = 1.0
_PULL_RETRY_S = 2.0
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


@dataclass
class Container:
    """What the kubelet holds for one pod beside its object."""

    folder: Path
    log: Path
    accepted: float = 0.0
    process: subprocess.Popen[bytes] | None = None
    container_id: str = ""
    started_at: str = ""
    exit_code: int | None = None
    finished_at: str = ""
    stop_reason: str = ""
    stop_message: str = ""
    stop_grace: float | None = None
    term_sent_at: float | None = None
    killed: bool = False
    pull_failed_at: float | None = None
    next_pull: float = 0.0
    start_error: str = ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.exit_code is None


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


class Kubelet:
    def __init__(
        self,
        store: Store,
        recorder: Recorder,
        root: Path,
        path: str,
        images: set[str],
        private_images: set[str],
        grace_cap_s: float,
    ) -> None:
        self._store = store
        self._events = recorder
        self._root = root
        self._path = path
        self.images = images
        self.private_images = private_images
        self._grace_cap_s = grace_cap_s
        self._containers: dict[str, Container] = {}

    # -- hooks the fake and the API use -------------------------------------------------

    def log_path(self, uid: str) -> Path | None:
        container = self._containers.get(uid)
        return container.log if container is not None else None

    def is_running(self, uid: str) -> bool:
        container = self._containers.get(uid)
        return container is not None and container.running

    def has_stopped(self, uid: str) -> bool:
        """Whether nothing of the pod runs any more (or never ran)."""
        container = self._containers.get(uid)
        return container is None or not container.running

    def pids(self) -> dict[str, int]:
        out = {}
        for pod in self._store.items(PODS.plural):
            container = self._containers.get(pod["metadata"]["uid"])
            if container is not None and container.running and container.process is not None:
                out[pod["metadata"]["name"]] = container.process.pid
        return out

    def stop(self, uid: str, reason: str, message: str, grace: float) -> None:
        """Stops a pod for ``reason`` (``Evicted``, ``DeadlineExceeded``)."""
        container = self._containers.get(uid)
        if container is None or container.stop_reason:
            return
        container.stop_reason, container.stop_message = reason, message
        container.stop_grace = grace

    def kill_now(self, uid: str) -> None:
        """SIGKILLs a pod's group and reaps it: for a pod force-deleted or gone."""
        container = self._containers.pop(uid, None)
        if container is None:
            return
        if container.running and container.process is not None:
            _signal_group(container.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                container.process.wait(timeout=5)

    def shutdown(self) -> None:
        for uid in list(self._containers):
            self.kill_now(uid)

    # -- the sync loop --------------------------------------------------------------------

    def sync(self, now: float) -> None:
        """One pass over every pod bound to a node; called with the store's lock held."""
        nodes = {node["metadata"]["name"]: node for node in self._store.items(NODES.plural)}
        live = set()
        for pod in list(self._store.items(PODS.plural)):
            node = nodes.get(pod["spec"].get("nodeName", ""))
            if node is None:
                continue
            uid = pod["metadata"]["uid"]
            live.add(uid)
            self._sync_pod(pod, node, now)
        for uid in list(self._containers):
            if uid not in live:
                self.kill_now(uid)

    def _container(self, pod: Json) -> Container:
        meta = pod["metadata"]
        uid = meta["uid"]
        container = self._containers.get(uid)
        if container is None:
            folder = self._root / "pods" / uid
            log = self._root / "logs" / f"{meta['namespace']}_{meta['name']}_{uid}.log"
            container = Container(folder=folder, log=log, accepted=time.time())
            self._containers[uid] = container
        return container

    def _update(self, pod: Json, change: Callable[[Json], None]) -> Json:
        """Writes a change to the stored pod; returns the pod as now stored."""
        meta = pod["metadata"]
        updated = self._store.update(PODS.plural, meta["namespace"], meta["name"], change)
        return pod if updated is None else updated

    def _sync_pod(self, pod: Json, node: Json, now: float) -> None:
        container = self._container(pod)
        status = pod.get("status") or {}
        if container.running:
            self._reap(container)
        if status.get("phase") in TERMINAL:
            return
        if not status.get("startTime"):
            pod = self._accept(pod, node)
        deleting = "deletionTimestamp" in pod["metadata"]
        deadline = pod["spec"].get("activeDeadlineSeconds")
        if (
            deadline is not None
            and not container.stop_reason
            and now - container.accepted >= deadline
        ):
            self.stop(
                pod["metadata"]["uid"],
                "DeadlineExceeded",
                DEADLINE_MESSAGE,
                float(pod["spec"].get("terminationGracePeriodSeconds", 30)),
            )
        if deleting or container.stop_reason:
            if container.running:
                grace = container.stop_grace
                if grace is None or deleting:
                    grace = float(pod["metadata"].get("deletionGracePeriodSeconds", 30))
                self._signal(container, grace, now)
                return
            self._finish(pod, container)
            return
        if container.process is None:
            self._start(pod, node, container, now)
        elif container.exit_code is not None:
            self._finish(pod, container)

    def _signal(self, container: Container, grace: float, now: float) -> None:
        assert container.process is not None
        pid = container.process.pid
        if container.term_sent_at is None:
            container.term_sent_at = now
            _signal_group(pid, signal.SIGKILL if grace <= 0 else signal.SIGTERM)
            container.killed = grace <= 0
        elif not container.killed and now - container.term_sent_at >= min(grace, self._grace_cap_s):
            _signal_group(pid, signal.SIGKILL)
            container.killed = True

    def _reap(self, container: Container) -> None:
        assert container.process is not None
        pid = container.process.pid
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = None
            if container.process.poll() is None:
                return
        else:
            if info is None or info.si_pid == 0:
                return
            # The leader is a zombie, so its group id cannot be reused yet: kill what is left
            # of the group (as the runtime kills a container's cgroup), then reap it.
            _signal_group(pid, signal.SIGKILL)
        code = container.process.wait()
        container.exit_code = code if code >= 0 else 128 - code
        container.finished_at = timestamp()

    # -- status writes --------------------------------------------------------------------

    def _container_status(self, pod: Json, container: Container, state: Json) -> Json:
        spec = pod["spec"]["containers"][0]
        reference = _images.normalize(spec.get("image", ""))
        running = "running" in state
        out: Json = {
            "name": spec["name"],
            "state": state,
            "lastState": {},
            "ready": running,
            "restartCount": 0,
            "image": reference,
            "imageID": "",
            "started": running,
        }
        if container.container_id:
            digest = hashlib.sha256(reference.encode()).hexdigest()
            out["imageID"] = f"{reference.rsplit(':', 1)[0]}@sha256:{digest}"
            out["containerID"] = f"containerd://{container.container_id}"
        return out

    def _accept(self, pod: Json, node: Json) -> Json:
        container = self._container(pod)
        host_ip = node["status"]["addresses"][0]["address"]
        name = pod["spec"]["containers"][0]["name"]
        waiting = self._container_status(
            pod, container, {"waiting": {"reason": "ContainerCreating"}}
        )
        not_ready = f"containers with unready status: [{name}]"

        def change(obj: Json) -> None:
            status = obj.setdefault("status", {})
            status["startTime"] = timestamp(container.accepted)
            status["hostIP"], status["hostIPs"] = host_ip, [{"ip": host_ip}]
            status["podIP"], status["podIPs"] = POD_IP, [{"ip": POD_IP}]
            set_condition(status, "PodReadyToStartContainers", True, probe=False)
            set_condition(status, "Initialized", True, probe=False)
            set_condition(status, "Ready", False, "ContainersNotReady", not_ready, probe=False)
            set_condition(
                status, "ContainersReady", False, "ContainersNotReady", not_ready, probe=False
            )
            status["containerStatuses"] = [waiting]

        return self._update(pod, change)

    def _wait(self, pod: Json, container: Container, reason: str, message: str) -> None:
        state = {"waiting": {"reason": reason, "message": message}}
        waiting = self._container_status(pod, container, state)

        def change(obj: Json) -> None:
            obj["status"]["containerStatuses"] = [waiting]

        self._update(pod, change)

    def _secrets(self, namespace: str) -> Callable[[str], Json | None]:
        return lambda name: self._store.peek(SECRETS.plural, namespace, name)

    def _start(self, pod: Json, node: Json, container: Container, now: float) -> None:
        if now < container.next_pull:
            if (
                container.pull_failed_at is not None
                and now - container.pull_failed_at >= _BACKOFF_S
            ):
                self._back_off(pod, container)
            return
        spec = pod["spec"]["containers"][0]
        namespace = pod["metadata"]["namespace"]
        pulled = _images.pull(
            pod, spec.get("image", ""), self.images, self.private_images, self._secrets(namespace)
        )
        if not pulled.ok:
            if container.pull_failed_at is None:
                container.pull_failed_at = now
                self._wait(pod, container, pulled.reason, pulled.message)
                self._events.record(
                    pod,
                    "Failed",
                    f'Failed to pull image "{spec.get("image", "")}": {pulled.message}',
                    warning=True,
                    component="kubelet",
                    host=node["metadata"]["name"],
                )
            container.next_pull = now + _PULL_RETRY_S
            container.start_error = pulled.message
            return
        allocatable = {
            name: parse_quantity(text).value for name, text in node["status"]["allocatable"].items()
        }
        base = {
            "PATH": self._path,
            "HOME": str(container.folder),
            "HOSTNAME": pod["metadata"]["name"],
        }
        try:
            env = _env.resolve(pod, spec, base, self._secrets(namespace), allocatable)
        except _env.ConfigError as error:
            self._wait(pod, container, "CreateContainerConfigError", str(error))
            return
        self._launch(pod, container, spec, env)

    def _back_off(self, pod: Json, container: Container) -> None:
        image = pod["spec"]["containers"][0].get("image", "")
        message = f'Back-off pulling image "{image}": ErrImagePull: {container.start_error}'
        self._wait(pod, container, "ImagePullBackOff", message)

    def _launch(self, pod: Json, container: Container, spec: Json, env: dict[str, str]) -> None:
        argv = [
            _env.expand(part, env)
            for part in (spec.get("command") or []) + (spec.get("args") or [])
        ]
        container.folder.mkdir(parents=True, exist_ok=True)
        container.log.parent.mkdir(parents=True, exist_ok=True)
        working_dir = spec.get("workingDir") or str(container.folder)
        container.container_id = random_hex(64)
        container.started_at = timestamp()
        error = ""
        if not argv:
            error = "no command specified"
        elif not Path(working_dir).is_dir():
            error = (
                f'error during container init: chdir to cwd ("{working_dir}") set in config.json '
                "failed: no such file or directory"
            )
        if not error:
            try:
                with container.log.open("ab") as log_file:
                    container.process = subprocess.Popen(
                        argv,
                        cwd=working_dir,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        close_fds=True,
                    )
            except OSError as failure:
                missing = isinstance(failure, FileNotFoundError)
                why = "executable file not found in $PATH" if missing else failure.strerror
                error = f'error during container init: exec: "{argv[0]}": {why}'
        if error:
            container.exit_code, container.finished_at = 128, timestamp()
            container.start_error = (
                "failed to create containerd task: failed to create shim task: OCI runtime "
                f"create failed: runc create failed: unable to start container process: {error}: "
                "unknown"
            )
            self._finish(pod, container)
            return
        running = self._container_status(
            pod, container, {"running": {"startedAt": container.started_at}}
        )

        def change(obj: Json) -> None:
            status = obj["status"]
            status["phase"] = "Running"
            set_condition(status, "Ready", True, probe=False)
            set_condition(status, "ContainersReady", True, probe=False)
            status["containerStatuses"] = [running]

        self._update(pod, change)

    def _finish(self, pod: Json, container: Container) -> None:
        """Writes the terminal status once nothing runs any more."""
        if container.exit_code is None:
            state = {
                "terminated": {
                    "exitCode": 137,
                    "reason": "ContainerStatusUnknown",
                    "message": "The container could not be located when the pod was terminated",
                    "startedAt": None,
                    "finishedAt": None,
                }
            }
            exit_code = 137
        else:
            exit_code = container.exit_code
            reason = "Completed" if exit_code == 0 else "Error"
            terminated: Json = {
                "exitCode": exit_code,
                "reason": "StartError" if container.start_error and exit_code == 128 else reason,
                "startedAt": container.started_at,
                "finishedAt": container.finished_at,
                "containerID": f"containerd://{container.container_id}",
            }
            if terminated["reason"] == "StartError":
                terminated["message"] = container.start_error
                terminated["startedAt"] = "1970-01-01T00:00:00Z"
            state = {"terminated": terminated}
        final = self._container_status(pod, container, state)
        stop_reason, stop_message = container.stop_reason, container.stop_message
        phase = "Succeeded" if exit_code == 0 and not stop_reason else "Failed"

        def change(obj: Json) -> None:
            status = obj["status"]
            status["phase"] = phase
            if stop_reason:
                status["reason"], status["message"] = stop_reason, stop_message
            if stop_reason == "Evicted":
                set_condition(
                    status,
                    "DisruptionTarget",
                    True,
                    "TerminationByKubelet",
                    stop_message,
                    probe=False,
                )
            set_condition(status, "PodReadyToStartContainers", False, probe=False)
            set_condition(status, "Ready", False, "PodCompleted", probe=False)
            set_condition(status, "ContainersReady", False, "PodCompleted", probe=False)
            status["containerStatuses"] = [final]

        self._update(pod, change)
