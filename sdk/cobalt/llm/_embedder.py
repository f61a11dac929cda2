"""``ct.llm.Embedder``: sentence embeddings with requests coalesced into batches.

Callers on many threads (a replica's endpoint pool) or coroutines each ask
for a few texts; one worker thread gathers what arrives within
``max_wait_ms`` (up to ``max_batch_size`` texts) into one forward pass and
hands each caller its own vectors. A batch of 32 runs several times faster
per text than 32 batches of one on a CPU.

Example:
    >>> import torch
    >>> hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
    >>> mask = torch.tensor([[1, 1, 0]])
    >>> [round(x, 3) for x in mean_pooled(hidden, mask)[0].tolist()]
    [0.707, 0.707]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import torch

from cobalt.llm._runner import stop_at_exit
from cobalt.llm._stats import Stats
from cobalt_common.errors import SpecError

Job = tuple[list[str], "concurrent.futures.Future[list[list[float]]]"]


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """The mean of each row's unmasked vectors, scaled to unit length when ``normalize``."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled.float(), dim=-1) if normalize else pooled.float()


class Embedder:
    """Embeds texts with an encoder model, batching concurrent calls together.

    Args:
        model: a ``transformers`` encoder (``AutoModel``), or one returned by
            :func:`cobalt.optimize`.
        tokenizer: its tokenizer.
        max_batch_size: most texts in one forward pass.
        max_wait_ms: how long the first text of a batch waits for company.
        max_length: texts are cut to this many tokens.
        normalize: scale vectors to unit length (cosine similarity is then a dot product).
        name: the model name reported to clients.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_length: int = 256,
        normalize: bool = True,
        name: str | None = None,
    ) -> None:
        if (
            isinstance(max_batch_size, bool)
            or not isinstance(max_batch_size, int)
            or max_batch_size < 1
        ):
            raise SpecError(
                f"max_batch_size must be a whole number of at least 1, not {max_batch_size!r}."
            )
        if not isinstance(max_wait_ms, int | float) or not 0 <= max_wait_ms <= 10_000:
            raise SpecError(f"max_wait_ms must be between 0 and 10000, not {max_wait_ms!r}.")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.max_length, self.normalize = max_length, normalize
        config = getattr(model, "config", None)
        self.name = name or str(getattr(config, "_name_or_path", "") or "embedder")
        self._stats = Stats("embedding")
        self._jobs: list[Job] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="cobalt-embedder", daemon=True)
        self._thread.start()
        stop_at_exit(self)

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, max_batch_size={self.max_batch_size})"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        return self._submit(texts).result()

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        return await asyncio.wrap_future(self._submit(texts))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"])

    def metrics(self) -> dict[str, Any]:
        return self._stats.snapshot()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=10)

    def _submit(self, texts: Sequence[str]) -> concurrent.futures.Future[list[list[float]]]:
        if isinstance(texts, str) or any(not isinstance(t, str) for t in texts):
            raise SpecError("embed takes a list of strings; wrap a single text in a list.")
        future: concurrent.futures.Future[list[list[float]]] = concurrent.futures.Future()
        if not texts:
            future.set_result([])
            return future
        with self._wake:
            if self._closed:
                raise RuntimeError("the embedder is closed")
            self._jobs.append((list(texts), future))
            self._wake.notify()
        return future

    def _take(self) -> list[Job] | None:
        """The next batch of jobs: what arrives within ``max_wait`` of the first, up to the size."""
        with self._wake:
            while not self._jobs and not self._closed:
                self._wake.wait()
            if self._closed:
                return None
            deadline = time.monotonic() + self.max_wait
            while sum(len(t) for t, _ in self._jobs) < self.max_batch_size:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._wake.wait(left)
            taken: list[Job] = []
            count = 0
            while self._jobs and (
                not taken or count + len(self._jobs[0][0]) <= self.max_batch_size
            ):
                job = self._jobs.pop(0)
                taken.append(job)
                count += len(job[0])
            return taken

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            texts = [t for job_texts, _ in jobs for t in job_texts]
            started = time.perf_counter()
            try:
                vectors = self._forward(texts)
            except Exception as exc:
                print(f"the embedder failed:\n{traceback.format_exc()}", file=sys.stderr)
                for _, future in jobs:
                    future.set_exception(exc)
                continue
            finally:
                self._stats.busy(time.perf_counter() - started)
            self._stats.batch(len(texts))
            at = 0
            for job_texts, future in jobs:
                future.set_result(vectors[at : at + len(job_texts)])
                at += len(job_texts)
        with self._wake:
            for _, future in self._jobs:
                future.set_exception(RuntimeError("the embedder was closed"))
            self._jobs.clear()

    def _forward(self, texts: list[str]) -> list[list[float]]:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            out = self.model(**batch)
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        self._stats.embedded(len(texts), int(batch["attention_mask"].sum()))
        return mean_pooled(hidden, batch["attention_mask"], self.normalize).tolist()
