"""The local executor's worker log folders: named by controller pid, swept when stale."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import wait_for

from cobalt_executors.local._logdirs import make_log_dir, remove_stale

pytestmark = pytest.mark.unit


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_log_folder_is_named_by_this_process_inside_the_given_folder(tmp_path: Path) -> None:
    folder = make_log_dir(tmp_path / "workers")
    assert folder.parent == tmp_path / "workers"
    assert folder.name.startswith(f"cobalt-local-{os.getpid()}-")
    assert folder.is_dir()


def test_folders_of_processes_no_longer_running_are_removed_at_the_next_start(
    tmp_path: Path,
) -> None:
    workers = tmp_path / "workers"
    stale = workers / f"cobalt-local-{_dead_pid()}-abc123"
    (stale / "sub").mkdir(parents=True)
    (stale / "worker-1.err").write_text("left by a killed controller")
    live = workers / f"cobalt-local-{os.getppid()}-def456"
    live.mkdir()
    unrelated = workers / "notes"
    unrelated.mkdir()
    mine = make_log_dir(workers)
    assert not stale.exists()
    assert live.is_dir(), "a running controller's folder is kept"
    assert unrelated.is_dir(), "only the executor's own folders are touched"
    assert mine.is_dir()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_zombies_folder_counts_as_stale(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        folder = tmp_path / f"cobalt-local-{child.pid}-zzz"
        folder.mkdir()
        stat = Path(f"/proc/{child.pid}/stat")
        wait_for(
            lambda: stat.read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z",
            timeout=30,
            what="the child to exit",
        )
        assert remove_stale(tmp_path) == [folder]
    finally:
        child.wait()
