"""Checks of values that arrive from outside: content addresses, and echoing ids safely.

A payload is addressed by the sha256 of its bytes, written as exactly 64
lowercase hex digits. The blob stores turn that address into a file name, so
anything else (``/etc/passwd``, ``../controller.json``, a 10 MB string) is
refused before it reaches a path, a log line or an error message.

Example:
    >>> validate_sha256("ab" * 32) == "ab" * 32
    True
    >>> brief("0123456789abcdef" * 2)
    "'0123456789abcdef0123456789abcdef'"
    >>> brief("x" * 1000)
    "'xxxxxxxxxxxxxxxx'... (1000 characters)"
"""

from __future__ import annotations

import hashlib
import re

from cobalt_common.errors import ContentAddressError

__all__ = ["brief", "check_content", "is_sha256", "validate_sha256"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
ECHO_PREFIX = 16
"""How many characters of a long or refused value an error message or log line repeats."""
ID_ECHO = 64
"""Ids and names up to this long are echoed whole (a dispatch id has 32 characters)."""


def brief(value: str, keep: int = ID_ECHO) -> str:
    """``value`` quoted for a message: whole when at most ``keep`` characters long,
    else its first :data:`ECHO_PREFIX` characters and its length.

    Ids and names from requests go through this before they are echoed, so a
    megabyte id cannot make the error itself too large to send, or fill a log.
    """
    if len(value) <= keep:
        return repr(value)
    return f"{value[:ECHO_PREFIX]!r}... ({len(value)} characters)"


def is_sha256(value: str) -> bool:
    """Whether ``value`` is a content address: exactly 64 lowercase hex digits."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def validate_sha256(value: str, what: str = "payload") -> str:
    """``value`` if it is a content address; raises :class:`ContentAddressError` if not.

    ``what`` names the field for the message ("payload", "function", ...).
    """
    if not is_sha256(value):
        raise ContentAddressError(
            f"{what} sha256 {brief(value, ECHO_PREFIX)} is not a content address: "
            "it must be the 64 lowercase hex digits of the sha256 of the bytes."
        )
    return value


def check_content(sha256: str, data: bytes, what: str = "payload") -> None:
    """Refuses bytes sent under a sha256 that is not theirs."""
    validate_sha256(sha256, what)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ContentAddressError(
            f"{what} {sha256[:ECHO_PREFIX]}... ({len(data)} bytes) does not hash to its "
            "sha256; nothing of the request was stored."
        )
