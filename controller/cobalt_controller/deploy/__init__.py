"""Deployments: services served over HTTP by replicas the controller runs.

- :mod:`._manager`: deployments and replicas (start, replace, scale, stop, bill).
- :mod:`._gateway`: the async reverse proxy in front of the replicas.
- :mod:`._autoscaler` and :mod:`.policies`: how many replicas, and why.
- :mod:`._recovery`: adopting or restarting replicas after a controller restart.
"""

from cobalt_controller.deploy._autoscaler import Autoscaler, ScaleEvent
from cobalt_controller.deploy._gateway import Gateway
from cobalt_controller.deploy._http import HttpLimits
from cobalt_controller.deploy._live import ACTIVE, FAILED, STARTING, STOPPED, LiveDeployment
from cobalt_controller.deploy._manager import DeploymentManager
from cobalt_controller.deploy._recovery import candidates_for, recover
from cobalt_controller.deploy._routing import Target

__all__ = [
    "ACTIVE",
    "FAILED",
    "STARTING",
    "STOPPED",
    "Autoscaler",
    "DeploymentManager",
    "Gateway",
    "HttpLimits",
    "LiveDeployment",
    "ScaleEvent",
    "Target",
    "candidates_for",
    "recover",
]
