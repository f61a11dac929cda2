"""The SQL state store (SQLAlchemy Core): SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from cobalt_common.errors import ConfigError
from cobalt_common.status import DISPATCH_ENDED, Status
from cobalt_controller.state._sql_deploy import DEPLOY_TABLES, DeploymentTables, deploy_meta
from cobalt_controller.state.base import (
    REUSED,
    CostRow,
    DeploymentEventRow,
    DeploymentRow,
    DispatchRow,
    NodeRow,
    ReplicaRow,
    StateStore,
    WriteBatch,
)

_meta = sa.MetaData()

dispatches = sa.Table(
    "dispatches",
    _meta,
    sa.Column("dispatch_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("output_node", sa.Integer, nullable=False),
    sa.Column("task_count", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("ended_at", sa.Float),
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("parent_dispatch_id", sa.String(64), index=True),
    sa.Column("parent_node_id", sa.Integer),
    sa.Column("cost_usd", sa.Float, nullable=False, default=0.0),
    sa.Column("budget_usd", sa.Float),
    sa.Column("emulated", sa.Boolean, nullable=False, default=False),
    sa.Column("working_dir", sa.Text, nullable=False, default=""),
    sa.Column("client_runtime", sa.Text, nullable=False, default=""),
    sa.Column("lattice_sha256", sa.String(64), nullable=False, default=""),
    sa.Column("inputs_sha256", sa.String(64), nullable=False, default=""),
)

nodes = sa.Table(
    "nodes",
    _meta,
    sa.Column("dispatch_id", sa.String(64), primary_key=True),
    sa.Column("node_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("function_sha256", sa.String(64), nullable=False, default=""),
    sa.Column("value_sha256", sa.String(64), nullable=False, default=""),
    sa.Column("inputs", sa.Text, nullable=False, default="[]"),
    sa.Column("hardware", sa.Text, nullable=False, default="{}"),
    sa.Column("retries", sa.Integer, nullable=False, default=0),
    sa.Column("executor_ref", sa.Text, nullable=False, default=""),
    sa.Column("executor", sa.String(128), nullable=False, default=""),
    sa.Column("hardware_given", sa.Text, nullable=False, default=""),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", sa.Float),
    sa.Column("ended_at", sa.Float),
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("reason", sa.String(32), nullable=False, default=""),
    sa.Column("stdout", sa.Text, nullable=False, default=""),
    sa.Column("stderr", sa.Text, nullable=False, default=""),
    sa.Column("output_sha256", sa.String(64), nullable=False, default=""),
    sa.Column("sublattice_dispatch_id", sa.String(64), nullable=False, default=""),
    sa.Column("function_key", sa.String(512), nullable=False, default="", index=True),
    sa.Column("cost_usd", sa.Float, nullable=False, default=0.0),
    sa.Column("billed_s", sa.Float, nullable=False, default=0.0),
    sa.Column("rate_usd_per_hour", sa.Float, nullable=False, default=0.0),
    sa.Column("placement", sa.Text, nullable=False, default=""),
    sa.Column("gpu_type", sa.String(32), nullable=False, default=""),
    sa.Column("emulated", sa.Boolean, nullable=False, default=False),
    sa.Column("ended_day", sa.String(10), nullable=False, default="", index=True),
    sa.Column("credential_sha256", sa.String(64), nullable=False, default=""),
)

_NODE_COLUMNS = list(nodes.c)
"""NodeRow's fields, in order: rows are built from them by position."""
_NODE_COLUMNS_NO_LOGS = [
    sa.literal("").label(c.name) if c.name in ("stdout", "stderr") else c for c in nodes.c
]

