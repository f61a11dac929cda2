"""Where cobalt keeps its files: ``$COBALT_HOME`` (default ``~/.cobalt``)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = Path.home() / ".cobalt"
"""Where cobalt keeps its state when ``COBALT_HOME`` is not set."""


def cobalt_home() -> Path:
    return Path(os.environ.get("COBALT_HOME") or DEFAULT_HOME).expanduser()


def controller_file(home: Path | None = None) -> Path:
    """The file a running controller writes its address, pid and token to."""
    return (home or cobalt_home()) / "controller.json"


def config_file(home: Path | None = None) -> Path:
    return (home or cobalt_home()) / "config.toml"
