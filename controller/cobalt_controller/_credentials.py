"""Credentials scoped to what holds them: one per task attempt, one per replica.

The user's token (in ``controller.json``) administers. Every task attempt and
every replica gets its own credential instead, minted here when it is
submitted and revoked when it ends; :mod:`cobalt_controller._authorize`
decides what each may call.

Credentials live only in this process's memory, and the SHA-256 of a task
attempt's is stored with the task: a controller that restarts mints new ones
for the tasks it runs again, and recognizes again (by that hash) the
credential of a task that still runs on an agent and is taken back. Each is
32 random bytes from
:mod:`secrets`, independent of every other, so none can be derived from
another. A presented credential is looked up by its SHA-256 (a timing
difference in the lookup says nothing about the credential's bytes) and
then compared in constant time.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass, field

from cobalt_controller.agents._tokens import PREFIX as AGENT_PREFIX
from cobalt_controller.agents._tokens import AgentKeys, AgentScope


@dataclass(frozen=True, slots=True)
class UserScope:
    """The user's token: every call."""


@dataclass(slots=True)
class TaskScope:
    """One attempt of one task: node ``node_id`` of dispatch ``dispatch_id``."""

    attempt_id: str
    dispatch_id: str
    node_id: int
    deploys: str = ""
    """The service a lattice's deploy task deploys; empty for other tasks."""
    uploaded: set[str] = field(default_factory=set)
    """Payloads this credential sent with BlobPut: it may refer to and read them."""


@dataclass(slots=True)
class ReplicaScope:
    """One replica of one deployment, and the payloads it starts from."""

    deployment: str
    replica_id: str
    payloads: frozenset[str] = frozenset()


Scope = UserScope | TaskScope | ReplicaScope | AgentScope
"""Who holds a credential, and so what it reaches."""


@dataclass(slots=True)
class _Entry:
    key: str
    digest: bytes
    scope: TaskScope | ReplicaScope
    credential: str | None
    """None for one restored from its hash (:meth:`Credentials.restore`)."""


def _digest(credential: str) -> bytes:
    return hashlib.sha256(credential.encode("utf-8", "surrogatepass")).digest()


def credential_sha256(credential: str) -> str:
    """What the state store keeps of a task attempt's credential (hex)."""
    return _digest(credential).hex()


class Credentials:
    """The credentials in force, by the key of what holds each (a task attempt's
    ``task_key``, a replica's ``replica/<name>/<id>``)."""

    def __init__(self, user_token: str, agents: AgentKeys | None = None) -> None:
        self._user = user_token
        self.agents = agents
        """Checks agents' signed credentials (see :mod:`cobalt_controller.agents._tokens`)."""
        self._by_digest: dict[bytes, _Entry] = {}
        self._by_key: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def mint(self, key: str, scope: TaskScope | ReplicaScope) -> str:
        """A new credential for ``key``; one minted before for the same key is revoked."""
        credential = secrets.token_urlsafe(32)
        self._put(_Entry(key, _digest(credential), scope, credential))
        return credential

    def restore(self, key: str, sha256_hex: str, scope: TaskScope) -> None:
        """Accepts again the credential whose SHA-256 is ``sha256_hex``: the one a
        previous controller minted for ``key``, a task attempt taken back after a
        restart, which still holds it."""
        digest = bytes.fromhex(sha256_hex)
        if len(digest) != hashlib.sha256().digest_size:
            raise ValueError(f"{sha256_hex!r} is not a SHA-256")
        self._put(_Entry(key, digest, scope, None))

    def _put(self, entry: _Entry) -> None:
        with self._lock:
            old = self._by_key.pop(entry.key, None)
            if old is not None:
                self._by_digest.pop(old.digest, None)
            self._by_key[entry.key] = entry
            self._by_digest[entry.digest] = entry

    def revoke(self, key: str) -> None:
        """Ends ``key``'s credential, if it has one: it is refused from now on."""
        with self._lock:
            entry = self._by_key.pop(key, None)
            if entry is not None:
                self._by_digest.pop(entry.digest, None)

    def scope(self, credential: str) -> Scope | None:
        """What ``credential`` reaches; None when it is unknown, expired or revoked."""
        if secrets.compare_digest(credential.encode("utf-8", "surrogatepass"), self._user.encode()):
            return UserScope()
        if credential.startswith(AGENT_PREFIX):
            return self.agents.scope(credential) if self.agents is not None else None
        with self._lock:
            entry = self._by_digest.get(_digest(credential))
        if entry is None:
            return None
        # A restored entry knows only the hash, which the lookup matched.
        if entry.credential is not None and not secrets.compare_digest(
            entry.credential.encode(), credential.encode("utf-8", "surrogatepass")
        ):
            return None
        return entry.scope

    def note_upload(self, credential: str, sha256: str) -> None:
        """Records that ``credential`` sent the payload ``sha256`` (it proved it holds it)."""
        scope = self.scope(credential)
        if isinstance(scope, TaskScope):
            with self._lock:
                scope.uploaded.add(sha256)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_key)
