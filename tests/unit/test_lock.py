"""The lock (constraints.txt) agrees with pyproject.toml and with what is installed.

pyproject.toml states the ranges a library user needs; constraints.txt pins
the exact versions the README's two commands install. A range changed
without refreshing the lock, or an environment that drifted from it, would
test something other than what a fresh clone runs.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)$")


def _locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _PIN.match(line.strip())
        assert match, f"constraints.txt: {line!r} is not an exact pin (name==version)"
        pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lines = list(project["project"]["dependencies"])
    for extra in project["project"]["optional-dependencies"].values():
        lines += extra
    lines += project["build-system"]["requires"]
    # An extra that names cobalt's own extras ("cobalt[models]") adds nothing to pin.
    return [r for r in map(Requirement, lines) if canonicalize_name(r.name) != "cobalt"]


def test_the_lock_pins_every_requirement_of_pyproject_within_its_range() -> None:
    locked = _locked()
    problems = []
    for requirement in _requirements():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = locked.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name} is not in the lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement} excludes the locked {version}")
    assert not problems, (
        f"constraints.txt is out of date with pyproject.toml: {'; '.join(problems)}. "
        "Run scripts/lock and commit both files."
    )


def test_every_installed_package_the_lock_names_is_at_the_locked_version() -> None:
    if os.environ.get("COBALT_UNLOCKED") == "1":
        pytest.skip("COBALT_UNLOCKED=1 installs the newest releases the ranges allow")
    locked = _locked()
    drifted = []
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        installed = Version(dist.version)
        pin = locked.get(name)
        if pin is not None and Version(installed.public) != pin:
            drifted.append(f"{name} {installed} (locked {pin})")
    assert not drifted, (
        f"this environment differs from constraints.txt: {', '.join(sorted(drifted))}. "
        "Run scripts/bootstrap to install the locked versions."
    )
