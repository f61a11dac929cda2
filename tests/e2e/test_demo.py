"""The demo that `scripts/demo` runs, run as a user runs it.

The README's and the manual's code blocks are run by ``test_docs.py``.
"""

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


def test_demo_finetunes_on_emulated_h100s_picks_the_best_on_cpu_and_deploys_it(
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
    assert re.search(r"deploy mlp-classifier .* COMPLETED", table), "deploying is the last task"
    assert "8 of 10 tasks ran on emulated H100s" in out.stdout
    url = r"http://127\.0\.0\.1:\d+/mlp-classifier"
    assert re.search(rf"deployed mlp-classifier at {url} \(1 replica ready\)", out.stdout)
    calls = re.findall(rf"POST {url}/predict -> \{{'p_class_1': \[0\.\d+\]\}}", out.stdout)
    assert len(calls) == 3, "the deployed model answers over HTTP"
    assert re.search(r"accuracy of the deployed model on 1000 new samples: 0\.[6-9]", out.stdout)
    assert re.search(r"replicas: 1 ready of 1 wanted\ncost: +\$[0-9.]+ \(emulated\)", out.stdout)
    assert "dep.teardown(): mlp-classifier is stopped" in out.stdout
