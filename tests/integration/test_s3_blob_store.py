"""The S3 blob store on a real S3-compatible server (SeaweedFS's ``weed mini``).

It passes the blob store contract, keeps its objects under content-addressed
keys, gives workers presigned URLs that the server refuses once altered or
expired, and a worker checks what it downloads against the sha256 it asked for.
Wrong credentials or a missing bucket stop the controller at start with one
error that names the bucket, the endpoint and what to fix.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from blob_store_contract import BlobStoreContract
from service_s3 import S3Server, s3_server_fixture  # noqa: F401

import cobalt as ct
from cobalt_common.errors import ConfigError, ContentAddressError, PayloadUnavailableError
from cobalt_common.payloads import BlobLocation
from cobalt_controller.blobs import BlobStore
from cobalt_controller.blobs.s3 import S3BlobStore
from cobalt_executors._runtime.payloads import put_file, read_payload, to_wire

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """boto3's usual credential chain finds the server's identity in the environment."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


def _store(server: S3Server, **options: object) -> S3BlobStore:
    """A store over a fresh prefix of the test bucket, with credentials from the environment."""
    return S3BlobStore(
        server.bucket,
        prefix=f"tests/{uuid.uuid4().hex}",
        endpoint_url=server.endpoint_url,
        region=server.region,
        **options,  # type: ignore[arg-type]
    )


class TestS3BlobStoreContract(BlobStoreContract):
    location_kind = "url"

    @pytest.fixture
    def blobs(self, s3_env: S3Server) -> Iterator[BlobStore]:
        yield _store(s3_env)


def test_objects_are_keyed_by_prefix_and_content_address(s3_env: S3Server) -> None:
    store = _store(s3_env)
    store.put(_sha(b"payload"), b"payload")
    listed = s3_env.client().list_objects_v2(Bucket=s3_env.bucket, Prefix=store.prefix)
    sha = _sha(b"payload")
    assert [o["Key"] for o in listed["Contents"]] == [f"{store.prefix}/{sha[:2]}/{sha}"]


def test_the_server_refuses_bytes_that_are_not_the_content_address(s3_env: S3Server) -> None:
    store = _store(s3_env)
    with pytest.raises(ContentAddressError, match="hash to another sha256"):
        store.put(_sha(b"what was promised"), b"something else")
    assert not store.has(_sha(b"what was promised"))


