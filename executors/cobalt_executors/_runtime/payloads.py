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
from pathlib import Path

from cobalt_common.errors import ContentAddressError, PayloadUnavailableError
from cobalt_common.payloads import BlobLocation, LocationKind, blob_path, redact_url, write_blob
from cobalt_common.v1 import worker_pb2

_KINDS = {
    "directory": worker_pb2.BlobLocation.KIND_DIRECTORY,
    "url": worker_pb2.BlobLocation.KIND_URL,
    "controller": worker_pb2.BlobLocation.KIND_CONTROLLER,
}
DOWNLOAD_TIMEOUT_S = 60.0
"""Seconds a URL download may wait for the next bytes (not for all of them)."""


_NAMES: dict[int, LocationKind] = {
    worker_pb2.BlobLocation.KIND_DIRECTORY: "directory",
    worker_pb2.BlobLocation.KIND_URL: "url",
    worker_pb2.BlobLocation.KIND_CONTROLLER: "controller",
}


def to_wire(location: BlobLocation) -> worker_pb2.BlobLocation:
    return worker_pb2.BlobLocation(kind=_KINDS[location.kind], address=location.address)


def from_wire(location: worker_pb2.BlobLocation) -> BlobLocation | None:
    """The location a wire message names; None for an unknown kind."""
    name = _NAMES.get(location.kind)
    return BlobLocation(name, location.address) if name is not None else None


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

    The standard library's client reads a response of known length into one
    buffer: on a 64 MB payload it ran at twice httpx's streaming rate, and it
    holds one copy of the payload rather than chunks plus their join.

    Raises:
        PayloadUnavailableError: the server refused the URL (expired or
            altered) or could not be reached; the message shows the URL
            without its signature.
        ContentAddressError: the bytes are not those of ``sha256``.
    """
    # Imported here, not at the top: they cost a worker about 15 ms at start, and
    # most workers never read a URL.
    import http.client
    import urllib.error
    import urllib.request

    where = redact_url(url)
    if not url.startswith(("https://", "http://")):
        raise PayloadUnavailableError(f"payload {sha256} has a location that is not a URL: {where}")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            data: bytes = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read(4096).decode(errors="replace")
        raise PayloadUnavailableError(
            f"payload {sha256} could not be downloaded from {where}: the server answered "
            f"{exc.code} {_error_code(body)}. A presigned URL that expired or was altered "
            "is refused; the controller gives a fresh one when the task is retried."
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise PayloadUnavailableError(
            f"payload {sha256} could not be downloaded from {where}: {reason}. "
            "Check that workers can reach the object store."
        ) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ContentAddressError(
            f"payload {sha256} downloaded from {where} has sha256 {actual}: "
            "the bytes are not the ones the task asked for, so they were not used."
        )
    return data


def put_file(
    url: str,
    headers: dict[str, str],
    path: Path,
    size: int,
    *,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> None:
    """Uploads the ``size`` bytes at ``path`` with a presigned PUT and exactly ``headers``
    (the object store checks them against the checksum the URL was signed with). A
    412 answer means the blob is stored already, which is as good.

    Raises:
        PayloadUnavailableError: the server refused the upload or could not be
            reached; the message shows the URL without its signature.
    """
    import http.client
    import urllib.error
    import urllib.request

    where = redact_url(url)
    if not url.startswith(("https://", "http://")):
        raise PayloadUnavailableError(f"an upload location that is not a URL: {where}")
    try:
        with path.open("rb") as body:
            request = urllib.request.Request(url, data=body, headers=headers, method="PUT")
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 412:  # IfNoneMatch: someone stored these very bytes first
            return
        text = exc.read(4096).decode(errors="replace")
        raise PayloadUnavailableError(
            f"the upload of {size} bytes to {where} was refused: {exc.code} {_error_code(text)}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise PayloadUnavailableError(f"the upload to {where} failed: {reason}") from None


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
