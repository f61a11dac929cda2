"""The ``kubernetes`` executor: cobalt agents in pods, through the official client.

In ``config.toml``::

    [executors.cluster]
    type = "kubernetes"
    namespace = "ml"
    image = "registry.example/cobalt-worker:0.1.0"   # docker/worker.Dockerfile
    gpu_types = { h100 = "NVIDIA-H100-80GB-HBM3" }     # nvidia.com/gpu.product

**Pilot mode (the default).** A task that finds no agent with room makes the
executor create a *pilot pod* sized for it (see :mod:`cobalt_executors.remote`'s
pilots): the pod runs an agent, which dials the controller and keeps warm
workers, so the tasks after the first start in milliseconds. Pilots end after
``idle_timeout_s`` without work.

**Job-per-task mode** (``mode = "job_per_task"``). Each task gets a Job of one pod
sized exactly for it (``backoffLimit: 0``, ``ttlSecondsAfterFinished``), deleted
with ``propagationPolicy=Background`` when its task ends.

Each pilot's credential is a Secret of the same name, read into the agent's
environment; it is deleted with the pilot. One watch on the executor's pods
(label ``cobalt.dev/executor``) follows them, and says what happens to users:

- a pod **Pending** while no node has room (``Unschedulable``, an autoscaler
  adding a node) is waiting, not a failure: the task waits, and ``cobalt
  controller status`` shows the scheduler's message;
- a pod the API **refuses** (a quota, an admission webhook, an invalid spec) or a
  Job whose pod is never created (``FailedCreate``) fails the waiting tasks at
  once with the API's reason;
- an **image that cannot be pulled** (``ErrImagePull``, ``ImagePullBackOff``) or a
  container that cannot start fails them with the kubelet's message;
- an **evicted** pod, or one past its ``activeDeadlineSeconds``, has its tasks
  reported ``agent_lost`` at once, and they are retried;
- a pod that ends before its agent attached fails the waiting tasks with its
  exit code and reason, instead of leaving them waiting for one that never comes.

Such a failure is remembered for :data:`REFUSAL_HOLD_S`: tasks that come
meanwhile fail at once with it; the next one after tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, ClassVar

from cobalt_common.errors import Error, SpecError
from cobalt_common.executor_types import KUBERNETES
from cobalt_common.hardware import HardwareGiven, HardwareSpec, parse_duration_s
from cobalt_executors.base import ExecutorContext, TaskSubmission
from cobalt_executors.kubernetes._api import Gone, KubeApi
from cobalt_executors.kubernetes._manifests import (
    PILOT_LABEL,
    LargestNode,
    Manifest,
    PodOptions,
    job_manifest,
    pod_manifest,
    pod_spec,
    secret_manifest,
)
from cobalt_executors.remote import AgentInfo, Pilot, PilotExecutor

log = logging.getLogger("cobalt.executors")

POD_FAILED = "pod_failed"
"""The reason of a task failed because its executor's pods cannot run."""
REFUSAL_HOLD_S = 10.0
"""How long a refused or failed pilot fails the tasks that come after it at once."""
EVENTS_EVERY_S = 2.0
"""How often a Job whose pod has not appeared is asked why (its events)."""
IMAGE_FAILURES = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
START_FAILURES = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)


