"""cobalt: run each Python function on the hardware it needs.

Example:
    >>> import cobalt as ct
    >>> @ct.electron(gpu="h100", cpus=24, memory="48GB", time_limit="18h")
    ... def finetune(model_name, data):
    ...     return f"{model_name} tuned on {len(data)} rows"
    >>> finetune("tiny", [1, 2])  # outside a lattice an electron is a plain call
    'tiny tuned on 2 rows'
"""

import inspect

from cobalt import executor, llm, status
from cobalt._deploy import deploy, get_deployment, list_deployments
from cobalt._deployment import Deployment
from cobalt._deployment_metrics import DeploymentMetrics
from cobalt._deps import DepsBash, DepsCall, DepsPip
from cobalt._dispatch import cancel, dispatch, dispatch_sync, get_result, sync
from cobalt._electron import Electron, electron
from cobalt._estimate import Estimate, TaskEstimate, estimate
from cobalt._executors import Executor, LocalExecutor
from cobalt._failures import last_failure
from cobalt._graph import wait
from cobalt._lattice import Lattice, lattice
from cobalt._optimize import optimize
from cobalt._optimize_report import OptimizationReport
from cobalt._records import Status, TaskRecord
from cobalt._redispatch import redispatch
from cobalt._result import Result
from cobalt._sentinel import UNSET
from cobalt._service import Service, service
from cobalt_common.deploy import Autoscaling, Batch, Schedule
from cobalt_common.errors import (
    AuthenticationError,
    ConfigError,
    ControllerError,
    ControllerUnavailableError,
    DeploymentError,
    DispatchError,
    EndpointError,
    Error,
    FidelityError,
    GraphError,
    NotFoundError,
    PicklingError,
    SpecError,
    TaskFailedError,
    UnsatisfiableError,
    WaitTimeoutError,
)
from cobalt_common.hardware import HardwareGiven, HardwareSpec
from cobalt_common.version import __version__

__all__ = [
    "UNSET",
    "AuthenticationError",
    "Autoscaling",
    "Batch",
    "ConfigError",
    "ControllerError",
    "ControllerUnavailableError",
    "Deployment",
    "DeploymentError",
    "DeploymentMetrics",
    "DepsBash",
    "DepsCall",
    "DepsPip",
    "DispatchError",
    "Electron",
    "EndpointError",
    "Error",
    "Estimate",
    "Executor",
    "FidelityError",
    "GraphError",
    "HardwareGiven",
    "HardwareSpec",
    "Lattice",
    "LocalExecutor",
    "NotFoundError",
    "OptimizationReport",
    "PicklingError",
    "Result",
    "Schedule",
    "Service",
    "SpecError",
    "Status",
    "TaskEstimate",
    "TaskFailedError",
    "TaskRecord",
    "UnsatisfiableError",
    "WaitTimeoutError",
    "__version__",
    "cancel",
    "deploy",
    "dispatch",
    "dispatch_sync",
    "electron",
    "estimate",
    "executor",
    "get_deployment",
    "get_result",
    "last_failure",
    "lattice",
    "list_deployments",
    "llm",
    "optimize",
    "redispatch",
    "service",
    "status",
    "sync",
    "wait",
]


def _name_as_cobalt() -> None:
    """Every exported class and function prints, pickles and is documented as ``cobalt.X``.

    ``ct.TaskFailedError`` shows as ``cobalt.TaskFailedError`` in a traceback, not by
    the private module that defines it. A pickle names ``cobalt.X`` too, which every
    process that unpickles cobalt objects (the notebook, workers, replicas) can import.
    """
    for name in __all__:
        value = globals()[name]
        if isinstance(value, type) or inspect.isfunction(value):
            value.__module__ = __name__


_name_as_cobalt()
