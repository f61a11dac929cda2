"""cobalt's executors and the worker runtime.

An executor turns a task the controller placed on it into a running process
somewhere (this machine, a Dask cluster, a Slurm job, a Kubernetes pod) and
reports the outcome. :mod:`cobalt_executors.base` documents the interface;
:mod:`cobalt_executors.registry` maps type names to implementations.
"""

from cobalt_executors.base import (
    Allocation,
    Executor,
    ExecutorContext,
    HardwareGiven,
    Inventory,
    PayloadRef,
    TaskArg,
    TaskOutcome,
    TaskSubmission,
)

__all__ = [
    "Allocation",
    "Executor",
    "ExecutorContext",
    "HardwareGiven",
    "Inventory",
    "PayloadRef",
    "TaskArg",
    "TaskOutcome",
    "TaskSubmission",
]
