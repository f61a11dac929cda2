"""``ct.llm.Engine``: text generation with continuous batching, for service code.

Example:
    >>> import cobalt as ct
    >>> model, tokenizer = ct.llm.random_model(seed=0)
    >>> engine = ct.llm.Engine(model, tokenizer)
    >>> out = engine.generate("Hello", max_tokens=5, temperature=0)
    >>> out.completion_tokens, out.finish_reason
    (5, 'length')
    >>> engine.close()
"""

from __future__ import annotations

import asyncio
import os
import queue
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, overload

import torch

from cobalt.llm._backend import (
    Backend,
    checked_name,
    fast_forward,
    int8_copy,
    load,
    model_name,
    resolve_backend,
)
from cobalt.llm._embedder import mean_pooled
from cobalt.llm._lora import MAX_ADAPTERS
from cobalt.llm._prefix import PrefixCache
from cobalt.llm._runner import Runner
from cobalt.llm._sequence import Sequence as Running
from cobalt.llm._stats import Stats
from cobalt.llm._types import Chunk, Completion, Prompt, SamplingParams
from cobalt.llm._vllm import VllmRunner, completion_of
from cobalt.llm._weights import WeightFormat, checked_format
from cobalt_common.errors import SpecError

_FALLBACK_CHAT = "{role}: {content}\n"


