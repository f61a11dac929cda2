"""Payload bytes by sha256: a bounded cache over the state and blob stores."""

from __future__ import annotations

import threading
from collections import OrderedDict

from cobalt_controller.blobs import BlobStore
from cobalt_controller.state import StateStore
from cobalt_executors import PayloadRef


class Payloads:
    """Small payloads live in the state store (and a cache), large ones in the
    blob store. The controller only moves these bytes; it never unpickles them."""

    def __init__(
        self, state: StateStore, blobs: BlobStore, inline_limit: int, cache_bytes: int = 256 << 20
    ) -> None:
        self.state = state
        self.blobs = blobs
        self.inline_limit = inline_limit
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = cache_bytes
        self._lock = threading.Lock()

    def remember(self, sha256: str, data: bytes) -> None:
        with self._lock:
            if sha256 in self._cache:
                self._cache.move_to_end(sha256)
                return
            self._cache[sha256] = data
            self._cache_bytes += len(data)
            while self._cache_bytes > self._cache_limit and self._cache:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= len(old)

    def get_bytes(self, sha256: str) -> bytes | None:
        with self._lock:
            data = self._cache.get(sha256)
        if data is not None:
            return data
        data = self.state.get_payload(sha256)
        if data is None:
            data = self.blobs.get(sha256)
        if data is not None and len(data) <= self.inline_limit:
            self.remember(sha256, data)
        return data

    def ref(self, sha256: str) -> PayloadRef:
        """A reference for an executor: the bytes when small or when workers
        cannot reach the blob store, else where the blob store says they are."""
        with self._lock:
            data = self._cache.get(sha256)
        if data is not None:
            return PayloadRef(sha256, data, len(data))
        location = self.blobs.locate(sha256)
        if location is not None:
            return PayloadRef(sha256, None, 0, location)
        data = self.get_bytes(sha256)
        if data is None:
            raise KeyError(sha256)
        return PayloadRef(sha256, data, len(data))

    def missing(self, shas: set[str]) -> set[str]:
        with self._lock:
            unknown = {s for s in shas if s not in self._cache}
        if not unknown:
            return set()
        unknown = self.state.missing_payloads(unknown)
        return self.blobs.missing(unknown) if unknown else set()
