"""The vLLM backend: ``Engine(path, backend="vllm")`` on a CUDA GPU.

vLLM schedules, batches and caches on its own (continuous batching, paged
attention, prefix caching, speculative decoding); this module only translates
between cobalt's engine interface and vLLM's asynchronous engine, which runs
on an event loop of its own in a background thread so that synchronous
callers (a replica's endpoint threads) can use it too.

vLLM is imported only here, and only when this backend is chosen.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cobalt.llm._stats import Stats
from cobalt.llm._types import Chunk, Completion, FinishReason, Prompt, SamplingParams
from cobalt_common.errors import SpecError

T = TypeVar("T")
_ids = itertools.count()


class VllmRunner:
    """A vLLM ``AsyncLLMEngine`` for one model path, with cobalt's counters."""

    def __init__(
        self,
        path: str,
        *,
        draft: str | None,
        speculative_tokens: int,
        max_batch_size: int,
        prefix_cache: bool,
        stats: Stats,
        adapters: dict[str, str] | None = None,
    ) -> None:
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        options: dict[str, Any] = {
            "model": path,
            "max_num_seqs": max_batch_size,
            "enable_prefix_caching": prefix_cache,
        }
        if draft == "ngram":  # vLLM's own prompt lookup
            options["speculative_config"] = {
                "method": "ngram",
                "num_speculative_tokens": speculative_tokens,
                "prompt_lookup_max": 3,
            }
        elif draft is not None:
            options["speculative_config"] = {
                "model": draft,
                "num_speculative_tokens": speculative_tokens,
            }
        self._adapters: dict[str, Any] = {}
        if adapters:  # vLLM's own multi-LoRA batching
            from vllm.lora.request import LoRARequest

            options["enable_lora"] = True
            options["max_loras"] = len(adapters)
            options["max_lora_rank"] = max(lora_rank(path) for path in adapters.values())
            self._adapters = {
                name: LoRARequest(name, number, path)
                for number, (name, path) in enumerate(adapters.items(), start=1)
            }
        self.stats = stats
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._engine = self._run(_make(AsyncLLMEngine, AsyncEngineArgs(**options)))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def chunks(
        self, prompt: Prompt, params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """Chunks of one generation, read on the backend's own loop."""
        from vllm import SamplingParams as VllmParams

        vllm_params = VllmParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=list(params.stop) or None,
            seed=params.seed,
        )
        request = prompt if isinstance(prompt, str) else {"prompt_token_ids": list(prompt)}
        request_id = f"cobalt-{next(_ids)}"
        arrived, first, last = time.perf_counter(), None, None
        text_sent, tokens_sent = 0, 0
        try:
            lora = self._adapters.get(adapter) if adapter is not None else None
            outputs = self._engine.generate(request, vllm_params, request_id, lora_request=lora)
            async for output in outputs:
                now = time.perf_counter()
                done = output.outputs[0]
                new_tokens = tuple(done.token_ids[tokens_sent:])
                if new_tokens and first is None:
                    first = now
                    self.stats.first_latency(now - arrived)
                elif new_tokens and last is not None:
                    for _ in new_tokens:
                        self.stats.gap((now - last) / len(new_tokens))
                last = now if new_tokens else last
                reason: FinishReason | None = None
                if output.finished:
                    reason = "length" if done.finish_reason == "length" else "stop"
                yield Chunk(done.text[text_sent:], new_tokens, reason)
                text_sent, tokens_sent = len(done.text), len(done.token_ids)
                if output.finished:
                    self.stats.counted(len(output.prompt_token_ids or ()), tokens_sent)
        finally:
            await self._engine.abort(request_id)

    def stream(
        self, prompt: Prompt, params: SamplingParams, adapter: str | None = None
    ) -> Iterator[Chunk]:
        agen = self.chunks(prompt, params, adapter)
        try:
            while True:
                try:
                    yield self._run(_next(agen))
                except StopAsyncIteration:
                    return
        finally:
            self._run(agen.aclose())

    async def astream(
        self, prompt: Prompt, params: SamplingParams, adapter: str | None = None
    ) -> AsyncIterator[Chunk]:
        agen = self.chunks(prompt, params, adapter)
        try:
            while True:
                future = asyncio.run_coroutine_threadsafe(_next(agen), self._loop)
                try:
                    yield await asyncio.wrap_future(future)
                except StopAsyncIteration:
                    return
        finally:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(agen.aclose(), self._loop))

    def generate_all(
        self, prompts: Sequence[Prompt], params: SamplingParams, adapter: str | None = None
    ) -> list[Completion]:
        """Several generations at once, vLLM batching them."""

        async def one(prompt: Prompt) -> Completion:
            started = time.perf_counter()
            chunks = [c async for c in self.chunks(prompt, params, adapter)]
            count = len(prompt) if not isinstance(prompt, str) else 0
            return completion_of(chunks, count, started)

        async def every() -> list[Completion]:
            return list(await asyncio.gather(*(one(p) for p in prompts)))

        return self._run(every())

    def close(self) -> None:
        shutdown = getattr(self._engine, "shutdown", None)
        if callable(shutdown):
            shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def lora_rank(path: str) -> int:
    """The largest rank in a ``peft`` adapter's config (vLLM sizes its buffers by it)."""
    try:
        config = json.loads((Path(path) / "adapter_config.json").read_text())
        ranks = [config["r"], *(config.get("rank_pattern") or {}).values()]
        return max(int(r) for r in ranks)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SpecError(
            f"{path} is not a LoRA adapter folder with a readable adapter_config.json: {exc}"
        ) from exc


async def _next(agen: AsyncGenerator[Chunk, None]) -> Chunk:
    return await agen.__anext__()


async def _make(engine_class: Any, args: Any) -> Any:
    """vLLM's engine, created on the loop that will drive it."""
    return engine_class.from_engine_args(args)


def completion_of(chunks: Sequence[Chunk], prompt_tokens: int, started: float) -> Completion:
    """A :class:`Completion` from a finished stream's chunks."""
    tokens = tuple(t for c in chunks for t in c.token_ids)
    reason = chunks[-1].finish_reason if chunks else None
    return Completion(
        text="".join(c.text for c in chunks),
        token_ids=tokens,
        prompt_tokens=prompt_tokens,
        finish_reason=reason or "length",
        duration=time.perf_counter() - started,
    )
