"""The Job controller, as ``pkg/controller/job`` runs a NonIndexed Job, and the
TTL-after-finished controller.

For a Job it creates one pod at a time from the template (``generateName: <job>-``, the
template's labels, an ownerReference with ``controller: true``, the
``batch.kubernetes.io/job-tracking`` finalizer, removed once the pod is counted), through
the same admission as any create: a refusal (quota, webhook) is a Warning Event
``FailedCreate`` (``Error creating: pods "..." is forbidden: ...``) on the Job, retried
every second, and the Job keeps no active pod. A failed pod is replaced until ``failed``
exceeds ``backoffLimit``. The status carries ``active``, ``ready``, ``terminating``,
``succeeded``, ``failed``, ``startTime``, ``completionTime``, ``uncountedTerminatedPods``
and the conditions of a 1.3x controller: ``SuccessCriteriaMet`` then ``Complete``
(``CompletionsReached``), or ``FailureTarget`` then ``Failed`` (``BackoffLimitExceeded``,
``DeadlineExceeded``) once no pod of the Job is left running. ``activeDeadlineSeconds``
counts from ``startTime``; when it passes, the active pods are deleted.
``ttlSecondsAfterFinished`` deletes a finished Job with ``Foreground`` propagation, which
deletes its pods first.

Simplified: ``parallelism`` and ``completions`` above 1, Indexed Jobs, ``podFailurePolicy``,
``successPolicy`` and ``backoffLimitPerIndex`` are stored but run as a single pod; a failed
pod is replaced at once rather than after the exponential back-off (10 s, 20 s, ...).
"""

from __future__ import annotations

import contextlib
import copy

from ._api import Api
from ._conditions import is_true, set_condition
from ._errors import ApiError
from ._events import Recorder
from ._kinds import JOBS, PODS
from ._meta import Json, timestamp
from ._store import Store

TRACKING = "batch.kubernetes.io/job-tracking"
TERMINAL = ("Succeeded", "Failed")
_RETRY_S = 1.0
_REASONS = {
    "BackoffLimitExceeded": "Job has reached the specified backoff limit",
    "DeadlineExceeded": "Job was active longer than specified deadline",
}


def controller_uid(pod: Json) -> str:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Job":
            return str(ref.get("uid", ""))
    return ""


