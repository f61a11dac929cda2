"""Live progress while waiting: a widget in a real Jupyter kernel, a bar on a terminal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from conftest import ControllerHome
from nbclient import NotebookClient
from support import wait_for

pytestmark = pytest.mark.e2e

WORKFLOW = """\
import time
import cobalt as ct

@ct.electron(gpu="h100", time_limit="1m")
def work(i):
    time.sleep(0.3)
    return i

@ct.lattice(executor=ct.LocalExecutor(name="box", emulate_gpus={"h100": 2}, prices="list"))
def wf(n):
    return [work(i) for i in range(n)]
"""


@pytest.fixture
def home(tmp_path: Path) -> Iterator[ControllerHome]:
    """A fresh home; the controller a test's code starts there is stopped afterwards."""
    home = ControllerHome(tmp_path / "home", config=None)
    yield home
    home.stop()


def _env(home: ControllerHome) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COBALT_CONTROLLER_")}
    env["COBALT_HOME"] = str(home.path)
    return env


def _execute(nb: nbformat.NotebookNode, home: ControllerHome) -> None:
    """Runs a notebook on a real kernel that uses ``home``."""
    saved = dict(os.environ)
    os.environ.update(_env(home))
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _run(script: str, home: ControllerHome) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_notebook_shows_a_live_widget_while_dispatch_sync_waits(home: ControllerHome) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(WORKFLOW),
        nbformat.v4.new_code_cell("result = ct.dispatch_sync(wf)(4)\nresult.status"),
        nbformat.v4.new_code_cell("result"),
    ]
    _execute(nb, home)
    outputs = nb.cells[1].outputs
    widgets = [
        o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets, f"no widget was displayed: {outputs}"
    assert "COMPLETED" in json.dumps(outputs)
    state = json.dumps(nb.metadata.get("widgets", {}))
    assert "4 completed" in state, "the widget's last state counts the finished tasks"
    assert "emulated" in state and "$" in state, "it shows the running cost, labelled"
    assert "(billed 1 s)" in state, "and the seconds billed beside each task's duration"
    html = nb.cells[2].outputs[0]["data"]["text/html"]
    assert "completed" in html and "total" in html, "a Result renders as HTML"


def test_a_terminal_shows_a_progress_bar(home: ControllerHome) -> None:
    script = WORKFLOW + "print(ct.dispatch_sync(wf, progress=True)(3).status)\n"
    out = _run(script, home)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "COMPLETED"
    assert "wf" in out.stderr and "3/3" in out.stderr and "3 completed" in out.stderr
    assert "(emulated)" in out.stderr


def test_without_a_terminal_or_notebook_nothing_is_drawn(home: ControllerHome) -> None:
    home.start()  # else the script says on stderr that it started one
    script = WORKFLOW + "print(ct.dispatch_sync(wf)(2).status)\n"
    out = _run(script, home)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


def test_interrupting_the_wait_leaves_the_dispatch_running_and_says_how_to_cancel(
    home: ControllerHome, tmp_path: Path
) -> None:
    import signal

    import cobalt as ct

    marker = tmp_path / "started"
    script = (
        "import pathlib, time\nimport cobalt as ct\n"
        "@ct.electron\n"
        "def slow(marker):\n"
        "    pathlib.Path(marker).touch()\n"
        "    time.sleep(30)\n"
        "@ct.lattice\n"
        "def wf(marker):\n"
        "    return slow(marker)\n"
        f"ct.dispatch_sync(wf)({str(marker)!r})\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(marker.exists, timeout=60, what="the task to start")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode != 0
        found = re.search(r"stopped waiting; dispatch ([0-9a-f]+) goes on running", err)
        assert found, err
        dispatch_id = found.group(1)
        assert f"ct.cancel('{dispatch_id}')" in err
        with home.active():
            assert ct.get_result(dispatch_id).status == ct.Status.RUNNING
            assert ct.cancel(dispatch_id).status == ct.Status.CANCELLED
    finally:
        if proc.poll() is None:
            proc.kill()


def test_classes_and_lambdas_defined_in_cells_run_as_electrons(home: ControllerHome) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import dataclasses\nimport cobalt as ct\n\n"
            "@dataclasses.dataclass\nclass Point:\n    x: float\n    y: float\n"
            "    def norm2(self):\n        return self.x ** 2 + self.y ** 2\n\n"
            "square = ct.electron(lambda p: Point(p.x * p.x, p.y * p.y))\n\n"
            "@ct.electron\ndef norms(points):\n    return [p.norm2() for p in points]\n\n"
            "@ct.lattice\ndef wf(points):\n    return norms([square(p) for p in points])\n"
        ),
        nbformat.v4.new_code_cell(
            "r = ct.dispatch_sync(wf, progress=False)([Point(1, 2), Point(3, 4)])\nprint(r.result)"
        ),
        nbformat.v4.new_code_cell(
            "@dataclasses.dataclass\nclass Point:\n    x: float\n    y: float\n"
            "    def norm2(self):\n        return -1.0\n\n"
            "print(ct.dispatch_sync(wf, progress=False)([Point(1, 2)]).result)"
        ),
    ]
    _execute(nb, home)
    assert _stdout(nb.cells[1]).strip() == "[17, 337]"
    assert _stdout(nb.cells[2]).strip() == "[-1.0]", "the redefined class is used"


def _stdout(cell: nbformat.NotebookNode) -> str:
    """What a cell printed (stderr, such as the note that a controller started, left out)."""
    return "".join(o["text"] for o in cell.outputs if o.get("name") == "stdout")
