"""The engine's loop: continuous batching over a shared key/value cache.

One thread owns the model. Each turn it admits waiting requests (prefilling
their prompts, reusing cached prefixes), then runs one decoding step for
every running sequence together, so a request joins the batch as soon as it
arrives and leaves it as soon as it ends, instead of waiting for a whole
batch to finish. A long prompt that arrives while others decode is prefilled
in chunks, one per turn, between their steps, so it never stalls them for
longer than one chunk. With a draft model each step is speculative: the draft
proposes tokens and the target checks them all in one pass
(:mod:`cobalt.llm._speculative`).
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from cobalt.llm._kv import BatchKV, LayerKV, row_layers
from cobalt.llm._lookup import Gate, NgramIndex, RowStats, lookup_step
from cobalt.llm._prefix import PrefixCache
from cobalt.llm._sampling import pick
from cobalt.llm._sequence import Sequence
from cobalt.llm._speculative import speculative_step
from cobalt.llm._stats import Stats
from cobalt.llm._threads import ThreadChoice

_PREFILL_TOKENS = 4096
"""Most tokens (padding included) in one batched prefill."""


@dataclass
class _Partial:
    """A prompt being prefilled a chunk per turn: its keys and values for ``done`` tokens."""

    sequence: Sequence
    layers: list[LayerKV]
    done: int


class _SingleThreaded:
    """A draft model called with one torch thread (on CPUs).

    A draft's passes are many and small. From a thread other than the main
    one, each parallel region of torch's int8 kernels costs tens of
    microseconds to start, more than the work it splits; one thread runs a
    draft pass in well under the time (measured: 86 against 62 tokens/s for
    the int8 draft of a 26M-parameter Llama on 2 cores).
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.model(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)


class _Adapted:
    """The target model called with each row's LoRA adapter (see :mod:`cobalt.llm._lora`)."""

    def __init__(self, model: Any, rows: torch.Tensor) -> None:
        self.model, self.rows = model, rows

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, adapters=self.rows, **kwargs)


def _with(model: Any, rows: torch.Tensor) -> Any:
    """``model``, called with these rows' adapters when any row has one."""
    return _Adapted(model, rows) if bool(rows.any()) else model


def stop_at_exit(owner: Any) -> None:
    """Call ``owner.close()`` when the interpreter exits, unless it is gone by then.

    A daemon thread still inside a torch kernel when Python shuts down aborts
    the process; closing first lets the thread finish its step.
    """
    ref = weakref.ref(owner)

    def stop() -> None:
        alive = ref()
        if alive is not None:
            alive.close()

    atexit.register(stop)


