"""Covalent fan-out and round-trip benchmark; prints one JSON line on stdout.

Starts a private Covalent server (config, data, cache and logs in a temporary folder, on a
free port) and always stops it before exiting.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import exit_on_sigterm, log, parse_args, report, time_fanout, time_roundtrips

START_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def private_env(root: Path, port: int) -> None:
    dirs = {
        "COVALENT_CONFIG_DIR": "config/covalent",
        "XDG_CONFIG_DIR": "config",
        "XDG_CACHE_HOME": "cache",
        "XDG_DATA_HOME": "share",
        "COVALENT_CACHE_DIR": "cache/covalent",
        "COVALENT_DATA_DIR": "share/covalent/data",
        "COVALENT_LOGDIR": "logs",
    }
    for var, sub in dirs.items():
        path = root / sub
        path.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(path)
    os.environ["COVALENT_SVC_PORT"] = str(port)


def covalent_cli(*args: str, timeout: float) -> None:
    cli = Path(sys.executable).parent / "covalent"
    subprocess.run([str(cli), *args], stdout=sys.stderr, timeout=timeout, check=True)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    exit_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="cobalt-bench-covalent-"))
    port = free_port()
    private_env(root, port)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            log(f"starting covalent on port {port} in {root}")
            started = time.perf_counter()
            covalent_cli("start", "--port", str(port), timeout=START_TIMEOUT_S)
            log(f"covalent started in {time.perf_counter() - started:.1f}s")
            version, fanout_s, samples = run(args.fanout, args.roundtrip)
    finally:
        try:
            covalent_cli("stop", timeout=120)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    report("covalent", version, args.fanout, fanout_s, samples)
    return 0


def run(fanout_n: int, roundtrip_runs: int) -> tuple[str, float, list[float]]:
    import covalent as ct

    @ct.electron
    def inc(x: int) -> int:
        return x + 1

    @ct.electron
    def total(values: list[int]) -> int:
        return sum(values)

    @ct.lattice
    def fanout_wf(n: int) -> int:
        return total([inc(i) for i in range(n)])

    @ct.lattice
    def roundtrip_wf(x: int) -> int:
        return inc(x)

    def execute(lattice: ct.Lattice, arg: int) -> int:
        dispatch_id = ct.dispatch(lattice)(arg)
        result = ct.get_result(dispatch_id, wait=True)
        if str(result.status) != "COMPLETED":
            raise RuntimeError(f"dispatch {dispatch_id} ended {result.status}: {result.error}")
        return int(result.result)

    def fanout(n: int) -> int:
        return execute(fanout_wf, n)

    def roundtrip() -> int:
        return execute(roundtrip_wf, 1)

    log("covalent", ct.__version__, "warming up")
    time_fanout(fanout, min(fanout_n, 10))
    time_roundtrips(roundtrip, 2)
    log(f"fan-out of {fanout_n}")
    fanout_s = time_fanout(fanout, fanout_n)
    log(f"{roundtrip_runs} round trips")
    samples = time_roundtrips(roundtrip, roundtrip_runs)
    return ct.__version__, fanout_s, samples


if __name__ == "__main__":
    sys.exit(main())
