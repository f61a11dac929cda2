"""Fixtures shared by the test tiers.

Integration tests run against a real controller, started with the real CLI
(``cobalt controller start``) under a temporary ``COBALT_HOME`` and stopped
with ``cobalt controller stop``; nothing touches the user's ``~/.cobalt``.

Tests that need an external service (PostgreSQL, Slurm, ...) call
:func:`requires_service` through the fixture of the same name: on a laptop
without the service they skip, in CI (``CI=true``) they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cobalt import _client
from cobalt._client import get_client
from cobalt_common.processes import pid_running
from cobalt_common.v1 import controller_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]

CONFIG_TOML = """\
[controller]
retry_backoff_s = 0.05

[executors.local]
type = "local"

[executors.gpu]
type = "local"
emulate_gpus = { h100 = 2 }
memory = "256GB"
"""

DEPLOY_CONFIG_TOML = """\
[controller]
retry_backoff_s = 0.05
autoscale_interval_s = 0.2

[executors.local]
type = "local"
workers = 1
cpus = 16
memory = "64GB"
"""
"""For deployment tests: fast autoscaling ticks, and room for many small replicas
(``cpus=0.25``) on a 2-core machine."""


def mypy_by_comment(snippet: str, folder: Path) -> dict[str, str]:
    """Runs mypy on ``snippet`` with the project's settings; maps the trailing comment of
    each line it reports on to its messages (``reveal_type`` lines included).

    It shares the project's ``.mypy_cache``, which the type check of ``scripts/test``
    has just filled with the same settings: with a cache of its own, each snippet
    took 30 to 40 s on two cores, most of a test's time limit on a loaded machine.
    """
    from mypy import api

    # A module name never checked before: for a module its cache holds as fresh,
    # mypy reports the notes under the path the module had when it was cached.
    path = folder / f"snippet_{os.getpid()}_{time.monotonic_ns()}.py"
    path.write_text(snippet)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        stdout, stderr, _ = api.run(
            [
                str(path),
                f"--config-file={ROOT / 'pyproject.toml'}",
                f"--cache-dir={ROOT / '.mypy_cache'}",
                "--no-error-summary",
            ]
        )
    assert not stderr, stderr
    lines = snippet.splitlines()
    report: dict[str, str] = {}
    for match in re.finditer(rf"^{re.escape(str(path))}:(\d+): (.*)$", stdout, re.MULTILINE):
        comment = lines[int(match[1]) - 1].partition("# ")[2]
        report[comment] = f"{report.get(comment, '')}{match[2]}\n"
    return report


"""The test controller: the default ``local`` executor plus ``gpu``, which
emulates two H100s; retries wait 50 ms instead of a second."""

_CONNECTION_VARIABLES = ("COBALT_CONTROLLER_ADDRESS", "COBALT_CONTROLLER_TOKEN")


def requires_service(name: str, available: bool, hint: str = "") -> None:
    """Skip the calling test when ``name`` is not available; fail instead in CI.

    Args:
        name: the service, as people call it ("PostgreSQL").
        available: whether the service can be used now.
        hint: how to make it available, for the skip message.
    """
    if available:
        return
    message = f"{name} is not available" + (f" ({hint})" if hint else "")
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}, and CI=true requires every service.", pytrace=False)
    pytest.skip(message)


@pytest.fixture(name="requires_service", scope="session")
def requires_service_fixture() -> Callable[..., None]:
    """:func:`requires_service`, for tests and fixtures to call."""
    return requires_service


def reset_clients() -> None:
    """Forget the SDK's cached connections, so the next call reads the current home."""
    with _client._lock:
        clients = list(_client._clients.values())
        _client._clients.clear()
    for client in clients:
        client.close()


def _cli_command() -> list[str]:
    script = Path(sys.executable).with_name("cobalt")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cobalt.cli"]