class Runner:
    """Runs sequences on a causal LM (and optionally a draft) in one background thread."""

    def __init__(
        self,
        model: Any,
        *,
        draft: Any | None,
        speculative_tokens: int,
        max_batch_size: int,
        prefix_cache: PrefixCache | None,
        stats: Stats,
        speculative_max_batch: int = 4,
        lookup: bool = False,
        prefill_chunk: int = 512,
    ) -> None:
        self.model = model
        self.prefill_chunk = prefill_chunk
        self._partial: deque[_Partial] = deque()
        self.lookup = Gate() if lookup else None
        self._lookups: dict[Sequence, tuple[NgramIndex, RowStats]] = {}
        self.device = next(model.parameters()).device
        self.draft = (
            _SingleThreaded(draft) if draft is not None and self.device.type == "cpu" else draft
        )
        self._threads = ThreadChoice(torch.get_num_threads()) if self.device.type == "cpu" else None
        self.speculative_max_batch = speculative_max_batch
        self.speculative_tokens = speculative_tokens
        self.max_batch_size = max_batch_size
        self.prefix_cache = prefix_cache
        self.stats = stats
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._next = torch.zeros(0, dtype=torch.long, device=self.device)
        self._pending = torch.zeros(0, dtype=torch.long, device=self.device)
        self._adapters = torch.zeros(0, dtype=torch.long, device=self.device)
        self._kv = BatchKV.empty()
        self._draft_kv = BatchKV.empty() if draft is not None else None
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="cobalt-llm-engine", daemon=True)
        self._thread.start()
        stop_at_exit(self)

    def submit(self, sequence: Sequence) -> None:
        with self._wake:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._waiting.append(sequence)
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while (
                    not self._closed
                    and not self._waiting
                    and not self._running
                    and not self._partial
                ):
                    self._wake.wait()
                if self._closed:
                    failed = list(self._waiting) + self._running
                    failed += [part.sequence for part in self._partial]
                    self._waiting.clear()
                    break
                admitted: list[Sequence] = []
                while (
                    self._waiting
                    and len(self._running) + len(self._partial) + len(admitted)
                    < self.max_batch_size
                ):
                    admitted.append(self._waiting.popleft())
            try:
                started = time.perf_counter()
                with torch.inference_mode():
                    self._choose_mode(len(self._running) + len(self._partial) + len(admitted))
                    self._admit(admitted)
                    self._advance_partial()
                    self._retire()
                    if self._running:
                        self._step()
                        self._retire()
                self.stats.busy(time.perf_counter() - started)
            except Exception as exc:  # a model error fails the requests it touched, not the engine
                print(f"the engine's step failed:\n{traceback.format_exc()}", file=sys.stderr)
                touched = admitted + self._running + [part.sequence for part in self._partial]
                for sequence in touched:
                    if not sequence.done:
                        sequence.sink(exc)
                self._partial.clear()
                self._running, self._kv = [], BatchKV.empty()
                self._lookups.clear()
                self._next, self._pending = self._next[:0], self._pending[:0]
                self._adapters = self._adapters[:0]
                if self._draft_kv is not None:
                    self._draft_kv = BatchKV.empty()
        for sequence in failed:
            sequence.sink(RuntimeError("the engine was closed before this request ended"))

    def _choose_mode(self, rows: int) -> None:
        """Speculate only while the batch is small: a large batch is compute-bound, and
        there the draft's passes cost more than its accepted tokens save."""
        if self.draft is None:
            return
        speculate = rows <= self.speculative_max_batch
        if speculate and self._draft_kv is None:
            self._draft_kv = self._draft_catch_up()
        elif not speculate and self._draft_kv is not None:
            self._draft_kv = None
            self._pending = torch.full_like(self._pending, -1)

    def _draft_catch_up(self) -> BatchKV:
        """The draft's cache for the running rows: every token the target has seen."""
        kv = BatchKV.empty()
        if not self._running:
            return kv
        seen = [s.prompt_ids + s.output_ids[:-1] for s in self._running]
        layers = [layers for layers, _ in self._forward_padded(self.draft, seen)]
        kv.add_rows(layers, [len(tokens) for tokens in seen])
        return kv

    def _admit(self, sequences: list[Sequence]) -> None:
        live = [s for s in sequences if not s.cancelled]
        if self._running or self._partial:  # others are decoding: chunk what would stall them
            live = [s for s in live if not self._chunked(s)]
        if not live:
            return
        prefilled = self._prefill(self.model, live, self.prefix_cache, adapted=True)
        self._join(live, prefilled)

    def _chunked(self, sequence: Sequence) -> bool:
        """Queue ``sequence`` for prefilling a chunk per turn when the rest of its prompt
        (after any cached prefix) is longer than a chunk."""
        prompt = sequence.prompt_ids
        cache = self.prefix_cache
        reused, past = cache.lookup(prompt, sequence.adapter) if cache is not None else (0, [])
        if len(prompt) - reused <= self.prefill_chunk:
            return False
        sequence.cached_tokens = reused
        self._partial.append(_Partial(sequence, past, reused))
        return True

    def _advance_partial(self) -> None:
        """Prefill one chunk of the first queued prompt; a prompt done joins the batch."""
        while self._partial and self._partial[0].sequence.cancelled:
            self._partial.popleft()
        if not self._partial:
            return
        part = self._partial[0]
        prompt, sequence = part.sequence.prompt_ids, part.sequence
        end = min(part.done + self.prefill_chunk, len(prompt))
        rows = torch.tensor([sequence.adapter], dtype=torch.long, device=self.device)
        part.layers, logits = self._forward_rest(
            _with(self.model, rows), prompt[:end], part.done, part.layers
        )
        part.done = end
        if end < len(prompt):
            return
        self._partial.popleft()
        if self.prefix_cache is not None:
            self.prefix_cache.store(prompt, part.layers, sequence.adapter)
        self._join([sequence], [(part.layers, logits)])

    def _join(
        self, live: list[Sequence], prefilled: list[tuple[list[LayerKV], torch.Tensor]]
    ) -> None:
        """Prefilled sequences take their first token and join the running batch."""
        drafted = (
            self._prefill(self.draft, live, None, adapted=False)
            if self._draft_kv is not None
            else None
        )
        rows, lengths, firsts, draft_rows, adapters = [], [], [], [], []
        for i, sequence in enumerate(live):
            layers, logits = prefilled[i]
            first = int(pick(logits, [sequence.params], [sequence.generator])[0])
            self.stats.first_token(sequence, time.perf_counter())
            sequence.add([first], time.perf_counter())
            if sequence.done:
                self._finish(sequence)
                continue
            rows.append(layers)
            lengths.append(len(sequence.prompt_ids))
            firsts.append(first)
            adapters.append(sequence.adapter)
            if drafted is not None:
                draft_rows.append(drafted[i][0])
            self._running.append(sequence)
        if not rows:
            return
        self._kv.add_rows(rows, lengths)
        if self._draft_kv is not None:
            self._draft_kv.add_rows(draft_rows, lengths)
        added = torch.tensor(firsts, dtype=torch.long, device=self.device)
        self._next = torch.cat([self._next, added])
        self._pending = torch.cat([self._pending, torch.full_like(added, -1)])
        self._adapters = torch.cat([self._adapters, torch.tensor(adapters).to(self._adapters)])

    def _prefill(
        self, model: Any, sequences: list[Sequence], cache: PrefixCache | None, *, adapted: bool
    ) -> list[tuple[list[LayerKV], torch.Tensor]]:
        """Each prompt's layers and last logits. Prompts with a cached prefix run alone on
        the rest; the others run together, left-padded, in groups of bounded size. With
        ``adapted``, each prompt runs with its request's LoRA adapter."""

        def rows(indices: list[int]) -> torch.Tensor:
            chosen = [sequences[i].adapter if adapted else 0 for i in indices]
            return torch.tensor(chosen, dtype=torch.long, device=self.device)

        done: dict[int, tuple[list[LayerKV], torch.Tensor]] = {}
        fresh: list[int] = []
        for i, sequence in enumerate(sequences):
            reused, past = (
                cache.lookup(sequence.prompt_ids, sequence.adapter)
                if cache is not None
                else (0, [])
            )
            if not reused:
                fresh.append(i)
                continue
            sequence.cached_tokens = reused
            done[i] = self._forward_rest(_with(model, rows([i])), sequence.prompt_ids, reused, past)
        group: list[int] = []
        for i in [*fresh, -1]:
            width = max([len(sequences[j].prompt_ids) for j in group] or [0])
            if i == -1 or (
                group
                and max(width, len(sequences[i].prompt_ids)) * (len(group) + 1) > _PREFILL_TOKENS
            ):
                prompts = [sequences[j].prompt_ids for j in group]
                passed = self._forward_padded(_with(model, rows(group)), prompts)
                for j, result in zip(group, passed, strict=True):
                    done[j] = result
                group = []
            if i != -1:
                group.append(i)
        if cache is not None:
            for i, sequence in enumerate(sequences):
                cache.store(sequence.prompt_ids, done[i][0], sequence.adapter)
        return [done[i] for i in range(len(sequences))]

    def _forward_rest(
        self, model: Any, prompt: list[int], reused: int, past: list[LayerKV]
    ) -> tuple[list[LayerKV], torch.Tensor]:
        from transformers import DynamicCache

        ids = torch.tensor([prompt[reused:]], dtype=torch.long, device=self.device)
        positions = torch.arange(reused, len(prompt), device=self.device)[None, :]
        out = model(
            input_ids=ids,
            past_key_values=DynamicCache(ddp_cache_data=past) if past else DynamicCache(),
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        return row_layers(out.past_key_values), out.logits[:, -1]

    def _forward_padded(
        self, model: Any, prompts: list[list[int]]
    ) -> list[tuple[list[LayerKV], torch.Tensor]]:
        if not prompts:
            return []
        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long, device=self.device)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, device=self.device)
            mask[row, width - len(prompt) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        return [
            (row_layers(out.past_key_values, row, len(prompt)), out.logits[row : row + 1, -1])
            for row, prompt in enumerate(prompts)
        ]

    def _step(self) -> None:
        rows = len(self._running)
        self.stats.batch(rows)
        if self.draft is not None and self._draft_kv is not None:
            emitted, self._next, self._pending = speculative_step(
                _with(self.model, self._adapters),
                self.draft,
                self._kv,
                self._draft_kv,
                self._next,
                self._pending,
                self._running,
                self.speculative_tokens,
                self.stats,
            )
        elif self.lookup is not None and self._lookup_step():
            return
        else:
            started = time.perf_counter()
            emitted = self._plain_step(rows)
            took = time.perf_counter() - started
            if self.lookup is not None:
                self.lookup.timed_plain(rows, took)
        self._emit(emitted)

    def _plain_step(self, rows: int) -> list[list[int]]:
        """One token for every running sequence, on the threads measured fastest for
        ``rows`` rows (see :mod:`cobalt.llm._threads`)."""
        threads = every = torch.get_num_threads()
        if self._threads is not None:
            threads = self._threads.pick(rows)
            if threads != every:
                torch.set_num_threads(threads)
        started = time.perf_counter()
        try:
            mask, positions = self._kv.step_inputs(1)
            out = _with(self.model, self._adapters)(
                input_ids=self._next[:, None],
                attention_mask=mask,
                position_ids=positions,
                past_key_values=self._kv.cache,
                use_cache=True,
            )
            self._kv.appended(1, torch.ones(rows, dtype=torch.long, device=self.device))
            params = [s.params for s in self._running]
            generators = [s.generator for s in self._running]
            self._next = pick(out.logits[:, -1], params, generators)
        finally:
            if threads != every:
                torch.set_num_threads(every)
        if self._threads is not None:
            self._threads.timed(rows, threads, time.perf_counter() - started)
        return [[t] for t in self._next.tolist()]

    def _emit(self, emitted: list[list[int]]) -> None:
        now = time.perf_counter()
        for sequence, tokens in zip(self._running, emitted, strict=True):
            for gap in sequence.add(tokens, now):
                self.stats.gap(gap)

    def _lookup_step(self) -> bool:
        """A step that verifies proposals looked up in each sequence, when the gate expects
        it to pay; ``False`` (having done nothing) when a plain step is better."""
        assert self.lookup is not None
        rows = []
        for sequence in self._running:
            if sequence not in self._lookups:
                self._lookups[sequence] = (NgramIndex(), self.lookup.new_row())
            index, row = self._lookups[sequence]
            prompt, seen = sequence.prompt_ids, len(index.tokens)
            if seen < len(prompt):
                index.extend(prompt[seen:])
                seen = len(prompt)
            index.extend(sequence.output_ids[seen - len(prompt) :])  # only tokens new since
            rows.append((index, row))
        offered = [index.propose(self.speculative_tokens) for index, _ in rows]
        chosen = self.lookup.choose([row for _, row in rows], offered)
        if not any(chosen):
            return False
        started = time.perf_counter()
        emitted, self._next, counts = lookup_step(
            _with(self.model, self._adapters),
            self._kv,
            self._next,
            self._running,
            chosen,
            self.stats,
        )
        width = 1 + max(len(p) for p in chosen)
        self.lookup.timed_verify(len(rows), width, time.perf_counter() - started)
        for (_, row), proposals, kept in zip(rows, chosen, counts, strict=True):
            row.record(len(proposals), kept)
            self.lookup.observed(len(proposals), kept)
        self._emit(emitted)
        return True

    def _retire(self) -> None:
        """Drop finished and cancelled rows from the batch."""
        keep = [i for i, s in enumerate(self._running) if not s.done]
        if len(keep) == len(self._running):
            return
        for sequence in self._running:
            if sequence.done:
                self._finish(sequence)
                self._lookups.pop(sequence, None)
        self._running = [self._running[i] for i in keep]
        self._kv.keep_rows(keep)
        if self._draft_kv is not None:
            self._draft_kv.keep_rows(keep)
        self._next = self._next[keep] if keep else self._next[:0]
        self._pending = self._pending[keep] if keep else self._pending[:0]
        self._adapters = self._adapters[keep] if keep else self._adapters[:0]

    def _finish(self, sequence: Sequence) -> None:
        if sequence.finish_reason is not None:
            self.stats.finished(sequence)
            sequence.sink(sequence.completion())
