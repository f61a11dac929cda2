"""The garbage collector, the pod garbage collector and the end of deletions.

* A Job being deleted with finalizer ``orphan`` has its pods' ownerReferences to it
  removed; with ``foregroundDeletion`` its pods are deleted and it goes once they are gone.
* A pod whose owner (by uid) no longer exists is deleted, as the garbage collector does
  after a ``Background`` deletion.
* An unbound pod being deleted is marked ``Failed`` (``DisruptionTarget``,
  ``DeletionByPodGC``) as the pod GC does, so that its Job can count it.
* An object being deleted is removed once its finalizers are empty (and, for a pod, once
  nothing of it runs).
"""

from __future__ import annotations

import contextlib

from ._api import Api
from ._conditions import set_condition
from ._errors import ApiError
from ._kinds import JOBS, PODS
from ._kubelet import Kubelet
from ._meta import Json
from ._store import Store


class GarbageCollector:
    def __init__(self, store: Store, api: Api, kubelet: Kubelet) -> None:
        self._store = store
        self._api = api
        self._kubelet = kubelet

    def sync(self) -> None:
        """One pass; called with the store's lock held."""
        pods = list(self._store.items(PODS.plural))
        jobs = list(self._store.items(JOBS.plural))
        owners = {job["metadata"]["uid"] for job in jobs}
        for job in jobs:
            if "deletionTimestamp" in job["metadata"]:
                self._finalize_job(job, pods)
        for pod in pods:
            refs = pod["metadata"].get("ownerReferences") or []
            job_refs = [ref for ref in refs if ref.get("kind") == "Job"]
            orphaned = job_refs and not any(ref.get("uid") in owners for ref in job_refs)
            if orphaned and "deletionTimestamp" not in pod["metadata"]:
                self._delete(pod)
        for pod in list(self._store.items(PODS.plural)):
            self._finish_pod(pod)
        for job in list(self._store.items(JOBS.plural)):
            meta = job["metadata"]
            if "deletionTimestamp" in meta and not meta.get("finalizers"):
                self._store.remove(JOBS.plural, meta["namespace"], meta["name"])

    def _delete(self, pod: Json) -> None:
        with contextlib.suppress(ApiError):
            self._api.delete_pod(pod["metadata"]["namespace"], pod["metadata"]["name"], None)

    def _finalize_job(self, job: Json, pods: list[Json]) -> None:
        meta = job["metadata"]
        uid = meta["uid"]
        finalizers = meta.get("finalizers") or []
        dependents = [
            pod
            for pod in pods
            if any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences") or [])
        ]
        if "orphan" in finalizers:
            for pod in dependents:

                def orphan(obj: Json) -> None:
                    refs = [
                        r
                        for r in obj["metadata"].get("ownerReferences") or []
                        if r.get("uid") != uid
                    ]
                    if refs:
                        obj["metadata"]["ownerReferences"] = refs
                    else:
                        obj["metadata"].pop("ownerReferences", None)

                self._store.update(
                    PODS.plural, pod["metadata"]["namespace"], pod["metadata"]["name"], orphan
                )
            self._drop_finalizer(job, "orphan")
        elif "foregroundDeletion" in finalizers:
            for pod in dependents:
                if "deletionTimestamp" not in pod["metadata"]:
                    self._delete(pod)
            if not dependents:
                self._drop_finalizer(job, "foregroundDeletion")

    def _drop_finalizer(self, job: Json, finalizer: str) -> None:
        def drop(obj: Json) -> None:
            rest = [f for f in obj["metadata"].get("finalizers") or [] if f != finalizer]
            if rest:
                obj["metadata"]["finalizers"] = rest
            else:
                obj["metadata"].pop("finalizers", None)

        self._store.update(JOBS.plural, job["metadata"]["namespace"], job["metadata"]["name"], drop)

    def _finish_pod(self, pod: Json) -> None:
        meta = pod["metadata"]
        if "deletionTimestamp" not in meta:
            return
        phase = (pod.get("status") or {}).get("phase")
        if not pod["spec"].get("nodeName") and phase not in ("Succeeded", "Failed"):

            def fail(obj: Json) -> None:
                status = obj.setdefault("status", {})
                status["phase"] = "Failed"
                set_condition(
                    status,
                    "DisruptionTarget",
                    True,
                    "DeletionByPodGC",
                    "PodGC: node no longer exists",
                    probe=False,
                )

            self._store.update(PODS.plural, meta["namespace"], meta["name"], fail)
        if not meta.get("finalizers") and self._kubelet.has_stopped(meta["uid"]):
            if pod["spec"].get("nodeName") and phase not in ("Succeeded", "Failed"):
                return
            self._kubelet.kill_now(meta["uid"])
            self._store.remove(PODS.plural, meta["namespace"], meta["name"])
