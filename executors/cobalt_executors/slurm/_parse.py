"""What Slurm's commands print, parsed into typed values.

Pure functions over the text of ``scontrol show node -o``, ``scontrol show
partition -o``, ``squeue -h -o`` (in :data:`SQUEUE_FORMAT`) and ``sbatch
--parsable``, so that they are tested on captured output without a cluster.

Example:
    >>> node = parse_nodes(
    ...     "NodeName=vm CPUTot=2 RealMemory=8000 Gres=gpu:h100:2(S:0-1) "
    ...     "State=IDLE Partitions=debug"
    ... )[0]
    >>> node.cpus, node.real_memory_mb, dict(node.gres), node.partitions
    (2, 8000, {'h100': 2}, ('debug',))
    >>> parse_slurm_time_s("1-02:00:00"), parse_slurm_time_s("UNLIMITED")
    (93600.0, None)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

SQUEUE_FORMAT = "%i|%T|%N|%L|%r"
"""The ``squeue -o`` format :func:`parse_jobs` reads: job id, long state, nodes,
time left and reason. The reason comes last: it is the one free-text field."""

ENDED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)
"""Job states after which a job runs no more (``squeue -t all`` shows them for
``MinJobAge`` seconds; after that the job is absent)."""

_UNUSABLE_NODE_STATES = ("DOWN", "DRAIN", "FAIL", "INVAL", "FUTURE", "NOT_RESPONDING")

_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_]*)=")
_GRES_ITEM = re.compile(r"([^,(]+)(?:\([^)]*\))?")
_COUNT = re.compile(r"(\d+)([KMGT]?)")
_COUNT_SUFFIX = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_UNLIMITED = frozenset({"UNLIMITED", "INFINITE", "NONE", "NOT_SET", "INVALID", "N/A", ""})


class ParseError(ValueError):
    """Slurm printed something that is not in the form this module reads."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node as ``scontrol show node`` describes it.

    Attributes:
        name: the node's name (``NodeName``).
        cpus: CPUs that jobs may use (``CPUEfctv``, or ``CPUTot`` before Slurm 22.05).
        real_memory_mb: the configured memory (``RealMemory``) in MB.
        gres: GPUs by gres type, for example ``{"h100": 2}``; GPUs declared
            without a type count under ``""``. Other generic resources are left out.
        state: the node's state as Slurm prints it (``IDLE``, ``MIXED+DRAIN``, ``DOWN*``).
        partitions: the partitions the node belongs to.
    """

    name: str
    cpus: int
    real_memory_mb: int
    gres: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    state: str = "UNKNOWN"
    partitions: tuple[str, ...] = ()

    def gpus_of(self, gres_type: str) -> int:
        """How many GPUs a request for ``gres_type`` could get here; ``""`` asks
        for GPUs of any type, as ``--gres=gpu:N`` does."""
        if gres_type == "":
            return sum(self.gres.values())
        return self.gres.get(gres_type, 0)

    @property
    def usable(self) -> bool:
        """Whether Slurm would start jobs here now (not down, drained or invalid)."""
        state = self.state.upper()
        return not any(word in state for word in _UNUSABLE_NODE_STATES) and "*" not in state


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition as ``scontrol show partition`` describes it.

    Attributes:
        name: the partition's name.
        default: whether jobs that name no partition go here.
        state: ``UP``, ``DOWN``, ``DRAIN`` or ``INACTIVE``.
        max_time_s: the longest time limit a job may have here; None for no limit.
    """

    name: str
    default: bool = False
    state: str = "UP"
    max_time_s: float | None = None


@dataclass(frozen=True, slots=True)
class JobState:
    """Where one job stands, as ``squeue`` reports it.

    Attributes:
        state: Slurm's long state name (``PENDING``, ``RUNNING``, ``COMPLETED`` ...).
        reason: why it waits or ended (``Resources``, ``Priority``, ``None`` ...).
        node: the node(s) it runs on; empty while pending.
        time_left_s: seconds before Slurm's time limit ends it; None for no limit.
    """

    state: str
    reason: str = ""
    node: str = ""
    time_left_s: float | None = None

    @property
    def ended(self) -> bool:
        """Whether the job runs no more."""
        return self.state in ENDED_STATES

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"

    @property
    def pending(self) -> bool:
        return self.state == "PENDING"


def parse_fields(line: str) -> dict[str, str]:
    """Splits one ``-o`` line of ``scontrol show`` into its ``Key=value`` pairs.

    A value runs up to the next `` Key=``, so values with spaces (``OS=Linux 6.1
    #1 SMP``, ``Reason=maintenance, back at 10:00 [root@...]``) stay whole.
    """
    keys = list(_KEY.finditer(line))
    fields: dict[str, str] = {}
    for index, match in enumerate(keys):
        end = keys[index + 1].start() if index + 1 < len(keys) else len(line)
        fields[match[1]] = line[match.end() : end].strip()
    return fields


def _int_field(fields: Mapping[str, str], key: str, what: str) -> int:
    value = fields.get(key, "")
    if not value.isdigit():
        raise ParseError(f"{what}: {key}={value!r} is not a whole number")
    return int(value)


