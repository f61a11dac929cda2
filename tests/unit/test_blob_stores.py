"""One contract suite for every blob store backend: a local directory and memory.

Besides storing bytes, a store says where workers find its blobs and where
they put large outputs; what a worker's runtime reads or writes at those
locations is what the store holds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cobalt_common.errors import ContentAddressError
from cobalt_common.payloads import THROUGH_CONTROLLER, blob_path, write_blob
from cobalt_controller.blobs import BlobStore, LocalBlobStore, MemoryBlobStore
from cobalt_executors._runtime.payloads import put_output, read_payload, to_wire

pytestmark = pytest.mark.unit


@pytest.fixture(params=["local", "memory"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
    else:
        yield MemoryBlobStore()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_blob_reads_back_by_its_sha256(blobs: BlobStore) -> None:
    data = b"\x80\x05pickled bytes\x00\xff"
    blobs.put(_sha(data), data)
    assert blobs.get(_sha(data)) == data
    assert blobs.has(_sha(data))


def test_an_unknown_blob_is_absent(blobs: BlobStore) -> None:
    assert blobs.get(_sha(b"never stored")) is None
    assert not blobs.has(_sha(b"never stored"))


def test_missing_lists_exactly_the_blobs_not_stored(blobs: BlobStore) -> None:
    stored = [b"one", b"two"]
    for data in stored:
        blobs.put(_sha(data), data)
    absent = {_sha(b"three"), _sha(b"four")}
    assert blobs.missing([*map(_sha, stored), *absent]) == absent
    assert blobs.missing([]) == set()


def test_putting_a_blob_again_is_idempotent(blobs: BlobStore) -> None:
    data = b"same content"
    blobs.put(_sha(data), data)
    blobs.put(_sha(data), data)
    assert blobs.get(_sha(data)) == data
    assert blobs.missing([_sha(data)]) == set()


def test_a_blob_once_stored_is_never_overwritten(blobs: BlobStore) -> None:
    sha = _sha(b"original")
    blobs.put(sha, b"original")
    blobs.put(sha, b"something else under the same key")
    assert blobs.get(sha) == b"original"


def test_empty_and_large_blobs_round_trip(blobs: BlobStore) -> None:
    large = os.urandom(5 * 1024 * 1024)
    blobs.put(_sha(b""), b"")
    blobs.put(_sha(large), large)
    assert blobs.get(_sha(b"")) == b""
    assert blobs.get(_sha(large)) == large


def test_a_stored_blob_does_not_change_when_the_callers_buffer_does(blobs: BlobStore) -> None:
    buffer = bytearray(b"mutable buffer")
    sha = _sha(bytes(buffer))
    blobs.put(sha, buffer)  # type: ignore[arg-type]
    buffer[:] = b"changed afterwards"
    assert blobs.get(sha) == b"mutable buffer"


def test_a_streamed_blob_reads_back_by_its_sha256(blobs: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    chunks = (data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20))
    assert blobs.put_stream(_sha(data), chunks)
    assert blobs.get(_sha(data)) == data
    assert blobs.put_stream(_sha(data), iter([data])), "storing it again is fine"
    assert blobs.put_stream(_sha(b""), iter([])), "no chunks is the empty blob"
    assert blobs.get(_sha(b"")) == b""


def test_a_streamed_blob_whose_content_does_not_match_is_not_stored(blobs: BlobStore) -> None:
    sha = _sha(b"what the client said it would send")
    assert not blobs.put_stream(sha, iter([b"something ", b"else"]))
    assert blobs.get(sha) is None
    assert blobs.missing([sha]) == {sha}


def test_a_stream_that_fails_midway_stores_nothing(blobs: BlobStore) -> None:
    data = b"first half, second half"

    def broken() -> Iterator[bytes]:
        yield data[:11]
        raise ConnectionError("the client went away")

    with pytest.raises(ConnectionError):
        blobs.put_stream(_sha(data), broken())
    assert not blobs.has(_sha(data))


def test_a_streamed_blob_never_overwrites_a_stored_one(blobs: BlobStore) -> None:
    sha = _sha(b"original")
    blobs.put(sha, b"original")
    assert not blobs.put_stream(sha, iter([b"other"]))
    assert blobs.put_stream(sha, iter([b"orig", b"inal"]))
    assert blobs.get(sha) == b"original"


def test_a_located_blob_is_what_a_worker_reads_there_and_an_unlocated_one_travels_inline(
    blobs: BlobStore,
) -> None:
    data = b"\x80\x05a large argument"
    blobs.put(_sha(data), data)
    assert blobs.locate(_sha(b"never stored")) is None
    location = blobs.locate(_sha(data))
    if blobs.output_location().readable_by_workers:
        assert location is not None
        assert read_payload(_sha(data), b"", to_wire(location)) == data
    else:
        assert location is None, "a store workers cannot reach sends its blobs inline"


def test_an_output_a_worker_puts_at_the_output_location_is_read_back_by_the_store(
    blobs: BlobStore,
) -> None:
    output = b"\x80\x05a large output" * 100
    stored = put_output(_sha(output), output, to_wire(blobs.output_location()))
    if stored:
        assert blobs.get(_sha(output)) == output
        assert blobs.locate(_sha(output)) == blobs.output_location()
    else:
        assert blobs.output_location() == THROUGH_CONTROLLER
        assert blobs.get(_sha(output)) is None, "the output returns inline instead"


def test_local_streamed_blobs_leave_no_temporary_file(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    good, bad = b"kept", b"refused"
    assert store.put_stream(_sha(good), iter([good]))
    assert not store.put_stream(_sha(good + b"!"), iter([bad]))
    with pytest.raises(ConnectionError):
        store.put_stream(_sha(bad), _failing())
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [Path(_sha(good)[:2]) / _sha(good)]


def _failing() -> Iterator[bytes]:
    yield b"partial"
    raise ConnectionError("the client went away")


def test_local_blobs_use_the_layout_workers_read(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "new" / "blobs")
    data = b"read by workers straight from disk"
    store.put(_sha(data), data)
    path = blob_path(tmp_path / "new" / "blobs", _sha(data))
    assert path == tmp_path / "new" / "blobs" / _sha(data)[:2] / _sha(data)
    assert path.read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == [_sha(data)], "no temporary file is left"


def test_local_blobs_outlive_the_store_object(tmp_path: Path) -> None:
    data = b"still here after a restart"
    LocalBlobStore(tmp_path).put(_sha(data), data)
    assert LocalBlobStore(tmp_path).get(_sha(data)) == data


NOT_CONTENT_ADDRESSES = {
    "absolute path": "/etc/passwd",
    "relative path": "./../controller.json",
    "proc file": "/proc/self/environ",
    "parent of 64 hex": "../" + "a" * 61,
    "uppercase hex": "A" * 64,
    "63 hex digits": "a" * 63,
    "65 hex digits": "a" * 65,
    "empty": "",
    "ten megabytes": "a" * (10 * 1024 * 1024),
}


@pytest.mark.parametrize("name", NOT_CONTENT_ADDRESSES.values(), ids=NOT_CONTENT_ADDRESSES.keys())
def test_a_blob_store_refuses_a_name_that_is_not_a_content_address(
    blobs: BlobStore, name: str
) -> None:
    with pytest.raises(ContentAddressError) as refused:
        blobs.get(name)
    assert len(str(refused.value)) < 300, "the bad name is not echoed whole"
    with pytest.raises(ContentAddressError):
        blobs.has(name)
    with pytest.raises(ContentAddressError):
        blobs.missing([name])
    with pytest.raises(ContentAddressError):
        blobs.put(name, b"never written")
    with pytest.raises(ContentAddressError):
        blobs.put_stream(name, iter([b"never written"]))
    with pytest.raises(ContentAddressError):
        blobs.locate(name)


@pytest.mark.parametrize("name", NOT_CONTENT_ADDRESSES.values(), ids=NOT_CONTENT_ADDRESSES.keys())
def test_the_blob_layout_gives_no_path_for_a_name_that_is_not_a_content_address(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(ContentAddressError):
        blob_path(tmp_path, name)
    with pytest.raises(ContentAddressError):
        write_blob(tmp_path, name, b"never written")
    assert list(tmp_path.iterdir()) == [], "nothing was written anywhere"


def test_a_local_blob_store_does_not_read_files_outside_its_directory(tmp_path: Path) -> None:
    (tmp_path / "controller.json").write_text('{"token": "secret"}')
    store = LocalBlobStore(tmp_path / "blobs")
    for name in ("../controller.json", "./../controller.json", str(tmp_path / "controller.json")):
        with pytest.raises(ContentAddressError):
            store.get(name)
