"""Names and quantities as the Kubernetes API server checks them.

The official client's models accept what the API server refuses (a memory of
``"48GB"``, a pod named ``"My_Pod"``), and such a refusal would come only when a
pilot is asked for. So cobalt checks names against DNS-1123 and writes quantities
in the API server's own grammar, and checks the quantities users give it in its
options the same way, when the executor is configured.

Example:
    >>> dns_label("GPU_Pool.1")
    'gpu-pool-1'
    >>> cpu_quantity(1.5), cpu_quantity(2.0), memory_quantity(49152)
    ('1500m', '2', '49152Mi')
    >>> is_quantity("48Gi"), is_quantity("48GB")
    (True, False)
"""

from __future__ import annotations

import math
import re

from cobalt_common.errors import SpecError

__all__ = [
    "LABEL_MAX",
    "check_label_key",
    "check_label_value",
    "check_subdomain",
    "cpu_quantity",
    "dns_label",
    "is_quantity",
    "memory_quantity",
]

LABEL_MAX = 63
SUBDOMAIN_MAX = 253
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
# The API server's quantity grammar: a signed decimal number and a suffix, binary
# (Ki..Ei), decimal (n, u, m, "", k, M, G, T, P, E) or an exponent (e3, E-2).
_QUANTITY = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?")


def dns_label(text: str, *, most: int = LABEL_MAX) -> str:
    """``text`` as a DNS-1123 label (lowercase letters, digits and dashes, starting
    and ending with a letter or digit), at most ``most`` characters; "x" when
    nothing of it is left."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:most].strip("-")
    return label or "x"


def check_subdomain(name: str, what: str) -> str:
    """``name`` when it is a DNS-1123 subdomain, as pods, Jobs and Secrets are named."""
    if len(name) > SUBDOMAIN_MAX or not _SUBDOMAIN.fullmatch(name):
        raise SpecError(
            f"{what} {name!r} is not a valid Kubernetes name: use at most {SUBDOMAIN_MAX} "
            "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit."
        )
    return name


def check_label_key(key: str, what: str) -> str:
    """``key`` when it is a label or annotation key: an optional DNS subdomain prefix
    and ``/``, then a name of at most 63 characters."""
    prefix, _, name = key.rpartition("/")
    if prefix:
        check_subdomain(prefix, f"{what} prefix of")
    if len(name) > LABEL_MAX or not _QUALIFIED_NAME.fullmatch(name):
        raise SpecError(
            f"{what} {key!r} is not a valid Kubernetes key: its name part must be at most "
            f"{LABEL_MAX} letters, digits, '-', '_' and '.', starting and ending with a "
            "letter or digit."
        )
    return key


def check_label_value(value: str, what: str) -> str:
    """``value`` when it is a label value (at most 63 characters, may be empty)."""
    if len(value) > LABEL_MAX or not _LABEL_VALUE.fullmatch(value):
        raise SpecError(
            f"{what} {value!r} is not a valid Kubernetes label value: at most {LABEL_MAX} "
            "letters, digits, '-', '_' and '.', starting and ending with a letter or digit."
        )
    return value


def is_quantity(text: str) -> bool:
    """Whether the API server parses ``text`` as a quantity (``"48Gi"`` yes,
    ``"48GB"`` no)."""
    return bool(_QUANTITY.fullmatch(text))


def cpu_quantity(cpus: float) -> str:
    """CPUs as a quantity: whole cores as a number, fractions in millicores (rounded
    up, so a task never gets less than it asked for)."""
    if cpus <= 0 or not math.isfinite(cpus):
        raise SpecError(f"a pod cannot ask for {cpus!r} CPUs.")
    if float(cpus).is_integer():
        return str(int(cpus))
    return f"{math.ceil(cpus * 1000)}m"


def memory_quantity(memory_mb: int) -> str:
    """Memory in mebibytes (cobalt's MB are 1024 x 1024 bytes) as a quantity."""
    if memory_mb <= 0:
        raise SpecError(f"a pod cannot ask for {memory_mb!r} MB of memory.")
    return f"{memory_mb}Mi"


def is_label(text: str) -> bool:
    return len(text) <= LABEL_MAX and bool(_LABEL.fullmatch(text))
