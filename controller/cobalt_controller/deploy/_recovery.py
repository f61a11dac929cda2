"""Deployments after a controller restart: adopt live replicas, restart the rest.

For each deployment that is not STOPPED, every replica stored as ready is
asked ``GET <url>/_cobalt/health`` with its secret (1 s timeout). One that
answers with its own replica id is adopted: routed to again, stopped later
with ``POST <url>/_cobalt/shutdown`` since no executor tracks it. Any other
stored replica is marked gone. An adopted replica's hardware (its recorded
``hardware_given``) is counted on the executor that started it, so that no
task is given it while it serves. Only once every deployment has adopted its
replicas do new ones start, up to each desired count. Each step is recorded
as an event.
"""

from __future__ import annotations

import json
import logging
import time

from cobalt_common.deploy import Manifest
from cobalt_common.errors import Error
from cobalt_common.hardware import HardwareSpec
from cobalt_controller._executors import ExecutorPool
from cobalt_controller.deploy._live import (
    ACTIVE,
    FAILED,
    LiveDeployment,
    LiveReplica,
    replica_http,
)
from cobalt_controller.deploy._manager import DeploymentManager
from cobalt_controller.state import DeploymentRow
from cobalt_executors import Executor

log = logging.getLogger("cobalt.deployments")


def candidates_for(
    executors: ExecutorPool, spec: HardwareSpec, executor_ref: str, name: str
) -> tuple[Executor, ...]:
    """Executors able to run a replica of ``spec``, cheapest first (raises when none)."""
    found = executors.candidates(spec, executors.resolve(executor_ref), f"{name} replica")
    return tuple(sorted(found, key=lambda ex: ex.rate_usd_per_hour(spec)))


def recover(manager: DeploymentManager, executors: ExecutorPool) -> None:
    """Brings back every deployment that was not torn down.

    Call it before the scheduler places tasks: a task must not take hardware
    that an adopted replica still holds.
    """
    recovered = []
    for row in manager.state.list_deployments():
        try:
            recovered.append(_recover_one(manager, executors, row))
        except Exception:
            log.exception("could not recover deployment %s", row.name)
    for d in recovered:
        try:
            manager.reconcile(d)
        except Exception:
            log.exception("could not start the replicas of deployment %s", d.name)


def _recover_one(
    manager: DeploymentManager, executors: ExecutorPool, row: DeploymentRow
) -> LiveDeployment:
    manifest = Manifest.from_json(row.manifest_json)
    spec = HardwareSpec.from_dict(json.loads(row.hardware))
    error = ""
    try:
        candidates = candidates_for(executors, spec, row.executor_ref, row.name)
    except Error as exc:
        candidates, error = (), str(exc)
    d = LiveDeployment(
        name=row.name,
        status=row.status,
        version=row.version,
        manifest=manifest,
        manifest_json=row.manifest_json,
        service_sha256=row.service_sha256,
        args=[(int(p), str(k), str(s)) for p, k, s in json.loads(row.args_json or "[]")],
        spec=spec,
        executor_ref=row.executor_ref,
        candidates=candidates,
        token=row.token,
        working_dir=row.working_dir,
        created_at=row.created_at,
        updated_at=row.updated_at,
        error=row.error,
        cost_usd=row.cost_usd,
        emulated=row.emulated,
        openapi_json=row.openapi_json,
        desired=row.desired_replicas,
    )
    if d.status != FAILED and d.desired == 0 and d.status != ACTIVE:
        d.desired = manager.initial_replicas(manifest, time.time())
    book = manager.book
    with book.lock:
        book.live[d.name] = d
        if manager.gateway is not None:
            manager.gateway.configure(d.target())
        adopted = gone = 0
        for stored in manager.state.get_replicas(d.name, live_only=True):
            r = LiveReplica.from_row(stored)
            r.task_key = f"replica/{d.name}/{r.replica_id}"
            health = (
                replica_http(r.url, "/_cobalt/health", r.secret, timeout=1.0) if r.url else None
            )
            alive = health is not None and health.get("replica_id") == r.replica_id
            if alive and stored.status == "ready":
                uncounted = manager.lifecycle.adopt(d, r, [*d.candidates, *executors.all()])
                if r.version == d.version:
                    d.ready_this_version = True
                if manager.gateway is not None:
                    manager.gateway.add_replica(d.name, r.replica_id, r.url, r.secret)
                adopted += 1
                manager.event(
                    d,
                    "replica_adopted",
                    f"replica {r.replica_id} still serves at {r.url} after the controller "
                    "restarted; it was adopted"
                    + (
                        f", but its hardware is not counted ({uncounted}): a task may be "
                        "given it while it runs. Deploy the service again to replace it."
                        if uncounted
                        else "."
                    ),
                )
                if uncounted:
                    log.warning("adopted replica %s is not counted: %s", r.task_key, uncounted)
                continue
            if alive:  # it was draining: finish the job
                replica_http(r.url, "/_cobalt/shutdown", r.secret, method="POST")
            r.status = "stopped" if alive else "failed"
            r.error = "" if alive else "gone after the controller restarted"
            r.ended_at = time.time()
            manager.state.put_replica(r.to_row())
            gone += 1
            manager.event(
                d,
                "replica_gone",
                f"replica {r.replica_id} "
                + ("was draining and was stopped" if alive else "did not survive the restart")
                + "; its run before the restart is not billed again.",
            )
        if d.ready_this_version and d.status == "STARTING":
            d.status = ACTIVE
            manager.state.update_deployment(d.name, status=ACTIVE)
        if error:
            d.status, d.error = FAILED, error
            manager.state.update_deployment(d.name, status=FAILED, error=error)
            manager.event(d, "deployment_failed", f"after the restart: {error}")
        elif d.status == "STARTING" or adopted or gone or d.desired:
            manager.event(
                d,
                "recovered",
                f"the controller restarted: {adopted} replica(s) adopted, {gone} gone; "
                f"running {d.desired} replica(s).",
                {"adopted": adopted, "gone": gone, "desired": d.desired},
            )
    return d
