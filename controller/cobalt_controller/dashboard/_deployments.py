"""Deployments as the JSON the dashboard's deployment pages render.

Rows come from the state store. What only the running controller knows, the
requests in flight on each replica, the cost accrued by replicas still running,
the deployment's metrics (latencies, tokens per second, batch sizes, cost per
unit) and the gateway's address, comes from a :data:`LiveReader`: a callable
the controller passes in (see :func:`reader`), absent in tests and when
deployments are off. A deployment's token is never read here, so it cannot
reach a page.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cobalt_common.deploy import Manifest
from cobalt_common.errors import Error, SpecError
from cobalt_controller._convert import given_from_json
from cobalt_controller.dashboard._views import Json, describe_requested
from cobalt_controller.state import (
    LIVE_REPLICA_STATUSES,
    DeploymentEventRow,
    DeploymentRow,
    ReplicaRow,
)

if TYPE_CHECKING:
    from cobalt_controller.deploy import DeploymentManager

ENDED_REPLICAS_SHOWN = 20
"""Ended replicas listed on a deployment's page, newest first, after the live ones."""


@dataclass(frozen=True, slots=True)
class DeploymentSnapshot:
    """What the deployment manager knows of one deployment that the store does not."""

    status: str
    ready: int
    desired: int
    cost_usd: float
    """Billed replica time so far, replicas still running included."""
    emulated: bool
    in_flight: dict[str, int] = field(default_factory=dict)
    """Requests in flight, by replica id."""


def _no_metrics(name: str) -> Json | None:
    return None


@dataclass(frozen=True, slots=True)
class DeploymentSnapshots:
    """A snapshot of the manager: the gateway's address and its running deployments.

    ``metrics(name)`` reads a deployment's metrics (``None`` when the manager
    has none); only a deployment's page asks, so the list stays cheap.
    """

    gateway_url: str = ""
    deployments: dict[str, DeploymentSnapshot] = field(default_factory=dict)
    metrics: Callable[[str], Json | None] = _no_metrics


LiveReader = Callable[[], DeploymentSnapshots]


def no_live() -> DeploymentSnapshots:
    """The reader of a dashboard without a deployment manager: the store alone."""
    return DeploymentSnapshots()


def reader(manager: DeploymentManager) -> LiveReader:
    """A read-only view of ``manager``: a snapshot under its lock, nothing more."""

    def metrics(name: str) -> Json | None:
        try:
            return manager.metrics(name).to_json()
        except Error:
            return None

    def read() -> DeploymentSnapshots:
        now = time.time()
        gateway = manager.gateway
        with manager._lock:
            live = {
                name: DeploymentSnapshot(
                    status=d.status,
                    ready=sum(1 for r in d.replicas.values() if r.status == "ready"),
                    desired=d.desired,
                    cost_usd=d.live_cost(now),
                    emulated=d.emulated
                    or any(r.given is not None and r.given.emulated for r in d.replicas.values()),
                    in_flight=gateway.in_flight(name) if gateway is not None else {},
                )
                for name, d in manager.live.items()
            }
        return DeploymentSnapshots(gateway.url if gateway is not None else "", live, metrics)

    return read


def _manifest(row: DeploymentRow) -> Manifest | None:
    try:
        return Manifest.from_json(row.manifest_json)
    except (SpecError, ValueError, KeyError, TypeError):
        return None


def _executor(ref: str) -> str:
    try:
        return str(json.loads(ref).get("name", "")) if ref else ""
    except (ValueError, AttributeError):
        return ""


