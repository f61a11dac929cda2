"""The deployment manager: deployments, their replicas, and every event.

Replicas are long-running tasks placed through the controller's
:class:`~cobalt_controller.placement.Placement`, which places tasks too: on
the cheapest executor able to run the deployment's hardware spec that has
room now. A replica that does not fit anywhere waits (an event says why),
room is held for it against new tasks (the placement's priority rule), and
it is tried again every :data:`RETRY_S`. Its end comes back through the
placement, routed here by its kind (:meth:`DeploymentManager.on_outcome`):

- an end the manager asked for (drained, scaled down, torn down) is recorded;
- a replica that ends after it was ready is replaced, and the event carries
  its exit reason and last stderr lines;
- a replica that fails before it was ever ready is a start failure: the
  first one of a version no replica of which was ever ready marks the
  deployment FAILED with the traceback as ``error``; later ones retry with
  exponential backoff (1 s doubling, at most 30 s).

Replicas are billed like tasks, by the placement's
:func:`~cobalt_controller.placement.charge`: per started second at the
executor's rate for the hardware given, into the deployment's ``cost_usd``
and the replica rows that ``cost_summary`` reads.

The manager holds its parts: the :class:`~._book.DeploymentBook` (live
deployments, the lock, events) that the others share, the
:class:`~._replicas.ReplicaLifecycle` (start, stop, bill), and the
:class:`~._metrics_keeper.MetricsKeeper` (what the replicas' models count,
:meth:`DeploymentManager.metrics`).

The manager is thread-safe (one re-entrant lock, the book's): RPC threads,
the placement's report threads and the gateway's worker threads call it. It
never blocks the gateway's event loop: the gateway calls it on worker threads.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cobalt_common.checks import brief
from cobalt_common.deploy import Manifest
from cobalt_common.deploy_metrics import MetricsSummary
from cobalt_common.errors import DeploymentError, NotFoundError
from cobalt_common.hardware import HardwareSpec
from cobalt_controller._credentials import Credentials
from cobalt_controller._payloads import Payloads
from cobalt_controller.deploy._autoscaler import ScaleEvent
from cobalt_controller.deploy._book import DeploymentBook
from cobalt_controller.deploy._gateway import Gateway
from cobalt_controller.deploy._live import (
    ACTIVE,
    FAILED,
    STARTING,
    STOPPED,
    LiveDeployment,
    replica_http,
)
from cobalt_controller.deploy._metrics_keeper import MetricsKeeper
from cobalt_controller.deploy._replicas import ReplicaLifecycle
from cobalt_controller.deploy.policies import Metrics, Schedules
from cobalt_controller.placement import Placement, WorkKind
from cobalt_controller.state import StateStore
from cobalt_executors import Executor, TaskOutcome

log = logging.getLogger("cobalt.deployments")

RETRY_S = 0.5
"""How often replicas waiting for capacity are tried again."""
HEALTH_EVERY_S = 5.0
"""How often adopted replicas (no executor watches them) are health-checked."""
STDERR_LINES = 20
ENDED_LOGS_KEPT = 8
"""Ended replicas whose last output is kept per deployment (until a restart)."""


@dataclass(frozen=True, slots=True)
class ReplicaLogs:
    """What one replica printed; endpoint errors are in ``stderr`` under their id."""

    replica_id: str
    status: str
    stdout: str
    stderr: str
    ended_at: float = 0.0


class DeploymentManager:
    """Creates, scales, replaces and tears down deployments.

    Args:
        state: where deployments, replicas and events persist.
        payloads: the pickled replica entries and arguments (opaque bytes).
        gateway: the HTTP front; None when ``gateway_address`` is "".
        credentials: mints each replica's own credential; None: replicas get none.
        placement: the owner of executor capacity, shared with the scheduler; the
            manager takes its replica outcomes. None: one of its own (tests).
    """

    def __init__(
        self,
        state: StateStore,
        payloads: Payloads,
        gateway: Gateway | None,
        credentials: Credentials | None = None,
        placement: Placement | None = None,
    ) -> None:
        self.state = state
        self.payloads = payloads
        self.credentials = credentials
        self.placement = placement if placement is not None else Placement()
        self.book = DeploymentBook(state, gateway)
        self.lifecycle = ReplicaLifecycle(self.book, payloads, self.placement, credentials)
        self.metrics_keeper = MetricsKeeper(self.book)
        self.live = self.book.live
        self._lock = self.book.lock
        self._changed = self.book.changed
        self._stop = threading.Event()
        self._outcomes: queue.SimpleQueue[TaskOutcome | None] = queue.SimpleQueue()
        """Replica outcomes to handle; None only wakes the maintenance thread to stop."""
        self._thread = threading.Thread(target=self._run, name="cobalt-deployments", daemon=True)
        self._ended_logs: dict[str, deque[ReplicaLogs]] = {}
        self.placement.route(WorkKind.REPLICA, self.report)

    @property
    def gateway(self) -> Gateway | None:
        """The HTTP front (set once the controller has made it)."""
        return self.book.gateway

    @gateway.setter
    def gateway(self, gateway: Gateway | None) -> None:
        self.book.gateway = gateway

    @property
    def listener(self) -> Callable[[str], None] | None:
        """Called with a deployment's name after each event recorded for it, under the
        manager's lock: it must return at once (the dashboard's live feed)."""
        return self.book.listener

    @listener.setter
    def listener(self, listener: Callable[[str], None] | None) -> None:
        self.book.listener = listener

    def find(self, name: str) -> LiveDeployment:
        return self.book.find(name)

    def event(
        self, d: LiveDeployment, kind: str, message: str, inputs: dict[str, Any] | None = None
    ) -> None:
        self.book.event(d, kind, message, inputs)

    def reconcile(self, d: LiveDeployment) -> None:
        """Starts or stops replicas toward ``d.desired``; old versions roll over."""
        self.lifecycle.reconcile(d)

    def metrics(self, name: str, *, fresh: bool = False) -> MetricsSummary:
        """The deployment's metrics now (see :meth:`MetricsKeeper.metrics`)."""
        return self.metrics_keeper.metrics(name, fresh=fresh)

    # -- deployments (RPC threads) ------------------------------------------------------

    def create(
        self,
        manifest: Manifest,
        manifest_json: str,
        service_sha256: str,
        args: list[tuple[int, str, str]],
        spec: HardwareSpec,
        executor_ref: str,
        candidates: tuple[Executor, ...],
        working_dir: str,
    ) -> LiveDeployment:
        """Deploys ``manifest.name``, replacing a deployment of that name that is not stopped."""
        if self.gateway is None:
            raise DeploymentError(
                "deployments need the gateway, which is off on this controller "
                '([controller] gateway_address = ""); set gateway_address, for example '
                '"127.0.0.1:0", in config.toml and restart the controller.',
                name=manifest.name,
            )
        now = time.time()
        with self._lock:
            name = manifest.name
            old = self.live.get(name)
            if old is not None and old.status == STOPPED:
                old = None
            stored = self.state.get_deployment(name) if old is None else None
            version = (old.version if old else stored.version if stored else 0) + 1
            d = LiveDeployment(
                name=name,
                status=STARTING,
                version=version,
                manifest=manifest,
                manifest_json=manifest_json,
                service_sha256=service_sha256,
                args=args,
                spec=spec,
                executor_ref=executor_ref,
                candidates=candidates,
                token=old.token if old else secrets.token_urlsafe(32),
                working_dir=working_dir,
                created_at=old.created_at if old else now,
                updated_at=now,
                cost_usd=old.cost_usd if old else 0.0,
                emulated=old.emulated if old else False,
                desired=self.initial_replicas(manifest, now),
            )
            if old is None:
                self.metrics_keeper.count_from_zero(d)
            else:
                d.replicas = old.replicas
                d.openapi_json = old.openapi_json
                for r in d.replicas.values():
                    self.book.by_key[r.task_key] = (d, r)
            self.live[name] = d
            self.state.put_deployment(d.to_row())
            what = f"version {version} replaces version {old.version}" if old else "created"
            self.event(
                d,
                "deployed",
                f"deployment {name} {what}: {len(manifest.routes)} route(s), "
                f"{spec.describe()} per replica, starting {d.desired} replica(s) "
                f"({initial_reason(manifest, time.time())}).",
                {"hardware": spec.to_dict(), "autoscaling": manifest.autoscaling.to_dict()},
            )
            self.gateway.configure(d.target())
            self.reconcile(d)
            self._changed.notify_all()
            return d

    @staticmethod
    def initial_replicas(manifest: Manifest, now: float) -> int:
        """``max(min_replicas, open schedule floors, 1)``: a new version always
        starts one replica, so that a broken initializer fails the deploy."""
        a = manifest.autoscaling
        return min(a.max_replicas, max(a.min_replicas, _schedule_floor(manifest, now), 1))

    def wait(self, name: str, wait_s: float) -> LiveDeployment:
        """The deployment, after it left STARTING or ``wait_s`` passed."""
        deadline = time.monotonic() + max(0.0, wait_s)
        with self._changed:
            d = self.find(name)
            while d.status == STARTING:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
                d = self.find(name)
            return d

    def teardown(self, name: str) -> LiveDeployment:
        """Stops routing to the deployment; its replicas drain, then stop."""
        with self._lock:
            d = self.find(name)
            if d.status == STOPPED:
                return d
            d.status = STOPPED
            d.desired = 0
            d.updated_at = time.time()
            self.state.update_deployment(
                name, status=STOPPED, desired_replicas=0, updated_at=d.updated_at
            )
            if self.gateway is not None:
                self.gateway.remove(name)
            for r in list(d.replicas.values()):
                if r.status == "ready":
                    # gateway.remove drains ready replicas and reports each when idle.
                    r.stopping, r.status = True, "draining"
                    self.state.update_replica(r.replica_id, status="draining")
                elif r.status == "starting":
                    r.stopping = True
                    self.lifecycle.kill(d, r)
            self.event(d, "teardown", f"deployment {name} was torn down; its replicas stop.")
            self._changed.notify_all()
            return d

    def rotate_token(self, name: str) -> LiveDeployment:
        with self._lock:
            d = self.find(name)
            if d.status == STOPPED:
                raise NotFoundError(
                    f"deployment {brief(name)} was torn down; deploy it again first."
                )
            d.token = secrets.token_urlsafe(32)
            d.updated_at = time.time()
            self.state.update_deployment(name, token=d.token, updated_at=d.updated_at)
            if self.gateway is not None:
                self.gateway.configure(d.target())
            self.event(d, "token_rotated", "the token was rotated; the old one no longer works.")
            return d

    # -- executor reports (any thread) ----------------------------------------------------

    def report(self, outcome: TaskOutcome) -> None:
        """Queues a replica's outcome for the manager's thread.

        Executors may report while holding their own locks, and the manager
        calls executors while holding its lock: handling the outcome on
        another thread keeps the two from waiting on each other.
        """
        self._outcomes.put(outcome)

    def on_outcome(self, o: TaskOutcome) -> None:
        """A replica's task ended (the placement routes replicas' outcomes here)."""
        with self._lock:
            closing = self.book.closing
            found = self.book.by_key.get(o.task_key)
            if found is None:
                return
            d, r = found
            if o.started_at and r.started_at is None:
                r.started_at = o.started_at
            ended_at = o.ended_at or time.time()
            if o.hardware_given.cpus or o.hardware_given.gpu:
                r.given = o.hardware_given
            if o.stdout or o.stderr:
                kept = self._ended_logs.setdefault(d.name, deque(maxlen=ENDED_LOGS_KEPT))
                status = "stopped" if r.stopping or closing else "failed"
                kept.appendleft(ReplicaLogs(r.replica_id, status, o.stdout, o.stderr, ended_at))
            if r.stopping or closing:
                self.lifecycle.ended(d, r, "stopped", ended_at)
                self.event(d, "replica_stopped", f"replica {r.replica_id} stopped.")
            elif r.ready_at is None:
                detail = o.error or f"the replica ended ({o.status.lower()}) before it was ready."
                self.lifecycle.start_failed(d, r, _with_stderr(detail, o.stderr))
            else:
                why = o.reason or o.status.lower()
                r.error = o.error or f"the replica's task ended {o.status.lower()}."
                self.lifecycle.ended(d, r, "failed", ended_at)
                self.event(
                    d,
                    "replica_failed",
                    f"replica {r.replica_id} ended unexpectedly ({why}); a new one replaces it. "
                    + _with_stderr(r.error, o.stderr),
                    {"status": o.status.lower(), "reason": o.reason},
                )
            self.reconcile(d)

    def logs(self, name: str, tail_bytes: int) -> list[ReplicaLogs]:
        """The output of live replicas (asked over HTTP), then of recently ended ones."""
        with self._lock:
            d = self.live.get(name)
            if d is None and self.state.get_deployment(name) is None:
                raise NotFoundError(
                    f"no deployment named {brief(name)}; `cobalt deployments` lists them."
                )
            live = [r for r in (d.replicas.values() if d else ()) if r.url and r.live]
            ended = list(self._ended_logs.get(name, ()))
        found = []
        for r in live:
            answer = replica_http(r.url, "/_cobalt/logs", r.secret, timeout=2.0)
            if answer is None and r.status != "ready":
                continue  # stopping: its output arrives with its end
            answer = answer or {}
            found.append(
                ReplicaLogs(
                    r.replica_id,
                    r.status,
                    str(answer.get("stdout", ""))[-tail_bytes:],
                    str(answer.get("stderr", "(the replica did not answer)"))[-tail_bytes:],
                )
            )
        found += [
            ReplicaLogs(
                e.replica_id, e.status, e.stdout[-tail_bytes:], e.stderr[-tail_bytes:], e.ended_at
            )
            for e in ended
        ]
        return found

    def on_replica_ready(
        self, name: str, replica_id: str, url: str, pid: int, openapi_json: str
    ) -> bool:
        """The ReplicaReady RPC: records the replica and routes to it; False: exit."""
        with self._lock:
            d = self.live.get(name)
            r = d.replicas.get(replica_id) if d is not None else None
            ex = r.executor if r is not None else None
        if ex is not None and r is not None:  # outside the lock: it may open a tunnel
            try:
                url = ex.reachable_url(r.task_key, url)
            except Exception as exc:
                log.error("replica %s at %s cannot be reached: %s", r.task_key, url, exc)
                return False
        with self._lock:
            d = self.live.get(name)
            r = d.replicas.get(replica_id) if d is not None else None
            if d is None or r is None or r.stopping or d.status == STOPPED or self.book.closing:
                return False
            now = time.time()
            r.status, r.url, r.pid, r.ready_at = "ready", url, pid, now
            self.state.update_replica(replica_id, status="ready", url=url, pid=pid, ready_at=now)
            if r.version == d.version:
                d.ready_this_version = True
                d.failures = 0
                d.retry_at = 0.0
                if openapi_json and openapi_json != d.openapi_json:
                    d.openapi_json = openapi_json
                    self.state.update_deployment(name, openapi_json=openapi_json)
                if d.status != ACTIVE:
                    d.status, d.error, d.updated_at = ACTIVE, "", now
                    self.state.update_deployment(name, status=ACTIVE, error="", updated_at=now)
            took = f" after {now - r.started_at:.1f} s" if r.started_at else ""
            self.event(d, "replica_ready", f"replica {replica_id} is ready at {url}{took}.")
            if self.gateway is not None:
                self.gateway.configure(d.target())
                self.gateway.add_replica(name, replica_id, url, r.secret)
            self.reconcile(d)
            self._changed.notify_all()
            return True

    # -- the gateway's calls (gateway worker threads) -------------------------------------

    def wake(self, name: str) -> None:
        with self._lock:
            d = self.live.get(name)
            if d is None or d.status in (STOPPED, FAILED) or d.desired > 0:
                return
            d.desired = 1
            self.state.update_deployment(name, desired_replicas=1)
            self.event(
                d,
                "scale_up",
                "0 -> 1 replica(s): a request arrived while no replica ran (scale from zero).",
                {"target": 1, "wanted": 1},
            )
            self.reconcile(d)

    def scaled(self, name: str, target: int | None, events: list[ScaleEvent]) -> None:
        events = self.metrics_keeper.keep_readings(name, events)
        with self._lock:
            d = self.live.get(name)
            if d is None or d.status == STOPPED:
                return
            for e in events:
                self.event(d, e.kind, e.message, e.inputs)
            if target is not None and target != d.desired:
                d.desired = target
                self.state.update_deployment(name, desired_replicas=target)
                self.reconcile(d)

    def replica_suspect(self, name: str, replica_id: str) -> None:
        with self._lock:
            d = self.live.get(name)
            r = d.replicas.get(replica_id) if d is not None else None
            if d is None or r is None:
                return
            url, secret = r.url, r.secret
        health = replica_http(url, "/_cobalt/health", secret, timeout=1.0)
        if health is not None and health.get("replica_id") == replica_id:
            if self.gateway is not None:
                self.gateway.clear_suspect(name, replica_id)
            return
        with self._lock:
            if not r.live or r.stopping:
                return
            self.event(
                d,
                "replica_lost",
                f"requests could not reach replica {replica_id} and it does not answer its "
                "health check; it is stopped and replaced.",
            )
            if r.adopted:
                self.lifecycle.ended(d, r, "failed", time.time())
                self.reconcile(d)
            elif r.executor is not None:
                # Its outcome arrives as an unexpected end and a new one replaces it.
                self.placement.cancel(r.task_key, "cancelled")

    def replica_drained(self, name: str, replica_id: str) -> None:
        self.metrics_keeper.read_last(name, replica_id)
        with self._lock:
            for d in (self.live.get(name), *self._owners(name)):
                r = d.replicas.get(replica_id) if d is not None else None
                if d is not None and r is not None and r.live:
                    self.lifecycle.kill(d, r)
                    return

    def _owners(self, name: str) -> list[LiveDeployment]:
        return list({id(d): d for d, _ in self.book.by_key.values() if d.name == name}.values())

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        """Handles outcomes; retries replicas that wait for capacity or back off;
        health-checks adopted ones."""
        last_retry = last_health = time.monotonic()
        while not self._stop.is_set():
            try:
                try:
                    outcome = self._outcomes.get(timeout=RETRY_S)
                    while outcome is not None:
                        self.on_outcome(outcome)
                        outcome = self._outcomes.get_nowait()
                except queue.Empty:
                    pass
                if self._stop.is_set():
                    break
                if time.monotonic() - last_retry >= RETRY_S:
                    last_retry = time.monotonic()
                    self._retry()
                if time.monotonic() - last_health >= HEALTH_EVERY_S:
                    last_health = time.monotonic()
                    self._check_adopted()
            except Exception:
                log.exception("deployment maintenance failed")

    def _retry(self) -> None:
        with self._lock:
            for d in list(self.live.values()):
                if d.status == STOPPED:
                    continue
                for r in list(d.replicas.values()):
                    if r.status == "starting" and not r.submitted and not r.stopping:
                        self.lifecycle.submit(d, r)
                self.reconcile(d)

    def _check_adopted(self) -> None:
        with self._lock:
            adopted = [
                (d.name, r.replica_id)
                for d in self.live.values()
                for r in d.replicas.values()
                if r.adopted and r.status == "ready"
            ]
        for name, replica_id in adopted:
            self.replica_suspect(name, replica_id)

    def stop(self, timeout: float = 5.0) -> None:
        """Stops every replica (the deployments stay, and start again with the controller)."""
        self._stop.set()
        self._outcomes.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._lock:
            self.book.closing = True
            for d in list(self.live.values()):
                for r in list(d.replicas.values()):
                    if r.live:
                        r.stopping = True
                        self.lifecycle.kill(d, r)
        deadline = time.monotonic() + timeout
        while self.book.by_key and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                outcome = self._outcomes.get(timeout=0.1)
                if outcome is not None:
                    self.on_outcome(outcome)
        with self._lock:
            for d, r in list(self.book.by_key.values()):
                self.lifecycle.ended(d, r, "stopped", time.time())


def _schedule_floor(manifest: Manifest, now: float) -> int:
    schedules = manifest.autoscaling.schedules
    return Schedules(tuple(schedules)).floor(Metrics(now=now)) if schedules else 0


def initial_reason(manifest: Manifest, now: float) -> str:
    """Why a new version starts with the replicas it does, in words."""
    a = manifest.autoscaling
    floor = _schedule_floor(manifest, now)
    parts = [f"min_replicas {a.min_replicas}"]
    if floor:
        parts.append(f"an open schedule's floor of {floor}")
    parts.append(f"at least 1 to check the initializer, at most max_replicas {a.max_replicas}")
    return ", ".join(parts)


def _with_stderr(text: str, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()][-STDERR_LINES:]
    if not lines:
        return text
    return text.rstrip() + "\n--- last stderr lines ---\n" + "\n".join(lines)
