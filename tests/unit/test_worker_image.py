"""The worker image's Dockerfile installs cobalt from the lock, with what it copies.

No container runtime runs here, so the image is not built by the tests: these
check that what the Dockerfile copies exists, that it installs through the same
lock as the README's commands, on the Python minor version the lock is for, and
that the command the Kubernetes executor gives its pods is a module cobalt has.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "worker.Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    pairs = []
    for line in lines:
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_everything_it_copies_exists_and_is_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copies = [args.split()[:-1] for word, args in instructions() if word == "COPY"]
    assert copies, "the Dockerfile copies the sources"
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source not in ignored, source
    copied = {s for sources in copies for s in sources}
    packages = {"common", "sdk", "controller", "executors"}
    assert packages <= copied, "every package that pyproject.toml finds is copied"


def test_it_installs_through_the_lock_on_the_locks_python() -> None:
    runs = " ".join(args for word, args in instructions() if word == "RUN")
    installs = re.findall(r"pip install ([^&]+)", runs)
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    lock_python = re.search(r"^# Python (\d+\.\d+)", (ROOT / "constraints.txt").read_text(), re.M)
    assert lock_python is not None
    (default,) = [args for word, args in instructions() if word == "ARG" and "PYTHON=" in args]
    assert default == f"PYTHON={lock_python[1]}"
    assert any(w == "USER" and a != "root" and a != "0" for w, a in instructions())


def test_the_pods_command_is_a_module_cobalt_has() -> None:
    (cmd,) = [args for word, args in instructions() if word == "CMD"]
    assert "cobalt_executors.agent" in cmd
    shown = subprocess.run(
        [sys.executable, "-m", "cobalt_executors.agent", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "--walltime" in shown.stdout, shown.stderr
