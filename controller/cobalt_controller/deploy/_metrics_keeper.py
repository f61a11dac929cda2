"""Keeps each deployment's metrics (a part of the deployment manager).

The autoscaler's :data:`~._autoscaler.READINGS` events bring the replicas'
``/_cobalt/metrics`` answers; a replica that drains is read once more before it
stops, so its last requests count. :meth:`MetricsKeeper.metrics` sums them
with the gateway's request count and the deployment's cost
(:mod:`._model_metrics`); asked with ``fresh=True`` (``dep.metrics()``), it
reads the ready replicas first, so requests just served are counted.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for_all
from typing import Any

from cobalt_common.deploy_metrics import MetricsSummary
from cobalt_controller.deploy._autoscaler import READINGS, ScaleEvent
from cobalt_controller.deploy._book import DeploymentBook
from cobalt_controller.deploy._live import LiveDeployment, replica_http
from cobalt_controller.deploy._model_metrics import DeploymentTotals
from cobalt_controller.deploy.policies.base import METRICS_PATH

FINAL_READ_TIMEOUT_S = 1.0
"""How long a draining replica's last reading may take."""

FRESH_READ_TIMEOUT_S = 1.0
"""How long a fresh reading waits for the replicas; one that has not answered by then
keeps its previous reading."""


class MetricsKeeper:
    """The metrics part of the manager, over the manager's book.

    Args:
        book: the live deployments, the lock, and each deployment's totals.
    """

    def __init__(self, book: DeploymentBook) -> None:
        self.book = book

    def metrics(self, name: str, *, fresh: bool = False) -> MetricsSummary:
        """The deployment's metrics now; raises NotFoundError when the manager has no
        deployment of that name. ``fresh``: read the ready replicas first (within
        :data:`FRESH_READ_TIMEOUT_S`) instead of using the autoscaler's last reading."""
        if fresh:
            self.read_now(name)
        now = time.time()
        requests = None
        gateway_front = self.book.gateway
        if gateway_front is not None:
            gateway = gateway_front.metrics(name)
            requests = int(gateway["requests"]) if "requests" in gateway else None
        with self.book.lock:
            d = self.book.find(name)
            emulated = d.emulated or any(
                r.given is not None and r.given.emulated for r in d.replicas.values()
            )
            return self.totals(d, now).summary(now, requests, d.live_cost(now), emulated)

    def totals(self, d: LiveDeployment, now: float) -> DeploymentTotals:
        """The deployment's readings; those of one recovered after a restart start now."""
        totals = self.book.totals.get(d.name)
        if totals is None:
            totals = self.book.totals[d.name] = DeploymentTotals(
                now, d.live_cost(now), from_zero=False
            )
        return totals

    def count_from_zero(self, d: LiveDeployment) -> None:
        """``d`` was just created (not redeployed): its counts start at zero."""
        self.book.totals[d.name] = DeploymentTotals(d.created_at, d.cost_usd, from_zero=True)

    def keep_readings(self, name: str, events: list[ScaleEvent]) -> list[ScaleEvent]:
        """Keeps the readings among an autoscaler's events; returns the other events."""
        readings = [e for e in events if e.kind == READINGS]
        if not readings:
            return events
        for e in readings:
            reports = e.inputs.get("reports")
            at = e.inputs.get("at")
            if isinstance(reports, list) and isinstance(at, int | float):
                self._record(name, float(at), reports)
        return [e for e in events if e.kind != READINGS]

    def read_now(self, name: str) -> None:
        """Reads the metrics of the deployment's ready replicas, all at once."""
        with self.book.lock:
            d = self.book.live.get(name)
            targets = [
                (r.replica_id, r.url, r.secret)
                for r in (d.replicas.values() if d is not None else ())
                if r.url and r.status in ("ready", "draining")
            ]
        if not targets:
            return
        at = time.time()
        pool = ThreadPoolExecutor(len(targets), thread_name_prefix="cobalt-metrics-read")
        try:
            futures = [
                pool.submit(replica_http, url, METRICS_PATH, secret, timeout=FRESH_READ_TIMEOUT_S)
                for _, url, secret in targets
            ]
            done, _ = wait_for_all(futures, timeout=FRESH_READ_TIMEOUT_S + 0.5)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        reports: list[Any] = []
        for (replica_id, _, _), future in zip(targets, futures, strict=True):
            report = future.result() if future in done and not future.exception() else None
            if report is not None:
                report.setdefault("replica_id", replica_id)
                reports.append(report)
        if reports:
            self._record(name, at, reports)

    def read_last(self, name: str, replica_id: str) -> None:
        """Reads a draining replica's metrics one last time, before it stops."""
        with self.book.lock:
            d = self.book.live.get(name)
            r = d.replicas.get(replica_id) if d is not None else None
            if r is None or not r.url or r.status not in ("ready", "draining"):
                return
            url, secret = r.url, r.secret
        report = replica_http(url, METRICS_PATH, secret, timeout=FINAL_READ_TIMEOUT_S)
        if report is not None:
            report.setdefault("replica_id", replica_id)
            self._record(name, time.time(), [report])

    def _record(self, name: str, at: float, reports: list[object]) -> None:
        with self.book.lock:
            d = self.book.live.get(name)
            if d is None:
                return
            found = [r for r in reports if isinstance(r, dict)]
            listener = self.book.listener
            if self.totals(d, at).record(at, found) and listener is not None:
                listener(name)
