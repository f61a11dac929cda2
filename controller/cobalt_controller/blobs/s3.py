"""Blobs as objects in an S3 bucket: ``<prefix>/<sha[:2]>/<sha>``, through ``boto3``.

Works with AWS S3 and S3-compatible servers (SeaweedFS, Ceph, MinIO) given
their ``endpoint_url``.

- **Content addresses only.** A key is built from a validated sha256 and
  nothing else; every write sends that sha256 as the object's
  ``ChecksumSHA256``, so the server itself refuses bytes that are not the
  address's (a whole upload or the last step of a multipart one).
- **Idempotent writes.** Every write is conditional (``IfNoneMatch="*"``): a
  412 means the object is already there, which is success; an object once
  stored is never overwritten.
- **Workers hold no credentials.** :meth:`S3BlobStore.locate` gives a
  presigned GET for one object, valid for ``presign_ttl_s`` seconds (and
  handed out again while more than half of that remains); the worker
  downloads it over HTTP and checks the sha256 itself
  (``cobalt_executors._runtime.payloads``).
- **Outputs.** A presigned PUT pins the upload to its content: it signs the
  ``x-amz-checksum-sha256`` header, the length and ``If-None-Match``, and the
  server refuses other bytes (400 ``BadDigest``) or a changed header (403),
  which :meth:`S3BlobStore.presign_put` offers for a worker that asks for
  one once it knows its output's sha256. Today an executor's output location
  is one location for all tasks, fixed before any output exists, so this
  store's is "through the controller": large outputs return inline and the
  controller stores them here.

Credentials come from boto3's usual chain (environment variables, the shared
credentials file and ``AWS_PROFILE``, an instance or pod role); they are never
part of cobalt's configuration and never logged. :meth:`S3BlobStore.check`
runs when the controller starts, so wrong credentials or a missing bucket
stop it at once with an error that names the bucket and endpoint.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from cobalt_common.checks import validate_sha256
from cobalt_common.errors import ConfigError, ContentAddressError, PayloadUnavailableError
from cobalt_common.payloads import BlobLocation, sha256_hex
from cobalt_controller.blobs.base import BlobStore, PresignedUpload

PART_BYTES = 8 << 20
"""A streamed blob larger than this goes up in parts of this size (S3's minimum is 5 MiB)."""
PARTS_IN_FLIGHT = 3
"""Parts of one streamed blob that go up at once, while the next one arrives."""
URLS_KEPT = 10_000
"""Presigned URLs kept for reuse; the oldest go first."""
_NO_EXTRA_CHECKSUMS = {
    option: "when_required"
    for option in ("request_checksum_calculation", "response_checksum_validation")
    if option in Config.OPTION_DEFAULTS
}
"""Writes carry their own sha256 checksum, which the server verifies: no second
one (CRC32) per request, on a botocore recent enough to add one by default."""
_EXISTS = {"PreconditionFailed", "ConditionalRequestConflict"}
_ABSENT = {"404", "NoSuchKey", "NotFound"}
_WRONG_CONTENT = {"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"}


class S3BlobStore(BlobStore):
    """Args:
    bucket: an existing bucket the credentials can read and write.
    prefix: the folder of cobalt's objects in it, without slashes at the ends.
    endpoint_url: an S3-compatible server's URL; None for AWS.
    region: the bucket's region; None for boto3's default.
    presign_ttl_s: how long a URL given to a worker stays valid.
    client: a boto3 S3 client to use instead of making one (tests, benchmarks).
    part_bytes: the part size of a streamed blob's multipart upload.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "cobalt/blobs",
        endpoint_url: str | None = None,
        region: str | None = None,
        presign_ttl_s: float = 3600.0,
        client: Any = None,
        part_bytes: int = PART_BYTES,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.presign_ttl_s = presign_ttl_s
        self.part_bytes = max(part_bytes, 5 << 20)
        self._urls: dict[str, tuple[str, float]] = {}
        """Presigned GETs by sha256, with when to stop handing them out (monotonic)."""
        self._lock = threading.Lock()
        self._s3: Any = client or boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                signature_version="s3v4",
                # Path-style URLs work with every S3-compatible server; AWS keeps its default.
                s3={"addressing_style": "path"} if endpoint_url else {},
                retries={"mode": "standard", "max_attempts": 3},
                **_NO_EXTRA_CHECKSUMS,
            ),
        )

    def __repr__(self) -> str:
        where = self._where
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={where})"

    @property
    def _where(self) -> str:
        return self.endpoint_url or "AWS S3"

    def key(self, sha256: str) -> str:
        """The object key of a blob; raises ``ContentAddressError`` for any other name."""
        validate_sha256(sha256)
        return f"{self.prefix}/{sha256[:2]}/{sha256}" if self.prefix else f"{sha256[:2]}/{sha256}"

    def check(self) -> None:
        """Proves the bucket exists and the credentials can read and write it, by
        storing the empty blob (a valid content address); raises ``ConfigError``
        naming the bucket, the endpoint and what to fix."""
        empty = sha256_hex(b"")
        try:
            self._s3.head_bucket(Bucket=self.bucket)
            try:
                self._s3.put_object(
                    Bucket=self.bucket,
                    Key=self.key(empty),
                    Body=b"",
                    IfNoneMatch="*",
                    ChecksumSHA256=_checksum(empty),
                )
            except ClientError as exc:
                if _code(exc) not in _EXISTS and _status(exc) != 412:
                    raise
            self._s3.head_object(Bucket=self.bucket, Key=self.key(empty))
        except NoCredentialsError:
            raise ConfigError(
                f"the S3 blob store (bucket {self.bucket!r} at {self._where}) found no "
                "credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, "
                "in the controller's environment. cobalt's configuration never holds them."
            ) from None
        except ClientError as exc:
            code, status = _code(exc), _status(exc)
            if status == 404 or code == "NoSuchBucket":
                advice = "create the bucket, or correct [blobs] bucket / endpoint_url"
            elif status in (401, 403):
                advice = (
                    "the credentials were refused: check AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and that they may read and write "
                    "the bucket"
                )
            else:
                advice = "check [blobs] endpoint_url and region"
            answer = f"{status} {code}" if code != str(status) else str(status)
            raise ConfigError(
                f"the S3 blob store cannot use bucket {self.bucket!r} at {self._where}: "
                f"the server answered {answer}; {advice}."
            ) from None
        except BotoCoreError as exc:
            raise ConfigError(
                f"the S3 blob store cannot reach bucket {self.bucket!r} at {self._where}: "
                f"{exc}; check [blobs] endpoint_url and region."
            ) from None

    def put(self, sha256: str, data: bytes) -> None:
        body = bytes(data) if not isinstance(data, bytes) else data
        self._put_object(sha256, body)

    def _put_object(self, sha256: str, body: bytes) -> None:
        key = self.key(sha256)
        try:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                IfNoneMatch="*",
                ChecksumSHA256=_checksum(sha256),
            )
        except ClientError as exc:
            if _code(exc) in _EXISTS or _status(exc) == 412:
                return
            if _code(exc) in _WRONG_CONTENT:
                if self.has(sha256):
                    return  # stored already, with its right bytes: nothing to overwrite
                raise ContentAddressError(
                    f"the bytes given for blob {sha256} hash to another sha256; "
                    "the object store refused them."
                ) from None
            raise self._failed("store", sha256, exc) from None
        except BotoCoreError as exc:
            raise self._failed("store", sha256, exc) from None

    def put_stream(self, sha256: str, chunks: Iterable[bytes]) -> bool:
        """A blob that fits in one part (``part_bytes``) goes up in one conditional
        PUT once its sha256 is checked; a larger one as a multipart upload, with
        up to :data:`PARTS_IN_FLIGHT` parts going up while the next arrives (so
        about that many parts in memory), that completes only if the sha256 matches."""
        key = self.key(sha256)
        if self.has(sha256):
            digest = hashlib.sha256()
            for chunk in chunks:
                digest.update(chunk)
            return digest.hexdigest() == sha256
        parts = _parts(chunks, self.part_bytes)
        digest = hashlib.sha256()
        first = next(parts, b"")
        digest.update(first)
        second = next(parts, None)
        if second is None:
            if digest.hexdigest() != sha256:
                return False
            self._put_object(sha256, first)
            return True
        return self._multipart(sha256, key, digest, first, second, parts)

    def _multipart(
        self,
        sha256: str,
        key: str,
        digest: Any,
        first: bytes,
        second: bytes,
        rest: Iterator[bytes],
    ) -> bool:
        try:
            upload = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._failed("store", sha256, exc) from None
        upload_id = upload["UploadId"]
        in_flight: deque[Future[dict[str, Any]]] = deque()
        done: list[dict[str, Any]] = []
        pool = ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="cobalt-s3-part")
        try:
            for number, part in enumerate(_chain(first, second, rest, digest), start=1):
                in_flight.append(pool.submit(self._upload_part, key, upload_id, number, part))
                if len(in_flight) >= PARTS_IN_FLIGHT:
                    done.append(in_flight.popleft().result())
            done.extend(future.result() for future in in_flight)
            if digest.hexdigest() != sha256:
                self._abort(key, upload_id)
                return False
            self._s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},
                IfNoneMatch="*",
            )
            return True
        except ClientError as exc:
            self._abort(key, upload_id, pool)
            if _code(exc) in _EXISTS or _status(exc) == 412:
                return True
            raise self._failed("store", sha256, exc) from None
        except BotoCoreError as exc:
            self._abort(key, upload_id, pool)
            raise self._failed("store", sha256, exc) from None
        except BaseException:
            self._abort(key, upload_id, pool)
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _upload_part(self, key: str, upload_id: str, number: int, part: bytes) -> dict[str, Any]:
        answer = self._s3.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _abort(self, key: str, upload_id: str, pool: ThreadPoolExecutor | None = None) -> None:
        """Drops a multipart upload, after the parts still going up (else one could
        land after the abort and leave its bytes behind)."""
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        # If this fails too, a lifecycle rule for incomplete uploads cleans up the parts.
        with contextlib.suppress(ClientError, BotoCoreError):
            self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def get(self, sha256: str) -> bytes | None:
        key = self.key(sha256)
        try:
            answer = self._s3.get_object(Bucket=self.bucket, Key=key)
            data: bytes = answer["Body"].read()
        except ClientError as exc:
            if _code(exc) in _ABSENT or _status(exc) == 404:
                return None
            raise self._failed("read", sha256, exc) from None
        except BotoCoreError as exc:
            raise self._failed("read", sha256, exc) from None
        return data

    def has(self, sha256: str) -> bool:
        key = self.key(sha256)
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _ABSENT or _status(exc) == 404:
                return False
            raise self._failed("look up", sha256, exc) from None
        except BotoCoreError as exc:
            raise self._failed("look up", sha256, exc) from None
        return True

    def locate(self, sha256: str) -> BlobLocation | None:
        """A presigned GET of the blob; None when absent.

        Every task that reads a blob asks for its location when it is
        submitted, so a URL is reused while more than half of its
        ``presign_ttl_s`` remains: the first ask costs a HEAD request, the
        others a lookup.
        """
        now = time.monotonic()
        with self._lock:
            cached = self._urls.get(sha256)
        if cached is not None and now < cached[1]:
            return BlobLocation.url(cached[0])
        if not self.has(sha256):
            return None
        url = self._s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key(sha256)},
            ExpiresIn=int(self.presign_ttl_s),
        )
        with self._lock:
            self._urls[sha256] = (url, now + self.presign_ttl_s / 2)
            while len(self._urls) > URLS_KEPT:
                del self._urls[next(iter(self._urls))]
        return BlobLocation.url(url)

    def presign_put(self, sha256: str, size: int) -> PresignedUpload:
        """A PUT that stores exactly the ``size`` bytes of ``sha256``, without credentials.

        The server refuses other bytes (400 ``BadDigest``), other headers (403)
        and, once the blob is stored, answers 412 to further uploads.
        """
        checksum = _checksum(sha256)
        url = self._s3.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self.bucket,
                "Key": self.key(sha256),
                "ChecksumSHA256": checksum,
                "ContentLength": size,
                "IfNoneMatch": "*",
            },
            ExpiresIn=int(self.presign_ttl_s),
        )
        headers = {
            "x-amz-checksum-sha256": checksum,
            "content-length": str(size),
            "if-none-match": "*",
        }
        return PresignedUpload(url, headers)

    def upload_url(self, sha256: str, size: int) -> PresignedUpload | None:
        return self.presign_put(sha256, size)

    def _failed(self, action: str, sha256: str, exc: Exception) -> PayloadUnavailableError:
        detail = f"{_status(exc)} {_code(exc)}" if isinstance(exc, ClientError) else str(exc)
        return PayloadUnavailableError(
            f"could not {action} blob {sha256} in S3 bucket {self.bucket!r} at {self._where}: "
            f"{detail}. Check that the object store is up and the controller's credentials "
            "are still valid."
        )


def _checksum(sha256: str) -> str:
    """S3's form of a sha256: the digest's bytes in base64."""
    return base64.b64encode(bytes.fromhex(sha256)).decode()


def _code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


def _status(exc: Exception) -> int:
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return 0


def _parts(chunks: Iterable[bytes], part_bytes: int) -> Iterator[bytes]:
    """The chunks regrouped into parts of at least ``part_bytes`` (the last may be smaller)."""
    pending: list[bytes] = []
    size = 0
    for chunk in chunks:
        pending.append(bytes(chunk))
        size += len(chunk)
        if size >= part_bytes:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _chain(first: bytes, second: bytes, rest: Iterator[bytes], digest: Any) -> Iterator[bytes]:
    """The parts in order; each after the first is hashed as it is taken
    (the first was hashed by the caller)."""
    yield first
    digest.update(second)
    yield second
    for part in rest:
        digest.update(part)
        yield part
