"""Blobs as files in a directory: ``<dir>/<sha[:2]>/<sha>``.

Workers read and write this directory themselves (a location of kind
``directory``, laid out by :mod:`cobalt_common.payloads`), so large payloads
never pass through the controller's memory. Workers on other machines can do
the same where the directory is on a filesystem they share.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cobalt_common.payloads import BlobLocation, blob_path, write_blob
from cobalt_controller.blobs.base import BlobStore


class LocalBlobStore(BlobStore):
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._location = BlobLocation.directory(self.directory)

    def put(self, sha256: str, data: bytes) -> None:
        write_blob(self.directory, sha256, data)

    def put_stream(self, sha256: str, chunks: Iterable[bytes]) -> bool:
        """Writes each chunk to a temporary file beside the blob as it arrives,
        hashing as it goes, and renames the file into place once the sha256 matches."""
        path = blob_path(self.directory, sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{sha256}.", suffix=".tmp", dir=path.parent)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as file:
                for chunk in chunks:
                    digest.update(chunk)
                    file.write(chunk)
            if digest.hexdigest() != sha256:
                return False
            if not path.exists():
                os.replace(tmp, path)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def get(self, sha256: str) -> bytes | None:
        try:
            return blob_path(self.directory, sha256).read_bytes()
        except FileNotFoundError:
            return None

    def has(self, sha256: str) -> bool:
        return blob_path(self.directory, sha256).exists()

    def locate(self, sha256: str) -> BlobLocation | None:
        return self._location if self.has(sha256) else None

    def output_location(self) -> BlobLocation:
        return self._location
