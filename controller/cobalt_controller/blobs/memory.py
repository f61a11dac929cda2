"""Blobs in a dict, for tests."""

from __future__ import annotations

from cobalt_common.checks import validate_sha256
from cobalt_controller.blobs.base import BlobStore


class MemoryBlobStore(BlobStore):
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def put(self, sha256: str, data: bytes) -> None:
        self._blobs.setdefault(validate_sha256(sha256), bytes(data))

    def get(self, sha256: str) -> bytes | None:
        return self._blobs.get(validate_sha256(sha256))

    def has(self, sha256: str) -> bool:
        return validate_sha256(sha256) in self._blobs
