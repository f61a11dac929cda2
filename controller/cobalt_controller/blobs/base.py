"""The blob store seam: large payloads, by sha256.

Backends: :mod:`.local` (a directory, the default) and :mod:`.memory` (tests).
Small payloads travel inline and live in the state store instead.
Every backend refuses a name that is not a content address (64 lowercase hex
digits) with ``ContentAddressError``, whatever its callers checked before.

A store also says where workers find its blobs (:meth:`BlobStore.locate`) and
where they put large outputs (:meth:`BlobStore.output_location`), as
:class:`~cobalt_common.payloads.BlobLocation` values: the controller passes
them to executors and never asks which backend it has. A store workers cannot
reach (the in-memory one) answers "through the controller", and its payloads
travel inline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

from cobalt_common.payloads import THROUGH_CONTROLLER, BlobLocation


@dataclass(frozen=True)
class PresignedUpload:
    """A PUT that stores one blob without credentials: send exactly these
    headers and exactly the blob's bytes; a 412 answer means it is already stored."""

    url: str
    headers: dict[str, str]


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

    def locate(self, sha256: str) -> BlobLocation | None:
        """Where a worker reads this blob itself; None when the blob is not
        stored here, or workers cannot reach this store (it then travels inline)."""
        return None

    def upload_url(self, sha256: str, size: int) -> PresignedUpload | None:
        """Where a machine without this store's credentials uploads the ``size`` bytes
        of ``sha256`` itself; None when this store takes no such uploads (they go
        through the controller)."""
        return None

    def output_location(self) -> BlobLocation:
        """Where workers put outputs too large to inline, for this store to
        read back; :data:`~cobalt_common.payloads.THROUGH_CONTROLLER` when they
        cannot reach it (they return such outputs inline)."""
        return THROUGH_CONTROLLER
