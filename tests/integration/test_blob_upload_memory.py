"""An upload streams to disk: the controller never holds a large argument whole."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from cobalt import _client
from cobalt_common.v1 import controller_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import ControllerHome

pytestmark = pytest.mark.integration

BLOB_MB = 64
CONFIG = '[executors.local]\ntype = "local"\nworkers = 1\n'


def peak_rss_mb(pid: int) -> float:
    """The process's resident-memory high-water mark (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_uploading_a_large_argument_grows_the_controllers_peak_memory_by_a_fraction_of_it(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    home = make_controller_home(CONFIG)
    home.start()
    client = _client.get_client()
    data = os.urandom(BLOB_MB << 20)
    sha = hashlib.sha256(data).hexdigest()
    assert client.call(client.stub.BlobHas, pb.BlobHasRequest(sha256=[sha])).missing == [sha]
    before = peak_rss_mb(home.pid)

    client.upload({sha: data})

    growth = peak_rss_mb(home.pid) - before
    print(f"controller VmHWM grew by {growth:.1f} MB for a {BLOB_MB} MB upload")
    # Holding the blob once would be +64 MB, and joining its chunks +128 MB.
    assert growth < BLOB_MB * 0.5 + 8, f"the peak grew by {growth:.0f} MB"
    stored = home.path / "blobs" / sha[:2] / sha
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha
    assert not client.call(client.stub.BlobHas, pb.BlobHasRequest(sha256=[sha])).missing


def test_an_upload_whose_content_does_not_match_its_sha256_is_refused_and_leaves_no_file(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    home = make_controller_home(CONFIG)
    home.start()
    client = _client.get_client()
    sha = hashlib.sha256(b"announced").hexdigest()
    chunks = iter([pb.BlobChunk(sha256=sha, data=b"sent "), pb.BlobChunk(data=b"instead")])
    with pytest.raises(grpc.RpcError) as refused:
        client.stub.BlobPut(chunks, metadata=client.metadata, timeout=30)
    assert refused.value.code() == grpc.StatusCode.DATA_LOSS
    assert f"does not match sha256 {sha}" in refused.value.details()
    assert [p for p in (home.path / "blobs").rglob("*") if p.is_file()] == []
