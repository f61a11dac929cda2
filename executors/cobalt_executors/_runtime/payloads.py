"""Payload locations on the wire, and the one place a worker resolves them.

An executor turns each :class:`~cobalt_common.payloads.BlobLocation` of a
task into a ``worker_pb2.BlobLocation`` (:func:`to_wire`); the worker reads a
payload with :func:`read_payload` and puts an output with :func:`put_output`,
whatever the kind of location. A new kind of location is a branch here and
nowhere else on the worker's side.

A payload read from a URL is checked against its sha256 before it is used:
the URL is only a way to the bytes, and the content address is what the
task asked for.
"""

from __future__ import annotations

import hashlib

from cobalt_common.errors import ContentAddressError, PayloadUnavailableError
from cobalt_common.payloads import BlobLocation, blob_path, redact_url, write_blob
from cobalt_common.v1 import worker_pb2

_KINDS = {
    "directory": worker_pb2.BlobLocation.KIND_DIRECTORY,
    "url": worker_pb2.BlobLocation.KIND_URL,
    "controller": worker_pb2.BlobLocation.KIND_CONTROLLER,
}
DOWNLOAD_TIMEOUT_S = 60.0
"""Seconds a URL download may wait for the next bytes (not for all of them)."""
_CHUNK = 1 << 20


def to_wire(location: BlobLocation) -> worker_pb2.BlobLocation:
    return worker_pb2.BlobLocation(kind=_KINDS[location.kind], address=location.address)


def read_payload(sha256: str, data: bytes, location: worker_pb2.BlobLocation) -> bytes:
    """A payload's bytes: ``data`` when no location is set, else read there."""
    kind = location.kind
    if kind == worker_pb2.BlobLocation.KIND_UNSPECIFIED:
        return data
    if kind == worker_pb2.BlobLocation.KIND_DIRECTORY:
        return blob_path(location.address, sha256).read_bytes()
    if kind == worker_pb2.BlobLocation.KIND_URL:
        return download(sha256, location.address)
    raise RuntimeError(
        f"payload {sha256} is at a location of kind {location.kind} that this worker cannot "
        "read: the controller and its workers must run the same cobalt version."
    )


def download(sha256: str, url: str, *, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """The bytes at ``url``, which must hash to ``sha256``.

    Raises:
        PayloadUnavailableError: the server refused the URL (expired or
            altered) or could not be reached; the message shows the URL
            without its signature.
        ContentAddressError: the bytes are not those of ``sha256``.
    """
    # httpx is imported here, not at the top: most workers never read a URL, and
    # every worker process pays for its imports when it starts.
    import httpx

    where = redact_url(url)
    digest = hashlib.sha256()
    parts: list[bytes] = []
    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=False) as response:
            if response.status_code != 200:
                response.read()
                raise PayloadUnavailableError(
                    f"payload {sha256} could not be downloaded from {where}: the server "
                    f"answered {response.status_code} {_error_code(response.text)}. A presigned "
                    "URL that expired or was altered is refused; the controller gives a fresh "
                    "one when the task is retried."
                )
            for chunk in response.iter_bytes(_CHUNK):
                digest.update(chunk)
                parts.append(chunk)
    except httpx.HTTPError as exc:
        raise PayloadUnavailableError(
            f"payload {sha256} could not be downloaded from {where}: "
            f"{type(exc).__name__}: {exc}. Check that workers can reach the object store."
        ) from None
    if digest.hexdigest() != sha256:
        raise ContentAddressError(
            f"payload {sha256} downloaded from {where} has sha256 {digest.hexdigest()}: "
            "the bytes are not the ones the task asked for, so they were not used."
        )
    return b"".join(parts)


def _error_code(body: str) -> str:
    """The ``<Code>`` of an S3-style XML error body, if it has one."""
    start = body.find("<Code>")
    end = body.find("</Code>", start)
    return f"({body[start + 6 : end]})" if 0 <= start < end <= start + 100 else ""


def put_output(sha256: str, data: bytes, location: worker_pb2.BlobLocation) -> bool:
    """Stores an output too large to inline where the task says; False when the
    location takes no writes from workers (the output then returns inline)."""
    if location.kind == worker_pb2.BlobLocation.KIND_DIRECTORY:
        write_blob(location.address, sha256, data)
        return True
    return False
