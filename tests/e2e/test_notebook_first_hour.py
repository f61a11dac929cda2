"""A first hour in a notebook, on a real Jupyter kernel: what the cells show and what
a saved notebook keeps.

One notebook runs once for the module: it dispatches twice (starting a
controller), then lets a task failure go uncaught and follows the error
message's advice in the next cell.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import nbformat
import pytest
from conftest import ControllerHome
from nbclient import NotebookClient

pytestmark = pytest.mark.e2e

DEFINE = """\
import sys, time
import cobalt as ct

@ct.electron(gpu="h100", time_limit="1m")
def work(i):
    time.sleep(0.2)
    return i

@ct.lattice(executor=ct.LocalExecutor(name="box", emulate_gpus={"h100": 2}, prices="list"))
def wf(n):
    return [work(i) for i in range(n)]

@ct.electron
def parse(text):
    return float(text)

@ct.lattice
def parse_all(texts):
    return [parse(t) for t in texts]
"""

CELLS = {
    "define": DEFINE,
    "first": "ct.dispatch_sync(wf)(4).status",
    "second": "ct.dispatch_sync(wf)(2).status",
    "fails": "ct.dispatch_sync(parse_all, progress=False)(['1.5', 'n/a'])",
    "after": (
        "failure = ct.last_failure()\n"
        "print(type(failure).__name__, failure is sys.last_value)\n"
        "try:\n"
        "    ct.last_failure().result.rerun_locally(failure.node_id)\n"
        "except ValueError as exc:\n"
        "    print('raised here:', exc)\n"
    ),
}


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, nbformat.NotebookNode]]:
    """The executed cells by id; the controller the notebook started is stopped after."""
    home = ControllerHome(tmp_path_factory.mktemp("first-hour") / "home", config=None)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code, id=key) for key, code in CELLS.items()]
    for cell in nb.cells:
        if cell.id == "fails":
            cell.metadata["tags"] = ["raises-exception"]
    saved = dict(os.environ)
    os.environ.update({"COBALT_HOME": str(home.path)})
    for key in ("COBALT_CONTROLLER_ADDRESS", "COBALT_CONTROLLER_TOKEN"):
        os.environ.pop(key, None)
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3").execute()
        yield {cell.id: cell for cell in nb.cells}
    finally:
        os.environ.clear()
        os.environ.update(saved)
        home.stop()


def _stderr(cell: nbformat.NotebookNode) -> str:
    return "".join(o.text for o in cell.outputs if o.get("name") == "stderr")


def _plain(cell: nbformat.NotebookNode) -> list[str]:
    return [o.data["text/plain"] for o in cell.outputs if "text/plain" in o.get("data", {})]


def test_the_cell_that_started_a_controller_says_where_it_is_and_how_to_stop_it(
    cells: dict[str, nbformat.NotebookNode],
) -> None:
    said = _stderr(cells["first"])
    assert re.search(r"started a controller in the background at 127\.0\.0\.1:\d+", said), said
    assert "controller.log" in said and "cobalt controller stop" in said
    assert "started a controller" not in _stderr(cells["second"]), "it is said once"


def test_a_saved_notebook_shows_the_live_widget_as_a_line_of_text(
    cells: dict[str, nbformat.NotebookNode],
) -> None:
    widget = [
        o
        for o in cells["first"].outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert len(widget) == 1, cells["first"].outputs
    text = widget[0].data["text/plain"]
    assert "VBox" not in text
    assert re.fullmatch(
        r"wf [0-9a-f]+: COMPLETED · 4 tasks: 4 completed · \$\d+\.\d+ \(emulated\) · [\d.]+ m?s",
        text,
    ), text


def test_after_an_uncaught_failure_the_message_points_at_ct_last_failure(
    cells: dict[str, nbformat.NotebookNode],
) -> None:
    errors = [o for o in cells["fails"].outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "TaskFailedError"
    assert re.search(r"ct\.last_failure\(\)\.result\.rerun_locally\(\d+\)", errors[0].evalue)
    printed = "".join(o.get("text", "") for o in cells["after"].outputs)
    assert "TaskFailedError True" in printed, cells["after"].outputs
    assert "raised here: could not convert string to float: 'n/a'" in printed
