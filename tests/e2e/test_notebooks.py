"""The example notebooks run top to bottom on a real Jupyter kernel, as a user runs them.

Each notebook gets a fresh ``COBALT_HOME`` and its own ``python3`` kernel (the
interpreter running the tests), working in ``notebooks/`` as Jupyter would.
What the cells print and display is checked for signs of real work, and the
controller is stopped with ``cobalt controller stop`` afterwards.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from conftest import ControllerHome
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT_S = 120
"""Every cell runs in seconds, but for starting a replica that reads a real model from its
GGUF file (up to a minute on 2 busy cores); one that hangs fails the test instead of the
whole run."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
"""Colour codes in a kernel's traceback, left out of failure messages."""

_PROBE = "import sys\nprint(sys.prefix)"
"""Appended to the executed copy: the kernel must run the interpreter the tests run."""


@dataclass(frozen=True)
class Expected:
    """What a notebook's outputs must show, by cell id: regular expressions."""

    outputs: dict[str, tuple[str, ...]]
    controller_elsewhere: bool = False
    """Start the controller from another directory before the notebook runs, as when one
    is already running. Its workers then cannot import modules that sit beside the
    notebook, so those must travel by value."""


EXPECTED = {
    "quickstart.ipynb": Expected(
        {
            "electron-repr": (r"H100",),
            "estimate": (r"worst case \$\d", r"no expected cost yet"),
            "dispatch": (
                r"COMPLETED",
                r"of a \$400\.00 budget",
                r"H100 80GB \(emulated\)",
                r"pick_best",
            ),
            "outcome": (
                r"best model: hidden=\d+ lr=[\d.]+ accuracy=0\.\d{3}",
                r"^cost \$[\d.]+ of a \$400\.00 budget \(includes emulated GPUs",
                r"8 of 9 tasks ran on emulated H100s",
            ),
            "logs": (r"finetune \(node \d+\) on 1x H100 80GB \(emulated\)", r"epoch=0 loss="),
            "redefine": (r"expected \$\d", r"'rule': 'smallest within 1 point'"),
        }
    ),
    "errors_and_debugging.ipynb": Expected(
        {
            "raises": (r"^0\.89\d*$",),
            "task-failed": (
                r"task 'parse_scores' \(node \d+\) of dispatch \w+ raised an exception",
                r"ValueError: could not convert string to float: 'n/a'",
                r"task_name: parse_scores",
                r"node_id: \d+",
                r"reason: exception",
                r"parsing 'carol=n/a'",
            ),
            "failed-result": (r">failed<", r">skipped<"),
            "rerun": (r"raised here as well: ValueError: could not convert string to float",),
            "time-limit": (
                r"hit its time limit",
                r"task_name: slow_step",
                r"reason: time_limit",
                r"starting a step of 30 s",
            ),
            "pickling": (
                r"cannot pickle argument args\[0\] of task 'score_all': "
                r"args\[0\]\['main'\]\._lock is a lock",
            ),
            "pickling-fix": (r"\[1\.8\d*, 0\.5\d*\]",),
            "no-raise": (r"^FAILED$", r"parse_scores: FAILED exception", r"average: SKIPPED"),
            "local-module": (r"\[\('model', 2\), \('h100', 1\)\]", r"\[\('cost', 2\),"),
        },
        controller_elsewhere=True,
    ),
    "deploy.ipynb": Expected(
        {
            "deploy": (
                r"^active after \d+\.\d s$",
                r">active<",
                r"active, 1 replica ready, http://127\.0\.0\.1:\d+/sentiment",
            ),
            "call": (
                r"^\{'label': 'positive', 'p_positive': 0\.\d+\}$",
                r"^\{'label': 'negative', 'p_positive': 0\.\d+\}$",
            ),
            "http": (
                r"^200 \{'label': 'positive', 'p_positive': 0\.\d+\}$",
                r"^without the token: 401$",
            ),
            "stream": (r"^ +awful  p_positive=0\.\d+$", r"^ +service  p_positive=0\.\d+$"),
            "burst": (r"^\d+ requests in 5 s; most replicas at once: [2-4]$",),
            "events": (
                r"^replicas ready after the burst: 1$",
                r"^scale_up +1 -> [2-4] replica\(s\): target_concurrency: \d+ ongoing",
                r"^scale_down +[2-4] -> 1 replica\(s\)",
            ),
            "errors": (
                r"^422 field 'text' is required by predict",
                r"^EndpointError 422 field='text': sentiment/predict: field 'text'",
            ),
            "teardown": (r"^status: stopped$", r"^after teardown: 401 "),
        }
    ),
    "serve_llm.ipynb": Expected(
        {
            "embed-deploy": (r"<deployment embeddings: active, 1 replica ready",),
            "embed-call": (
                r"^3 vectors of 384 numbers; \d+ tokens$",
                r"^cat vs kitten: +0\.[3-9]\d$",
                r"^cat vs interest rates: +-?0\.[0-2]\d$",
            ),
            "llm-deploy": (r"^\['smollm2'\]$",),
            "chat": (
                r"Paris",
                r"^finish: stop \| usage: \d+ tokens$",
                r"same text as without streaming: True$",
            ),
            "concurrent": (r"^one stream: \d+ pieces/s; 16 streams: \d+ pieces/s$",),
            "metrics": (
                r"^metrics of deployment smollm2$",
                r"^requests +\d+$",
                r"^time to first token +p50 [\d.]+ m?s, p99 [\d.]+ m?s$",
                r"^inter-token latency +p50 [\d.]+ m?s, p99 [\d.]+ m?s$",
                r"^tokens +\d[\d,]* generated",
                r"^largest batch: (1[0-6]|[2-9])$",
            ),
            "embed-metrics": (r"^metrics of deployment embeddings$", r"^batch sizes +\d+: "),
            "teardown": (r"^status: stopped stopped$",),
        }
    ),
}


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def _output_text(cell: nbformat.NotebookNode) -> str:
    """What a code cell printed and displayed, as plain text and HTML."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts += [output.data.get("text/plain", ""), output.data.get("text/html", "")]
        elif output.output_type == "error":
            parts += [f"{output.ename}: {output.evalue}", *output.traceback]
    return "\n".join(parts)


def _execute(path: Path, home: ControllerHome, tmp_path: Path) -> nbformat.NotebookNode:
    """Runs every cell of ``path`` on a fresh kernel working in the notebook's directory."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(new_code_cell(_PROBE, id="interpreter-probe"))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("COBALT_CONTROLLER_ADDRESS", "COBALT_CONTROLLER_TOKEN")
    }
    env["COBALT_HOME"] = str(home.path)
    env["IPYTHONDIR"] = str(tmp_path / "ipython")
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    with client.setup_kernel(env=env):
        try:
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
        except CellExecutionError as exc:
            pytest.fail(
                f"{path.name}, cell {index} ({cell.get('id')}) failed:\n{_ANSI.sub('', str(exc))}\n"
                f"controller log:\n{home.log_tail()}",
                pytrace=False,
            )
        finally:
            # While the kernel, the parent of a controller it started, can still reap it.
            home.stop()
    return nb


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = EXPECTED.get(path.name, Expected({}))
    home = ControllerHome(tmp_path / "cobalt-home", config=None)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    if expected.controller_elsewhere:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        home.start()
    try:
        nb = _execute(path, home, tmp_path)
    finally:
        home.stop()
    assert home.info() is None, "the controller was stopped after the notebook ran"

    cells = {cell.get("id"): cell for cell in nb.cells}
    assert _output_text(cells["interpreter-probe"]).strip() == sys.prefix, (
        "the python3 kernel runs the tests' interpreter"
    )
    for cell_id, patterns in expected.outputs.items():
        assert cell_id in cells, f"{path.name} has no cell with id {cell_id!r}"
        text = _output_text(cells[cell_id])
        for pattern in patterns:
            assert re.search(pattern, text, flags=re.M), (
                f"{path.name}, cell {cell_id!r}: no match for {pattern!r} in:\n{text}"
            )


def test_every_expected_notebook_exists() -> None:
    names = {p.name for p in _notebooks()}
    assert set(EXPECTED) <= names, f"checks for missing notebooks: {set(EXPECTED) - names}"


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{path.name}, cell {index} is stored with outputs"
        assert cell.execution_count is None, f"{path.name}, cell {index} has an execution count"
