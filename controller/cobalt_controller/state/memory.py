"""An in-memory state store, for tests and throwaway controllers."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from cobalt_common.status import DISPATCH_ENDED, Status
from cobalt_controller.state.base import (
    LIVE_REPLICA_STATUSES,
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


class MemoryStateStore(StateStore):
    def __init__(self) -> None:
        self._dispatches: dict[str, DispatchRow] = {}
        self._nodes: dict[str, list[NodeRow]] = {}
        self._payloads: dict[str, bytes] = {}
        self._deployments: dict[str, DeploymentRow] = {}
        self._replicas: dict[str, ReplicaRow] = {}
        self._events: list[DeploymentEventRow] = []
        self._lock = threading.Lock()

    def apply(self, batch: WriteBatch) -> None:
        with self._lock:
            for row, _ in batch.new_dispatches:
                if row.dispatch_id in self._dispatches:
                    raise ValueError(f"dispatch {row.dispatch_id} is already stored")
            for row, nodes in batch.new_dispatches:
                self._dispatches[row.dispatch_id] = dataclasses.replace(row)
                self._nodes[row.dispatch_id] = [dataclasses.replace(n) for n in nodes]
            for (dispatch_id, node_id), values in batch.node_updates.items():
                node = self._nodes[dispatch_id][node_id]
                for key, value in values.items():
                    setattr(node, key, value)
            for dispatch_id, values in batch.dispatch_updates.items():
                for key, value in values.items():
                    setattr(self._dispatches[dispatch_id], key, value)
            self._payloads.update(batch.payloads)

    def get_dispatch(self, dispatch_id: str) -> DispatchRow | None:
        row = self._dispatches.get(dispatch_id)
        return dataclasses.replace(row) if row else None

    def list_dispatches(self, limit: int = 50) -> list[DispatchRow]:
        rows = sorted(self._dispatches.values(), key=lambda r: r.created_at, reverse=True)
        return [dataclasses.replace(r) for r in rows[:limit]]

    def unfinished_dispatches(self) -> list[DispatchRow]:
        return [
            dataclasses.replace(r)
            for r in self._dispatches.values()
            if r.status not in DISPATCH_ENDED
        ]

    def get_nodes(
        self,
        dispatch_id: str,
        *,
        include_logs: bool = True,
        node_ids: Collection[int] | None = None,
    ) -> list[NodeRow]:
        wanted = None if node_ids is None else set(node_ids)
        nodes = [
            dataclasses.replace(n)
            for n in self._nodes.get(dispatch_id, [])
            if wanted is None or n.node_id in wanted
        ]
        if not include_logs:
            for n in nodes:
                n.stdout = n.stderr = ""
        return nodes

    def get_node(self, dispatch_id: str, node_id: int) -> NodeRow | None:
        nodes = self._nodes.get(dispatch_id, [])
        return dataclasses.replace(nodes[node_id]) if 0 <= node_id < len(nodes) else None

    def get_payload(self, sha256: str) -> bytes | None:
        return self._payloads.get(sha256)

    def missing_payloads(self, shas: Iterable[str]) -> set[str]:
        return {s for s in shas if s not in self._payloads}

    def descendant_dispatches(self, dispatch_id: str) -> set[str]:
        with self._lock:
            children: dict[str, list[str]] = {}
            for row in self._dispatches.values():
                if row.parent_dispatch_id:
                    children.setdefault(row.parent_dispatch_id, []).append(row.dispatch_id)
        found: set[str] = set()
        frontier = [dispatch_id]
        while frontier:
            below = [c for p in frontier for c in children.get(p, ()) if c not in found]
            found.update(below)
            frontier = below
        found.discard(dispatch_id)
        return found

    def holds_payload(self, dispatch_ids: Collection[str], sha256: str) -> bool:
        with self._lock:
            return any(
                sha256 in (n.function_sha256, n.value_sha256, n.output_sha256)
                for d in set(dispatch_ids)
                for n in self._nodes.get(d, ())
            )

    def status_counts(self, dispatch_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for dispatch_id in set(dispatch_ids):
            c = counts[dispatch_id] = {}
            for n in self._nodes.get(dispatch_id, []):
                if n.kind in ("electron", "sublattice"):
                    c[n.status] = c.get(n.status, 0) + 1
        return counts

    def recent_run_times(self, function_key: str, limit: int = 50) -> list[float]:
        done = [
            n
            for nodes in self._nodes.values()
            for n in nodes
            if n.function_key == function_key
            and n.status == Status.COMPLETED
            and n.reason != REUSED
            and n.started_at is not None
            and n.ended_at is not None
        ]
        done.sort(key=lambda n: n.ended_at or 0.0, reverse=True)
        return [(n.ended_at or 0.0) - (n.started_at or 0.0) for n in done[:limit]]

    def cost_summary(self, since_day: str = "") -> list[CostRow]:
        groups: dict[tuple[str, str, str, bool], list[float]] = {}
        for nodes in self._nodes.values():
            for n in nodes:
                if n.kind != "electron" or not n.ended_day or n.ended_day < since_day:
                    continue
                g = groups.setdefault((n.ended_day, n.executor, n.gpu_type, n.emulated), [0, 0, 0])
                g[0] += 1
                g[1] += n.billed_s
                g[2] += n.cost_usd
        for r in self._replicas.values():
            if not r.ended_day or r.ended_day < since_day:
                continue
            g = groups.setdefault((r.ended_day, r.executor, r.gpu_type, r.emulated), [0, 0, 0])
            g[0] += 1
            g[1] += r.billed_s
            g[2] += r.cost_usd
        return [
            CostRow(day, ex, gpu, emulated, int(g[0]), g[1], g[2])
            for (day, ex, gpu, emulated), g in sorted(groups.items())
        ]

    # -- deployments -------------------------------------------------------------

    def put_deployment(self, row: DeploymentRow) -> None:
        with self._lock:
            self._deployments[row.name] = dataclasses.replace(row)

    def update_deployment(self, name: str, **values: Any) -> None:
        with self._lock:
            row = self._deployments.get(name)
            for key, value in values.items():
                if row is not None:
                    setattr(row, key, value)

    def get_deployment(self, name: str) -> DeploymentRow | None:
        row = self._deployments.get(name)
        return dataclasses.replace(row) if row else None

    def list_deployments(self, *, include_stopped: bool = False) -> list[DeploymentRow]:
        return [
            dataclasses.replace(r)
            for _, r in sorted(self._deployments.items())
            if include_stopped or r.status != "STOPPED"
        ]

    def put_replica(self, row: ReplicaRow) -> None:
        with self._lock:
            self._replicas[row.replica_id] = dataclasses.replace(row)

    def update_replica(self, replica_id: str, **values: Any) -> None:
        with self._lock:
            row = self._replicas.get(replica_id)
            for key, value in values.items():
                if row is not None:
                    setattr(row, key, value)

    def get_replicas(self, deployment: str, *, live_only: bool = False) -> list[ReplicaRow]:
        with self._lock:
            rows = [
                dataclasses.replace(r)
                for r in self._replicas.values()
                if r.deployment == deployment
                and (not live_only or r.status in LIVE_REPLICA_STATUSES)
            ]
        rows.sort(key=lambda r: (r.started_at or 0.0, r.replica_id))
        return rows

    def add_deployment_events(self, events: Sequence[DeploymentEventRow]) -> None:
        with self._lock:
            self._events.extend(dataclasses.replace(e) for e in events)

    def deployment_events(self, deployment: str, limit: int = 100) -> list[DeploymentEventRow]:
        with self._lock:
            mine = [e for e in self._events if e.deployment == deployment]
        return [dataclasses.replace(e) for e in reversed(mine[-limit:])] if limit > 0 else []
