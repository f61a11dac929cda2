"""The committed protobuf code is exactly what ``scripts/gen-protos`` generates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "common" / "cobalt_common" / "v1"


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_generated_protobuf_code_matches_the_protos_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "v1"
    env = {**os.environ, "COBALT_PROTO_OUT": str(out), "PYTHON": sys.executable}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "gen-protos")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"scripts/gen-protos failed:\n{proc.stdout}{proc.stderr}"
    generated = _files(out)
    committed = {name: data for name, data in _files(COMMITTED).items() if name in generated}
    stale = sorted(set(_files(COMMITTED)) - set(generated))
    changed = sorted(name for name in generated if committed.get(name) != generated[name])
    assert generated, "scripts/gen-protos generated nothing"
    assert not changed and not stale, (
        f"common/cobalt_common/v1 is out of date with protos/cobalt/v1 (differs: {changed}; "
        f"not generated any more: {stale}); run scripts/gen-protos and commit the result."
    )


def test_generated_code_is_written_where_cobalt_proto_out_points(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "v1"
    env = {**os.environ, "COBALT_PROTO_OUT": str(out), "PYTHON": sys.executable}
    subprocess.run(
        [str(ROOT / "scripts" / "gen-protos")],
        env=env,
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert {"controller_pb2.py", "controller_pb2_grpc.py", "worker_pb2.py", "__init__.py"} <= set(
        _files(out)
    )
    assert b"from cobalt_common.v1 import" in (out / "controller_pb2_grpc.py").read_bytes()
