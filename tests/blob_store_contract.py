"""The contract every blob store backend passes, whatever holds its bytes.

:class:`BlobStoreContract` holds the tests; a backend joins by subclassing it
in a test module of its tier with a ``blobs`` fixture that yields a fresh,
empty store, and :attr:`~BlobStoreContract.location_kind`, the kind of
location :meth:`~cobalt_controller.blobs.BlobStore.locate` gives for a stored
blob (None for a store workers cannot reach: its blobs travel inline)::

    class TestMyBlobStore(BlobStoreContract):
        @pytest.fixture
        def blobs(self, tmp_path: Path) -> Iterator[BlobStore]:
            yield MyBlobStore(...)

        location_kind = "directory"

Besides storing bytes, a store says where workers find its blobs and where
they put large outputs; what a worker's runtime reads or writes at those
locations is what the store holds.

Members today: the local directory and memory stores
(tests/unit/test_blob_stores.py) and the S3 store on a real S3-compatible
server (tests/integration/test_s3_blob_store.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from cobalt_common.errors import ContentAddressError
from cobalt_common.payloads import THROUGH_CONTROLLER, LocationKind
from cobalt_controller.blobs import BlobStore
from cobalt_executors._runtime.payloads import put_output, read_payload, to_wire


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


class BlobStoreContract:
    """The tests; a subclass gives the ``blobs`` fixture (a fresh, empty store)."""

    location_kind: LocationKind | None
    """The kind of location ``locate`` gives for a stored blob; None: it travels inline."""

    def test_a_blob_reads_back_by_its_sha256(self, blobs: BlobStore) -> None:
        data = b"\x80\x05pickled bytes\x00\xff"
        blobs.put(_sha(data), data)
        assert blobs.get(_sha(data)) == data
        assert blobs.has(_sha(data))

    def test_an_unknown_blob_is_absent(self, blobs: BlobStore) -> None:
        assert blobs.get(_sha(b"never stored")) is None
        assert not blobs.has(_sha(b"never stored"))

    def test_missing_lists_exactly_the_blobs_not_stored(self, blobs: BlobStore) -> None:
        stored = [b"one", b"two"]
        for data in stored:
            blobs.put(_sha(data), data)
        absent = {_sha(b"three"), _sha(b"four")}
        assert blobs.missing([*map(_sha, stored), *absent]) == absent
        assert blobs.missing([]) == set()

    def test_putting_a_blob_again_is_idempotent(self, blobs: BlobStore) -> None:
        data = b"same content"
        blobs.put(_sha(data), data)
        blobs.put(_sha(data), data)
        assert blobs.get(_sha(data)) == data
        assert blobs.missing([_sha(data)]) == set()

    def test_a_blob_once_stored_is_never_overwritten(self, blobs: BlobStore) -> None:
        sha = _sha(b"original")
        blobs.put(sha, b"original")
        blobs.put(sha, b"something else under the same key")
        assert blobs.get(sha) == b"original"

    def test_empty_and_large_blobs_round_trip(self, blobs: BlobStore) -> None:
        large = os.urandom(5 * 1024 * 1024)
        blobs.put(_sha(b""), b"")
        blobs.put(_sha(large), large)
        assert blobs.get(_sha(b"")) == b""
        assert blobs.get(_sha(large)) == large

    def test_a_stored_blob_does_not_change_when_the_callers_buffer_does(
        self, blobs: BlobStore
    ) -> None:
        buffer = bytearray(b"mutable buffer")
        sha = _sha(bytes(buffer))
        blobs.put(sha, buffer)  # type: ignore[arg-type]
        buffer[:] = b"changed afterwards"
        assert blobs.get(sha) == b"mutable buffer"

    def test_a_streamed_blob_reads_back_by_its_sha256(self, blobs: BlobStore) -> None:
        data = os.urandom(3 * 1024 * 1024 + 17)
        chunks = (data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20))
        assert blobs.put_stream(_sha(data), chunks)
        assert blobs.get(_sha(data)) == data
        assert blobs.put_stream(_sha(data), iter([data])), "storing it again is fine"
        assert blobs.put_stream(_sha(b""), iter([])), "no chunks is the empty blob"
        assert blobs.get(_sha(b"")) == b""

    def test_a_streamed_blob_whose_content_does_not_match_is_not_stored(
        self, blobs: BlobStore
    ) -> None:
        sha = _sha(b"what the client said it would send")
        assert not blobs.put_stream(sha, iter([b"something ", b"else"]))
        assert blobs.get(sha) is None
        assert blobs.missing([sha]) == {sha}

    def test_a_stream_that_fails_midway_stores_nothing(self, blobs: BlobStore) -> None:
        data = b"first half, second half"

        def broken() -> Iterator[bytes]:
            yield data[:11]
            raise ConnectionError("the client went away")

        with pytest.raises(ConnectionError):
            blobs.put_stream(_sha(data), broken())
        assert not blobs.has(_sha(data))

    def test_a_streamed_blob_never_overwrites_a_stored_one(self, blobs: BlobStore) -> None:
        sha = _sha(b"original")
        blobs.put(sha, b"original")
        assert not blobs.put_stream(sha, iter([b"other"]))
        assert blobs.put_stream(sha, iter([b"orig", b"inal"]))
        assert blobs.get(sha) == b"original"

    def test_a_located_blob_is_what_a_worker_reads_there(self, blobs: BlobStore) -> None:
        data = b"\x80\x05a large argument"
        blobs.put(_sha(data), data)
        assert blobs.locate(_sha(b"never stored")) is None
        location = blobs.locate(_sha(data))
        assert (location.kind if location else None) == self.location_kind
        if location is not None:
            assert location.readable_by_workers
            assert read_payload(_sha(data), b"", to_wire(location)) == data
        else:
            assert not blobs.output_location().readable_by_workers, (
                "a store workers write outputs to is one they read payloads from"
            )

    def test_an_output_a_worker_puts_at_the_output_location_is_read_back_by_the_store(
        self,
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

    @pytest.mark.parametrize(
        "name", NOT_CONTENT_ADDRESSES.values(), ids=NOT_CONTENT_ADDRESSES.keys()
    )
    def test_a_blob_store_refuses_a_name_that_is_not_a_content_address(
        self, blobs: BlobStore, name: str
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
