"""Blobs as files in a directory: ``<dir>/<sha[:2]>/<sha>``.

The local executor's workers read and write this same layout, so large
payloads never pass through the controller's memory.
"""

from __future__ import annotations

from pathlib import Path

from cobalt_controller.blobs.base import BlobStore
from cobalt_executors._runtime.payloads import blob_path, write_blob


class LocalBlobStore(BlobStore):
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def put(self, sha256: str, data: bytes) -> None:
        write_blob(self.directory, sha256, data)

    def get(self, sha256: str) -> bytes | None:
        try:
            return blob_path(self.directory, sha256).read_bytes()
        except FileNotFoundError:
            return None

    def has(self, sha256: str) -> bool:
        return blob_path(self.directory, sha256).exists()
