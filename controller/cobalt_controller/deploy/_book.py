"""What the deployment manager's parts share: the live deployments and their events.

The manager (:mod:`._manager`) holds one :class:`DeploymentBook` and gives it
to each of its parts (:class:`~._replicas.ReplicaLifecycle`,
:class:`~._metrics_keeper.MetricsKeeper`). Everything in it is read and
changed under :attr:`DeploymentBook.lock`, one re-entrant lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from cobalt_common.checks import brief
from cobalt_common.errors import NotFoundError
from cobalt_controller.deploy._gateway import Gateway
from cobalt_controller.deploy._live import LiveDeployment, LiveReplica
from cobalt_controller.deploy._model_metrics import DeploymentTotals
from cobalt_controller.state import DeploymentEventRow, StateStore

log = logging.getLogger("cobalt.deployments")


class DeploymentBook:
    """The live deployments, their replicas by task key, and the event log.

    Args:
        state: where deployments, replicas and events persist.
        gateway: the HTTP front; None when the controller runs without one.
    """

    def __init__(self, state: StateStore, gateway: Gateway | None) -> None:
        self.state = state
        self.gateway = gateway
        self.live: dict[str, LiveDeployment] = {}
        self.by_key: dict[str, tuple[LiveDeployment, LiveReplica]] = {}
        """Every replica the manager tracks (its deployment's old versions too)."""
        self.totals: dict[str, DeploymentTotals] = {}
        """What each deployment's replicas counted (see :mod:`._metrics_keeper`)."""
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        """Notified when a deployment's status or replicas change."""
        self.closing = False
        """The controller stops: replicas that end are not replaced."""
        self.listener: Callable[[str], None] | None = None
        """Called with a deployment's name after each event recorded for it, under the
        lock: it must return at once (the dashboard's live feed)."""

    def find(self, name: str) -> LiveDeployment:
        d = self.live.get(name)
        if d is None:
            raise NotFoundError(
                f"no deployment named {brief(name)}; `cobalt deployments` lists the running ones."
            )
        return d

    def event(
        self, d: LiveDeployment, kind: str, message: str, inputs: dict[str, Any] | None = None
    ) -> None:
        """Records an event of ``d`` (with the inputs of a decision) and tells the listener."""
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
