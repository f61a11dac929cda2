"""The blob store contract on a local directory and in memory, and what only
the local directory store promises (its layout on disk).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from blob_store_contract import NOT_CONTENT_ADDRESSES, BlobStoreContract

from cobalt_common.errors import ContentAddressError
from cobalt_common.payloads import BlobLocation, blob_path, write_blob
from cobalt_controller.blobs import BlobStore, LocalBlobStore, MemoryBlobStore

pytestmark = pytest.mark.unit


class TestLocalBlobStore(BlobStoreContract):
    location_kind = "directory"

    @pytest.fixture
    def blobs(self, tmp_path: Path) -> Iterator[BlobStore]:
        yield LocalBlobStore(tmp_path / "blobs")


class TestMemoryBlobStore(BlobStoreContract):
    location_kind = None

    @pytest.fixture
    def blobs(self) -> Iterator[BlobStore]:
        yield MemoryBlobStore()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_local_store_locates_its_blobs_in_its_directory(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put(_sha(b"data"), b"data")
    assert store.locate(_sha(b"data")) == BlobLocation.directory(tmp_path / "blobs")
    assert store.output_location() == BlobLocation.directory(tmp_path / "blobs")


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


def test_a_url_location_shows_no_signature_when_printed() -> None:
    url = "https://bucket.s3.example/cobalt/ab/" + "ab" * 32 + "?X-Amz-Signature=f00d&X-Amz-Date=1"
    location = BlobLocation.url(url)
    assert location.address == url, "the worker gets the whole URL"
    assert "f00d" not in repr(location) and "f00d" not in str(location)
    assert repr(location).endswith("/cobalt/ab/" + "ab" * 32 + "?...')")
