"""Small helpers every part of the fake shares: JSON aliases, timestamps, uids, names."""

from __future__ import annotations

import datetime
import secrets
import time
import uuid
from typing import Any

Json = dict[str, Any]
"""An API object or a part of one, as the wire carries it."""

NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""The letters the API server draws ``generateName`` suffixes from (no vowels, so that no word
is spelt by chance; no 0, 1 or 3, which read as letters)."""


def timestamp(at: float | None = None) -> str:
    """An RFC 3339 time in UTC at second precision, as ``metav1.Time`` is written."""
    moment = datetime.datetime.fromtimestamp(time.time() if at is None else at, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    return str(uuid.uuid4())


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(NAME_ALPHABET) for _ in range(length))


def random_hex(length: int) -> str:
    return secrets.token_hex((length + 1) // 2)[:length]
