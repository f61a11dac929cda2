"""The blob store seam: large payloads, by sha256.

Backends: :mod:`.local` (a directory, the default) and :mod:`.memory` (tests).
Small payloads travel inline and live in the state store instead.
Every backend refuses a name that is not a content address (64 lowercase hex
digits) with ``ContentAddressError``, whatever its callers checked before.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable


class BlobStore(ABC):
    @abstractmethod
    def put(self, sha256: str, data: bytes) -> None:
        """Stores ``data`` under its sha256; idempotent."""

    @abstractmethod
    def put_stream(self, sha256: str, chunks: Iterable[bytes]) -> bool:
        """Stores the concatenated ``chunks`` under ``sha256`` if that is their sha256.

        Meant for content that arrives in pieces (an upload): a backend holds
        no more than a chunk at a time where it can. Returns False, storing
        nothing, when the content does not match; idempotent like :meth:`put`.
        An exception raised by ``chunks`` propagates, storing nothing.
        """

    @abstractmethod
    def get(self, sha256: str) -> bytes | None: ...

    @abstractmethod
    def has(self, sha256: str) -> bool: ...

    def missing(self, shas: Iterable[str]) -> set[str]:
        return {s for s in shas if not self.has(s)}
