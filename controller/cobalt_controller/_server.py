"""The controller process: stores, executors, scheduler and gRPC server."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from concurrent import futures

import grpc

from cobalt_common.channel import PINGS, is_loopback
from cobalt_common.paths import controller_file
from cobalt_common.status import Status
from cobalt_common.v1 import agent_pb2_grpc as agent_grpc
from cobalt_common.v1 import controller_pb2_grpc as pb_grpc
from cobalt_common.version import __version__
from cobalt_controller._authorize import Authorizer
from cobalt_controller._blob_store import open_blob_store
from cobalt_controller._config import ControllerConfig
from cobalt_controller._convert import given_from_json, task_from_row
from cobalt_controller._credentials import Credentials
from cobalt_controller._executors import ExecutorPool
from cobalt_controller._interceptor import CredentialInterceptor
from cobalt_controller._lograte import limit_grpc_error_logs
from cobalt_controller._malformed import MalformedRequestInterceptor
from cobalt_controller._payloads import Payloads
from cobalt_controller._servicer import ControllerServicer
from cobalt_controller.agents import (
    AgentKeys,
    AgentsServicer,
    AgentTokens,
    ControllerCertificate,
)
from cobalt_controller.dashboard import Dashboard, deployments_reader
from cobalt_controller.deploy import DeploymentManager, Gateway, recover
from cobalt_controller.dispatch._events import EventHub
from cobalt_controller.dispatch._model import (
    COMPLETED,
    PARAMETER,
    PENDING,
    RUNNING,
    TERMINAL,
    Dispatch,
    Task,
)
from cobalt_controller.dispatch._scheduler import Scheduler
from cobalt_controller.placement import Placement
from cobalt_controller.state import NodeRow, SqlStateStore, StateStore
from cobalt_executors import ExecutorContext
from cobalt_executors.base import AgentEndpoint

log = logging.getLogger("cobalt.controller")
MAX_MESSAGE = 1 << 30
RPC_THREADS = 64
"""Threads for clients', workers' and replicas' calls, beyond those agents hold."""


