"""Each executor type's name and the options it accepts, written once.

The SDK's descriptors (``ct.LocalExecutor(...)``), the controller's
``config.toml`` checks and the executor implementations in
``cobalt_executors`` all read this table, so that an option added to an
executor is accepted everywhere or nowhere. Nothing here imports an
executor: the SDK reads it without loading executor code.
"""

from __future__ import annotations

from dataclasses import dataclass

COMMON_OPTIONS = frozenset({"prices"})
"""Options every executor type accepts, besides its own."""


@dataclass(frozen=True, slots=True)
class ExecutorType:
    """One executor type.

    Attributes:
        name: the type's name (``type = "local"`` in ``config.toml``, the ``type``
            of a descriptor on the wire).
        options: the type's own options, accepted both from ``config.toml`` and
            from a client's descriptor.
        config_only: options only the controller's ``config.toml`` may set:
            choices about the controller's machine that a client's descriptor
            does not make.
    """

    name: str
    options: frozenset[str]
    config_only: frozenset[str] = frozenset()

    @property
    def client_options(self) -> frozenset[str]:
        """What a client's descriptor of this type accepts."""
        return self.options | COMMON_OPTIONS

    @property
    def config_options(self) -> frozenset[str]:
        """What a ``config.toml`` table of this type accepts."""
        return self.options | self.config_only | COMMON_OPTIONS


LOCAL = ExecutorType(
    "local",
    options=frozenset({"workers", "cpus", "memory", "emulate_gpus"}),
    config_only=frozenset({"cgroups"}),
)

AGENTS = ExecutorType(
    "agents",
    options=frozenset(),
    config_only=frozenset({"reconnect_grace_s", "blob_dir", "prefetch"}),
)
"""Machines attached by hand: each runs ``cobalt agent`` and dials the controller."""

SLURM = ExecutorType(
    "slurm",
    options=frozenset(),
    config_only=frozenset(
        {
            "reconnect_grace_s",
            "blob_dir",
            "prefetch",
            "slurm_conf",
            "mode",
            "python",
            "partition",
            "account",
            "qos",
            "gpu_types",
            "sbatch_options",
            "time_margin",
            "max_pilots",
            "pilot_cpus",
            "pilot_memory",
            "pilot_time",
            "replica_time",
            "idle_timeout_s",
            "pilot_log_dir",
            "emulate_gpus",
        }
    ),
)
"""A Slurm cluster: agents run in ``sbatch`` allocations (pilots), or one job per task."""

SSH = ExecutorType(
    "ssh",
    options=frozenset(),
    config_only=frozenset(
        {"hosts", "tunnel", "workers", "reconnect_grace_s", "blob_dir", "prefetch"}
    ),
)
"""The user's own machines reached over SSH: the executor starts an agent on each.
Every option is the controller's to set: a client's descriptor must not make the
controller log in anywhere with its keys."""

DASK = ExecutorType(
    "dask",
    options=frozenset(),
    config_only=frozenset(
        {
            "address",
            "gpu_resources",
            "emulate_gpus",
            "python",
            "workers",
            "connect_timeout_s",
            "reconnect_grace_s",
            "blob_dir",
            "prefetch",
        }
    ),
)
"""A user's running Dask cluster: the executor starts an agent on each worker, as a
long-running Dask task. Every option is the controller's: a client's descriptor must
not point the controller at a cluster."""

RAY = ExecutorType(
    "ray",
    options=frozenset(),
    config_only=frozenset(
        {
            "address",
            "token_file",
            "gpu_resources",
            "python",
            "agents_per_node",
            "reconnect_grace_s",
            "blob_dir",
            "prefetch",
        }
    ),
)
"""A user's Ray cluster: the executor starts an agent in an actor on each node. Every
option is the controller's to set: a client must not point it at another cluster."""

KUBERNETES = ExecutorType(
    "kubernetes",
    options=frozenset(),
    config_only=frozenset(
        {
            "kubeconfig",
            "context",
            "namespace",
            "image",
            "image_pull_policy",
            "image_pull_secrets",
            "service_account",
            "labels",
            "annotations",
            "node_selector",
            "gpu_types",
            "gpu_label",
            "gpu_resource",
            "largest_node",
            "time_margin",
            "ttl_after_finished_s",
            "mode",
            "python",
            "max_pilots",
            "pilot_cpus",
            "pilot_memory",
            "pilot_time",
            "replica_time",
            "idle_timeout_s",
            "emulate_gpus",
            "reconnect_grace_s",
            "blob_dir",
            "prefetch",
        }
    ),
)
"""A Kubernetes cluster: agents run in pilot pods, or one Job per task. Every option is
the controller's: a client's descriptor must not point the controller at a cluster."""

EXECUTOR_TYPES: dict[str, ExecutorType] = {
    t.name: t for t in (LOCAL, AGENTS, SLURM, SSH, KUBERNETES, DASK, RAY)
}
"""Every executor type, by name."""
