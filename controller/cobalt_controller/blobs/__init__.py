"""Blob stores: base, local directory and in-memory backends."""

from cobalt_controller.blobs.base import BlobStore
from cobalt_controller.blobs.local import LocalBlobStore
from cobalt_controller.blobs.memory import MemoryBlobStore

__all__ = ["BlobStore", "LocalBlobStore", "MemoryBlobStore"]