payloads = sa.Table(
    "payloads",
    _meta,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

_ENDED = sorted(s.value for s in DISPATCH_ENDED)
_TASK_KINDS = ("electron", "sublattice")
_NODE_FIELDS = [f.name for f in dataclasses.fields(NodeRow)]
_DISPATCH_FIELDS = [f.name for f in dataclasses.fields(DispatchRow)]


def _as_dict(row: Any, fields: list[str]) -> dict[str, Any]:
    return {f: getattr(row, f) for f in fields}


def _insert(table: sa.Table) -> Callable[[], Any]:
    return lambda: table.insert().values({c.name: sa.bindparam(c.name) for c in table.columns})


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _add_missing_columns(engine: Engine) -> None:
    """Brings a database made by an older cobalt up to date.

    Columns and indexes are only ever added, each column with a default, so
    this is the whole migration story so far.
    """
    inspector = sa.inspect(engine)
    with engine.begin() as conn:
        for table in (dispatches, nodes, *DEPLOY_TABLES):
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    continue
                kind = column.type.compile(dialect=engine.dialect)
                default = getattr(column.default, "arg", None)
                clause = ""
                if default is not None and not callable(default):
                    literal = sa.literal(default).compile(
                        dialect=engine.dialect, compile_kwargs={"literal_binds": True}
                    )
                    clause = f" NOT NULL DEFAULT {literal}"
                conn.execute(
                    sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}{clause}')
                )
    for table in (dispatches, nodes, *DEPLOY_TABLES):
        for index in table.indexes:
            index.create(engine, checkfirst=True)


