"""Agent credentials: each one reaches one executor (and one allocation of it),
and expires.

An agent outlives a controller restart, so its credential must too. Unlike a
task's (kept in memory, see :mod:`cobalt_controller._credentials`), an agent
credential is signed: ``cba1.<claims>.<mac>``, where the claims (base64url
JSON: executor, allocation, expiry) are signed with HMAC-SHA256 under a key
kept in the controller's home (``agent.key``, mode 0600), made once. A
restarted controller with the same home accepts the credentials it issued
before; deleting ``agent.key`` revokes them all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "cba1."
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
MAX_TTL_S = 366 * 86400.0
DEFAULT_TTL_S = 30 * 86400.0


@dataclass(frozen=True, slots=True)
class AgentScope:
    """An agent of executor ``executor`` (in ``allocation``, when one is named):
    it may open the agent stream for that executor and send outputs (BlobPut)."""

    executor: str
    allocation: str
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def valid_name(text: str) -> bool:
    """Whether ``text`` may name an executor or an allocation in a credential."""
    return bool(_NAME.match(text))


class AgentKeys:
    """Issues and checks agent credentials with the key in ``path``."""

    def __init__(self, path: Path) -> None:
        self._key = self._load(path)

    @staticmethod
    def _load(path: Path) -> bytes:
        try:
            key = path.read_bytes()
            if len(key) >= 32:
                return key
        except OSError:
            pass
        key = secrets.token_bytes(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        os.replace(tmp, path)
        return key

    def _mac(self, claims: str) -> str:
        return _b64(hmac.new(self._key, claims.encode(), hashlib.sha256).digest())

    def mint(self, executor: str, allocation: str = "", ttl_s: float = DEFAULT_TTL_S) -> str:
        """A credential for agents of ``executor`` (of ``allocation``) for ``ttl_s`` seconds."""
        if not valid_name(executor) or (allocation and not valid_name(allocation)):
            raise ValueError(f"cannot name executor {executor!r} / allocation {allocation!r}")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError(
                f"an agent credential lasts more than 0 s and at most a year, not {ttl_s}"
            )
        body = json.dumps(
            {"e": executor, "a": allocation, "x": round(time.time() + ttl_s, 3)},
            separators=(",", ":"),
        )
        claims = _b64(body.encode())
        return f"{PREFIX}{claims}.{self._mac(claims)}"

    def scope(self, credential: str) -> AgentScope | None:
        """What ``credential`` reaches; None when it is forged, malformed or expired."""
        if not credential.startswith(PREFIX) or len(credential) > 1024:
            return None
        claims, _, mac = credential[len(PREFIX) :].partition(".")
        if not claims or not mac or not hmac.compare_digest(mac, self._mac(claims)):
            return None
        try:
            data = json.loads(_unb64(claims))
            executor, allocation, expires = str(data["e"]), str(data["a"]), float(data["x"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires < time.time():
            return None
        return AgentScope(executor, allocation, expires)
