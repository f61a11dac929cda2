"""The client reads controller.json once per change and asks whether its controller runs
at most once a second; a controller that stops answering is asked about again at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cobalt import _client, _discovery
from cobalt_common.errors import ControllerUnavailableError

pytestmark = pytest.mark.unit


def write_info(home: Path, address: str, token: str, pid: int) -> None:
    tmp = home / "controller.json.tmp"
    tmp.write_text(json.dumps({"address": address, "token": token, "pid": pid}))
    os.replace(tmp, home / "controller.json")


def test_a_rewritten_controller_file_is_read_again(tmp_path: Path) -> None:
    write_info(tmp_path, "127.0.0.1:1", "first", os.getpid())
    first = _discovery.read_controller_info(tmp_path)
    write_info(tmp_path, "127.0.0.1:2", "second", os.getpid())
    second = _discovery.read_controller_info(tmp_path)

    assert first is not None and first.token == "first"
    assert second is not None and (second.address, second.token) == ("127.0.0.1:2", "second")
    assert _discovery.read_controller_info(tmp_path) is second
    (tmp_path / "controller.json").unlink()
    assert _discovery.read_controller_info(tmp_path) is None


def test_a_dead_controller_is_seen_dead_once_a_call_finds_it_unavailable(
    tmp_path: Path,
) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = _discovery.ControllerInfo("127.0.0.1:9", "t", child.pid)
        assert _client._alive(info)
    finally:
        child.kill()
        child.wait()

    assert _client._alive(info), "within the time to live, it is not asked again"
    client = _client.Client(info)
    try:
        with pytest.raises(ControllerUnavailableError):
            client.call(client.stub.ControllerStatus, _client.pb.ControllerStatusRequest(), 5)
    finally:
        client.close()
    assert not _client._alive(info)
