"""The controller's read-only web dashboard: dispatches, tasks, logs, deployments and cost, live.

:class:`Dashboard` serves it from inside the controller; the controller
writes its address to ``controller.json`` as ``"dashboard"``, and every
request needs the controller's token (see :mod:`._auth`).
"""

from cobalt_controller.dashboard._deployments import reader as deployments_reader
from cobalt_controller.dashboard._serve import Dashboard

__all__ = ["Dashboard", "deployments_reader"]
