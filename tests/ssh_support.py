"""An SSH executor whose agents are started over SSH on a real sshd on loopback and
dial a real agent service, without a controller: what the SSH executor's
contract and unit-level integration tests share."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_support import ServedRig
from service_sshd import SshdServer

from cobalt_executors import TaskOutcome
from cobalt_executors.ssh import SshExecutor


def host_table(server: SshdServer, work_dir: Path, **fields: Any) -> dict[str, Any]:
    """The host table a user would write for ``server``; the host's Python is this one."""
    return {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "key_file": str(server.client_key),
        "known_hosts": str(server.known_hosts),
        "python": sys.executable,
        "work_dir": str(work_dir),
        **fields,
    }


class SshRig(ServedRig[SshExecutor]):
    """An SSH executor named ``lab`` and its agent service on a loopback port."""

    def __init__(
        self,
        tmp_path: Path,
        report: Callable[[TaskOutcome], None],
        options: dict[str, Any],
        *,
        inline_limit: int = 1024,
    ) -> None:
        executor = SshExecutor("lab", options)
        super().__init__(tmp_path, executor, report, inline_limit=inline_limit)
