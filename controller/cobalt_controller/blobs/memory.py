"""Blobs in a dict, for tests.

Workers cannot reach a dict in the controller's memory: its blobs travel
inline (location ``controller``), and so do large outputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from cobalt_common.checks import validate_sha256
from cobalt_common.payloads import THROUGH_CONTROLLER, BlobLocation
from cobalt_controller.blobs.base import BlobStore


class MemoryBlobStore(BlobStore):
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def put(self, sha256: str, data: bytes) -> None:
        self._blobs.setdefault(validate_sha256(sha256), bytes(data))

    def put_stream(self, sha256: str, chunks: Iterable[bytes]) -> bool:
        validate_sha256(sha256)
        digest = hashlib.sha256()
        parts = []
        for chunk in chunks:
            digest.update(chunk)
            parts.append(bytes(chunk))
        if digest.hexdigest() != sha256:
            return False
        self._blobs.setdefault(sha256, b"".join(parts))
        return True

    def get(self, sha256: str) -> bytes | None:
        return self._blobs.get(validate_sha256(sha256))

    def has(self, sha256: str) -> bool:
        return validate_sha256(sha256) in self._blobs

    def locate(self, sha256: str) -> BlobLocation | None:
        validate_sha256(sha256)
        return None

    def output_location(self) -> BlobLocation:
        return THROUGH_CONTROLLER