class Engine:
    """Serves a causal language model to many concurrent callers.

    Requests join the running batch as soon as they arrive and leave it as
    soon as they end (continuous batching over a shared key/value cache);
    prompts that start like an earlier one reuse its cached keys and values;
    with ``draft=`` every step is speculative, and greedy output stays token
    for token what the target alone would give.

    Args:
        model: a ``transformers`` causal LM, or the path of a folder written
            by ``save_pretrained`` or of a ``.gguf`` file (read without a
            network; a GGUF model's weights are dequantized).
        tokenizer: its tokenizer (read from ``model``'s path when it is one,
            with its chat template).
        backend: ``"torch"`` runs the model with ``transformers`` on its
            device (CPU or CUDA); ``"vllm"`` hands a model path to vLLM's
            asynchronous engine, which then does the batching, caching and
            speculation itself; ``"auto"`` picks vLLM when it is installed,
            a CUDA GPU is present and ``model`` is a path, and ``"torch"``
            otherwise.
        draft: a smaller causal LM with the same tokenizer, ``"int8"`` for
            an int8 copy of ``model``, or ``"ngram"`` to propose the tokens
            that followed the latest earlier occurrence of the text's last
            few tokens (no second model; each request speculates only while
            its measured acceptance pays for the wider pass); ``None`` turns
            speculation off.
        weights: the format a Llama-family model's weights are held in on a
            CPU, where decoding is bound by the bytes of weights read per
            token: ``"fp32"`` (exactly the model), ``"bf16"``, ``"int8"``
            (per output channel) or ``"int4"`` (groups of 32, GGUF's Q4_1
            layout). Each format's agreement with fp32 is measured in
            ``docs/llm.md``. Other models, and GPUs, run as given.
        speculative_tokens: tokens the draft proposes per step.
        speculative_max_batch: speculate only while at most this many
            requests run; a larger batch is compute-bound, and there plain
            steps are faster (the draft catches up when the batch shrinks).
        max_batch_size: most sequences decoded together; more wait their turn.
        prefix_cache: keep prompts' keys and values for reuse.
        prefix_cache_tokens: how many prompt tokens the prefix cache holds.
        prefill_chunk_tokens: a prompt that arrives while others decode,
            and is longer than this, is prefilled this many tokens per step,
            between the running requests' steps, so it never stalls them
            for longer than one chunk.
        name: the model name reported to clients (``/v1/models``); by
            default the model's folder or file name, never its full path.
        adapters: LoRA adapters to serve on this one base, as names to the
            folders ``peft``'s ``save_pretrained`` wrote. A request picks one
            with ``adapter=`` (or, through OpenAI's API, by sending its name
            as ``model``); requests for different adapters decode in the same
            batch, and each gets what the adapter merged into the base gives.
            Served unmerged on Llama-family models on CPUs, and by vLLM.

    Raises:
        SpecError: an option is out of range, or the backend is not available.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        backend: Backend = "auto",
        draft: Any = None,
        speculative_tokens: int = 4,
        speculative_max_batch: int = 4,
        max_batch_size: int = 32,
        prefix_cache: bool = True,
        prefix_cache_tokens: int = 16384,
        prefill_chunk_tokens: int = 512,
        name: str | None = None,
        weights: WeightFormat = "fp32",
        adapters: Mapping[str, str | os.PathLike[str]] | None = None,
    ) -> None:
        for option, value in (
            ("speculative_tokens", speculative_tokens),
            ("speculative_max_batch", speculative_max_batch),
            ("max_batch_size", max_batch_size),
            ("prefix_cache_tokens", prefix_cache_tokens),
            ("prefill_chunk_tokens", prefill_chunk_tokens),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{option} must be a whole number of at least 1, not {value!r}.")
        self.weights = checked_format(weights)
        if name is not None:
            name = checked_name(name)
        served = _checked_adapters(adapters)
        self.adapters: tuple[str, ...] = tuple(served)
        self.backend = resolve_backend(backend, model)
        self._stats = Stats("text")
        self._vllm: VllmRunner | None = None
        if self.backend == "vllm":
            self._start_vllm(
                str(model),
                tokenizer,
                draft,
                speculative_tokens,
                max_batch_size,
                prefix_cache,
                name,
                served,
            )
            self._check_names()
            return
        default_name = model_name(model)
        model, tokenizer = load(model, tokenizer)
        model.eval()
        lookup = draft == "ngram"
        if lookup:
            draft = None
        elif draft == "int8":
            draft = int8_copy(model)
        elif isinstance(draft, str):
            draft, _ = load(draft, tokenizer)
        if draft is not None:
            draft.eval()
            if draft.config.vocab_size != model.config.vocab_size:
                raise SpecError(
                    f"the draft's vocabulary has {draft.config.vocab_size} tokens and the "
                    f"model's {model.config.vocab_size}; a draft must share the tokenizer."
                )
        self.model, self.tokenizer, self.draft = model, tokenizer, draft
        self.speculation = "ngram" if lookup else ("draft" if draft is not None else None)
        config = model.config
        self.name = name or default_name
        self.fast = fast_forward(model, self.weights)
        if served:
            if self.fast is None:
                from cobalt.llm._llama import unsupported

                raise SpecError(
                    f"LoRA adapters are served unmerged on Llama-family models on CPUs, and "
                    f"{unsupported(model)}; merge each adapter with peft's merge_and_unload "
                    "and serve it as its own Engine, or use backend='vllm' on a GPU."
                )
            self.fast.load_adapters(served)
        self._check_names()
        self.max_length = int(
            getattr(config, "max_position_embeddings", None)
            or getattr(config, "n_positions", None)
            or 2048
        )
        if draft is not None or lookup:  # a speculative step reads up to k + 1 positions ahead
            self.max_length -= speculative_tokens + 1
        self._eos = _eos_ids(model, tokenizer)
        self._runner = Runner(
            self.fast or model,
            draft=draft,
            speculative_tokens=speculative_tokens,
            max_batch_size=max_batch_size,
            prefix_cache=PrefixCache(prefix_cache_tokens) if prefix_cache else None,
            stats=self._stats,
            speculative_max_batch=speculative_max_batch,
            lookup=lookup,
            prefill_chunk=prefill_chunk_tokens,
        )

    def _start_vllm(
        self,
        path: str,
        tokenizer: Any,
        draft: Any,
        speculative_tokens: int,
        max_batch_size: int,
        prefix_cache: bool,
        name: str | None,
        adapters: dict[str, str],
    ) -> None:
        """vLLM runs the model; this engine keeps the tokenizer for prompts and chats."""
        from transformers import AutoConfig, AutoTokenizer

        if (draft is not None and not isinstance(draft, str)) or draft == "int8":
            raise SpecError(
                "with backend='vllm', draft= takes the path of a draft model "
                "(int8 copies are made for the torch backend on CPUs)."
            )
        self.model, self.draft = None, draft
        self.speculation = "ngram" if draft == "ngram" else ("draft" if draft else None)
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(path, local_files_only=True)
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        self.name = name or model_name(path)
        self.max_length = int(getattr(config, "max_position_embeddings", None) or 2048)
        self._vllm = VllmRunner(
            path,
            draft=draft,
            speculative_tokens=speculative_tokens,
            max_batch_size=max_batch_size,
            prefix_cache=prefix_cache,
            stats=self._stats,
            adapters=adapters,
        )

    def _check_names(self) -> None:
        if self.name in self.adapters:
            raise SpecError(
                f"an adapter is named {self.name!r}, as the base model is; requests could not "
                "tell them apart, so give the adapter another name."
            )

    def __repr__(self) -> str:
        draft = f", speculation={self.speculation!r}" if self.speculation else ""
        weights = f", weights={self.weights!r}" if self.backend == "torch" else ""
        served = f", adapters={list(self.adapters)!r}" if self.adapters else ""
        return f"Engine({self.name!r}, backend={self.backend!r}{weights}{draft}{served})"

    def with_adapter(self, adapter: str | None) -> AdapterView:
        """This engine answering with one of its LoRA adapters (``None``: the base).

        The view has the engine's generating methods; its requests share the
        engine's batches.

        Raises:
            SpecError: the engine serves no adapter of that name.
        """
        self._adapter_index(adapter)
        return AdapterView(self, adapter)

    def _adapter_index(self, adapter: str | None) -> int:
        if adapter is None or adapter == self.name:
            return 0
        if adapter not in self.adapters:
            served = ", ".join(map(repr, self.adapters)) or "none"
            raise SpecError(
                f"adapter {adapter!r} is not served by this engine (adapters: {served}); "
                "pass it in Engine(adapters={name: folder})."
            )
        return self.adapters.index(adapter) + 1

    # -- text ---------------------------------------------------------------

    def encode(self, prompt: Prompt) -> list[int]:
        """A prompt's token ids (strings are tokenized; id lists are checked)."""
        if isinstance(prompt, str):
            ids = list(self.tokenizer(prompt)["input_ids"])
        else:
            ids = list(prompt)
            vocab = (
                int(self.model.config.vocab_size) if self.model is not None else len(self.tokenizer)
            )
            if any(
                isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab for t in ids
            ):
                raise SpecError(f"a prompt given as token ids takes whole numbers in [0, {vocab}).")
        if not ids:
            raise SpecError("the prompt is empty; give at least one token of text.")
        if len(ids) >= self.max_length:
            raise SpecError(
                f"the prompt has {len(ids)} tokens and the model reads at most "
                f"{self.max_length}; shorten it."
            )
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text)) if text else 0

    def chat_prompt(self, messages: Sequence[dict[str, Any]]) -> str:
        """The prompt for a chat, by the tokenizer's chat template (or ``role: content`` lines)."""
        if getattr(self.tokenizer, "chat_template", None):
            return str(
                self.tokenizer.apply_chat_template(
                    list(messages), tokenize=False, add_generation_prompt=True
                )
            )
        lines = [_FALLBACK_CHAT.format(role=m["role"], content=m["content"]) for m in messages]
        return "".join(lines) + "assistant:"

    def _start(
        self, prompt: Prompt, params: SamplingParams, sink: Any, adapter: str | None
    ) -> Running:
        sequence = Running.new(
            self.encode(prompt),
            params,
            sink,
            self.tokenizer,
            self._eos,
            self.max_length,
            self._adapter_index(adapter),
        )
        self._runner.submit(sequence)
        return sequence

    def stream(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        *,
        adapter: str | None = None,
        **sampling: Any,
    ) -> Iterator[Chunk]:
        """Generate, yielding text as it comes; the last chunk has ``finish_reason``.

        Takes a :class:`SamplingParams` or its fields as keywords
        (``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``), and
        the name of one of the engine's LoRA adapters as ``adapter``.
        """
        params = params or SamplingParams.checked(**sampling)
        if self._vllm is not None:
            self._adapter_index(adapter)
            return self._vllm.stream(self.encode(prompt), params, adapter)
        items: queue.SimpleQueue[Chunk | Completion | BaseException] = queue.SimpleQueue()
        sequence = self._start(prompt, params, items.put, adapter)
        return _drain(items, sequence)

    def astream(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        *,
        adapter: str | None = None,
        **sampling: Any,
    ) -> AsyncIterator[Chunk]:
        """:meth:`stream` for ``async for``; the event loop is never blocked."""
        params = params or SamplingParams.checked(**sampling)
        if self._vllm is not None:
            self._adapter_index(adapter)
            return self._vllm.astream(self.encode(prompt), params, adapter)
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Chunk | Completion | BaseException] = asyncio.Queue()

        def sink(item: Chunk | Completion | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, item)
            except RuntimeError:  # the loop has closed: nobody is listening
                sequence.cancelled = True

        sequence = self._start(prompt, params, sink, adapter)
        return _adrain(items, sequence)

    @overload
    def generate(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        *,
        adapter: str | None = None,
        **sampling: Any,
    ) -> Completion: ...

    @overload
    def generate(
        self,
        prompt: list[str],
        params: SamplingParams | None = None,
        *,
        adapter: str | None = None,
        **sampling: Any,
    ) -> list[Completion]: ...

    def generate(
        self,
        prompt: Prompt | list[str],
        params: SamplingParams | None = None,
        *,
        adapter: str | None = None,
        **sampling: Any,
    ) -> Completion | list[Completion]:
        """Generate to the end; a list of string prompts runs as one batch."""
        params = params or SamplingParams.checked(**sampling)
        many = isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], str)
        prompts: list[Prompt] = list(prompt) if many else [prompt]  # type: ignore[arg-type,list-item]
        if self._vllm is not None:
            self._adapter_index(adapter)
            done = self._vllm.generate_all([self.encode(p) for p in prompts], params, adapter)
            return done if many else done[0]
        waits = []
        for one in prompts:
            items: queue.SimpleQueue[Chunk | Completion | BaseException] = queue.SimpleQueue()
            waits.append((items, self._start(one, params, items.put, adapter)))
        done = [_completion(items, sequence) for items, sequence in waits]
        return done if many else done[0]

    async def agenerate(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        *,
        adapter: str | None = None,
        **sampling: Any,
    ) -> Completion:
        """:meth:`generate` for one prompt, awaited."""
        params = params or SamplingParams.checked(**sampling)
        if self._vllm is not None:
            self._adapter_index(adapter)
            started = time.perf_counter()
            ids = self.encode(prompt)
            chunks = [c async for c in self._vllm.astream(ids, params, adapter)]
            return completion_of(chunks, len(ids), started)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Completion] = loop.create_future()

        def sink(item: Chunk | Completion | BaseException) -> None:
            if isinstance(item, Chunk):
                return
            loop.call_soon_threadsafe(_settle, future, item)

        self._start(prompt, params, sink, adapter)
        return await future

    # -- embeddings ---------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length mean-pooled last hidden states, one vector per text."""
        if self.model is None:
            raise SpecError(
                "embeddings from a language model need backend='torch'; serve an "
                "encoder with ct.llm.Embedder instead."
            )
        batch = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        with torch.inference_mode():
            out = self.model(**batch, output_hidden_states=True)
        self._stats.embedded(len(texts), int(batch["attention_mask"].sum()))
        return mean_pooled(out.hidden_states[-1], batch["attention_mask"]).tolist()

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        return await asyncio.get_running_loop().run_in_executor(None, self.embed, list(texts))

    # -- the rest -----------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """Cumulative counters: requests, tokens, batch sizes, latency histograms."""
        return self._stats.snapshot()

    def close(self) -> None:
        """Stop the engine's thread; requests still running fail."""
        if self._vllm is not None:
            self._vllm.close()
        else:
            self._runner.close()