class JobController:
    def __init__(self, store: Store, api: Api, recorder: Recorder) -> None:
        self._store = store
        self._api = api
        self._events = recorder
        self._counted: dict[str, set[str]] = {}
        self._next_create: dict[str, float] = {}
        self._started: dict[str, float] = {}
        self._finished: dict[str, float] = {}

    def sync(self, now: float) -> None:
        """One pass over every Job; called with the store's lock held."""
        pods = self._store.items(PODS.plural)
        owned: dict[str, list[Json]] = {}
        for pod in pods:
            owned.setdefault(controller_uid(pod), []).append(pod)
        jobs = list(self._store.items(JOBS.plural))
        uids = {job["metadata"]["uid"] for job in jobs}
        for job in jobs:
            self._sync_job(job, owned.get(job["metadata"]["uid"], []), now)
        for pod in pods:
            owner = controller_uid(pod)
            if owner and owner not in uids:
                self._release(pod)

    def _release(self, pod: Json) -> None:
        """Removes the tracking finalizer (of a counted pod, or one whose Job is gone)."""
        if TRACKING not in (pod["metadata"].get("finalizers") or []):
            return

        def strip(obj: Json) -> None:
            finalizers = [f for f in obj["metadata"].get("finalizers") or [] if f != TRACKING]
            if finalizers:
                obj["metadata"]["finalizers"] = finalizers
            else:
                obj["metadata"].pop("finalizers", None)

        self._store.update(
            PODS.plural, pod["metadata"]["namespace"], pod["metadata"]["name"], strip
        )

    def _sync_job(self, job: Json, pods: list[Json], now: float) -> None:
        meta, spec = job["metadata"], job["spec"]
        uid = meta["uid"]
        if "deletionTimestamp" in meta:
            for pod in pods:
                self._release(pod)
            return
        status = copy.deepcopy(job.get("status") or {})
        finished = is_true(status, "Complete") or is_true(status, "Failed")
        counted = self._counted.setdefault(uid, set())
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            pod_uid = pod["metadata"]["uid"]
            if phase in TERMINAL and pod_uid not in counted:
                counted.add(pod_uid)
                key = "succeeded" if phase == "Succeeded" else "failed"
                status[key] = status.get(key, 0) + 1
            if phase in TERMINAL or finished:
                self._release(pod)
        if finished:
            self._expire(job, now)
            return
        running = [p for p in pods if (p.get("status") or {}).get("phase") not in TERMINAL]
        active = [p for p in running if "deletionTimestamp" not in p["metadata"]]
        terminating = len(running) - len(active)
        if not spec.get("suspend") and not status.get("startTime"):
            status["startTime"] = timestamp(now)
            self._started[uid] = now
        started = self._started.get(uid, now)
        target = not (is_true(status, "FailureTarget") or is_true(status, "SuccessCriteriaMet"))
        deadline = spec.get("activeDeadlineSeconds")
        if (
            target
            and status.get("startTime")
            and deadline is not None
            and now - started >= deadline
        ):
            self._fail(job, status, "DeadlineExceeded", active)
            active, terminating = [], terminating + len(active)
        elif target and status.get("failed", 0) > spec.get("backoffLimit", 6):
            self._fail(job, status, "BackoffLimitExceeded", active)
            active, terminating = [], terminating + len(active)
        elif target and status.get("succeeded", 0) >= (spec.get("completions") or 1):
            set_condition(
                status,
                "SuccessCriteriaMet",
                True,
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            )
        if not running:
            failure = next(
                (c for c in status.get("conditions") or [] if c["type"] == "FailureTarget"), None
            )
            if failure is not None:
                set_condition(status, "Failed", True, failure["reason"], failure["message"])
                self._events.record(
                    job,
                    failure["reason"],
                    failure["message"],
                    warning=True,
                    component="job-controller",
                )
                self._finished[uid] = now
            elif is_true(status, "SuccessCriteriaMet"):
                set_condition(
                    status,
                    "Complete",
                    True,
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                )
                status["completionTime"] = timestamp(now)
                self._events.record(job, "Completed", "Job completed", component="job-controller")
                self._finished[uid] = now
            elif not spec.get("suspend") and now >= self._next_create.get(uid, 0.0):
                created = self._create_pod(job, now)
                if created is not None:
                    active = [created]
        status["active"] = len(active)
        status["ready"] = sum(is_true(p.get("status") or {}, "Ready") for p in active)
        status["terminating"] = terminating
        status["uncountedTerminatedPods"] = {}
        for key in ("active", "succeeded", "failed"):
            if not status.get(key):
                status.pop(key, None)

        def write(obj: Json) -> None:
            obj["status"] = status

        self._store.update(JOBS.plural, meta["namespace"], meta["name"], write)

    def _fail(self, job: Json, status: Json, reason: str, active: list[Json]) -> None:
        set_condition(status, "FailureTarget", True, reason, _REASONS[reason])
        for pod in active:
            with contextlib.suppress(ApiError):
                self._api.delete_pod(pod["metadata"]["namespace"], pod["metadata"]["name"], None)

    def _create_pod(self, job: Json, now: float) -> Json | None:
        meta = job["metadata"]
        template = copy.deepcopy(job["spec"].get("template") or {})
        template_meta = template.get("metadata") or {}
        pod_meta: Json = {
            "generateName": f"{meta['name']}-",
            "labels": dict(template_meta.get("labels") or {}),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "finalizers": [TRACKING],
        }
        if template_meta.get("annotations"):
            pod_meta["annotations"] = dict(template_meta["annotations"])
        pod = {"metadata": pod_meta, "spec": template.get("spec") or {}}
        try:
            created = self._api.create_object(PODS, meta["namespace"], pod)
        except ApiError as error:
            self._events.record(
                job,
                "FailedCreate",
                f"Error creating: {error.message}",
                warning=True,
                component="job-controller",
            )
            self._next_create[meta["uid"]] = now + _RETRY_S
            return None
        self._events.record(
            job,
            "SuccessfulCreate",
            f"Created pod: {created['metadata']['name']}",
            component="job-controller",
        )
        return created

    def _expire(self, job: Json, now: float) -> None:
        """The TTL-after-finished controller."""
        meta = job["metadata"]
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        finished = self._finished.setdefault(meta["uid"], now)
        if now - finished >= ttl:
            with contextlib.suppress(ApiError):
                self._api.delete(
                    JOBS, meta["namespace"], meta["name"], {"propagationPolicy": "Foreground"}, None
                )
