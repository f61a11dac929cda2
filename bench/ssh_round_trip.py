"""A trivial task's round trip through the SSH executor against the local executor.

    .venv/bin/python bench/ssh_round_trip.py [--tasks 50]

Starts a throwaway OpenSSH server on a loopback port (as the integration tests
do: root and Debian's openssh-server, ``scripts/services``) and one controller
in a temporary ``COBALT_HOME`` with three executors: ``local``, ``direct`` (an
SSH host whose agent dials the controller) and ``tunnel`` (the same host, its
agent dialling through a reverse SSH tunnel). Each has one warm worker.

- **Agent attached**: from the controller's "listening" log line to each SSH
  agent's "attached" line (log in, check cobalt, start the agent, handshake).
- **Round trip**: ``ct.dispatch_sync`` of a one-task workflow, median of
  ``--tasks`` runs per executor, in the same controller run.

These are measurements, not pass/fail tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import cobalt as ct

ROOT = Path(__file__).resolve().parents[1]


@ct.electron(executor="local")
def on_local() -> int:
    return 1


@ct.electron(executor="direct")
def on_direct() -> int:
    return 1


@ct.electron(executor="tunnel")
def on_tunnel() -> int:
    return 1


@ct.lattice
def via_local() -> int:
    return on_local()


@ct.lattice
def via_direct() -> int:
    return on_direct()


@ct.lattice
def via_tunnel() -> int:
    return on_tunnel()


FLOWS = {"local": via_local, "direct": via_direct, "tunnel": via_tunnel}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(port: int, host: dict[str, object], folder: Path) -> str:
    def table(work_dir: str, tunnel: bool) -> str:
        fields = {**host, "work_dir": str(folder / work_dir), "tunnel": tunnel}
        return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in fields.items()) + " }"

    return f"""\
[controller]
address = "127.0.0.1:{port}"
dashboard_address = ""
gateway_address = ""

[executors.local]
type = "local"
workers = 1

[executors.direct]
type = "ssh"
workers = 1
hosts = [{table("direct", False)}]

[executors.tunnel]
type = "ssh"
workers = 1
hosts = [{table("tunnel", True)}]
"""


def _stamp(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _attach_times(log: Path) -> dict[str, float]:
    lines = log.read_text(errors="replace").splitlines()
    listening = next(_stamp(line) for line in lines if "controller listening on" in line)
    found = {}
    for line in lines:
        match = re.search(r"executor (\w+): agent \S+ on .* attached with", line)
        if match and match[1] not in found:
            found[match[1]] = _stamp(line) - listening
    return found


def _round_trip(name: str, n: int) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        result = ct.dispatch_sync(FLOWS[name])()
        times.append(time.perf_counter() - started)
        if result.status != ct.Status.COMPLETED:
            raise SystemExit(f"{name}: {result.error}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=50)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from service_sshd import running_sshd, sshd_missing

    if missing := sshd_missing():
        raise SystemExit(f"cannot start sshd: {missing}")
    with tempfile.TemporaryDirectory(prefix="cobalt-bench-ssh-") as tmp:
        folder = Path(tmp)
        with running_sshd(folder / "sshd") as server:
            host = {
                "host": server.host,
                "port": server.port,
                "user": server.user,
                "key_file": str(server.client_key),
                "known_hosts": str(server.known_hosts),
                "python": sys.executable,
            }
            home = folder / "home"
            home.mkdir()
            (home / "config.toml").write_text(_config(_free_port(), host, folder))
            os.environ["COBALT_HOME"] = str(home)
            cli = [str(Path(sys.executable).parent / "cobalt")]
            subprocess.run([*cli, "controller", "start"], check=True, capture_output=True)
            try:
                deadline = time.monotonic() + 60
                while len(attached := _attach_times(home / "controller.log")) < 2:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"agents did not attach: {attached}")
                    time.sleep(0.1)
                medians = {name: _round_trip(name, args.tasks) for name in FLOWS}
            finally:
                subprocess.run([*cli, "controller", "stop"], check=False, capture_output=True)
    for name in ("direct", "tunnel"):
        print(f"controller listening to agent attached ({name}): {attached[name]:.2f} s")
    for name, median in medians.items():
        ratio = median / medians["local"]
        print(
            f"round trip, {name:>6}: {median * 1000:6.1f} ms median of {args.tasks} ({ratio:.2f}x)"
        )


if __name__ == "__main__":
    main()
