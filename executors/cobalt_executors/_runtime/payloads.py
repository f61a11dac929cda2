"""Where payload bytes live on disk: ``<blob_dir>/<sha[:2]>/<sha>``.

Only a content address (64 lowercase hex digits) becomes a file name here;
anything else is refused, so no name can reach outside ``blob_dir``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cobalt_common.checks import validate_sha256


def blob_path(blob_dir: str | Path, sha256: str) -> Path:
    """The file of ``sha256``; raises ``ContentAddressError`` for any other name."""
    validate_sha256(sha256)
    return Path(blob_dir) / sha256[:2] / sha256


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_blob(blob_dir: str | Path, sha256: str, data: bytes) -> None:
    """Writes atomically (temporary file, then rename); a no-op if present."""
    path = blob_path(blob_dir, sha256)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{sha256}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
