"""Executor classes under Covalent's names: ``ct.executor.SlurmExecutor(...)``.

``import cobalt as ct`` gives ``ct.executor``; ``from cobalt.executor import
DaskExecutor`` works too. :class:`LocalExecutor` is ``ct.LocalExecutor``. The
cluster classes do not connect anywhere: each picks one of the executors the
controller's ``config.toml`` configures (see their docstrings, and the
"Covalent's executor classes" section of docs/executors.md).

Example:
    >>> import cobalt as ct
    >>> ct.executor.LocalExecutor is ct.LocalExecutor
    True
"""

from cobalt._cluster_executors import DaskExecutor, KubernetesExecutor, SlurmExecutor, SSHExecutor
from cobalt._executors import Executor, LocalExecutor

__all__ = [
    "DaskExecutor",
    "Executor",
    "KubernetesExecutor",
    "LocalExecutor",
    "SSHExecutor",
    "SlurmExecutor",
]


def _name_as_cobalt_executor() -> None:
    """The Covalent-named classes print and pickle as ``cobalt.executor.X``."""
    for name in ("DaskExecutor", "KubernetesExecutor", "SlurmExecutor", "SSHExecutor"):
        globals()[name].__module__ = __name__


_name_as_cobalt_executor()
