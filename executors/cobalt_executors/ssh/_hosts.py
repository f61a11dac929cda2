"""The SSH executor's ``hosts`` option: one table per machine, checked where it is written.

In ``config.toml``::

    [executors.lab]
    type = "ssh"
    hosts = [
        { host = "gpu1.lab.example", user = "alice", key_file = "~/.ssh/id_ed25519" },
        { host = "10.0.0.7", port = 2222, python = "/opt/py311/bin/python", gpus = { h100 = 2 } },
    ]

Each table takes:

- ``host`` (required): a DNS name or an IPv4/IPv6 address.
- ``port``: 1 to 65535, default 22.
- ``user``: the login name, default the user running cobalt here.
- ``key_file``: a private key file here; default the usual ``~/.ssh/id_*`` keys
  and the ssh-agent.
- ``known_hosts``: the known_hosts file that holds the host's key, default
  ``~/.ssh/known_hosts``. A host whose key is not there, or differs, is refused.
  ``known_hosts = "insecure-accept-any"`` turns the check off for that host: any
  machine that answers in its place gets the tasks, their arguments and their
  credentials. Use it only on a network you trust completely.
- ``python``: the interpreter on the host that has cobalt installed, default
  ``python3`` (looked up on the host's ``PATH``).
- ``work_dir``: the folder on the host for cobalt's files; relative paths and
  ``~/`` are under the user's home there. Default: the executor's choice.
- ``cpus``, ``memory`` (``"64GB"``), ``gpus`` (``{ h100 = 2 }``): the capacity to
  offer; what is left out is detected on the host.
- ``tunnel``: ``true`` to reach the controller through a reverse SSH tunnel from
  this host, ``false`` to dial it directly; default: the executor's ``tunnel``.
"""

from __future__ import annotations

import getpass
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cobalt_common.errors import SpecError
from cobalt_common.hardware import MAX_CPUS, MAX_GPUS, parse_gpu_type, parse_memory_mb

ACCEPT_ANY_HOST_KEY: Final = "insecure-accept-any"
"""The ``known_hosts`` value that turns host key checking off for one host."""

DEFAULT_PYTHON: Final = "python3"

HOST_FIELDS: Final = frozenset(
    {"host", "port", "user", "key_file", "known_hosts", "python", "work_dir"}
    | {"cpus", "memory", "gpus", "tunnel"}
)
"""Every field a host table accepts."""

_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_NOT_A_FILE = frozenset({"", "none", "no", "off", "false", "ignore", "accept-any"})
"""known_hosts values that look like turning the check off, and are refused as such."""

_BadFn = Callable[[str, str], SpecError]
"""Builds the SpecError for one field of one host table: ``bad(field, problem)``."""


def user_known_hosts() -> Path:
    """The user's own known_hosts file, ``~/.ssh/known_hosts``."""
    return Path("~/.ssh/known_hosts").expanduser()


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One host of the SSH executor, as configured.

    Attributes:
        host: the DNS name or address (an IPv6 address without brackets).
        port: the SSH port.
        user: the login name.
        key_file: the private key to offer; ``None`` for the default keys and the agent.
        known_hosts: the known_hosts file to check the host's key against, or
            :data:`ACCEPT_ANY_HOST_KEY`.
        python: the interpreter on the host.
        work_dir: the folder on the host for cobalt's files, or ``None``.
        cpus: the CPUs to offer, or ``None`` to detect.
        memory_mb: the memory to offer in MB, or ``None`` to detect.
        gpus: the GPUs to offer as ``(type, count)`` pairs; empty to detect.
        tunnel: whether the agent there reaches the controller through a reverse
            SSH tunnel; ``None`` for the executor's choice.
    """

    host: str
    port: int = 22
    user: str = ""
    key_file: Path | None = None
    known_hosts: Path | str = field(default_factory=user_known_hosts)
    python: str = DEFAULT_PYTHON
    work_dir: str | None = None
    cpus: float | None = None
    memory_mb: int | None = None
    gpus: tuple[tuple[str, int], ...] = ()
    tunnel: bool | None = None

    @property
    def address(self) -> str:
        """``user@host:port``, the way every message names this host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"

    @property
    def checks_host_key(self) -> bool:
        """Whether the host's key is checked against a known_hosts file."""
        return self.known_hosts != ACCEPT_ANY_HOST_KEY


def parse_hosts(value: object, *, executor: str) -> tuple[HostSpec, ...]:
    """Returns the hosts of the ``hosts`` option of executor ``executor``.

    Raises:
        SpecError: ``value`` is not a non-empty list of tables, a table has an
            unknown or invalid field, or two tables name the same login.

    Example:
        >>> [h.address for h in parse_hosts([{"host": "gpu1", "user": "al"}], executor="lab")]
        ['al@gpu1:22']
    """
    if not isinstance(value, list | tuple) or not value:
        raise SpecError(
            f"executor {executor!r}: hosts must be a list of tables such as "
            f'[{{ host = "gpu1.example.org", user = "alice" }}], not {value!r}.'
        )
    hosts = tuple(
        _parse_host(entry, f"executor {executor!r}: hosts[{i}]") for i, entry in enumerate(value)
    )
    seen: dict[str, int] = {}
    for i, spec in enumerate(hosts):
        if spec.address in seen:
            raise SpecError(
                f"executor {executor!r}: hosts[{i}] repeats {spec.address} of "
                f"hosts[{seen[spec.address]}]; list each login once."
            )
        seen[spec.address] = i
    return hosts