class ControllerHome:
    """A temporary ``COBALT_HOME`` and the controller that serves it.

    Args:
        path: the directory; created with ``config`` as its ``config.toml``.
        config: the TOML text, or ``None`` for no config file (the defaults).
    """

    def __init__(self, path: Path, config: str | None = CONFIG_TOML) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        if config is not None:
            (path / "config.toml").write_text(config)

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cobalt ARGS`` for this home, as a user would in a terminal."""
        env = {k: v for k, v in os.environ.items() if k not in _CONNECTION_VARIABLES}
        env["COBALT_HOME"] = str(self.path)
        proc = subprocess.run(
            [*_cli_command(), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"`cobalt {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
                f"\ncontroller log:\n{self.log_tail()}"
            )
        return proc

    def start(self) -> None:
        self.cli("controller", "start")

    def stop(self) -> None:
        """Stop the controller with the CLI; kill its pid only if that did not work."""
        info = self.info()
        if info is None:
            return
        self.cli("controller", "stop", check=False)
        pid = int(info.get("pid", 0))
        deadline = time.monotonic() + 15
        while pid and pid_running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid and pid_running(pid):
            os.kill(pid, signal.SIGKILL)

    def info(self) -> dict[str, Any] | None:
        """The running controller's ``controller.json`` (address, pid, token)."""
        try:
            data: dict[str, Any] = json.loads((self.path / "controller.json").read_text())
        except (OSError, ValueError):
            return None
        return data

    @property
    def pid(self) -> int:
        info = self.info()
        assert info is not None, f"no controller is running for {self.path}"
        return int(info["pid"])

    @property
    def address(self) -> str:
        info = self.info()
        assert info is not None, f"no controller is running for {self.path}"
        return str(info["address"])

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.path / "controller.log").read_text(errors="replace")
        except OSError:
            return "(no controller.log)"
        return "\n".join(text.splitlines()[-lines:])

    @contextlib.contextmanager
    def serving(self) -> Iterator[ControllerHome]:
        """Start the controller, point the SDK at it, and stop it afterwards.

        Its log's tail is printed at the end (pytest shows it for failures),
        and payload blobs are removed.
        """
        self.start()
        try:
            with self.active():
                yield self
        finally:
            self.stop()
            print(f"controller log of {self.path}:\n{self.log_tail()}")
            shutil.rmtree(self.path / "blobs", ignore_errors=True)

    @contextlib.contextmanager
    def active(self) -> Iterator[ControllerHome]:
        """Point the SDK at this home for the duration of the block."""
        saved = {k: os.environ.get(k) for k in ("COBALT_HOME", *_CONNECTION_VARIABLES)}
        os.environ["COBALT_HOME"] = str(self.path)
        for key in _CONNECTION_VARIABLES:
            os.environ.pop(key, None)
        reset_clients()
        try:
            yield self
        finally:
            reset_clients()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="session", autouse=True)
def _isolated_cobalt_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test reaches the user's ``~/.cobalt``: COBALT_HOME starts at an empty directory.

    A controller that a test starts there by accident is stopped at the end.
    """
    home = ControllerHome(tmp_path_factory.mktemp("cobalt-unused-home"), config=None)
    with home.active():
        yield
    home.stop()


@pytest.fixture(scope="module")
def controller_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerHome]:
    """A controller with :data:`CONFIG_TOML`, shared by the tests of one module."""
    with ControllerHome(tmp_path_factory.mktemp("cobalt-home")).serving() as home:
        yield home


@pytest.fixture
def make_controller_home(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ControllerHome]]:
    """Make a fresh home (not started) and point the SDK at it for this test.

    Every controller found running in one of these homes is stopped afterwards,
    including one that ``ct.dispatch`` started by itself.
    """
    homes: list[ControllerHome] = []
    with contextlib.ExitStack() as stack:

        def make(config: str | None = CONFIG_TOML) -> ControllerHome:
            home = ControllerHome(tmp_path_factory.mktemp("cobalt-fresh-home"), config)
            homes.append(home)
            stack.enter_context(home.active())
            return home

        try:
            yield make
        finally:
            for home in homes:
                home.stop()


def dispatch_ids() -> set[str]:
    """Every dispatch the current controller knows, by id."""
    client = get_client()
    response = client.call(client.stub.DispatchList, pb.DispatchListRequest(limit=100_000))
    return {d.dispatch_id for d in response.dispatches}


@pytest.fixture
def registered_dispatches() -> Callable[[], set[str]]:
    """A function listing the current controller's dispatch ids (``cobalt dispatches``)."""
    return dispatch_ids