class SqlStateStore(StateStore):
    """State in any database SQLAlchemy speaks.

    SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit survives a
    crash of the controller; a power loss can lose the last few rounds.
    Deployments, replicas and their events are kept by the
    :class:`~._sql_deploy.DeploymentTables` it holds, on the same engine.
    """

    def __init__(self, url: str) -> None:
        try:
            self.engine: Engine = sa.create_engine(url, future=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise ConfigError(f"cannot open database_url {url!r}: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        _meta.create_all(self.engine)
        deploy_meta.create_all(self.engine)
        _add_missing_columns(self.engine)
        self.deployment_tables = DeploymentTables(self.engine)
        self._statements: dict[Any, tuple[str, Any]] = {}
        self._insert_payload = self._insert_ignoring_duplicates(payloads)

    def _insert_ignoring_duplicates(self, table: sa.Table) -> Any:
        name = self.engine.dialect.name
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(table).on_conflict_do_nothing()
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        return table.insert().prefix_with("IGNORE") if name == "mysql" else table.insert()

    def apply(self, batch: WriteBatch) -> None:
        with self.engine.begin() as conn:
            for row, node_rows in batch.new_dispatches:
                self._many(
                    conn,
                    "insert dispatches",
                    _insert(dispatches),
                    [_as_dict(row, _DISPATCH_FIELDS)],
                )
                for start in range(0, len(node_rows), 5000):
                    chunk = node_rows[start : start + 5000]
                    self._many(
                        conn,
                        "insert nodes",
                        _insert(nodes),
                        [_as_dict(n, _NODE_FIELDS) for n in chunk],
                    )
            if batch.payloads:
                self._many(
                    conn,
                    "insert payloads",
                    lambda: self._insert_payload,
                    [{"sha256": s, "data": d} for s, d in sorted(batch.payloads.items())],
                )
            self._update(conn, nodes, ("dispatch_id", "node_id"), batch.node_updates)
            self._update(
                conn,
                dispatches,
                ("dispatch_id",),
                {(k,): v for k, v in batch.dispatch_updates.items()},
            )

    def _update(
        self,
        conn: sa.Connection,
        table: sa.Table,
        key_columns: tuple[str, ...],
        updates: dict[Any, dict[str, Any]],
    ) -> None:
        """One executemany per set of changed columns."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for key, values in updates.items():
            row = {f"k_{c}": v for c, v in zip(key_columns, key, strict=True)}
            row.update({f"v_{c}": v for c, v in values.items()})
            groups.setdefault(tuple(sorted(values)), []).append(row)
        for columns, rows in groups.items():

            def build(columns: tuple[str, ...] = columns) -> Any:
                stmt = table.update().values({c: sa.bindparam(f"v_{c}") for c in columns})
                for c in key_columns:
                    stmt = stmt.where(table.c[c] == sa.bindparam(f"k_{c}"))
                return stmt

            self._many(conn, ("update", table.name, columns), build, rows)

    def _many(
        self, conn: sa.Connection, key: Any, build: Callable[[], Any], rows: list[dict[str, Any]]
    ) -> None:
        """Runs a statement for many rows as driver SQL, compiled once per ``key``.

        SQLAlchemy's per-row parameter processing was most of the cost of a
        large fan-out's writes, and its execution context a third of a small
        round's; the values here are plain numbers, strings and bytes that
        every driver takes as they are. The driver's cursor runs in the
        transaction of ``conn``, which commits or rolls back as before.
        """
        cached = self._statements.get(key)
        if cached is None:
            compiled = build().compile(dialect=self.engine.dialect)
            cached = self._statements[key] = (str(compiled), compiled.positiontup)
        sql, order = cached
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if order:
                cursor.executemany(sql, [tuple(r[k] for k in order) for r in rows])
            else:
                cursor.executemany(sql, rows)
        finally:
            cursor.close()

    @staticmethod
    def _missing(conn: sa.Connection, shas: Iterable[str]) -> set[str]:
        wanted = set(shas)
        found: set[str] = set()
        ordered = sorted(wanted)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            found.update(
                conn.execute(sa.select(payloads.c.sha256).where(payloads.c.sha256.in_(chunk)))
                .scalars()
                .all()
            )
        return wanted - found

    def get_dispatch(self, dispatch_id: str) -> DispatchRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(dispatches).where(dispatches.c.dispatch_id == dispatch_id)
            ).first()
        return DispatchRow(**row._asdict()) if row else None

    def list_dispatches(self, limit: int = 50) -> list[DispatchRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(dispatches).order_by(dispatches.c.created_at.desc()).limit(limit)
            ).all()
        return [DispatchRow(**r._asdict()) for r in rows]

    def unfinished_dispatches(self) -> list[DispatchRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(dispatches)
                .where(dispatches.c.status.not_in(_ENDED))
                .order_by(dispatches.c.created_at)
            ).all()
        return [DispatchRow(**r._asdict()) for r in rows]

    def get_nodes(
        self,
        dispatch_id: str,
        *,
        include_logs: bool = True,
        node_ids: Collection[int] | None = None,
    ) -> list[NodeRow]:
        query = sa.select(*(_NODE_COLUMNS if include_logs else _NODE_COLUMNS_NO_LOGS)).where(
            nodes.c.dispatch_id == dispatch_id
        )
        with self.engine.connect() as conn:
            if node_ids is None:
                rows = conn.execute(query.order_by(nodes.c.node_id)).all()
            else:
                wanted = sorted(set(node_ids))
                rows = []
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start : start + 500]
                    rows += conn.execute(
                        query.where(nodes.c.node_id.in_(chunk)).order_by(nodes.c.node_id)
                    ).all()
        # Positional: the columns are NodeRow's fields in order, and building
        # rows by keyword costs twice as much on a dispatch of 100,000 nodes.
        return [NodeRow(*r) for r in rows]

    def get_node(self, dispatch_id: str, node_id: int) -> NodeRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(nodes).where(
                    (nodes.c.dispatch_id == dispatch_id) & (nodes.c.node_id == node_id)
                )
            ).first()
        return NodeRow(**row._asdict()) if row else None

    def get_payload(self, sha256: str) -> bytes | None:
        with self.engine.connect() as conn:
            data = conn.execute(
                sa.select(payloads.c.data).where(payloads.c.sha256 == sha256)
            ).scalar()
        return bytes(data) if data is not None else None

    def missing_payloads(self, shas: Iterable[str]) -> set[str]:
        with self.engine.connect() as conn:
            return self._missing(conn, shas)

    def descendant_dispatches(self, dispatch_id: str) -> set[str]:
        found: set[str] = set()
        frontier = [dispatch_id]
        with self.engine.connect() as conn:
            while frontier:
                below: list[str] = []
                for start in range(0, len(frontier), 500):
                    below += conn.execute(
                        sa.select(dispatches.c.dispatch_id).where(
                            dispatches.c.parent_dispatch_id.in_(frontier[start : start + 500])
                        )
                    ).scalars()
                frontier = [d for d in below if d not in found and d != dispatch_id]
                found.update(frontier)
        return found

    def holds_payload(self, dispatch_ids: Collection[str], sha256: str) -> bool:
        ids = sorted(set(dispatch_ids))
        held = (
            (nodes.c.output_sha256 == sha256)
            | (nodes.c.function_sha256 == sha256)
            | (nodes.c.value_sha256 == sha256)
        )
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                query = (
                    sa.select(nodes.c.node_id)
                    .where(nodes.c.dispatch_id.in_(ids[start : start + 500]))
                    .where(held)
                    .limit(1)
                )
                if conn.execute(query).first() is not None:
                    return True
        return False

    def status_counts(self, dispatch_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        ids = sorted(set(dispatch_ids))
        counts: dict[str, dict[str, int]] = {i: {} for i in ids}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                rows = conn.execute(
                    sa.select(nodes.c.dispatch_id, nodes.c.status, sa.func.count())
                    .where(nodes.c.dispatch_id.in_(ids[start : start + 500]))
                    .where(nodes.c.kind.in_(_TASK_KINDS))
                    .group_by(nodes.c.dispatch_id, nodes.c.status)
                ).all()
                for dispatch_id, status, n in rows:
                    counts[dispatch_id][status] = int(n)
        return counts

    def recent_run_times(self, function_key: str, limit: int = 50) -> list[float]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(nodes.c.started_at, nodes.c.ended_at)
                .where(nodes.c.function_key == function_key)
                .where(nodes.c.status == Status.COMPLETED.value)
                .where(nodes.c.reason != REUSED)
                .where(nodes.c.started_at.is_not(None) & nodes.c.ended_at.is_not(None))
                .order_by(nodes.c.ended_at.desc())
                .limit(limit)
            ).all()
        return [float(end - start) for start, end in rows]

    def cost_summary(self, since_day: str = "") -> list[CostRow]:
        query = (
            sa.select(
                nodes.c.ended_day,
                nodes.c.executor,
                nodes.c.gpu_type,
                nodes.c.emulated,
                sa.func.count(),
                sa.func.sum(nodes.c.billed_s),
                sa.func.sum(nodes.c.cost_usd),
            )
            .where(nodes.c.kind == "electron")
            .where(nodes.c.ended_day != "")
            .group_by(nodes.c.ended_day, nodes.c.executor, nodes.c.gpu_type, nodes.c.emulated)
            .order_by(nodes.c.ended_day, nodes.c.executor, nodes.c.gpu_type)
        )
        if since_day:
            query = query.where(nodes.c.ended_day >= since_day)
        with self.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(query).all()]
        groups: dict[tuple[str, str, str, bool], list[float]] = {}
        for day, executor, gpu, emulated, n, billed, cost in (
            rows + self.deployment_tables.replica_cost_rows(since_day)
        ):
            g = groups.setdefault((day, executor, gpu, bool(emulated)), [0, 0.0, 0.0])
            g[0] += int(n)
            g[1] += float(billed or 0)
            g[2] += float(cost or 0)
        return [
            CostRow(day, executor, gpu, emulated, int(g[0]), g[1], g[2])
            for (day, executor, gpu, emulated), g in sorted(groups.items())
        ]

    # -- deployments: kept by DeploymentTables ---------------------------------------

    def put_deployment(self, row: DeploymentRow) -> None:
        self.deployment_tables.put_deployment(row)

    def update_deployment(self, name: str, **values: Any) -> None:
        self.deployment_tables.update_deployment(name, **values)

    def get_deployment(self, name: str) -> DeploymentRow | None:
        return self.deployment_tables.get_deployment(name)

    def list_deployments(self, *, include_stopped: bool = False) -> list[DeploymentRow]:
        return self.deployment_tables.list_deployments(include_stopped=include_stopped)

    def put_replica(self, row: ReplicaRow) -> None:
        self.deployment_tables.put_replica(row)

    def update_replica(self, replica_id: str, **values: Any) -> None:
        self.deployment_tables.update_replica(replica_id, **values)

    def get_replicas(self, deployment: str, *, live_only: bool = False) -> list[ReplicaRow]:
        return self.deployment_tables.get_replicas(deployment, live_only=live_only)

    def add_deployment_events(self, events: Sequence[DeploymentEventRow]) -> None:
        self.deployment_tables.add_deployment_events(events)

    def deployment_events(self, deployment: str, limit: int = 100) -> list[DeploymentEventRow]:
        return self.deployment_tables.deployment_events(deployment, limit)

    def close(self) -> None:
        self.engine.dispose()