def _waiting(pod: Manifest) -> tuple[str, str]:
    """The first waiting container's reason and message; ("", "") when none waits."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = ((status or {}).get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return str(waiting["reason"]), str(waiting.get("message", ""))
    return "", ""


def _terminated(pod: Manifest) -> str:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        ended = ((status or {}).get("state") or {}).get("terminated") or {}
        if ended:
            return f"exit code {ended.get('exitCode')} ({ended.get('reason', '')})"
    return ""


def _unschedulable(pod: Manifest) -> str:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if (
            (condition or {}).get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return str(condition.get("message", "no node has room"))
    return ""


class KubernetesExecutor(PilotExecutor):
    """Runs tasks in pods of a Kubernetes cluster, through agents that dial back.

    Options (``config.toml`` only): ``kubeconfig`` and ``context`` (default: the
    client's own lookup, or the pod's service account inside a cluster),
    ``namespace`` ("default"), ``image`` (required), ``image_pull_policy``,
    ``image_pull_secrets``, ``service_account``, ``labels``, ``annotations``,
    ``node_selector``, ``gpu_types`` (cobalt GPU name to the value of the
    ``gpu_label`` node label, default ``nvidia.com/gpu.product``), ``gpu_resource``
    (``nvidia.com/gpu``), ``largest_node`` (``{cpus, memory, gpus}``: the biggest pod
    the cluster can ever hold; a task beyond it is refused at dispatch),
    ``time_margin`` (seconds added to a pilot's walltime for
    ``activeDeadlineSeconds``; default 300), ``ttl_after_finished_s`` (600), the
    pilot options (``mode``, ``python``, ``max_pilots``, ``pilot_cpus``,
    ``pilot_memory``, ``pilot_time``, ``replica_time``, ``idle_timeout_s``,
    ``emulate_gpus``) and the remote executors' ``reconnect_grace_s``,
    ``blob_dir`` and ``prefetch``.
    """

    type_name = KUBERNETES.name
    accepted_options = KUBERNETES.options | KUBERNETES.config_only
    unavailable_reason: ClassVar[str] = POD_FAILED
    words = "pod"

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        opts = self.options
        self.pods = PodOptions.from_options(name, opts)
        self.largest = LargestNode.from_option(name, opts.get("largest_node"))
        self._margin_s = parse_duration_s(
            opts.get("time_margin", 300), option=f"executor {name!r} time_margin"
        )
        for key in ("kubeconfig", "context"):
            value = opts.get(key, "")
            if not isinstance(value, str) or "\n" in value:
                raise SpecError(f"executor {name!r}: {key} must be a string, not {value!r}.")
        self._kubeconfig = str(opts.get("kubeconfig", ""))
        self._kube_context = str(opts.get("context", ""))
        self.api: KubeApi | None = None
        self._refusal: tuple[str, float] | None = None
        self._pending: dict[str, str] = {}
        """Pilots whose pod waits for a node, with the scheduler's message."""
        self._seen: set[str] = set()
        """Pilots whose pod the watch has seen."""
        self._asked_events = 0.0
        self._watch_thread: threading.Thread | None = None

    # -- life ------------------------------------------------------------------------

    def setup(self, context: ExecutorContext) -> None:
        self.api = KubeApi(self.name, self.pods.namespace, self._kubeconfig, self._kube_context)
        super().setup(context)
        self._watch_thread = threading.Thread(
            target=self._follow_pods, name=f"cobalt-kubernetes-watch-{self.name}", daemon=True
        )
        self._watch_thread.start()

    def teardown(self) -> None:
        super().teardown()
        if self.api is not None:
            self.api.close()

    @property
    def kube(self) -> KubeApi:
        if self.api is None:
            raise RuntimeError(f"executor {self.name!r} used before setup()")
        return self.api

    # -- the executor interface --------------------------------------------------------

    def can_ever_run(self, spec: HardwareSpec) -> bool:
        return self.fits_cluster(spec)

    def capacity_words(self, spec: HardwareSpec) -> str:
        if spec.gpu and self.pods.gpu_value(spec.gpu) is None:
            known = ", ".join(g for g, _ in self.pods.gpu_types) or "none"
            return (
                f"executor {self.name!r} has no gpu_types entry for {spec.gpu!r} (it has: "
                f"{known}); add one that names its nodes' {self.pods.gpu_label} label"
            )
        if self.largest is not None:
            return self.largest.refusal(spec) or "it fits the largest node"
        return "any pod the cluster can schedule"

    def fits_cluster(self, spec: HardwareSpec) -> bool:
        if spec.gpu and self.pods.gpu_value(spec.gpu) is None:
            return False
        return self.largest is None or not self.largest.refusal(spec)

    def unavailable(self) -> str:
        refusal = self._refusal
        if refusal is None or time.monotonic() - refusal[1] > REFUSAL_HOLD_S:
            return ""
        if any(not p.cancelled for p in self.pilots()):
            return ""  # a pilot on its way or running may yet take the task
        return refusal[0]

    def try_submit(self, task: TaskSubmission) -> HardwareGiven | None:
        given = super().try_submit(task)
        if given is None:
            why = self.unavailable()  # the pilot just asked for was refused
            if why:
                return self.fail_now(task, why)
        return given

    def describe(self) -> tuple[str, str]:
        total, free = super().describe()
        running, waiting = self.pilot_counts()
        where = (
            f"Kubernetes (namespace {self.pods.namespace}, {self.mode}; {running} pod(s) "
            f"running, {waiting} starting"
        )
        pending = list(self._pending.values())
        if pending:
            where += f"; waiting for a node: {pending[0]}"
        refusal = self.unavailable()
        if refusal:
            where += f"; failing: {refusal}"
        return f"{where}): {total}", free

    # -- pilots as pods or Jobs --------------------------------------------------------

    @property
    def time_margin_s(self) -> float:
        return self._margin_s

    def launch(self, pilot: Pilot) -> str:
        name = self.pods.name_of(pilot.pilot_id)
        argv = [
            *self.agent_argv(pilot),
            "--agent-id",
            name,
            "--walltime",
            str(self.walltime_s(pilot)),
        ]
        deadline = self.walltime_s(pilot) + round(self.time_margin_s)
        spec = pod_spec(self.pods, pilot.shape, argv, name, deadline)
        self.kube.create_secret(secret_manifest(self.pods, pilot.pilot_id, self.credential(pilot)))
        try:
            if pilot.single:
                self.kube.create_job(job_manifest(self.pods, pilot.pilot_id, spec))
            else:
                self.kube.create_pod(pod_manifest(self.pods, pilot.pilot_id, spec))
        except Error:
            self._delete_quietly("secret", name)
            raise
        return name

    def pilot_failed(self, pilot: Pilot, why: str) -> None:
        self._refuse(why)

    def end(self, pilot: Pilot) -> None:
        self.kube.delete("job" if pilot.single else "pod", pilot.handle)
        self._delete_quietly("secret", pilot.handle)

    def adopted_handle(self, info: AgentInfo) -> str | None:
        name = self.pods.name_of(info.allocation)
        return name if info.agent_id == name else None

    def _delete_quietly(self, kind: str, name: str) -> None:
        try:
            self.kube.delete(kind, name)
        except Error as exc:
            log.warning("executor %s: could not delete %s %s: %s", self.name, kind, name, exc)

    def _refuse(self, why: str) -> None:
        """Remembers why pilots cannot run, and has the scheduler offer the waiting
        tasks again, so that they fail with it now."""
        self._refusal = (why, time.monotonic())
        log.error("executor %s: %s", self.name, why)
        room = self.context.room
        if room is not None:
            room()

    # -- following the pods --------------------------------------------------------------

    def _follow_pods(self) -> None:
        """Lists the executor's pods, then watches them from that list's version;
        lists again when the watch ends, fails or is too old."""
        version = ""
        while not self._stopping.is_set():
            try:
                if not version:
                    pods, version = self.kube.list_pods(self.pods.selector)
                    for pod in pods:
                        self._pod_changed("MODIFIED", pod)
                for kind, pod in self.kube.watch_pods(self.pods.selector, version):
                    if self._stopping.is_set():
                        return
                    version = str((pod.get("metadata") or {}).get("resourceVersion", version))
                    self._pod_changed(kind, pod)
            except Gone:
                version = ""
            except Error as exc:
                if not self._stopping.is_set():
                    log.warning("executor %s: watching pods: %s", self.name, exc)
                version = ""
                self._stopping.wait(1.0)
            except Exception:
                log.exception("executor %s: watching pods failed", self.name)
                version = ""
                self._stopping.wait(1.0)

    def _pod_changed(self, kind: str, pod: Manifest) -> None:
        meta = pod.get("metadata") or {}
        pilot_id = str((meta.get("labels") or {}).get(PILOT_LABEL, ""))
        pilot = self.pilot(pilot_id)
        name = str(meta.get("name", ""))
        if pilot is None:
            return
        self._seen.add(pilot_id)
        status = pod.get("status") or {}
        phase = str(status.get("phase", ""))
        if kind == "DELETED" or phase in ("Succeeded", "Failed"):
            self._pod_ended(pilot, name, kind, pod)
            return
        self._pending.pop(pilot_id, None)
        reason, message = _waiting(pod)
        if reason in IMAGE_FAILURES or reason in START_FAILURES:
            what = (
                "its image could not be pulled" if reason in IMAGE_FAILURES else "it cannot start"
            )
            self.forget(pilot)
            self.cancel_pilot(pilot, reason)
            self._refuse(f"pod {name} of executor {self.name!r}: {what}: {reason}: {message}")
            return
        waiting_for_node = _unschedulable(pod)
        if waiting_for_node and phase == "Pending":
            if pilot_id not in self._pending:
                log.info(
                    "executor %s: pod %s waits for a node: %s", self.name, name, waiting_for_node
                )
            self._pending[pilot_id] = f"pod {name}: {waiting_for_node}"

    def _pod_ended(self, pilot: Pilot, name: str, kind: str, pod: Manifest) -> None:
        status = pod.get("status") or {}
        reason = str(status.get("reason", ""))
        message = str(status.get("message", ""))
        how = (
            f"{reason}: {message}"
            if reason
            else (_terminated(pod) or ("deleted" if kind == "DELETED" else "ended"))
        )
        self._pending.pop(pilot.pilot_id, None)
        self._seen.discard(pilot.pilot_id)
        self.forget(pilot)
        if pilot.attached and not pilot.cancelled:
            # Evicted, past its deadline, or deleted from outside: its tasks are lost
            # now, not when the stream's pings go unanswered.
            self.pool.drop(pilot.pilot_id, f"pod {name} ended: {how}")
        elif not pilot.attached and not pilot.cancelled:
            self._refuse(
                f"pod {name} of executor {self.name!r} ended before its agent attached: {how}"
            )
        if not pilot.cancelled:
            self.cancel_pilot(pilot, f"its pod ended ({how})")

    def look_after(self) -> None:
        super().look_after()
        now = time.monotonic()
        if now - self._asked_events >= EVENTS_EVERY_S:
            self._asked_events = now
            self._ask_why_no_pod()

    def _ask_why_no_pod(self) -> None:
        """A Job whose pod was never created (a quota, an admission webhook) says why
        only in its events; the waiting tasks fail with that reason."""
        for pilot in self.pilots():
            if not pilot.single or pilot.attached or pilot.cancelled or not pilot.handle:
                continue
            if pilot.pilot_id in self._seen or time.time() - pilot.submitted_at < EVENTS_EVERY_S:
                continue
            try:
                events = self.kube.events_of(pilot.handle)
            except Error as exc:
                log.warning("executor %s: reading events: %s", self.name, exc)
                return
            failed = [e for e in events if e.get("reason") == "FailedCreate"]
            if failed:
                self.forget(pilot)
                self.cancel_pilot(pilot, "its pod could not be created")
                self._refuse(
                    f"Job {pilot.handle} of executor {self.name!r} could not create its pod: "
                    f"{failed[-1].get('message', '')}"
                )
