"""Replica life cycle: start, place, stop, bill, and start failures.

A part of :class:`~cobalt_controller.deploy._manager.DeploymentManager`,
which calls it with its book's lock held. Replicas start and stop through
the controller's :class:`~cobalt_controller.placement.Placement`, which owns
executor capacity for tasks and replicas alike, and are billed by its
:func:`~cobalt_controller.placement.charge` (:meth:`LiveReplica.bill`).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time

from cobalt_controller._credentials import Credentials, ReplicaScope
from cobalt_controller._payloads import Payloads
from cobalt_controller.deploy._book import DeploymentBook
from cobalt_controller.deploy._live import (
    FAILED,
    STOPPED,
    LiveDeployment,
    LiveReplica,
    replica_http,
)
from cobalt_controller.placement import Placement, rate_usd_per_hour
from cobalt_executors import Executor, TaskArg, TaskSubmission

log = logging.getLogger("cobalt.deployments")

BACKOFF_MAX_S = 30.0
"""The longest wait between start attempts after start failures."""


class ReplicaLifecycle:
    """Starts, places, stops and bills replicas, and records what happens to them.

    Args:
        book: the manager's live deployments, lock and event log.
        payloads: the pickled service and its initializer's arguments.
        placement: the owner of executor capacity.
        credentials: mints each replica's own credential; None: replicas get none.
    """

    def __init__(
        self,
        book: DeploymentBook,
        payloads: Payloads,
        placement: Placement,
        credentials: Credentials | None,
    ) -> None:
        self.book = book
        self.state = book.state
        self.payloads = payloads
        self.placement = placement
        self.credentials = credentials

    def reconcile(self, d: LiveDeployment) -> None:
        """Starts or stops replicas toward ``d.desired``; old versions roll over."""
        with self.book.lock:
            if d.status == STOPPED or self.book.closing:
                return
            now = time.time()
            mine = [
                r
                for r in d.replicas.values()
                if r.version == d.version and r.live and not r.stopping
            ]
            failed_version = d.status == FAILED and not d.ready_this_version
            if not failed_version and len(mine) < d.desired and now >= d.retry_at:
                for _ in range(d.desired - len(mine)):
                    self.start_replica(d)
            elif len(mine) > d.desired:
                extra = sorted(mine, key=lambda r: (r.submitted, r.status == "ready"))
                for r in extra[: len(mine) - d.desired]:
                    self.stop_replica(d, r)
            if d.ready_this_version:
                ready = sum(1 for r in mine if r.status == "ready")
                old = [
                    r
                    for r in d.replicas.values()
                    if r.version != d.version and r.live and not r.stopping
                ]
                old.sort(key=lambda r: r.status == "ready")
                keep = max(0, d.desired - ready)
                for r in old[: max(0, len(old) - keep)]:
                    self.stop_replica(d, r)

    def start_replica(self, d: LiveDeployment) -> None:
        rid = f"r{d.version}-{secrets.token_hex(3)}"
        r = LiveReplica(rid, d.name, d.version, secrets.token_urlsafe(24))
        r.task_key = f"replica/{d.name}/{rid}"
        d.replicas[rid] = r
        self.book.by_key[r.task_key] = (d, r)
        self.state.put_replica(r.to_row())
        self.submit(d, r)

    def submit(self, d: LiveDeployment, r: LiveReplica) -> bool:
        """Places ``r`` on the cheapest candidate with room. False: it failed to start,
        or it waits, and room is held for it (:mod:`cobalt_controller.placement`)."""
        try:
            function = self.payloads.ref(d.service_sha256)
            args = [TaskArg(p, k, self.payloads.ref(sha)) for p, k, sha in d.args]
        except KeyError as exc:
            self.start_failed(d, r, f"payload {exc} of the service is missing from the store.")
            return False
        credential: dict[str, str] = {}
        if self.credentials is not None:
            # The replica's own credential: ReplicaReady for itself, and the
            # payloads it starts from; it ends when the replica does.
            scope = ReplicaScope(
                d.name,
                r.replica_id,
                frozenset([function.sha256, *(a.payload.sha256 for a in args)]),
            )
            credential["COBALT_CONTROLLER_TOKEN"] = self.credentials.mint(r.task_key, scope)
        for ex in d.candidates:
            submission = TaskSubmission(
                task_key=r.task_key,
                dispatch_id="",
                node_id=0,
                name=f"{d.name} replica {r.replica_id}",
                hardware=d.spec,
                function=function,
                args=args,
                env={
                    "COBALT_DEPLOYMENT": d.name,
                    "COBALT_REPLICA_ID": r.replica_id,
                    "COBALT_DEPLOYMENT_VERSION": str(r.version),
                    "COBALT_REPLICA_HOST": "127.0.0.1" if ex.type_name == "local" else "0.0.0.0",
                    "COBALT_REPLICA_SECRET": r.secret,
                    "COBALT_WORKING_DIR": d.working_dir,
                    **credential,
                },
                long_running=True,
                replica=True,
            )
            try:
                given = self.placement.submit_replica(ex, submission)
            except Exception as exc:
                log.exception("executor %s could not start %s", ex.name, r.task_key)
                self._revoke(r)
                self.start_failed(d, r, f"executor {ex.name!r} could not start it: {exc}")
                return False
            if given is None:
                continue
            r.executor, r.executor_name, r.given = ex, ex.name, given
            r.started_at = time.time()
            r.rate = rate_usd_per_hour(ex, given)
            self.state.put_replica(r.to_row())
            self.book.event(
                d,
                "replica_started",
                f"replica {r.replica_id} (version {r.version}) starting on {ex.name} with "
                f"{given.describe()}.",
                {"executor": ex.name, "rate_usd_per_hour": r.rate},
            )
            return True
        self._revoke(r)
        self.placement.replica_waits(r.task_key, d.spec, d.candidates)
        if not r.waiting_noted:
            r.waiting_noted = True
            names = ", ".join(ex.name for ex in d.candidates)
            self.book.event(
                d,
                "replica_waiting",
                f"replica {r.replica_id} waits for capacity: no executor ({names}) has "
                f"{d.spec.describe()} free now; it starts as soon as one does.",
            )
        return False

    def stop_replica(self, d: LiveDeployment, r: LiveReplica, drain: bool | None = None) -> None:
        """Stops a replica: ready ones drain in the gateway first (``drain=None``: when ready)."""
        r.stopping = True
        if (drain is None and r.status == "ready") or drain:
            r.status = "draining"
            self.state.update_replica(r.replica_id, status="draining")
            if self.book.gateway is not None:
                self.book.gateway.drain_replica(d.name, r.replica_id)
                return
        self.kill(d, r)

    def kill(self, d: LiveDeployment, r: LiveReplica) -> None:
        """Stops ``r`` now: its executor stops it (its outcome follows), an adopted one
        is asked to shut down, and one that never started just ends."""
        if r.adopted:
            threading.Thread(
                target=replica_http,
                args=(r.url, "/_cobalt/shutdown", r.secret),
                kwargs={"method": "POST", "timeout": 5.0},
                daemon=True,
            ).start()
            self.ended(d, r, "stopped", time.time())
        elif r.executor is not None:
            self._revoke(r)
            self.placement.cancel(r.task_key, "cancelled")
        else:
            self.ended(d, r, "stopped", time.time())

    def ended(self, d: LiveDeployment, r: LiveReplica, status: str, ended_at: float) -> None:
        """Bills a replica that ended and forgets it, with the room it held or waited for."""
        self._revoke(r)
        self.placement.forget(r.task_key)
        if not r.live:
            return
        r.status = status
        cost = r.bill(ended_at)
        d.cost_usd += cost
        if r.given is not None and r.given.emulated and cost:
            d.emulated = True
        self.book.by_key.pop(r.task_key, None)
        d.replicas.pop(r.replica_id, None)
        totals = self.book.totals.get(d.name)
        if totals is not None:
            totals.ended(r.replica_id)
        self.state.put_replica(r.to_row())
        self.state.update_deployment(d.name, cost_usd=d.cost_usd, emulated=d.emulated)
        if self.book.gateway is not None:
            self.book.gateway.remove_replica(d.name, r.replica_id)
        self.book.changed.notify_all()

    def _revoke(self, r: LiveReplica) -> None:
        if self.credentials is not None:
            self.credentials.revoke(r.task_key)

    def start_failed(self, d: LiveDeployment, r: LiveReplica, error: str) -> None:
        """``r`` failed before it was ever ready: the deployment fails, or backs off."""
        r.error = error
        self.ended(d, r, "failed", time.time())
        if r.version != d.version or d.status == STOPPED:
            return
        if not d.ready_this_version:
            if d.status != FAILED:
                d.status = FAILED
                d.error = error
                d.updated_at = time.time()
                self.state.update_deployment(
                    d.name, status=FAILED, error=error, updated_at=d.updated_at
                )
                self.book.event(
                    d,
                    "deployment_failed",
                    f"replica {r.replica_id} failed to start, and no replica of version "
                    f"{d.version} was ever ready: the deployment failed.\n{error}",
                )
                for other in list(d.replicas.values()):
                    if other.version == d.version and other.live and not other.stopping:
                        self.stop_replica(d, other)
                if self.book.gateway is not None:
                    self.book.gateway.configure(d.target())
            return
        d.failures += 1
        delay = min(2.0 ** (d.failures - 1), BACKOFF_MAX_S)
        d.retry_at = time.time() + delay
        self.book.event(
            d,
            "replica_failed",
            f"replica {r.replica_id} failed to start; another starts in {delay:g} s "
            f"(start failure {d.failures} in a row).\n{error}",
            {"backoff_s": delay, "failures": d.failures},
        )

    def adopt(self, d: LiveDeployment, r: LiveReplica, executors: list[Executor]) -> str:
        """Tracks ``r``, found serving after a controller restart, and counts the hardware
        it holds on the executor that started it. Returns "" or why it is not counted."""
        r.adopted = True
        d.replicas[r.replica_id] = r
        self.book.by_key[r.task_key] = (d, r)
        ex = next((e for e in executors if e.name == r.executor_name), None)
        if r.given is None or not (r.given.cpus or r.given.memory_mb or r.given.gpu_indices):
            return ""
        if ex is None:
            return f"its executor {r.executor_name!r} is not known to this controller"
        if not self.placement.adopt(r.task_key, ex, r.given):
            return f"{r.given.describe()} is not free on executor {ex.name!r}"
        return ""
