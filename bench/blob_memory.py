"""The controller's memory while it receives one large argument.

    .venv/bin/python bench/blob_memory.py [--mb 500]

Dispatches a one-task workflow whose argument is ``--mb`` MB of bytes and
reports the controller's resident memory before, its high-water mark
(``VmHWM``) and what it still holds afterwards. The argument goes to the blob
store in chunks; the controller should hold a few chunks, not the argument.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cobalt as ct

CONFIG = '[executors.local]\ntype = "local"\nworkers = 1\n'


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid``, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


@ct.electron
def size(data: bytes) -> int:
    return len(data)


@ct.lattice
def measure(data: bytes) -> int:
    return size(data)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=500)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cobalt-blob-mem-"))
    (home / "config.toml").write_text(CONFIG)
    os.environ["COBALT_HOME"] = str(home)
    cli = Path(sys.executable).with_name("cobalt")
    subprocess.run([str(cli), "controller", "start"], check=True, stdout=subprocess.DEVNULL)
    try:
        pid = int(json.loads((home / "controller.json").read_text())["pid"])
        before = memory_mb(pid)
        data = os.urandom(args.mb << 20)
        result = ct.dispatch_sync(measure, progress=False)(data)
        after = memory_mb(pid)
        assert result.result == len(data), result
        print(f"argument:         {args.mb} MB")
        print(f"controller RSS:   before {before['VmRSS']:.0f} MB, after {after['VmRSS']:.0f} MB")
        print(
            f"controller peak:  VmHWM {after['VmHWM']:.0f} MB "
            f"(+{after['VmHWM'] - before['VmHWM']:.0f} MB over the start)"
        )
        print(f"still held:       +{after['VmRSS'] - before['VmRSS']:.0f} MB")
    finally:
        subprocess.run([str(cli), "controller", "stop"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", str(home)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
