"""The folders the local executor's workers write their stdout and stderr to.

One per executor, named ``cobalt-local-<controller pid>-<random>``, in the
controller's ``<home>/workers``. A controller that is killed leaves its folders
behind; the next controller's executors remove the ones whose pid no longer
runs, so the pid in the name is what makes them findable.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from cobalt_common.processes import pid_running

PREFIX = "cobalt-local-"
_NAME = re.compile(rf"{re.escape(PREFIX)}(\d+)-")


def make_log_dir(parent: Path | None) -> Path:
    """A new folder for this process's workers, in ``parent`` (the system's
    temporary directory when None); stale ones in ``parent`` are removed first."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale(parent)
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))


def remove_stale(parent: Path) -> list[Path]:
    """Removes the folders in ``parent`` left by processes no longer running."""
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or pid_running(int(match[1])) or not entry.is_dir():
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed
