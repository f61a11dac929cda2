"""Where payload bytes live: the layout of a blob directory and the locations
a worker reads payloads from.

A payload (a pickled function, argument or output) is opaque bytes named by
their sha256. A small one travels inline, inside the message that needs it.
A large one is stored once, and a reference to it carries a
:class:`BlobLocation`: where a worker, wherever it runs, finds the bytes.

Kinds of location:

``directory``
    A directory the worker can read and write: the controller's blob
    directory on its own machine, or one on a filesystem shared with the
    workers' machines. A blob is the file ``<address>/<sha[:2]>/<sha>``
    (:func:`blob_path`); the controller's local blob store, the worker runtime
    and anything else that reads the directory use this one layout.
``url``
    One blob at an HTTP(S) URL that carries its own authorization: a
    presigned GET of an object store (S3), valid for a limited time. The
    worker holds no cloud credentials; it downloads the bytes and checks
    their sha256 before using them. Such a location names one blob, so a
    store returns one per payload.
``controller``
    Only the controller can read it: the bytes travel inline in the task,
    and a worker returns a large output inline too. Today this is how a
    store without a shared directory (the in-memory one) works; a later
    worker fetches such payloads from the controller on its own.

A new kind is one more value of :data:`LocationKind`,
one more branch in the worker runtime's one resolving function
(``cobalt_executors._runtime.payloads``), and a blob store that returns it;
no caller branches on a store's type.

Only a content address (64 lowercase hex digits) becomes a file name here;
anything else is refused with ``ContentAddressError``, so no name can reach
outside the directory.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cobalt_common.checks import validate_sha256

__all__ = [
    "THROUGH_CONTROLLER",
    "BlobLocation",
    "LocationKind",
    "blob_path",
    "redact_url",
    "sha256_hex",
    "write_blob",
]

LocationKind = Literal["directory", "url", "controller"]


@dataclass(frozen=True, slots=True)
class BlobLocation:
    """Where a worker reads a stored payload, or puts an output too large to inline.

    Example:
        >>> BlobLocation.directory("/srv/cobalt/blobs")
        BlobLocation(kind='directory', address='/srv/cobalt/blobs')
        >>> BlobLocation.url("https://bucket.s3.example/k/ab/abcd?X-Amz-Signature=f00")
        BlobLocation(kind='url', address='https://bucket.s3.example/k/ab/abcd?...')
        >>> THROUGH_CONTROLLER.readable_by_workers
        False
    """

    kind: LocationKind
    address: str = ""
    """For ``directory``, the directory's path; for ``url``, the URL (a secret
    while it is valid: never log it); empty for ``controller``."""

    @staticmethod
    def directory(path: str | os.PathLike[str]) -> BlobLocation:
        return BlobLocation("directory", os.fspath(path))

    @staticmethod
    def url(url: str) -> BlobLocation:
        """One blob at a self-authorizing URL, such as a presigned S3 GET."""
        return BlobLocation("url", url)

    def __repr__(self) -> str:
        address = self.address if self.kind != "url" else redact_url(self.address)
        return f"BlobLocation(kind={self.kind!r}, address={address!r})"

    @property
    def readable_by_workers(self) -> bool:
        """Whether a worker reads here itself (else the bytes go inline); of an
        output location, whether a worker writes there."""
        return self.kind != "controller"


THROUGH_CONTROLLER = BlobLocation("controller")
"""Payloads that only the controller holds: they travel inline."""


def blob_path(directory: str | Path, sha256: str) -> Path:
    """The file of ``sha256`` in a blob directory; raises ``ContentAddressError``
    for any name that is not a content address."""
    validate_sha256(sha256)
    return Path(directory) / sha256[:2] / sha256


def redact_url(url: str) -> str:
    """``url`` without its query, where a presigned URL keeps its signature:
    what an error message or a log may show of it."""
    return url.split("?", 1)[0] + ("?..." if "?" in url else "")


def sha256_hex(data: bytes) -> str:
    """The content address of ``data``."""
    return hashlib.sha256(data).hexdigest()


def write_blob(directory: str | Path, sha256: str, data: bytes) -> None:
    """Writes a blob atomically (a temporary file, then a rename); a no-op if present."""
    path = blob_path(directory, sha256)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{sha256}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
