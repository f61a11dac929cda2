"""Remote tracebacks name the user's file and show its lines with every cloudpickle
that pyproject.toml allows: the oldest, the locked one (the rest of the suite)
and the newest release on the package index.

cloudpickle 3.1.3 began writing every function pickled by value with the file
name ``<dynamic-code>``; cobalt pickles code with its own file name (see
``cobalt._pickling``). Each case installs that cloudpickle into a folder put
first on ``PYTHONPATH`` of a script, and of the controller and workers the
script starts, so the client and the worker both run it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import pytest
from conftest import ROOT, ControllerHome
from packaging.requirements import Requirement
from packaging.version import Version

pytestmark = pytest.mark.integration

SCRIPT = """\
import traceback

import cloudpickle

import cobalt as ct


@ct.electron
def explode(x):
    doubled = x * 2
    raise ValueError(f"bad input {doubled}")


@ct.lattice
def flow(x):
    return explode(x)


print("cloudpickle", cloudpickle.__version__, cloudpickle.__file__)
try:
    ct.dispatch_sync(flow, progress=False)(7)
except ct.TaskFailedError as exc:
    print("=== remote")
    print(exc.remote_traceback)
    try:
        exc.result.rerun_locally(exc.node_id)
    except ValueError:
        print("=== local")
        traceback.print_exc()
"""


def _cloudpickle_range() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return next(r for r in map(Requirement, project["dependencies"]) if r.name == "cloudpickle")


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_remote_tracebacks_show_the_users_file_and_lines_with_that_cloudpickle(
    which: str,
    tmp_path: Path,
    make_controller_home: Callable[..., ControllerHome],
    requires_service: Callable[..., None],
) -> None:
    allowed = _cloudpickle_range()
    floor = next(s.version for s in allowed.specifier if s.operator == ">=")
    wanted = f"cloudpickle=={floor}" if which == "oldest" else f"cloudpickle{allowed.specifier}"
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, wanted],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    requires_service(
        "the package index", install.returncode == 0, f"pip install {wanted}: {install.stderr}"
    )
    home = make_controller_home()
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(site), "COBALT_HOME": str(home.path)}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    version = re.search(r"^cloudpickle (\S+) (\S+)$", out, re.MULTILINE)
    assert version is not None and version[2].startswith(str(site)), out
    if which == "oldest":
        assert Version(version[1]) == Version(floor)
    else:
        assert Version(version[1]) >= Version(cloudpickle.__version__)  # at least the locked one
    remote = out.partition("=== remote")[2].partition("=== local")[0]
    local = out.partition("=== local")[2]
    for text in (remote, local):
        assert f'File "{script}", line 11, in explode' in text, out
        assert 'raise ValueError(f"bad input {doubled}")' in text, out
        assert "<dynamic-code>" not in text
    assert "ValueError: bad input 14" in remote