def parse_gpu_gres(text: str) -> dict[str, int]:
    """Returns the GPUs of a ``Gres=`` value by type (``""`` for untyped ones).

    Example:
        >>> parse_gpu_gres("gpu:a100:4(S:0),gpu:2,mps:400")
        {'a100': 4, '': 2}
        >>> parse_gpu_gres("(null)")
        {}
    """
    gpus: dict[str, int] = {}
    if text in ("", "(null)", "N/A"):
        return gpus
    for match in _GRES_ITEM.finditer(text):
        parts = match[1].strip().split(":")
        if parts[0] != "gpu":
            continue
        count = 1
        last = _COUNT.fullmatch(parts[-1]) if len(parts) > 1 else None
        if last is not None:
            count = int(last[1]) * _COUNT_SUFFIX[last[2]]
            parts = parts[:-1]
        gres_type = ":".join(parts[1:])
        gpus[gres_type] = gpus.get(gres_type, 0) + count
    return gpus


def parse_nodes(text: str) -> list[NodeInfo]:
    """Parses ``scontrol show node -o``: one node a line."""
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = parse_fields(line)
        name = fields.get("NodeName", "")
        if not name:
            raise ParseError(f"a line of scontrol show node names no node: {line[:200]!r}")
        what = f"node {name}"
        cpus_key = "CPUEfctv" if fields.get("CPUEfctv", "").isdigit() else "CPUTot"
        partitions = fields.get("Partitions", "")
        nodes.append(
            NodeInfo(
                name=name,
                cpus=_int_field(fields, cpus_key, what),
                real_memory_mb=_int_field(fields, "RealMemory", what),
                gres=MappingProxyType(parse_gpu_gres(fields.get("Gres", ""))),
                state=fields.get("State", "UNKNOWN"),
                partitions=tuple(p for p in partitions.split(",") if p and p != "(null)"),
            )
        )
    return nodes


def parse_slurm_time_s(text: str) -> float | None:
    """Seconds of a Slurm duration (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
    ``D-HH:MM``, ``D-HH:MM:SS``); None for ``UNLIMITED`` and the like.

    A bare number is minutes, as in ``sbatch --time``.

    Example:
        >>> parse_slurm_time_s("1:00"), parse_slurm_time_s("2-03"), parse_slurm_time_s("30")
        (60.0, 183600.0, 1800.0)
    """
    text = text.strip()
    if text.upper() in _UNLIMITED:
        return None
    if text.startswith("-"):  # past its limit, within the grace time Slurm allows
        return 0.0
    days_text, dash, rest = text.rpartition("-")
    if dash and not days_text.isdigit():
        raise ParseError(f"{text!r} is not a Slurm duration")
    parts = rest.split(":")
    if not all(part.isdigit() for part in parts) or len(parts) > 3:
        raise ParseError(f"{text!r} is not a Slurm duration")
    numbers = [int(part) for part in parts]
    if dash:  # D-HH, D-HH:MM, D-HH:MM:SS
        numbers += [0] * (3 - len(numbers))
        hours, minutes, seconds = numbers
    elif len(numbers) == 3:
        hours, minutes, seconds = numbers
    elif len(numbers) == 2:
        hours, (minutes, seconds) = 0, numbers
    else:
        hours, minutes, seconds = 0, numbers[0], 0
    days = int(days_text) if dash else 0
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def parse_partitions(text: str) -> list[PartitionInfo]:
    """Parses ``scontrol show partition -o``: one partition a line."""
    partitions = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = parse_fields(line)
        name = fields.get("PartitionName", "")
        if not name:
            raise ParseError(f"a line of scontrol show partition names none: {line[:200]!r}")
        partitions.append(
            PartitionInfo(
                name=name,
                default=fields.get("Default", "NO").upper() == "YES",
                state=fields.get("State", "UP"),
                max_time_s=parse_slurm_time_s(fields.get("MaxTime", "UNLIMITED")),
            )
        )
    return partitions


def parse_jobs(text: str) -> dict[str, JobState]:
    """Parses ``squeue -h -o`` output in :data:`SQUEUE_FORMAT`, by job id."""
    jobs: dict[str, JobState] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 4)
        if len(parts) != 5 or not parts[0].strip():
            raise ParseError(f"a line of squeue is not in the form {SQUEUE_FORMAT}: {line!r}")
        job_id, state, node, left, reason = (part.strip() for part in parts)
        jobs[job_id] = JobState(
            state=state,
            reason=reason,
            node="" if node in ("", "(null)") else node,
            time_left_s=parse_slurm_time_s(left),
        )
    return jobs


def parse_submitted(text: str) -> str:
    """Returns the job id of ``sbatch --parsable``'s answer (``"123"`` or ``"123;cluster"``)."""
    job_id = text.strip().split(";", 1)[0]
    if not job_id.isdigit():
        raise ParseError(f"sbatch --parsable answered {text.strip()[:200]!r}, not a job id")
    return job_id
