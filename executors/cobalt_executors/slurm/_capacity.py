"""Whether a Slurm cluster could ever run a task, decided by cobalt, not by Slurm.

Slurm refuses some impossible jobs at submit (a gres type no node has, more
memory than any node), but accepts others and leaves them PENDING forever:
``-c 3`` on 2-CPU nodes waits with reason ``PartitionConfig``, a time limit
beyond the partition's with ``PartitionTimeLimit``. So cobalt decides from
``scontrol show node`` and ``scontrol show partition``, once per refresh, and
refuses such a task at dispatch with a message that describes the largest node.

A job runs on one node here (cobalt asks for one task per job), so a spec fits
when a single node of the partition has all it needs. Nodes that are down or
drained still count: they may come back, and "ever" is the question.

Example:
    >>> from cobalt_common.hardware import HardwareSpec
    >>> from cobalt_executors.slurm._parse import NodeInfo, PartitionInfo
    >>> node = NodeInfo("vm", cpus=2, real_memory_mb=8000, gres={"h100": 2}, partitions=("debug",))
    >>> capacity = Capacity.of([node], [PartitionInfo("debug", default=True)])
    >>> capacity.can_ever_run(HardwareSpec(gpu="h100", gpus=2))
    True
    >>> capacity.can_ever_run(HardwareSpec(cpus=3))  # Slurm would leave it pending forever
    False
    >>> capacity.describe_largest()
    'node vm: 2 CPUs, 7.8 GB, GPUs h100:2'
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from cobalt_common.errors import UnsatisfiableError
from cobalt_common.hardware import HardwareSpec, format_duration, format_memory
from cobalt_executors.slurm._parse import NodeInfo, PartitionInfo
from cobalt_executors.slurm._sbatch import SbatchOptions

__all__ = ["Capacity"]


def _cpus(spec: HardwareSpec) -> int:
    return max(1, math.ceil(spec.cpus))


def _gpus_text(node: NodeInfo) -> str:
    return ", ".join(f"{kind or 'gpu'}:{count}" for kind, count in sorted(node.gres.items()))


def _node_text(node: NodeInfo) -> str:
    parts = [f"{node.cpus} CPU{'s' if node.cpus != 1 else ''}", format_memory(node.real_memory_mb)]
    parts.append(f"GPUs {_gpus_text(node)}" if node.gres else "no GPUs")
    return f"node {node.name}: {', '.join(parts)}"


@dataclass(frozen=True, slots=True)
class Capacity:
    """The nodes a Slurm executor's jobs may land on, and what each can hold.

    Attributes:
        nodes: the nodes of the partition jobs go to.
        partition: that partition's name; None when the cluster names none.
        max_time_s: the partition's time limit; None for none.
        options: the executor's sbatch options, for the site's gres type of
            each cobalt GPU.
        partitions: every partition's name, for messages.
    """

    nodes: tuple[NodeInfo, ...]
    partition: str | None = None
    max_time_s: float | None = None
    options: SbatchOptions = field(default_factory=SbatchOptions)
    partitions: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        nodes: Iterable[NodeInfo],
        partitions: Iterable[PartitionInfo] = (),
        options: SbatchOptions | None = None,
    ) -> Capacity:
        """The capacity of ``options.partition``, or of the default partition
        when the options name none (every node when no partition is default)."""
        options = options or SbatchOptions()
        nodes, partitions = tuple(nodes), tuple(partitions)
        chosen = options.partition
        if chosen is None:
            chosen = next((p.name for p in partitions if p.default), None)
        info = next((p for p in partitions if p.name == chosen), None)
        if chosen is not None:
            nodes = tuple(node for node in nodes if chosen in node.partitions)
        return cls(
            nodes=nodes,
            partition=chosen,
            max_time_s=info.max_time_s if info is not None else None,
            options=options,
            partitions=tuple(p.name for p in partitions),
        )

    def fits(self, node: NodeInfo, spec: HardwareSpec) -> bool:
        """Whether ``node`` alone has everything ``spec`` needs."""
        gpus_ok = spec.gpu is None or node.gpus_of(self.options.gres_type(spec.gpu)) >= spec.gpus
        return node.cpus >= _cpus(spec) and node.real_memory_mb >= spec.memory_mb and gpus_ok

    def refusal(self, spec: HardwareSpec) -> str | None:
        """Why this partition can never run ``spec``, or None when it can."""
        where = f"Slurm partition {self.partition!r}" if self.partition else "the Slurm cluster"
        if not self.nodes:
            known = ", ".join(self.partitions) or "none"
            return f"{where} has no nodes (partitions: {known}); set the executor's partition."
        limit, most = spec.time_limit_s, self.max_time_s
        if limit is not None and most is not None and limit > most:
            return (
                f"{where} allows jobs at most {format_duration(most)}, and the task's time "
                f"limit is {format_duration(limit)}; lower the time limit or choose a "
                "partition that allows it."
            )
        if any(self.fits(node, spec) for node in self.nodes):
            return None
        short = []
        if all(node.cpus < _cpus(spec) for node in self.nodes):
            short.append(f"{_cpus(spec)} CPUs")
        if all(node.real_memory_mb < spec.memory_mb for node in self.nodes):
            short.append(f"{format_memory(spec.memory_mb)} of memory")
        if spec.gpu is not None:
            site = self.options.gres_type(spec.gpu)
            if all(node.gpus_of(site) < spec.gpus for node in self.nodes):
                short.append(f"{spec.gpus} GPUs of gres type {site or '(any)'!r}")
        lacking = " or ".join(short) if short else "all of it on one node"
        return (
            f"{where} can never run a task that needs {spec.describe()}: no node has "
            f"{lacking}. Largest: {self.describe_largest()}. Lower the task's hardware, map "
            "its GPU with the executor's gpu_types, or send it to another executor."
        )

    def can_ever_run(self, spec: HardwareSpec) -> bool:
        """Whether some node of the partition could run ``spec`` once it is free."""
        return self.refusal(spec) is None

    def check(self, spec: HardwareSpec) -> None:
        """Raises :class:`UnsatisfiableError` saying why, when ``spec`` can never run here."""
        reason = self.refusal(spec)
        if reason is not None:
            raise UnsatisfiableError(reason)

    def sbatch_arguments(self, spec: HardwareSpec, *, name: str | None = None) -> list[str]:
        """The ``sbatch`` options of one job of ``spec``, after :meth:`check`: a
        spec the partition can never run raises here and is never submitted."""
        self.check(spec)
        return self.options.arguments(spec, name=name, max_time_s=self.max_time_s)

    def describe_largest(self) -> str:
        """The most a node offers, for messages: the node itself when one node
        has the most of everything, otherwise the most of each by node."""
        if not self.nodes:
            return "no nodes"
        by_cpus = max(self.nodes, key=lambda node: node.cpus)
        by_memory = max(self.nodes, key=lambda node: node.real_memory_mb)
        kinds = sorted({kind for node in self.nodes for kind in node.gres})
        by_gpu = {kind: max(self.nodes, key=lambda node: node.gres.get(kind, 0)) for kind in kinds}
        best = {by_cpus.name, by_memory.name, *(node.name for node in by_gpu.values())}
        if len(best) == 1:
            return _node_text(by_cpus)
        parts = [
            f"{by_cpus.cpus} CPUs ({by_cpus.name})",
            f"{format_memory(by_memory.real_memory_mb)} ({by_memory.name})",
            *(f"{kind or 'gpu'}:{node.gres[kind]} ({node.name})" for kind, node in by_gpu.items()),
        ]
        return "at most " + ", ".join(parts) + " per node"
