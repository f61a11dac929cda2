"""Live state of deployments and replicas, owned by the deployment manager."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from cobalt_common.deploy import Manifest
from cobalt_common.hardware import HardwareGiven, HardwareSpec
from cobalt_controller._convert import given_from_json, given_to_json
from cobalt_controller.deploy._routing import Target
from cobalt_controller.dispatch._cost import local_day
from cobalt_controller.placement import accrued_usd, charge
from cobalt_controller.state import DeploymentRow, ReplicaRow
from cobalt_executors import Executor

STARTING, ACTIVE, FAILED, STOPPED = "STARTING", "ACTIVE", "FAILED", "STOPPED"
"""Deployment statuses, as stored."""


@dataclass(eq=False, slots=True)
class LiveReplica:
    """One replica: a long-running task on an executor, or one adopted after a restart."""

    replica_id: str
    deployment: str
    version: int
    secret: str
    status: str = "starting"
    """starting (also while it waits for capacity), ready, draining, stopped or failed."""
    task_key: str = ""
    executor: Executor | None = None
    executor_name: str = ""
    given: HardwareGiven | None = None
    rate: float = 0.0
    url: str = ""
    pid: int = 0
    started_at: float | None = None
    ready_at: float | None = None
    ended_at: float | None = None
    error: str = ""
    adopted: bool = False
    """Found alive after a controller restart: no executor tracks it; it is
    stopped with ``POST /_cobalt/shutdown``."""
    stopping: bool = False
    """The manager asked it to stop: its end is expected."""
    waiting_noted: bool = False
    billed_s: float = 0.0
    cost_usd: float = 0.0

    @property
    def submitted(self) -> bool:
        return self.executor is not None or self.adopted

    @property
    def live(self) -> bool:
        return self.status in ("starting", "ready", "draining")

    def accrued_usd(self, now: float) -> float:
        """What its run so far costs (billed when it ends)."""
        if self.ended_at is not None:
            return 0.0
        return accrued_usd(self.started_at, now, self.rate)

    def bill(self, ended_at: float) -> float:
        """Ends the replica's bill; returns the cost added."""
        self.ended_at = ended_at
        if self.started_at is None:
            return 0.0
        self.billed_s, self.cost_usd = charge(self.started_at, ended_at, self.rate)
        return self.cost_usd

    def to_row(self) -> ReplicaRow:
        g = self.given
        return ReplicaRow(
            replica_id=self.replica_id,
            deployment=self.deployment,
            version=self.version,
            status=self.status,
            url=self.url,
            secret=self.secret,
            executor=self.executor_name,
            hardware_given=given_to_json(g),
            pid=self.pid,
            started_at=self.started_at,
            ready_at=self.ready_at,
            ended_at=self.ended_at,
            error=self.error,
            billed_s=self.billed_s,
            cost_usd=self.cost_usd,
            rate_usd_per_hour=self.rate,
            gpu_type=(g.gpu or "") if g is not None else "",
            emulated=g is not None and g.emulated,
            ended_day=local_day(self.ended_at) if self.ended_at and self.started_at else "",
        )

    @classmethod
    def from_row(cls, row: ReplicaRow) -> LiveReplica:
        r = cls(row.replica_id, row.deployment, row.version, row.secret, status=row.status)
        r.url, r.pid, r.executor_name = row.url, row.pid, row.executor
        r.started_at, r.ready_at, r.rate = row.started_at, row.ready_at, row.rate_usd_per_hour
        r.given = given_from_json(row.hardware_given)
        return r


@dataclass(eq=False, slots=True)
class LiveDeployment:
    """A deployment the manager runs."""

    name: str
    status: str
    version: int
    manifest: Manifest
    manifest_json: str
    service_sha256: str
    args: list[tuple[int, str, str]]
    """(position, keyword, sha256) of each initializer argument."""
    spec: HardwareSpec
    executor_ref: str
    candidates: tuple[Executor, ...]
    """Executors able to run a replica, cheapest first."""
    token: str
    working_dir: str
    created_at: float
    updated_at: float
    error: str = ""
    cost_usd: float = 0.0
    """Billed replica time of ended replicas."""
    emulated: bool = False
    openapi_json: str = ""
    desired: int = 1
    replicas: dict[str, LiveReplica] = field(default_factory=dict)
    ready_this_version: bool = False
    failures: int = 0
    """Start failures in a row since a replica of this version was last ready."""
    retry_at: float = 0.0
    """No replica starts before this time (backoff after a start failure)."""

    def live_cost(self, now: float) -> float:
        return self.cost_usd + sum(r.accrued_usd(now) for r in self.replicas.values())

    def target(self) -> Target:
        m = self.manifest
        return Target(
            name=self.name,
            token=self.token if m.auth else "",
            routes={r.path: r.streaming for r in m.routes},
            max_body_bytes=m.max_body_bytes,
            autoscaling=m.autoscaling,
            openapi=(self.openapi_json or json.dumps(dict(m.openapi) or {})).encode(),
            desired=self.desired,
            failed=self.error if self.status == FAILED else "",
            get_routes=frozenset(r.path for r in m.routes if "GET" in r.methods),
        )

    def to_row(self) -> DeploymentRow:
        return DeploymentRow(
            name=self.name,
            status=self.status,
            version=self.version,
            manifest_json=self.manifest_json,
            service_sha256=self.service_sha256,
            args_json=json.dumps([list(a) for a in self.args]),
            hardware=json.dumps(self.spec.to_dict()),
            executor_ref=self.executor_ref,
            token=self.token,
            working_dir=self.working_dir,
            created_at=self.created_at,
            updated_at=self.updated_at,
            error=self.error,
            cost_usd=self.cost_usd,
            emulated=self.emulated,
            openapi_json=self.openapi_json,
            desired_replicas=self.desired,
        )


def replica_http(
    url: str, path: str, secret: str, *, method: str = "GET", timeout: float = 1.0
) -> dict[str, Any] | None:
    """Calls a replica's control API; its JSON answer, or None when it does not answer."""
    request = urllib.request.Request(
        url.rstrip("/") + path,
        method=method,
        data=b"{}" if method == "POST" else None,
        headers={"x-cobalt-replica-secret": secret, "Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as resp:
            data = json.loads(resp.read() or b"{}")
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return data if isinstance(data, dict) else {}