def test_a_stream_larger_than_a_part_goes_up_in_parts_and_only_when_its_sha256_matches(
    s3_env: S3Server,
) -> None:
    store = _store(s3_env, part_bytes=5 << 20)
    data = os.urandom(11 << 20)
    chunks = [data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    wrong = _sha(data + b"!")
    assert not store.put_stream(wrong, iter(chunks))
    assert not store.has(wrong)

    def broken() -> Iterator[bytes]:
        yield from chunks[:7]
        raise ConnectionError("the client went away")

    with pytest.raises(ConnectionError):
        store.put_stream(_sha(data), broken())
    assert not store.has(_sha(data))
    assert store.put_stream(_sha(data), iter(chunks))
    assert store.get(_sha(data)) == data
    uploads = s3_env.client().list_multipart_uploads(Bucket=s3_env.bucket, Prefix=store.prefix)
    assert uploads.get("Uploads", []) == [], "refused and failed uploads were aborted"


def test_a_wrong_secret_is_refused_with_the_bucket_endpoint_and_what_to_fix(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env(secret_key="not-the-secret").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        _store(s3_server).check()
    message = str(refused.value)
    assert f"bucket {s3_server.bucket!r} at {s3_server.endpoint_url}" in message
    assert "403" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "not-the-secret" not in message


def test_a_missing_bucket_is_refused_with_what_to_fix(s3_env: S3Server) -> None:
    store = S3BlobStore("no-such-bucket", endpoint_url=s3_env.endpoint_url, region="us-east-1")
    with pytest.raises(ConfigError, match=r"'no-such-bucket' at .*404.*create the bucket"):
        store.check()


def test_a_controller_with_a_wrong_secret_does_not_start_and_says_why(
    s3_server: S3Server,
    make_controller_home: Callable[..., ControllerHome],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in s3_server.env(secret_key="not-the-secret").items():
        monkeypatch.setenv(name, value)
    home = make_controller_home(
        f'[blobs]\ntype = "s3"\nbucket = "{s3_server.bucket}"\n'
        f'endpoint_url = "{s3_server.endpoint_url}"\nregion = "us-east-1"\n'
    )
    out = home.cli("controller", "start", check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.startswith("cobalt: the controller cannot start: ")
    assert f"bucket {s3_server.bucket!r} at {s3_server.endpoint_url}" in out.stderr
    assert "AWS_SECRET_ACCESS_KEY" in out.stderr and "not-the-secret" not in out.stderr
    assert home.info() is None


@ct.electron
def _length(data: bytes) -> int:
    return len(data)


@ct.lattice
def _measure(data: bytes) -> int:
    return _length(data)


def test_a_workflow_reads_its_large_argument_from_s3_through_a_presigned_url(
    s3_env: S3Server, make_controller_home: Callable[..., ControllerHome]
) -> None:
    prefix = f"tests/{uuid.uuid4().hex}"
    home = make_controller_home(
        f'[blobs]\ntype = "s3"\nbucket = "{s3_env.bucket}"\nprefix = "{prefix}"\n'
        f'endpoint_url = "{s3_env.endpoint_url}"\nregion = "us-east-1"\n\n'
        '[executors.local]\ntype = "local"\nworkers = 1\n'
    )
    home.start()
    data = os.urandom(300_000)
    dispatch_id = ct.dispatch(_measure)(data)
    assert ct.get_result(dispatch_id, wait=60).result == len(data)
    listed = s3_env.client().list_objects_v2(Bucket=s3_env.bucket, Prefix=prefix)
    sizes = {o["Key"]: o["Size"] for o in listed["Contents"]}
    pickled = [key for key, size in sizes.items() if size > len(data)]
    assert len(pickled) == 1, f"the pickled argument is in the bucket: {sizes}"
    sha = pickled[0].rsplit("/", 1)[1]
    assert pickled[0] == f"{prefix}/{sha[:2]}/{sha}"
    blob_dir = home.path / "blobs"
    assert not blob_dir.exists() or not any(blob_dir.rglob("*")), "nothing went to blob_dir"


def test_a_blobs_url_is_reused_while_half_its_validity_remains(s3_env: S3Server) -> None:
    heads: list[object] = []
    client = s3_env.client()
    client.meta.events.register("before-call.s3.HeadObject", lambda **call: heads.append(call))
    store = _store(s3_env, client=client, presign_ttl_s=1)
    store.put(_sha(b"shared argument"), b"shared argument")
    first = store.locate(_sha(b"shared argument"))
    assert [store.locate(_sha(b"shared argument")) for _ in range(50)] == [first] * 50
    assert len(heads) == 1, "the server was asked once"
    time.sleep(0.6)
    again = store.locate(_sha(b"shared argument"))
    assert again is not None and len(heads) == 2, "past half its validity, a URL is renewed"
    assert read_payload(_sha(b"shared argument"), b"", to_wire(again)) == b"shared argument"


def _tampered(url: str) -> str:
    return url.replace("X-Amz-Signature=", "X-Amz-Signature=0", 1)


def test_a_tampered_presigned_url_is_refused_and_a_worker_read_of_it_fails_clearly(
    s3_env: S3Server,
) -> None:
    store = _store(s3_env)
    data, other = b"\x80\x05an argument", b"\x80\x05another one"
    store.put(_sha(data), data)
    store.put(_sha(other), other)
    location = store.locate(_sha(data))
    assert location is not None and location.kind == "url"
    assert httpx.get(location.address).content == data
    forged = _tampered(location.address)
    assert httpx.get(forged).status_code == 403
    other_key = location.address.replace(_sha(data), _sha(other))
    assert httpx.get(other_key).status_code == 403, "a signature is for one key only"
    with pytest.raises(PayloadUnavailableError) as refused:
        read_payload(_sha(data), b"", to_wire(BlobLocation.url(forged)))
    message = str(refused.value)
    assert "403 (SignatureDoesNotMatch)" in message and _sha(data) in message
    assert "X-Amz-Signature" not in message, "the message does not carry the URL's signature"


def test_an_expired_presigned_url_is_refused(s3_env: S3Server) -> None:
    store = _store(s3_env, presign_ttl_s=1)
    store.put(_sha(b"short-lived"), b"short-lived")
    location = store.locate(_sha(b"short-lived"))
    assert location is not None
    time.sleep(2.1)
    with pytest.raises(PayloadUnavailableError, match="403"):
        read_payload(_sha(b"short-lived"), b"", to_wire(location))


class _WrongBytes(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"not the payload that was asked for"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def wrong_bytes_url() -> Iterator[str]:
    """A loopback HTTP server that answers every GET with the same wrong bytes."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _WrongBytes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/blob?X-Amz-Signature=abc"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_worker_checks_the_sha256_of_what_a_url_gives_it(wrong_bytes_url: str) -> None:
    wanted = _sha(b"the payload")
    with pytest.raises(ContentAddressError) as refused:
        read_payload(wanted, b"", to_wire(BlobLocation.url(wrong_bytes_url)))
    message = str(refused.value)
    assert wanted in message and _sha(b"not the payload that was asked for") in message
    assert "abc" not in message


def test_a_worker_read_of_an_unreachable_url_fails_clearly() -> None:
    with pytest.raises(PayloadUnavailableError, match="could not be downloaded from"):
        read_payload(_sha(b"x"), b"", to_wire(BlobLocation.url("http://127.0.0.1:9/blob")))


def test_a_presigned_put_stores_exactly_its_blob_and_nothing_else(s3_env: S3Server) -> None:
    store = _store(s3_env)
    data = b"\x80\x05a large output" * 1000
    upload = store.presign_put(_sha(data), len(data))
    assert "Credential" in upload.url and s3_env.secret_key not in upload.url

    same_length = bytes(reversed(data))
    refused = httpx.put(upload.url, content=same_length, headers=upload.headers)
    assert refused.status_code == 400 and "<Code>BadDigest</Code>" in refused.text
    assert not store.has(_sha(data))

    other = store.presign_put(_sha(same_length), len(same_length))
    forged = {**upload.headers, "x-amz-checksum-sha256": other.headers["x-amz-checksum-sha256"]}
    assert httpx.put(upload.url, content=same_length, headers=forged).status_code == 403
    assert not store.has(_sha(data)), "a signed checksum cannot be swapped"

    assert httpx.put(upload.url, content=data, headers=upload.headers).status_code == 200
    assert store.get(_sha(data)) == data
    again = httpx.put(upload.url, content=data, headers=upload.headers)
    assert again.status_code == 412, "a stored blob is never written twice"


def test_an_agent_uploads_an_output_with_the_stores_upload_url_once_and_only_its_bytes(
    s3_env: S3Server, tmp_path: Path
) -> None:
    store = _store(s3_env)
    data = os.urandom(300_000)
    upload = store.upload_url(_sha(data), len(data))
    assert upload is not None
    wrong = tmp_path / "wrong"
    wrong.write_bytes(bytes(reversed(data)))
    with pytest.raises(PayloadUnavailableError, match=r"was refused: 400 \(BadDigest\)") as refused:
        put_file(upload.url, upload.headers, wrong, len(data))
    assert "Signature=" not in str(refused.value) and s3_env.secret_key not in str(refused.value)
    assert not store.has(_sha(data))
    right = tmp_path / "right"
    right.write_bytes(data)
    put_file(upload.url, upload.headers, right, len(data))
    assert store.get(_sha(data)) == data
    put_file(upload.url, upload.headers, right, len(data))  # 412: stored already, as good
