"""Deployments, replicas and their events in SQL: the tables, and
:class:`DeploymentTables`, which :class:`~cobalt_controller.state.sql.SqlStateStore` holds."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cobalt_controller.state.base import (
    LIVE_REPLICA_STATUSES,
    DeploymentEventRow,
    DeploymentRow,
    ReplicaRow,
)

deploy_meta = sa.MetaData()

deployments = sa.Table(
    "deployments",
    deploy_meta,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False, default=1),
    sa.Column("manifest_json", sa.Text, nullable=False, default=""),
    sa.Column("service_sha256", sa.String(64), nullable=False, default=""),
    sa.Column("args_json", sa.Text, nullable=False, default="[]"),
    sa.Column("hardware", sa.Text, nullable=False, default="{}"),
    sa.Column("executor_ref", sa.Text, nullable=False, default=""),
    sa.Column("token", sa.String(128), nullable=False, default=""),
    sa.Column("working_dir", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False, default=0.0),
    sa.Column("updated_at", sa.Float, nullable=False, default=0.0),
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("cost_usd", sa.Float, nullable=False, default=0.0),
    sa.Column("emulated", sa.Boolean, nullable=False, default=False),
    sa.Column("openapi_json", sa.Text, nullable=False, default=""),
    sa.Column("desired_replicas", sa.Integer, nullable=False, default=0),
)

replicas = sa.Table(
    "replicas",
    deploy_meta,
    sa.Column("replica_id", sa.String(64), primary_key=True),
    sa.Column("deployment", sa.String(64), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False, default=1),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("url", sa.Text, nullable=False, default=""),
    sa.Column("secret", sa.String(128), nullable=False, default=""),
    sa.Column("executor", sa.String(128), nullable=False, default=""),
    sa.Column("hardware_given", sa.Text, nullable=False, default=""),
    sa.Column("pid", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", sa.Float),
    sa.Column("ready_at", sa.Float),
    sa.Column("ended_at", sa.Float),
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("billed_s", sa.Float, nullable=False, default=0.0),
    sa.Column("cost_usd", sa.Float, nullable=False, default=0.0),
    sa.Column("rate_usd_per_hour", sa.Float, nullable=False, default=0.0),
    sa.Column("gpu_type", sa.String(32), nullable=False, default=""),
    sa.Column("emulated", sa.Boolean, nullable=False, default=False),
    sa.Column("ended_day", sa.String(10), nullable=False, default="", index=True),
)

deployment_events = sa.Table(
    "deployment_events",
    deploy_meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("deployment", sa.String(64), nullable=False, index=True),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("inputs_json", sa.Text, nullable=False, default=""),
)

DEPLOY_TABLES = (deployments, replicas, deployment_events)
_DEPLOYMENT_FIELDS = [f.name for f in dataclasses.fields(DeploymentRow)]
_REPLICA_FIELDS = [f.name for f in dataclasses.fields(ReplicaRow)]


def _upsert(conn: sa.Connection, table: sa.Table, key: str, values: dict[str, Any]) -> None:
    updated = conn.execute(
        table.update().where(table.c[key] == values[key]).values(values)
    ).rowcount
    if not updated:
        conn.execute(table.insert().values(values))


class DeploymentTables:
    """The deployment half of the SQL store, on the store's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put_deployment(self, row: DeploymentRow) -> None:
        with self.engine.begin() as conn:
            _upsert(conn, deployments, "name", {f: getattr(row, f) for f in _DEPLOYMENT_FIELDS})

    def update_deployment(self, name: str, **values: Any) -> None:
        if values:
            with self.engine.begin() as conn:
                conn.execute(deployments.update().where(deployments.c.name == name).values(values))

    def get_deployment(self, name: str) -> DeploymentRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(deployments).where(deployments.c.name == name)).first()
        return DeploymentRow(**row._asdict()) if row else None

    def list_deployments(self, *, include_stopped: bool = False) -> list[DeploymentRow]:
        query = sa.select(deployments).order_by(deployments.c.name)
        if not include_stopped:
            query = query.where(deployments.c.status != "STOPPED")
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [DeploymentRow(**r._asdict()) for r in rows]

    def put_replica(self, row: ReplicaRow) -> None:
        with self.engine.begin() as conn:
            _upsert(conn, replicas, "replica_id", {f: getattr(row, f) for f in _REPLICA_FIELDS})

    def update_replica(self, replica_id: str, **values: Any) -> None:
        if values:
            with self.engine.begin() as conn:
                conn.execute(
                    replicas.update().where(replicas.c.replica_id == replica_id).values(values)
                )

    def get_replicas(self, deployment: str, *, live_only: bool = False) -> list[ReplicaRow]:
        query = sa.select(replicas).where(replicas.c.deployment == deployment)
        if live_only:
            query = query.where(replicas.c.status.in_(LIVE_REPLICA_STATUSES))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        found = [ReplicaRow(**r._asdict()) for r in rows]
        found.sort(key=lambda r: (r.started_at or 0.0, r.replica_id))
        return found

    def add_deployment_events(self, events: Sequence[DeploymentEventRow]) -> None:
        if events:
            with self.engine.begin() as conn:
                conn.execute(deployment_events.insert(), [dataclasses.asdict(e) for e in events])

    def deployment_events(self, deployment: str, limit: int = 100) -> list[DeploymentEventRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deployment_events)
                .where(deployment_events.c.deployment == deployment)
                .order_by(deployment_events.c.id.desc())
                .limit(limit)
            ).all()
        return [
            DeploymentEventRow(r.deployment, r.time, r.kind, r.message, r.inputs_json) for r in rows
        ]

    def replica_cost_rows(self, since_day: str) -> list[tuple[Any, ...]]:
        """Replica spend grouped like tasks' in ``cost_summary``."""
        query = (
            sa.select(
                replicas.c.ended_day,
                replicas.c.executor,
                replicas.c.gpu_type,
                replicas.c.emulated,
                sa.func.count(),
                sa.func.sum(replicas.c.billed_s),
                sa.func.sum(replicas.c.cost_usd),
            )
            .where(replicas.c.ended_day != "")
            .group_by(
                replicas.c.ended_day, replicas.c.executor, replicas.c.gpu_type, replicas.c.emulated
            )
        )
        if since_day:
            query = query.where(replicas.c.ended_day >= since_day)
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(query).all()]
