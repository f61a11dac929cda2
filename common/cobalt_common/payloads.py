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
``controller``
    Only the controller can read it: the bytes travel inline in the task,
    and a worker returns a large output inline too. Today this is how a
    store without a shared directory (the in-memory one) works; a later
    worker fetches such payloads from the controller on its own.

A new kind (an object store, say) is one more value of :data:`LocationKind`,
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
    "sha256_hex",
    "write_blob",
]

LocationKind = Literal["directory", "controller"]


@dataclass(frozen=True, slots=True)
class BlobLocation:
    """Where a worker reads a stored payload, or puts an output too large to inline.

    Example:
        >>> BlobLocation.directory("/srv/cobalt/blobs")
        BlobLocation(kind='directory', address='/srv/cobalt/blobs')
        >>> THROUGH_CONTROLLER.readable_by_workers
        False
    """

    kind: LocationKind
    address: str = ""
    """For ``directory``, the directory's path; empty for ``controller``."""

    @staticmethod
    def directory(path: str | os.PathLike[str]) -> BlobLocation:
        return BlobLocation("directory", os.fspath(path))

    @property
    def readable_by_workers(self) -> bool:
        """Whether a worker reads and writes here itself (else the bytes go inline)."""
        return self.kind != "controller"


THROUGH_CONTROLLER = BlobLocation("controller")
"""Payloads that only the controller holds: they travel inline."""


def blob_path(directory: str | Path, sha256: str) -> Path:
    """The file of ``sha256`` in a blob directory; raises ``ContentAddressError``
    for any name that is not a content address."""
    validate_sha256(sha256)
    return Path(directory) / sha256[:2] / sha256


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
