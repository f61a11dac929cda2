"""A controller killed with SIGKILL leaves its workers' log folders; the next start removes them."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

import pytest
from support import wait_for

from cobalt_common.processes import pid_running

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import ControllerHome

pytestmark = pytest.mark.integration


def test_log_folders_left_by_a_killed_controller_are_removed_at_the_next_start(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    home = make_controller_home()
    home.start()
    first = home.pid
    workers = home.path / "workers"
    left = sorted(workers.glob(f"cobalt-local-{first}-*"))
    assert left, f"the executors' log folders are in {workers}"
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not pid_running(first), timeout=15, what="the controller to die")
    assert all(folder.is_dir() for folder in left), "SIGKILL leaves them behind"
    (home.path / "controller.json").unlink()

    home.start()
    assert home.pid != first
    assert not any(folder.exists() for folder in left)
    assert sorted(workers.glob(f"cobalt-local-{home.pid}-*"))
