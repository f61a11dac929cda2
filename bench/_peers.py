"""Install and measure peer frameworks (Ray, Dask, Covalent, Ray Serve, submitit,
dask-jobqueue), each in its own venv.

Usage: python bench/_peers.py [ray dask covalent] --fanout N --roundtrip R

Task peers (``"bench": "tasks"``) are measured by bench/core.py; the
deployment peer ``ray-serve`` by bench/deploy.py (``run_peer``); the Slurm
peers ``submitit`` and ``dask-jobqueue`` by bench/slurm.py. A peer's
script is ``bench/peers/<name with - as _>_bench.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PEERS_DIR = Path(
    os.environ.get("COBALT_BENCH_PEERS_DIR", tempfile.gettempdir() + "/cobalt-bench-peers")
)
SCRIPTS_DIR = Path(__file__).resolve().parent / "peers"
INSTALL_TIMEOUT_S = 1200.0
KILL_GRACE_S = 30.0

PEERS: dict[str, dict[str, Any]] = {
    "ray": {"requirements": ["ray>=2.9,<3"], "module": "ray", "bench": "tasks"},
    "dask": {
        "requirements": ["dask[distributed]", "distributed>=2024.1"],
        "module": "distributed",
        "bench": "tasks",
    },
    "covalent": {
        "requirements": ["covalent==0.240.0", "fastapi==0.115.14", "pydantic==2.10.6"],
        "module": "covalent",
        "bench": "tasks",
    },
    # The serve extra resolves here to ray 2.60.0 with fastapi 0.165, starlette
    # 1.10, uvicorn 0.54 and pydantic 2.14, which work together: no extra pins.
    # The import check loads the HTTP stack the extra brings.
    "ray-serve": {
        "requirements": ["ray[serve]>=2.9,<3"],
        "module": "ray.serve, fastapi, starlette, uvicorn",
        "bench": "deploy",
    },
    # Slurm peers (bench/slurm.py): their scripts take the cluster's slurm.conf
    # and a folder that the jobs share with the client.
    "submitit": {"requirements": ["submitit"], "module": "submitit", "bench": "slurm"},
    "dask-jobqueue": {
        "requirements": ["dask-jobqueue", "distributed>=2024.1"],
        "module": "dask_jobqueue, distributed",
        "bench": "slurm",
    },
}
TASK_PEERS = [name for name, spec in PEERS.items() if spec["bench"] == "tasks"]


class PeerError(RuntimeError):
    pass


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


PRIVATE_DIRS = {
    "XDG_CONFIG_DIR": ".config",
    "XDG_CONFIG_HOME": ".config",
    "XDG_CACHE_HOME": ".cache",
    "XDG_DATA_HOME": ".local/share",
}


def _works(root: Path, module: str) -> bool:
    """Check the venv imports `module`, with HOME and XDG dirs kept inside `root`."""
    python = _python(root / "venv")
    if not python.exists():
        return False
    home = root / "home"
    env = {**os.environ, "HOME": str(home)}
    env.update({var: str(home / sub) for var, sub in PRIVATE_DIRS.items()})
    proc = subprocess.run(
        [str(python), "-c", f"import {module}"],
        capture_output=True,
        timeout=120,
        check=False,
        env=env,
    )
    return proc.returncode == 0


def _tail(text: str, limit: int = 300) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[-limit:]


def ensure_peer(name: str) -> Path:
    """Install the peer in PEERS_DIR/<name>/venv if needed; return the venv's python."""
    if name not in PEERS:
        raise PeerError(f"unknown peer {name!r}; choose from {sorted(PEERS)}")
    spec = PEERS[name]
    root = PEERS_DIR / name
    venv = root / "venv"
    python = _python(venv)
    marker = root / "installed.json"
    if marker.exists():
        try:
            recorded = json.loads(marker.read_text())
        except ValueError:
            recorded = {}
        if recorded.get("requirements") == spec["requirements"] and _works(root, spec["module"]):
            return python
    marker.unlink(missing_ok=True)
    shutil.rmtree(venv, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *spec["requirements"],
        ],
    ]
    for cmd in steps:
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise PeerError(f"install of {name} timed out after {INSTALL_TIMEOUT_S:.0f}s") from exc
        if proc.returncode != 0:
            raise PeerError(f"install of {name} failed: {_tail(proc.stderr or proc.stdout)}")
    if not _works(root, spec["module"]):
        raise PeerError(f"install of {name} finished but `import {spec['module']}` fails")
    install_s = time.perf_counter() - started
    marker.write_text(
        json.dumps({"requirements": spec["requirements"], "install_s": round(install_s, 1)})
    )
    return python


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _end_group(proc: subprocess.Popen[str], grace_s: float) -> None:
    """SIGTERM the script's process group, wait up to grace_s, then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    while time.monotonic() < deadline and _group_alive(proc.pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _run_script(python: Path, name: str, args: list[str], timeout_s: float) -> dict[str, Any]:
    log_path = PEERS_DIR / name / "last_run.log"
    cmd = [str(python), str(SCRIPTS_DIR / f"{name.replace('-', '_')}_bench.py"), *args]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _end_group(proc, KILL_GRACE_S)
            return {"error": f"{name} benchmark timed out after {timeout_s:.0f}s (log: {log_path})"}
        finally:
            if _group_alive(proc.pid):
                _end_group(proc, KILL_GRACE_S)
    if proc.returncode != 0:
        reason = _tail(log_path.read_text())
        return {"error": f"{name} benchmark exited {proc.returncode}: {reason} (log: {log_path})"}
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    return {"error": f"{name} benchmark printed no JSON (log: {log_path})"}


def run_peer(name: str, args: list[str], timeout_s: float) -> dict[str, Any]:
    """Install the peer if needed and run its script with `args` (timeout_s for the run only).

    Returns the script's JSON line, or {"error": reason}.
    """
    try:
        python = ensure_peer(name)
        return _run_script(python, name, args, timeout_s)
    except Exception as exc:
        return {"error": f"{name}: {type(exc).__name__}: {exc}"}


def measure_peer(
    name: str, *, fanout_n: int, roundtrip_runs: int, timeout_s: float
) -> dict[str, Any]:
    """Run a task peer's benchmark script in its venv; return its JSON or {"error": reason}."""
    args = ["--fanout", str(fanout_n), "--roundtrip", str(roundtrip_runs)]
    return run_peer(name, args, timeout_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peers", nargs="*", default=TASK_PEERS, choices=TASK_PEERS)
    parser.add_argument("--fanout", type=int, default=2000)
    parser.add_argument("--roundtrip", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    failed = False
    for name in args.peers:
        result = measure_peer(
            name, fanout_n=args.fanout, roundtrip_runs=args.roundtrip, timeout_s=args.timeout
        )
        failed = failed or "error" in result
        print(json.dumps({"peer": name, **result}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
