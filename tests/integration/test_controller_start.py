"""Starting a controller in the background: what the user is told, and why it failed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

import cobalt as ct
from cobalt._embedded import start_controller

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import ControllerHome

pytestmark = pytest.mark.integration

SCRIPT = """\
import cobalt as ct

@ct.electron
def double(x):
    return 2 * x

@ct.lattice
def wf(x):
    return double(x)

print(ct.dispatch_sync(wf, progress=False)(1).result)
print(ct.dispatch_sync(wf, progress=False)(2).result)
"""

BAD_PRICES = """\
[executors.local]
type = "local"
prices = { gpu_hour = { h100 = -3 } }
"""


@ct.electron
def double(x: int) -> int:
    return 2 * x


@ct.lattice
def twice(x: int) -> int:
    return double(x)


def _run_script(home: ControllerHome) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COBALT_CONTROLLER_")}
    env["COBALT_HOME"] = str(home.path)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_script_that_starts_a_controller_says_so_once_with_its_address_log_and_how_to_stop_it(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    home = make_controller_home()
    out = _run_script(home)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "4"]
    assert out.stderr.count("started a controller in the background") == 1, out.stderr
    assert f"at {home.address} (pid {home.pid})" in out.stderr
    assert f"log:  {home.path / 'controller.log'}" in out.stderr
    assert f"COBALT_HOME={home.path} cobalt controller stop" in out.stderr
    assert len(out.stderr.splitlines()) == 3, f"nothing else is said:\n{out.stderr}"


def test_a_script_says_nothing_when_a_controller_was_already_running(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    home = make_controller_home()
    home.start()
    out = _run_script(home)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "4"]
    assert out.stderr == ""


def test_a_bad_price_table_raises_config_error_naming_the_file_and_key_at_once(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    home = make_controller_home(BAD_PRICES)
    began = time.monotonic()
    with pytest.raises(ct.ConfigError) as info:
        ct.dispatch_sync(twice, progress=False)(1)
    assert time.monotonic() - began < 15, "the error comes when the controller exits"
    message = str(info.value)
    assert str(home.path / "config.toml") in message
    assert "[executors.local] prices.gpu_hour.h100" in message
    assert "must be a finite price of 0 or more, got -3" in message
    assert "within" not in message
    assert home.info() is None


def test_cobalt_controller_start_reports_a_bad_config_file_as_clearly(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    home = make_controller_home(BAD_PRICES)
    out = home.cli("controller", "start", check=False)
    assert out.returncode == 1
    assert out.stderr.startswith("cobalt: the controller cannot start: ")
    assert f"{home.path / 'config.toml'}: [executors.local] prices.gpu_hour.h100" in out.stderr
    assert "within" not in out.stderr


def test_a_controller_that_exits_early_is_reported_with_its_exit_code_and_log(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        home = make_controller_home(f'[controller]\naddress = "127.0.0.1:{port}"\n')
        (home.path / "controller.log").write_text("a line of an earlier run\n")
        began = time.monotonic()
        with pytest.raises(ct.ControllerUnavailableError) as info:
            start_controller(home.path)
    assert time.monotonic() - began < 15
    message = str(info.value)
    assert "the controller exited with code 1 before it was ready" in message
    assert str(home.path / "controller.log") in message
    assert f"127.0.0.1:{port}" in message, "the log's tail says why"
    assert "earlier run" not in message, "only this start's lines are shown"
    assert "within" not in message
