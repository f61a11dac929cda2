"""The README's example and the demo run as a user runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("cobalt")


@pytest.fixture
def fresh_home(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {**os.environ, "COBALT_HOME": str(tmp_path / "home")}
    env.pop("COBALT_CONTROLLER_ADDRESS", None)
    env.pop("COBALT_CONTROLLER_TOKEN", None)
    yield env
    subprocess.run([str(CLI), "controller", "stop"], env=env, check=False, capture_output=True)


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_example_runs_and_prints_a_task_table(fresh_home: dict[str, str]) -> None:
    blocks = _python_blocks((ROOT / "README.md").read_text())
    example = next(b for b in blocks if "dispatch_sync" in b)
    out = subprocess.run(
        [sys.executable, "-c", example], env=fresh_home, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "COMPLETED {'width': 128" in out.stdout
    assert "requested" in out.stdout and "H100 80GB (emulated)" in out.stdout
    assert "worst case $" in out.stdout, "the estimate is printed before the run"
    assert re.search(r"cost \$[0-9.]+ of a \$250\.00 budget", out.stdout)


def test_readme_pitch_decorator_block_is_valid_python(fresh_home: dict[str, str]) -> None:
    pitch = _python_blocks((ROOT / "README.md").read_text())[0]
    out = subprocess.run(
        [sys.executable, "-c", pitch], env=fresh_home, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_demo_finetunes_on_emulated_h100s_and_picks_the_best_on_cpu(
    fresh_home: dict[str, str],
) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "notebooks" / "finetune_demo.py")],
        env=fresh_home,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"worst case \$3\d\d\.\d\d", out.stdout), "estimate from the time limits"
    assert re.search(r"status: COMPLETED, cost \$[0-9.]+ of a \$400\.00 budget", out.stdout)
    assert "best model:" in out.stdout
    table = out.stdout.split("best model:")[1]
    assert table.count("finetune") == 4 and table.count("evaluate") == 4
    assert "1x H100 80GB, 1 CPU, 48 GB, limit 18h" in table
    assert "8 of 9 tasks ran on emulated H100s" in out.stdout
