"""Ray: cobalt agents on a user's existing Ray cluster.

- ``_executor``: the executor, which starts the driver and an agent per node.
- ``_driver``: the Ray driver process beside the controller (the only module that
  imports ``ray``, and only when run).
- ``_actor``: the actor that holds a node's resources and runs its agent.
- ``_nodes``: a node's resources as the agent's hardware, and ``gpu_resources``.
"""

from __future__ import annotations

from cobalt_executors.ray._executor import RayExecutor

__all__ = ["RayExecutor"]
