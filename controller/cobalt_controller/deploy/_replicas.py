"""Replica life cycle: start, place, stop, bill, and start failures.

A mixin of :class:`~cobalt_controller.deploy._manager.DeploymentManager`;
every method runs under the manager's lock.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from cobalt_controller._credentials import Credentials, ReplicaScope
from cobalt_controller._payloads import Payloads
from cobalt_controller.deploy._gateway import Gateway
from cobalt_controller.deploy._live import (
    FAILED,
    STOPPED,
    LiveDeployment,
    LiveReplica,
    replica_http,
)
from cobalt_controller.deploy._model_metrics import DeploymentTotals
from cobalt_controller.state import DeploymentEventRow, StateStore
from cobalt_executors import TaskArg, TaskSubmission

log = logging.getLogger("cobalt.deployments")

BACKOFF_MAX_S = 30.0
"""The longest wait between start attempts after start failures."""


class ReplicaLifecycle:
    """Starts, places, stops and bills replicas; records events."""

    state: StateStore
    payloads: Payloads
    gateway: Gateway | None
    credentials: Credentials | None
    _lock: threading.RLock
    _changed: threading.Condition
    _closing: bool
    _by_key: dict[str, tuple[LiveDeployment, LiveReplica]]
    _totals: dict[str, DeploymentTotals]
    listener: Callable[[str], None] | None

    def reconcile(self, d: LiveDeployment) -> None:
        """Starts or stops replicas toward ``d.desired``; old versions roll over."""
        with self._lock:
            if d.status == STOPPED or self._closing:
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
                    self._start_replica(d)
            elif len(mine) > d.desired:
                extra = sorted(mine, key=lambda r: (r.submitted, r.status == "ready"))
                for r in extra[: len(mine) - d.desired]:
                    self._stop_replica(d, r)
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
                    self._stop_replica(d, r)

    def _start_replica(self, d: LiveDeployment) -> None:
        rid = f"r{d.version}-{secrets.token_hex(3)}"
        r = LiveReplica(rid, d.name, d.version, secrets.token_urlsafe(24))
        r.task_key = f"replica/{d.name}/{rid}"
        d.replicas[rid] = r
        self._by_key[r.task_key] = (d, r)
        self.state.put_replica(r.to_row())
        self._submit(d, r)

    def _submit(self, d: LiveDeployment, r: LiveReplica) -> bool:
        try:
            function = self.payloads.ref(d.service_sha256)
            args = [TaskArg(p, k, self.payloads.ref(sha)) for p, k, sha in d.args]
        except KeyError as exc:
            self._start_failed(d, r, f"payload {exc} of the service is missing from the store.")
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
            )
            try:
                given = ex.try_submit(submission)
            except Exception as exc:
                log.exception("executor %s could not start %s", ex.name, r.task_key)
                self._revoke(r)
                self._start_failed(d, r, f"executor {ex.name!r} could not start it: {exc}")
                return False
            if given is None:
                continue
            r.executor, r.executor_name, r.given = ex, ex.name, given
            r.started_at = time.time()
            r.rate = ex.given_rate_usd_per_hour(given)
            self.state.put_replica(r.to_row())
            self.event(
                d,
                "replica_started",
                f"replica {r.replica_id} (version {r.version}) starting on {ex.name} with "
                f"{given.describe()}.",
                {"executor": ex.name, "rate_usd_per_hour": r.rate},
            )
            return True
        self._revoke(r)
        if not r.waiting_noted:
            r.waiting_noted = True
            names = ", ".join(ex.name for ex in d.candidates)
            self.event(
                d,
                "replica_waiting",
                f"replica {r.replica_id} waits for capacity: no executor ({names}) has "
                f"{d.spec.describe()} free now; it starts as soon as one does.",
            )
        return False

    def _stop_replica(self, d: LiveDeployment, r: LiveReplica, drain: bool | None = None) -> None:
        """Stops a replica: ready ones drain in the gateway first (``drain=None``: when ready)."""
        r.stopping = True
        if (drain is None and r.status == "ready") or drain:
            r.status = "draining"
            self.state.update_replica(r.replica_id, status="draining")
            if self.gateway is not None:
                self.gateway.drain_replica(d.name, r.replica_id)
                return
        self._kill(d, r)

    def _kill(self, d: LiveDeployment, r: LiveReplica) -> None:
        if r.adopted:
            threading.Thread(
                target=replica_http,
                args=(r.url, "/_cobalt/shutdown", r.secret),
                kwargs={"method": "POST", "timeout": 5.0},
                daemon=True,
            ).start()
            self._ended(d, r, "stopped", time.time())
        elif r.executor is not None:
            self._revoke(r)
            r.executor.cancel(r.task_key, "cancelled")
        else:
            self._ended(d, r, "stopped", time.time())

    def _ended(self, d: LiveDeployment, r: LiveReplica, status: str, ended_at: float) -> None:
        """Bills a replica that ended and forgets it."""
        self._revoke(r)
        if not r.live:
            return
        r.status = status
        cost = r.bill(ended_at)
        d.cost_usd += cost
        if r.given is not None and r.given.emulated and cost:
            d.emulated = True
        self._by_key.pop(r.task_key, None)
        d.replicas.pop(r.replica_id, None)
        totals = self._totals.get(d.name)
        if totals is not None:
            totals.ended(r.replica_id)
        self.state.put_replica(r.to_row())
        self.state.update_deployment(d.name, cost_usd=d.cost_usd, emulated=d.emulated)
        if self.gateway is not None:
            self.gateway.remove_replica(d.name, r.replica_id)
        self._changed.notify_all()

    def _revoke(self, r: LiveReplica) -> None:
        if self.credentials is not None:
            self.credentials.revoke(r.task_key)

    def _start_failed(self, d: LiveDeployment, r: LiveReplica, error: str) -> None:
        r.error = error
        self._ended(d, r, "failed", time.time())
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
                self.event(
                    d,
                    "deployment_failed",
                    f"replica {r.replica_id} failed to start, and no replica of version "
                    f"{d.version} was ever ready: the deployment failed.\n{error}",
                )
                for other in list(d.replicas.values()):
                    if other.version == d.version and other.live and not other.stopping:
                        self._stop_replica(d, other)
                if self.gateway is not None:
                    self.gateway.configure(d.target())
            return
        d.failures += 1
        delay = min(2.0 ** (d.failures - 1), BACKOFF_MAX_S)
        d.retry_at = time.time() + delay
        self.event(
            d,
            "replica_failed",
            f"replica {r.replica_id} failed to start; another starts in {delay:g} s "
            f"(start failure {d.failures} in a row).\n{error}",
            {"backoff_s": delay, "failures": d.failures},
        )

    def event(
        self, d: LiveDeployment, kind: str, message: str, inputs: dict[str, Any] | None = None
    ) -> None:
        log.info("deployment %s: %s", d.name, message.splitlines()[0] if message else kind)
        self.state.add_deployment_events(
            [
                DeploymentEventRow(
                    d.name,
                    time.time(),
                    kind,
                    message,
                    json.dumps(inputs, default=str, sort_keys=True) if inputs else "",
                )
            ]
        )
        if self.listener is not None:
            self.listener(d.name)