def deployment(
    row: DeploymentRow,
    replicas: Sequence[ReplicaRow],
    live: DeploymentSnapshot | None,
    gateway_url: str,
) -> Json:
    """One row of the deployments list: ``replicas`` are its live ones, from the store."""
    manifest = _manifest(row)
    ready = sum(1 for r in replicas if r.status == "ready")
    emulated = row.emulated or any(r.emulated for r in replicas)
    return {
        "name": row.name,
        "status": live.status if live is not None else row.status,
        "version": row.version,
        "ready": live.ready if live is not None else ready,
        "desired": live.desired if live is not None else row.desired_replicas,
        "auth": manifest.auth if manifest is not None else True,
        "routes": [
            {"name": r.name, "path": r.path, "streaming": r.streaming}
            for r in (manifest.routes if manifest is not None else ())
        ],
        "hardware": describe_requested(row.hardware),
        "executor": _executor(row.executor_ref),
        "cost_usd": live.cost_usd if live is not None else row.cost_usd,
        "emulated": live.emulated if live is not None else emulated,
        "url": f"{gateway_url}/{row.name}" if gateway_url else "",
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "error": row.error,
    }


def replica(row: ReplicaRow, in_flight: dict[str, int] | None) -> Json:
    """One row of a deployment's replica table; ``in_flight``: ``None`` when unknown."""
    given = given_from_json(row.hardware_given)
    ready_after = (
        max(row.ready_at - row.started_at, 0.0)
        if row.ready_at is not None and row.started_at is not None
        else None
    )
    live = row.status in LIVE_REPLICA_STATUSES
    return {
        "id": row.replica_id,
        "status": row.status,
        "version": row.version,
        "executor": row.executor,
        "given": given.describe() if given is not None else "",
        "emulated": row.emulated or (given is not None and given.emulated),
        "started_at": row.started_at,
        "ready_at": row.ready_at,
        "ready_after_s": ready_after,
        "ended_at": row.ended_at,
        "in_flight": in_flight.get(row.replica_id, 0) if in_flight is not None and live else None,
        "url": row.url,
        "error": row.error,
        "cost_usd": row.cost_usd,
    }


def replicas(
    rows: Sequence[ReplicaRow], in_flight: dict[str, int] | None
) -> tuple[list[Json], int]:
    """Live replicas, then the most recently ended ones; and how many ended ones are left out."""

    def newest_first(r: ReplicaRow) -> float:
        return -(r.started_at or r.ended_at or 0.0)

    live = sorted((r for r in rows if r.status in LIVE_REPLICA_STATUSES), key=newest_first)
    ended = sorted((r for r in rows if r.status not in LIVE_REPLICA_STATUSES), key=newest_first)
    shown = [*live, *ended[:ENDED_REPLICAS_SHOWN]]
    return [replica(r, in_flight) for r in shown], max(len(ended) - ENDED_REPLICAS_SHOWN, 0)


def event(row: DeploymentEventRow) -> Json:
    """One event: what happened and, for a decision, the inputs it was made from."""
    inputs: Any = None
    if row.inputs_json:
        try:
            inputs = json.loads(row.inputs_json)
        except ValueError:
            inputs = row.inputs_json
    return {"time": row.time, "kind": row.kind, "message": row.message, "inputs": inputs}


def detail(
    row: DeploymentRow,
    replica_rows: Sequence[ReplicaRow],
    events: Sequence[DeploymentEventRow],
    snapshot: DeploymentSnapshots,
) -> Json:
    """A deployment's page: its facts, its metrics (``None`` without a running
    manager), its replicas and its events, newest first."""
    live = snapshot.deployments.get(row.name)
    running = [r for r in replica_rows if r.status in LIVE_REPLICA_STATUSES]
    view = deployment(row, running, live, snapshot.gateway_url)
    manifest = _manifest(row)
    if manifest is not None:
        view["autoscaling"] = manifest.autoscaling.to_dict()
    shown, left_out = replicas(replica_rows, live.in_flight if live is not None else None)
    return {
        "deployment": view,
        "metrics": snapshot.metrics(row.name) if live is not None else None,
        "replicas": shown,
        "ended_replicas_left_out": left_out,
        "events": [event(e) for e in events],
    }
