"""Workers import the installed cobalt, whatever the directory that started them holds.

A notebook often sits beside a checkout or a folder that happens to be named
like a package. The controller and its workers start in that directory, and
``python -m`` would put it first on ``sys.path``, so the folder would replace
the installed package inside every task and replica.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ControllerHome

import cobalt as ct

pytestmark = pytest.mark.integration

DECOY = '"""Not cobalt: a folder beside a notebook."""\nDECOY = True\n'


@ct.electron
def which_cobalt() -> dict[str, object]:
    import os

    import beside  # a module next to the notebook, not installed

    import cobalt

    return {
        "decoy": getattr(cobalt, "DECOY", False),
        "has_optimize": hasattr(cobalt, "optimize"),
        "file": cobalt.__file__,
        "cwd": os.getcwd(),
        "beside": beside.VALUE,
    }


@ct.lattice
def probe() -> dict[str, object]:
    return which_cobalt()


def test_a_folder_named_cobalt_beside_the_notebook_does_not_replace_the_installed_package(
    make_controller_home: Callable[..., ControllerHome],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    notebook_dir = tmp_path / "project"
    for package in ("cobalt", "cobalt_controller", "cobalt_executors", "cobalt_common"):
        (notebook_dir / package).mkdir(parents=True)
        (notebook_dir / package / "__init__.py").write_text(DECOY)
    (notebook_dir / "beside.py").write_text("VALUE = 42\n")
    make_controller_home()
    # ct.dispatch starts the controller from here, as a notebook in this folder would.
    monkeypatch.chdir(notebook_dir)

    seen = ct.dispatch_sync(probe)().result

    assert seen["decoy"] is False and seen["has_optimize"] is True
    assert not str(seen["file"]).startswith(str(notebook_dir))
    assert seen["cwd"] == str(notebook_dir)
    assert seen["beside"] == 42