def _parse_host(entry: object, where: str) -> HostSpec:
    accepted = f"accepted fields are: {', '.join(sorted(HOST_FIELDS))}."
    if not isinstance(entry, Mapping):
        raise SpecError(f'{where} must be a table such as {{ host = "gpu1" }}, not {entry!r}.')
    name = entry.get("host")
    where = f"{where} (host {name!r})" if isinstance(name, str) else where
    unknown = sorted(str(key) for key in entry if key not in HOST_FIELDS)
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {', '.join(unknown)}; {accepted}")

    def bad(field: str, problem: str) -> SpecError:
        return SpecError(f"{where}: {field}={entry.get(field)!r} {problem}; {accepted}")

    if "host" not in entry:
        raise SpecError(f"{where}: the host field is required; {accepted}")
    host = _host(entry["host"])
    if host is None:
        raise bad(
            "host",
            "is not a DNS name or an IP address (put the login name in user, the port in port)",
        )
    port = entry.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise bad("port", "is not a port number from 1 to 65535")
    user = entry.get("user", "") or getpass.getuser()
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise bad("user", "is not a login name")
    return HostSpec(
        host=host,
        port=port,
        user=user,
        key_file=_local_path(entry, "key_file", bad),
        known_hosts=_known_hosts(entry, bad),
        python=_text(entry, "python", bad) or DEFAULT_PYTHON,
        work_dir=_text(entry, "work_dir", bad),
        cpus=_cpus(entry, bad),
        memory_mb=_memory(entry, where, accepted),
        gpus=_gpus(entry, where, bad),
        tunnel=_tunnel(entry, bad),
    )


def _host(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    name = value.removesuffix(".")
    if not name or len(name) > 253 or name.startswith("-"):
        return None
    labels = name.split(".")
    return value if all(_LABEL.fullmatch(label) for label in labels) else None


def _text(entry: Mapping[str, object], field: str, bad: _BadFn) -> str | None:
    value = entry.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or _CONTROL.search(value):
        raise bad(field, "must be a non-empty path without control characters")
    return value


def _local_path(entry: Mapping[str, object], field: str, bad: _BadFn) -> Path | None:
    text = _text(entry, field, bad)
    return None if text is None else Path(text).expanduser()


def _known_hosts(entry: Mapping[str, object], bad: _BadFn) -> Path | str:
    value = entry.get("known_hosts")
    if value == ACCEPT_ANY_HOST_KEY:
        return ACCEPT_ANY_HOST_KEY
    if value is False or (isinstance(value, str) and value.lower() in _NOT_A_FILE):
        raise bad(
            "known_hosts",
            f"is not a file; host key checking is turned off only by "
            f'known_hosts = "{ACCEPT_ANY_HOST_KEY}", which lets any machine that answers '
            "for this host receive its tasks",
        )
    path = _local_path(entry, "known_hosts", bad)
    return path if path is not None else user_known_hosts()


def _tunnel(entry: Mapping[str, object], bad: _BadFn) -> bool | None:
    value = entry.get("tunnel")
    if value is None or isinstance(value, bool):
        return value
    raise bad("tunnel", "is not true or false")


def _cpus(entry: Mapping[str, object], bad: _BadFn) -> float | None:
    value = entry.get("cpus")
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= MAX_CPUS
    ):
        raise bad("cpus", f"is not a number of CPUs above 0 and at most {MAX_CPUS:g}")
    return float(value)


def _memory(entry: Mapping[str, object], where: str, accepted: str) -> int | None:
    value = entry.get("memory")
    if value is None:
        return None
    try:
        return parse_memory_mb(value, option=f"{where}: memory")  # type: ignore[arg-type]
    except SpecError as exc:
        raise SpecError(f"{exc} {accepted[0].upper()}{accepted[1:]}") from None


def _gpus(entry: Mapping[str, object], where: str, bad: _BadFn) -> tuple[tuple[str, int], ...]:
    value = entry.get("gpus")
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not value:
        raise bad("gpus", "must be a table of GPU type to count such as { h100 = 2 }")
    counts: dict[str, int] = {}
    for gpu_type, count in value.items():
        canonical = parse_gpu_type(str(gpu_type), option=f"{where}: gpus")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= MAX_GPUS:
            raise bad("gpus", f"has count {count!r} for {gpu_type}, not from 1 to {MAX_GPUS}")
        counts[canonical] = counts.get(canonical, 0) + count
    return tuple(sorted(counts.items()))
