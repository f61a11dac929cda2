"""Where to reach the controller: the environment, else ``controller.json``.

A task or a replica is told its controller by ``COBALT_CONTROLLER_ADDRESS`` and
``COBALT_CONTROLLER_TOKEN`` (and ``COBALT_CONTROLLER_FINGERPRINT``, the
certificate to pin, when the controller is beyond loopback); a notebook reads
the file that the controller of its ``COBALT_HOME`` writes when it is ready,
or the same variables.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cobalt_common.paths import controller_file


@dataclass(frozen=True, slots=True)
class ControllerInfo:
    """A controller's address, its token, and its process id (0 when not known)."""

    address: str
    token: str
    pid: int = 0
    fingerprint: str = ""
    """The SHA-256 of the controller's certificate: TLS pinned to it; empty: plain text."""


_read_cache: dict[Path, tuple[tuple[int, int, int], ControllerInfo]] = {}


def read_controller_info(home: Path | None = None) -> ControllerInfo | None:
    """Where to reach the controller: the environment, else ``controller.json``.

    The file is parsed again only when it changes: a dispatch asks on every call.
    """
    address = os.environ.get("COBALT_CONTROLLER_ADDRESS")
    if address:
        return ControllerInfo(
            address,
            os.environ.get("COBALT_CONTROLLER_TOKEN", ""),
            fingerprint=os.environ.get("COBALT_CONTROLLER_FINGERPRINT", ""),
        )
    path = controller_file(home)
    try:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = _read_cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        data = json.loads(path.read_text())
        info = ControllerInfo(str(data["address"]), str(data["token"]), int(data.get("pid", 0)))
    except (OSError, ValueError, KeyError):
        return None
    _read_cache[path] = (stamp, info)
    return info
