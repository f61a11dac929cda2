"""``ct.llm.train_lora``: fine-tune a LoRA adapter, for an electron to run.

Fine-tune, evaluate, deploy: an electron trains an adapter on a small data
set and returns where it saved it; ``ct.llm.Engine(base, adapters={...})``
then serves it beside others on one copy of the base, each request choosing
its adapter. Training uses ``peft`` and writes what ``peft`` writes, so the
adapter also loads anywhere ``peft`` does.

Example:
    >>> import tempfile, cobalt as ct
    >>> model, tokenizer = ct.llm.random_model(seed=0)
    >>> folder = tempfile.mkdtemp()
    >>> trained = ct.llm.train_lora(model, ["a b c d"] * 4, folder, tokenizer=tokenizer, steps=2)
    >>> trained.steps, trained.path == folder
    (2, True)
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cobalt.llm._lora import FUSED, MAX_RANK
from cobalt_common.errors import SpecError

Example = str | Mapping[str, str]
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TrainedAdapter:
    """Where an adapter was saved, and how its training went."""

    path: str
    steps: int
    first_loss: float
    last_loss: float
    seconds: float
    trainable_parameters: int

    def __str__(self) -> str:
        return (
            f"LoRA adapter in {self.path}: {self.steps} steps in {self.seconds:.1f} s, "
            f"loss {self.first_loss:.3f} -> {self.last_loss:.3f}, "
            f"{self.trainable_parameters:,} trained parameters"
        )


def train_lora(
    model: Any,
    examples: Sequence[Example],
    output_dir: str | os.PathLike[str],
    *,
    tokenizer: Any = None,
    rank: int = 8,
    alpha: int = 16,
    targets: Sequence[str] = DEFAULT_TARGETS,
    steps: int = 50,
    batch_size: int = 4,
    learning_rate: float = 1e-3,
    max_tokens: int = 256,
    seed: int = 0,
) -> TrainedAdapter:
    """Train a LoRA adapter on ``examples`` and save it in ``output_dir``.

    Args:
        model: the base: a ``transformers`` causal LM (copied, never
            changed), or the path of a ``save_pretrained`` folder or a
            ``.gguf`` file.
        examples: texts to learn whole, or ``{"prompt": ..., "completion":
            ...}`` pairs, where only the completion is learned.
        output_dir: a new or empty folder, or one holding an earlier adapter
            (which is replaced).
        tokenizer: the model's tokenizer (read from ``model``'s path when it
            is one).
        rank, alpha: the adapter's rank and scale (``alpha / rank``).
        targets: the projections adapted, of ``q_proj``, ``k_proj``,
            ``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj``, ``down_proj``.
        steps, batch_size, learning_rate, max_tokens, seed: the training run;
            examples are cut to ``max_tokens`` tokens.

    Raises:
        SpecError: an argument is out of range, or the folder holds other files.
    """
    _check_numbers(rank, alpha, steps, batch_size, learning_rate, max_tokens)
    chosen = _checked_targets(targets)
    pairs = _checked_examples(examples)
    folder = _checked_folder(output_dir)
    import torch
    from peft import LoraConfig, get_peft_model

    from cobalt.llm._backend import load

    if isinstance(model, str | os.PathLike):
        base, tokenizer = load(os.fspath(model), tokenizer)
    elif tokenizer is None:
        raise SpecError("train_lora(model, ...) with a model object needs its tokenizer=.")
    else:
        base = copy.deepcopy(model)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=list(chosen), lora_dropout=0.0, bias="none"
    )
    adapted = get_peft_model(base, config)
    trainable = [p for p in adapted.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate)
    batches = _batches(pairs, tokenizer, batch_size, max_tokens, steps, seed)
    adapted.train()
    started, losses = time.perf_counter(), list[float]()
    for ids, mask, labels in batches:
        loss = adapted(input_ids=ids, attention_mask=mask, labels=labels).loss
        value = float(loss.item())
        if not math.isfinite(value):
            raise SpecError(
                f"training diverged at step {len(losses) + 1} (loss {value}); lower learning_rate."
            )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(value)
    adapted.eval()
    # The embeddings are not trained; "auto" would look the base up online to check that.
    adapted.save_pretrained(str(folder), save_embedding_layers=False)
    return TrainedAdapter(
        path=str(folder),
        steps=len(losses),
        first_loss=losses[0],
        last_loss=losses[-1],
        seconds=time.perf_counter() - started,
        trainable_parameters=sum(p.numel() for p in trainable),
    )


def _check_numbers(
    rank: int, alpha: int, steps: int, batch_size: int, learning_rate: float, max_tokens: int
) -> None:
    for option, value, high in (
        ("rank", rank, MAX_RANK),
        ("alpha", alpha, 1_000_000),
        ("steps", steps, 1_000_000),
        ("batch_size", batch_size, 1024),
        ("max_tokens", max_tokens, 1_000_000),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise SpecError(f"{option} must be a whole number from 1 to {high}, not {value!r}.")
    if (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, int | float)
        or not math.isfinite(learning_rate)
        or learning_rate <= 0
    ):
        raise SpecError(f"learning_rate must be a positive number, not {learning_rate!r}.")


def _checked_targets(targets: Sequence[str]) -> tuple[str, ...]:
    chosen = (targets,) if isinstance(targets, str) else tuple(targets)
    unknown = [t for t in chosen if t not in FUSED]
    if unknown or not chosen:
        raise SpecError(
            f"targets takes projections among {', '.join(FUSED)}; {unknown or 'none'} given."
        )
    return chosen


def _checked_examples(examples: Sequence[Example]) -> list[tuple[str, str]]:
    """Each example as (prompt, completion); a plain text is all completion."""
    if isinstance(examples, str) or not isinstance(examples, Sequence) or not examples:
        raise SpecError("examples takes a non-empty list of texts or prompt/completion pairs.")
    pairs = []
    for i, example in enumerate(examples):
        if isinstance(example, str) and example:
            pairs.append(("", example))
        elif (
            isinstance(example, Mapping)
            and isinstance(example.get("prompt"), str)
            and isinstance(example.get("completion"), str)
            and example["completion"]
        ):
            pairs.append((example["prompt"], example["completion"]))
        else:
            raise SpecError(
                f"examples[{i}] is {example!r:.80}; give a non-empty text or "
                '{"prompt": ..., "completion": ...} with a non-empty completion.'
            )
    return pairs


def _checked_folder(output_dir: str | os.PathLike[str]) -> Path:
    folder = Path(output_dir)
    if folder.exists():
        if not folder.is_dir():
            raise SpecError(f"output_dir {folder} is a file; give a folder.")
        kept = {"adapter_config.json", "adapter_model.safetensors", "README.md"}
        others = [p.name for p in folder.iterdir() if p.name not in kept]
        if others:
            raise SpecError(
                f"output_dir {folder} holds other files ({', '.join(sorted(others)[:3])}); "
                "give a new or empty folder, or one holding only an earlier adapter."
            )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _batches(
    pairs: list[tuple[str, str]],
    tokenizer: Any,
    batch_size: int,
    max_tokens: int,
    steps: int,
    seed: int,
) -> list[tuple[Any, Any, Any]]:
    """``steps`` batches of (ids, mask, labels), cycling through shuffled examples; labels
    are -100 on prompts and padding, so only completions are learned."""
    import torch

    rows = []
    for prompt, completion in pairs:
        head = list(tokenizer(prompt)["input_ids"]) if prompt else []
        tail = list(tokenizer(completion, add_special_tokens=not prompt)["input_ids"])
        ids = (head + tail)[:max_tokens]
        labels = ([-100] * len(head) + tail)[:max_tokens]
        if all(label == -100 for label in labels[1:]):
            raise SpecError(
                f"the example {(prompt + completion)[:60]!r} leaves nothing to learn within "
                f"max_tokens={max_tokens}; shorten its prompt or raise max_tokens."
            )
        rows.append((ids, labels))
    order = random.Random(seed)
    batches, pool = [], list[int]()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for _ in range(steps):
        chosen = []
        for _ in range(min(batch_size, len(rows))):
            if not pool:
                pool = list(range(len(rows)))
                order.shuffle(pool)
            chosen.append(rows[pool.pop()])
        width = max(len(tokens) for tokens, _ in chosen)
        batch = torch.full((len(chosen), width), pad, dtype=torch.long)
        mask = torch.zeros_like(batch)
        learned = torch.full_like(batch, -100)
        for r, (tokens, targets) in enumerate(chosen):
            batch[r, : len(tokens)] = torch.tensor(tokens)
            mask[r, : len(tokens)] = 1
            learned[r, : len(targets)] = torch.tensor(targets)
        batches.append((batch, mask, learned))
    return batches
