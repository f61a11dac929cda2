"""Dask: cobalt agents on the workers of a user's running Dask cluster.

- ``_executor``: the executor. It connects to the scheduler, starts one agent
  per worker as a long-running Dask task, and places tasks on the agents that
  dial in, as every remote executor does.
- ``_workers``: a worker as the scheduler describes it, and the hardware its
  agent declares (threads as CPUs, its memory limit, GPU resources as GPUs).
- ``_agent_task``: the function that runs on a worker: the agent, as a
  subprocess that dies with its worker.

``distributed`` is imported only when the executor is set up, so cobalt works
without the ``dask`` extra.
"""

from __future__ import annotations

from cobalt_executors.dask._executor import DaskExecutor

__all__ = ["DaskExecutor"]