class AdapterView:
    """An :class:`Engine` answering with one LoRA adapter (see :meth:`Engine.with_adapter`)."""

    def __init__(self, engine: Engine, adapter: str | None) -> None:
        self.engine, self.adapter = engine, adapter
        self.name = adapter or engine.name

    def __repr__(self) -> str:
        return f"{self.engine!r}.with_adapter({self.adapter!r})"

    def encode(self, prompt: Prompt) -> list[int]:
        return self.engine.encode(prompt)

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def chat_prompt(self, messages: Sequence[dict[str, Any]]) -> str:
        return self.engine.chat_prompt(messages)

    def stream(
        self, prompt: Prompt, params: SamplingParams | None = None, **sampling: Any
    ) -> Iterator[Chunk]:
        return self.engine.stream(prompt, params, adapter=self.adapter, **sampling)

    def astream(
        self, prompt: Prompt, params: SamplingParams | None = None, **sampling: Any
    ) -> AsyncIterator[Chunk]:
        return self.engine.astream(prompt, params, adapter=self.adapter, **sampling)

    def generate(
        self, prompt: Prompt, params: SamplingParams | None = None, **sampling: Any
    ) -> Completion:
        return self.engine.generate(prompt, params, adapter=self.adapter, **sampling)

    async def agenerate(
        self, prompt: Prompt, params: SamplingParams | None = None, **sampling: Any
    ) -> Completion:
        return await self.engine.agenerate(prompt, params, adapter=self.adapter, **sampling)