class ControllerServer:
    """Owns everything the controller runs; ``start()`` then ``wait()``."""

    def __init__(self, config: ControllerConfig, *, state: StateStore | None = None) -> None:
        self.config = config
        config.home.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_urlsafe(32)
        """The user's token, written to controller.json: the only one that administers."""
        self.agent_keys = AgentKeys(config.home / "agent.key")
        """Signs agents' credentials, which outlive a restart (see docs/executors.md)."""
        self.credentials = Credentials(self.token, self.agent_keys)
        """Each task attempt's and replica's own credential (see docs/security.md)."""
        self.state = state or SqlStateStore(config.database_url)
        self.blobs = open_blob_store(config)
        self.payloads = Payloads(self.state, self.blobs, config.inline_limit)
        self._stopped = threading.Event()
        limit_grpc_error_logs()
        self._server = grpc.server(
            # Each connected agent holds a thread; clients keep RPC_THREADS of their own.
            futures.ThreadPoolExecutor(
                max_workers=RPC_THREADS + config.max_agents, thread_name_prefix="cobalt-rpc"
            ),
            interceptors=[
                MalformedRequestInterceptor(),
                CredentialInterceptor(Authorizer(self.credentials, self.state)),
            ],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.so_reuseport", 0),
                # Agents ping, and are pinged: a machine that vanishes closes
                # nothing, and its stream ends when a ping goes unanswered.
                *PINGS,
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
                ("grpc.http2.max_ping_strikes", 0),
            ],
        )
        self.address, self.agent_address, self.fingerprint = self._listen(config)
        self.hub = EventHub()
        self.placement = Placement()
        """Owns executor capacity: the scheduler's tasks and the deployments' replicas
        start through it, and it routes each outcome back by its kind."""
        self.deployments = DeploymentManager(
            self.state, self.payloads, None, self.credentials, self.placement
        )
        self.gateway: Gateway | None = None
        if config.gateway_address:
            self.gateway = Gateway(
                self.deployments, autoscale_interval_s=config.autoscale_interval_s
            )
            self.deployments.gateway = self.gateway

        context = ExecutorContext(
            inline_limit=config.inline_limit,
            output_location=self.blobs.output_location(),
            report=self.placement.report,
            # No token here: warm workers outlive tasks. Each task attempt and
            # replica gets its own credential in its submission's env instead.
            env={"COBALT_CONTROLLER_ADDRESS": self.address},
            work_dir=config.home / "workers",
            agents=AgentEndpoint(self.agent_address, self.fingerprint, self.agent_keys.mint),
            room=self.placement.room_freed,
        )
        self.executors = ExecutorPool(config.executors, context)
        self.scheduler = Scheduler(
            self.state,
            self.payloads,
            self.executors,
            placement=self.placement,
            retry_backoff_s=config.retry_backoff_s,
            retry_backoff_max_s=config.retry_backoff_max_s,
            wait_for_cheaper_s=config.wait_for_cheaper_s,
            credentials=self.credentials,
        )
        self.scheduler.listener = self.hub.publish
        self.dashboard: Dashboard | None = None
        if config.dashboard_address:
            self.dashboard = Dashboard(
                self.state,
                self.token,
                config.dashboard_address,
                deployments=deployments_reader(self.deployments),
            )
            self.deployments.listener = self.dashboard.notify_deployment
            publish, notify = self.hub.publish, self.dashboard.notify

            def listener(d: Dispatch, t: Task | None) -> None:
                publish(d, t)
                notify(d, t)

            self.scheduler.listener = listener
        self.info = {
            "version": __version__,
            "address": self.address,
            "started_at": time.time(),
            "database_url": config.database_url,
        }
        servicer = ControllerServicer(
            self.scheduler,
            self.payloads,
            self.executors,
            self.hub,
            self.info,
            self.request_stop,
            self.deployments,
            AgentTokens(self.agent_keys, self.agent_address, self.fingerprint),
        )
        pb_grpc.add_ControllerServicer_to_server(servicer, self._server)
        agent_grpc.add_AgentsServicer_to_server(
            AgentsServicer(
                self.executors.all, self.agent_keys, self.token, max_agents=config.max_agents
            ),
            self._server,
        )

    def _listen(self, config: ControllerConfig) -> tuple[str, str, str]:
        """Opens the gRPC ports: (local address, agents' address, certificate fingerprint).

        On loopback, one plain-text port serves everyone. Beyond loopback, the
        configured address is TLS only, with the certificate the controller made
        (agents pin its fingerprint), and local clients and workers use a second,
        plain-text port on 127.0.0.1.
        """
        host = config.address.rsplit(":", 1)[0]
        if is_loopback(host.strip("[]")):
            port = self._server.add_insecure_port(config.address)
            if port == 0:
                raise OSError(f"cannot listen on {config.address}")
            address = f"{host}:{port}"
            return address, address, ""
        cert = ControllerCertificate.load_or_create(config.home / "tls")
        credentials = grpc.ssl_server_credentials([(cert.key_pem, cert.cert_pem)])
        port = self._server.add_secure_port(config.address, credentials)
        local = self._server.add_insecure_port("127.0.0.1:0")
        if port == 0 or local == 0:
            raise OSError(f"cannot listen on {config.address}")
        advertised = config.agent_address or (
            f"{socket.getfqdn() if host in ('0.0.0.0', '[::]', '::') else host}:{port}"
        )
        return f"127.0.0.1:{local}", advertised, cert.fingerprint

    def start(self) -> None:
        # Dispatches are resumed (queued) now, but the scheduler places their tasks only
        # once deployments have adopted the replicas that outlived the last controller:
        # a task must not be given the hardware such a replica holds.
        self._recover()
        info = {"address": self.address, "pid": os.getpid(), "token": self.token}
        if self.dashboard is not None:
            self.dashboard.start()
            info["dashboard"] = self.info["dashboard"] = self.dashboard.url
            log.info("dashboard at %s", self.dashboard.url)
        if self.gateway is not None:
            info["gateway"] = self.info["gateway"] = self._start_gateway(self.gateway)
            log.info("deployments gateway at %s", self.gateway.url)
        self._server.start()
        self.deployments.start()
        recover(self.deployments, self.executors)
        self.scheduler.start()
        path = controller_file(self.config.home)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**info, "version": __version__}))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        log.info("controller listening on %s", self.address)

    def _start_gateway(self, gateway: Gateway) -> str:
        """Starts the gateway; port 0 reuses the last run's port for this home when free."""
        host, _, port_text = self.config.gateway_address.rpartition(":")
        port = int(port_text)
        remembered = self.config.home / "gateway.json"
        fallback = False
        if port == 0:
            try:
                port = int(json.loads(remembered.read_text())["port"])
                fallback = True
            except (OSError, ValueError, KeyError, TypeError):
                port = 0
        url = gateway.start(host, port, fallback=fallback)
        if self.config.gateway_address.endswith(":0"):
            remembered.write_text(json.dumps({"port": gateway.port}))
        return url

    def _recover(self) -> None:
        """Resumes dispatches that had not ended when the controller last stopped.

        Finished tasks keep their outputs. A task that was running on an agent (which
        outlives controllers) is taken back when its executor still expects it; any
        other task that was running is run again.
        """
        for row in self.state.unfinished_dispatches():
            try:
                rows = self.state.get_nodes(row.dispatch_id, include_logs=False)
                tasks = [task_from_row(n) for n in rows]
                for t, node in zip(tasks, rows, strict=True):
                    if t.kind == PARAMETER or node.status == COMPLETED:
                        t.status = COMPLETED
                        t.output = self.payloads.ref(node.output_sha256 or node.value_sha256)
                    elif node.status in TERMINAL:
                        t.status = Status(node.status)
                        t.error = node.error
                    else:
                        t.status = PENDING
                        t.candidates = self.executors.candidates(
                            t.hardware, self.executors.resolve(t.executor_ref), t.name
                        )
                        if node.status == RUNNING:
                            self._reclaim(row.dispatch_id, t, node)
                for t in tasks:
                    parents = {i.parent for i in t.inputs if tasks[i.parent].kind != PARAMETER}
                    for p in parents:
                        tasks[p].children.append(t.node_id)
                    t.waiting = sum(1 for p in parents if tasks[p].status != COMPLETED)
                d = Dispatch(
                    row.dispatch_id,
                    row.name,
                    tasks,
                    row.output_node,
                    row.created_at,
                    row.parent_dispatch_id,
                    row.parent_node_id,
                )
                d.status = Status(row.status)
                d.started_at = row.started_at
                d.budget_usd = row.budget_usd
                d.working_dir = row.working_dir
                d.client_runtime = json.loads(row.client_runtime) if row.client_runtime else {}
                d.lattice_sha256, d.inputs_sha256 = row.lattice_sha256, row.inputs_sha256
                d.cost_usd = row.cost_usd
                d.emulated = row.emulated
                self.scheduler.submit_dispatch(d)
                log.info("resumed dispatch %s", row.dispatch_id)
            except Exception:
                log.exception("could not resume dispatch %s", row.dispatch_id)

    def _reclaim(self, dispatch_id: str, t: Task, node: NodeRow) -> None:
        """Marks ``t`` running again when the executor it ran on takes it back."""
        ex = self.executors.named(node.executor)
        given = given_from_json(node.hardware_given)
        if ex is None or given is None or not t.attempts:
            return
        key = f"{dispatch_id}/{t.node_id}/{t.attempts}"
        if self.placement.reclaim_task(ex, key, given):
            t.status = RUNNING
            t.task_key = key
            t.executor = ex.name
            t.given = given
            t.started_at = node.started_at or time.time()
            if node.credential_sha256:  # the task may still call this controller
                t.credential_sha256 = node.credential_sha256
                try:
                    self.credentials.restore(key, node.credential_sha256, t.scope(dispatch_id))
                except ValueError:
                    log.warning("task %s: its stored credential hash is unreadable", key)
            log.info("task %s still runs on executor %s: awaiting its outcome", key, ex.name)

    def request_stop(self) -> None:
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()

    def stop(self) -> None:
        if self.dashboard is not None:
            self.dashboard.stop()
        self._server.stop(grace=1.0)
        if self.gateway is not None:
            self.gateway.stop()
        self.deployments.stop()
        self.scheduler.stop()
        self.executors.teardown()
        self.state.close()
        path = controller_file(self.config.home)
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass


def serve(config: ControllerConfig) -> None:
    import signal
    import sys

    # Many threads hand work to each other (RPC threads, the scheduler, one
    # reader per worker); a short switch interval keeps each hand-off from
    # waiting up to the default 5 ms for the GIL.
    sys.setswitchinterval(0.0002)
    server = ControllerServer(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.request_stop())
    server.start()
    try:
        server.wait()
    finally:
        server.stop()
