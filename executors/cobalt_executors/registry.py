"""Executor types by name, for configuration files and client descriptors."""

from __future__ import annotations

from typing import Any

from cobalt_common.errors import SpecError
from cobalt_executors.base import Executor
from cobalt_executors.dask import DaskExecutor
from cobalt_executors.kubernetes import KubernetesExecutor
from cobalt_executors.local import LocalExecutor
from cobalt_executors.ray import RayExecutor
from cobalt_executors.remote import AgentsExecutor
from cobalt_executors.slurm._executor import SlurmExecutor
from cobalt_executors.ssh import SshExecutor

EXECUTOR_TYPES: dict[str, type[Executor]] = {
    cls.type_name: cls
    for cls in (
        LocalExecutor,
        AgentsExecutor,
        SlurmExecutor,
        SshExecutor,
        KubernetesExecutor,
        DaskExecutor,
        RayExecutor,
    )
}


def create_executor(type_name: str, name: str, options: dict[str, Any]) -> Executor:
    """Instantiates an executor; unknown types and options raise SpecError."""
    cls = EXECUTOR_TYPES.get(type_name)
    if cls is None:
        raise SpecError(
            f"unknown executor type {type_name!r} for executor {name!r}; "
            f"known types are: {', '.join(sorted(EXECUTOR_TYPES))}."
        )
    return cls(name, options)
