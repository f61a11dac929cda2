"""Where an agent's workers read payloads and put large outputs.

A payload in an object store comes with a presigned URL that the worker reads
itself (checking its content address); the agent holds no cloud credentials.
For the rest, the controller tells an agent where outputs go and proves which
directory it means (the ``.cobalt-store`` marker). An agent that sees that directory (a
shared filesystem, or the same machine) lets its workers read and write it
directly. Any other agent fetches each payload through the controller with
the task's own credential, into a cache directory of its own, and uploads
large outputs straight to the object store with a presigned PUT where the
controller's store is one (the store checks the bytes against their content
address), else sends them back with ``BlobPut``; every fetched payload is
checked against its content address before a worker sees it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc

from cobalt_common.errors import ContentAddressError, PayloadUnavailableError
from cobalt_common.payloads import BlobLocation, blob_path, write_blob
from cobalt_common.v1 import agent_pb2, controller_pb2, worker_pb2
from cobalt_common.v1 import controller_pb2_grpc as pb_grpc
from cobalt_executors._runtime.payloads import put_file
from cobalt_executors.base import PayloadRef, TaskArg, TaskOutcome, TaskSubmission
from cobalt_executors.remote._executor import STORE_MARKER

log = logging.getLogger("cobalt.agent")

CHUNK = 1 << 20
RPC_TIMEOUT_S = 600.0


def sees_store(welcome: agent_pb2.AgentWelcome) -> bool:
    """Whether the controller's output directory is visible here (the same one)."""
    location = welcome.output_location
    if location.kind != worker_pb2.BlobLocation.KIND_DIRECTORY or not welcome.store_id:
        return False
    try:
        marker = (Path(location.address) / STORE_MARKER).read_text().strip()
    except OSError:
        return False
    return marker == welcome.store_id


class Stager:
    """Puts a task's payloads where its worker can read them, and its output back.

    Args:
        channel: the agent's channel to the controller.
        credential: the agent's own credential (for ``BlobPut``).
        welcome: what the controller said at connect.
        cache_dir: this agent's own blob directory.
        stream: fetch and send through the controller even where its directory is visible.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        credential: str,
        welcome: agent_pb2.AgentWelcome,
        cache_dir: Path,
        *,
        stream: bool = False,
    ) -> None:
        self._stub = pb_grpc.ControllerStub(channel)
        self._credential = credential
        self.shared = not stream and sees_store(welcome)
        self.cache_dir = cache_dir
        self._controller_dir = welcome.output_location.address if self.shared else ""
        self.output_location = (
            BlobLocation.directory(self._controller_dir)
            if self.shared
            else BlobLocation.directory(cache_dir)
        )
        """Where this agent's workers put large outputs."""

    def prepare(self, task: TaskSubmission) -> TaskSubmission:
        """``task`` with every stored payload at a directory its worker reads."""
        token = task.env.get("COBALT_CONTROLLER_TOKEN", "")
        function = self._local(task.function, token)
        args = [TaskArg(a.position, a.keyword, self._local(a.payload, token)) for a in task.args]
        return replace(task, function=function, args=args)

    def needs_fetch(self, task: TaskSubmission) -> bool:
        """Whether a payload of ``task`` must come through the controller first."""
        return any(self._remote(ref) for ref in (task.function, *(a.payload for a in task.args)))

    def _remote(self, ref: PayloadRef) -> bool:
        if ref.data is not None or ref.location is None or ref.location.kind == "url":
            return False
        if self.shared and ref.location.kind == "directory":
            return False
        return not blob_path(self.cache_dir, ref.sha256).exists()

    def _local(self, ref: PayloadRef, token: str) -> PayloadRef:
        if ref.data is not None or ref.location is None or ref.location.kind == "url":
            return ref  # inline, or a presigned URL the worker reads itself
        if self.shared and ref.location.kind == "directory":
            return ref
        path = blob_path(self.cache_dir, ref.sha256)
        if not path.exists():
            write_blob(self.cache_dir, ref.sha256, self._fetch(ref.sha256, token))
        return replace(ref, location=BlobLocation.directory(self.cache_dir))

    def _fetch(self, sha256: str, token: str) -> bytes:
        digest = hashlib.sha256()
        parts = []
        for chunk in self._stub.BlobGet(
            controller_pb2.BlobGetRequest(sha256=sha256),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=RPC_TIMEOUT_S,
        ):
            digest.update(chunk.data)
            parts.append(chunk.data)
        if digest.hexdigest() != sha256:
            raise ContentAddressError(
                f"payload {sha256} fetched from the controller hashes to {digest.hexdigest()}; "
                "it was not used."
            )
        return b"".join(parts)

    def finish(self, outcome: TaskOutcome) -> TaskOutcome:
        """Sends a large output this agent's worker stored to the controller's blob
        store: straight to the object store where it takes presigned uploads, else
        through the controller."""
        out = outcome.output
        if out is None or out.data is not None or self.shared:
            return outcome
        path = blob_path(self.cache_dir, out.sha256)
        if not self._upload(out.sha256, path):
            self._put(out.sha256, path)
        path.unlink(missing_ok=True)
        return outcome

    def _upload(self, sha256: str, path: Path) -> bool:
        """Uploads ``path`` with the presigned PUT the controller gives, if it gives one;
        False: send it through the controller instead."""
        size = path.stat().st_size
        answer = self._stub.BlobUploadUrl(
            controller_pb2.BlobUploadUrlRequest(sha256=sha256, size=size),
            metadata=(("authorization", f"Bearer {self._credential}"),),
            timeout=RPC_TIMEOUT_S,
        )
        if answer.stored:
            return True
        if not answer.url:
            return False
        try:
            put_file(answer.url, dict(answer.headers), path, size)
        except PayloadUnavailableError as exc:
            log.warning("output %s: %s; sending it through the controller", sha256, exc)
            return False
        log.info("output %s (%d bytes) went straight to the object store", sha256, size)
        return True

    def _put(self, sha256: str, path: Path) -> None:
        def chunks() -> Iterator[controller_pb2.BlobChunk]:
            with path.open("rb") as f:
                first = True
                while True:
                    data = f.read(CHUNK)
                    if not data and not first:
                        return
                    yield controller_pb2.BlobChunk(sha256=sha256 if first else "", data=data)
                    first = False
                    if not data:
                        return

        self._stub.BlobPut(
            chunks(),
            metadata=(("authorization", f"Bearer {self._credential}"),),
            timeout=RPC_TIMEOUT_S,
        )
