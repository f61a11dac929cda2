"""Payload locations on the wire, and the one place a worker resolves them.

An executor turns each :class:`~cobalt_common.payloads.BlobLocation` of a
task into a ``worker_pb2.BlobLocation`` (:func:`to_wire`); the worker reads a
payload with :func:`read_payload` and puts an output with :func:`put_output`,
whatever the kind of location. A new kind of location is a branch here and
nowhere else on the worker's side.
"""

from __future__ import annotations

from cobalt_common.payloads import BlobLocation, blob_path, write_blob
from cobalt_common.v1 import worker_pb2

_KINDS = {
    "directory": worker_pb2.BlobLocation.KIND_DIRECTORY,
    "controller": worker_pb2.BlobLocation.KIND_CONTROLLER,
}


def to_wire(location: BlobLocation) -> worker_pb2.BlobLocation:
    return worker_pb2.BlobLocation(kind=_KINDS[location.kind], address=location.address)


def read_payload(sha256: str, data: bytes, location: worker_pb2.BlobLocation) -> bytes:
    """A payload's bytes: ``data`` when no location is set, else read there."""
    kind = location.kind
    if kind == worker_pb2.BlobLocation.KIND_UNSPECIFIED:
        return data
    if kind == worker_pb2.BlobLocation.KIND_DIRECTORY:
        return blob_path(location.address, sha256).read_bytes()
    raise RuntimeError(
        f"payload {sha256} is at a location of kind {location.kind} that this worker cannot "
        "read: the controller and its workers must run the same cobalt version."
    )


def put_output(sha256: str, data: bytes, location: worker_pb2.BlobLocation) -> bool:
    """Stores an output too large to inline where the task says; False when the
    location takes no writes from workers (the output then returns inline)."""
    if location.kind == worker_pb2.BlobLocation.KIND_DIRECTORY:
        write_blob(location.address, sha256, data)
        return True
    return False
