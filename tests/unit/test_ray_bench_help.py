"""bench/ray.py starts a Ray head and takes minutes, so the suite only checks that
it loads and explains itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_ray_benchmark_prints_its_usage() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ray.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--tasks" in done.stdout
    assert "plain Ray" in done.stdout