def _checked_adapters(adapters: object) -> dict[str, str]:
    """``Engine(adapters=)`` as names to folder paths, checked."""
    if adapters is None:
        return {}
    if not isinstance(adapters, Mapping):
        raise SpecError(
            f"adapters takes a mapping of names to adapter folders, such as "
            f"{{'sql': 'adapters/sql'}}, not a {type(adapters).__name__}."
        )
    if len(adapters) > MAX_ADAPTERS:
        raise SpecError(f"an engine serves at most {MAX_ADAPTERS} adapters; {len(adapters)} given.")
    served = {}
    for name, folder in adapters.items():
        if not isinstance(name, str):
            raise SpecError(f"adapter names are strings, not {name!r}.")
        if not isinstance(folder, str | os.PathLike):
            raise SpecError(f"adapter {name!r} takes the path of a folder, not {folder!r}.")
        served[checked_name(name)] = os.fspath(folder)
    return served


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    found: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list | tuple):
            found.update(v for v in value if isinstance(v, int))
    return frozenset(found)


def _drain(
    items: queue.SimpleQueue[Chunk | Completion | BaseException], sequence: Running
) -> Iterator[Chunk]:
    try:
        while True:
            item = items.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Completion):
                return
            yield item
    finally:
        sequence.cancelled = True


async def _adrain(
    items: asyncio.Queue[Chunk | Completion | BaseException], sequence: Running
) -> AsyncIterator[Chunk]:
    try:
        while True:
            item = await items.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Completion):
                return
            yield item
    finally:
        sequence.cancelled = True


def _completion(
    items: queue.SimpleQueue[Chunk | Completion | BaseException], sequence: Running
) -> Completion:
    while True:
        item = items.get()
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, Completion):
            return item


def _settle(future: asyncio.Future[Completion], item: Completion | BaseException) -> None:
    if future.done():
        return
    if isinstance(item, BaseException):
        future.set_exception(item)
    else:
        future.set_result(item)
