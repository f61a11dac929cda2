"""Text generation: continuous batching and speculative decoding against plain ``generate``.

    .venv/bin/python bench/generation.py            # about 2 minutes on 2 cores
    .venv/bin/python bench/generation.py --quick    # fewer tokens

The model is ``ct.llm.random_model("small")``: a Llama of 8 layers of 512
(26M parameters) with seeded random weights, so nothing is downloaded. Its
text is meaningless; its speed is that of a real model of its size.
Prints figures and ratios from one run; these are measurements, not tests.

- 16 concurrent streams, greedy, 64 new tokens each:
  * transformers ``generate`` one request after another (the baseline),
  * transformers ``generate`` on all 16 at once, padded (static batching),
  * ``ct.llm.Engine`` with the 16 requests arriving together from 16 threads,
    with time to first token and inter-token latency seen by the callers
  (target: engine >= 5x the sequential baseline in total tokens/s).
- Speculative decoding, one stream at a time, with an int8 copy of the
  model as the draft: speedup over the same engine without a draft, the
  draft's acceptance rate, and whether the tokens were identical.
- ``--http``: the same 16 streams through a deployment's OpenAI-compatible
  route (gateway, replica, SSE) with the official ``openai`` client, against
  one stream alone through the same route.
- ``--device cuda`` runs the same on a GPU (bf16).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import warnings
from typing import Any

import torch

import cobalt as ct

STREAMS = 16


def _prompts(n: int) -> list[str]:
    topics = ["weather", "a recipe", "the controller", "a poem", "GPUs", "the sea", "budgets"]
    return [
        f"Request {i}: tell me about {topics[i % len(topics)]}. " + "More context here. " * (i % 6)
        for i in range(n)
    ]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sequential_generate(model: Any, tokenizer: Any, prompts: list[str], new: int) -> float:
    """Tokens/s of transformers ``generate``, one request after another."""
    device = next(model.parameters()).device
    tokens, start = 0, time.perf_counter()
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
        out = model.generate(
            ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0
        )
        tokens += out.shape[1] - ids.shape[1]
    return tokens / (time.perf_counter() - start)


def static_batch_generate(model: Any, tokenizer: Any, prompts: list[str], new: int) -> float:
    """Tokens/s of transformers ``generate`` on all prompts at once, left-padded."""
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
    start = time.perf_counter()
    out = model.generate(
        **batch, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0
    )
    tokens = (out.shape[1] - batch["input_ids"].shape[1]) * len(prompts)
    return tokens / (time.perf_counter() - start)


def engine_streams(engine: Any, prompts: list[str], new: int) -> dict[str, float]:
    """16 callers streaming at once: total tokens/s, and latencies as the callers saw them."""
    ttft: list[float] = []
    gaps: list[float] = []
    tokens = [0] * len(prompts)
    go = threading.Event()

    def one(i: int) -> None:
        go.wait()
        sent = time.perf_counter()
        last = None
        for chunk in engine.stream(prompts[i], max_tokens=new, temperature=0):
            now = time.perf_counter()
            if last is None:
                ttft.append(now - sent)
            elif chunk.token_ids:
                gaps.extend([(now - last) / len(chunk.token_ids)] * len(chunk.token_ids))
            last = now
            tokens[i] += len(chunk.token_ids)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    start = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {
        "tokens_per_s": sum(tokens) / elapsed,
        "ttft_p50": statistics.median(ttft),
        "ttft_p99": _pct(ttft, 0.99),
        "itl_p50": statistics.median(gaps),
        "itl_p99": _pct(gaps, 0.99),
    }


def speculative(model: Any, tokenizer: Any, prompts: list[str], new: int, k: int) -> dict[str, Any]:
    """One stream at a time: the engine with an int8 draft against the engine alone.

    The two run prompt by prompt in turn, so a change in the machine's load
    falls on both.
    """
    plain = ct.llm.Engine(model, tokenizer, prefix_cache=False)
    spec = ct.llm.Engine(model, tokenizer, draft="int8", speculative_tokens=k, prefix_cache=False)
    for engine in (plain, spec):
        engine.generate(prompts[0], max_tokens=4, temperature=0)
    plain_s = spec_s = 0.0
    identical = plain_tokens = spec_tokens = 0
    for prompt in prompts:
        start = time.perf_counter()
        reference = plain.generate(prompt, max_tokens=new, temperature=0)
        plain_s += time.perf_counter() - start
        start = time.perf_counter()
        drafted = spec.generate(prompt, max_tokens=new, temperature=0)
        spec_s += time.perf_counter() - start
        identical += reference.token_ids == drafted.token_ids
        plain_tokens += reference.completion_tokens
        spec_tokens += drafted.completion_tokens
    stats = spec.metrics()["speculative"]
    plain.close()
    spec.close()
    return {
        "speedup": (spec_tokens / spec_s) / (plain_tokens / plain_s),
        "acceptance": stats["acceptance_rate"],
        "identical": identical,
        "of": len(prompts),
        "plain_tok_s": plain_tokens / plain_s,
        "spec_tok_s": spec_tokens / spec_s,
    }


def _llm_service(size: str) -> Any:
    @ct.service(
        name="bench-llm",
        cpus=2,
        autoscaling=ct.Autoscaling(min_replicas=1, max_replicas=1, max_concurrency=64),
    )
    def bench_llm() -> dict[str, Any]:
        import cobalt as ct

        model, tokenizer = ct.llm.random_model(size, seed=0)
        return {"engine": ct.llm.Engine(model, tokenizer, name="bench")}

    ct.llm.openai_routes(bench_llm)
    return bench_llm


def http_streams(size: str, prompts: list[str], new: int) -> dict[str, float]:
    """Tokens/s of 16 ``openai`` client streams through a deployment, and of one alone."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from openai import OpenAI

    os.environ["COBALT_HOME"] = tempfile.mkdtemp(prefix="cobalt-bench-llm-")
    for var in ("COBALT_CONTROLLER_ADDRESS", "COBALT_CONTROLLER_TOKEN"):
        os.environ.pop(var, None)
    try:
        dep = ct.deploy(_llm_service(size))()
        client = OpenAI(base_url=dep.url + "/v1", api_key=dep.token, max_retries=0)
        counts = [0] * len(prompts)
        first: list[float] = []

        def one(i: int) -> None:
            sent = time.perf_counter()
            stream = client.completions.create(
                model="bench", prompt=prompts[i], max_tokens=new, temperature=0, stream=True
            )
            for event in stream:
                if event.choices and event.choices[0].text and not counts[i]:
                    first.append(time.perf_counter() - sent)
                counts[i] += 1 if event.choices and event.choices[0].text else 0

        one(0)  # warm up
        start = time.perf_counter()
        usage = client.completions.create(
            model="bench", prompt=prompts[1], max_tokens=new, temperature=0
        ).usage
        alone = usage.completion_tokens / (time.perf_counter() - start)
        done = [0] * len(prompts)

        def counted(i: int) -> None:
            done[i] = client.completions.create(
                model="bench", prompt=prompts[i], max_tokens=new, temperature=0
            ).usage.completion_tokens

        threads = [threading.Thread(target=counted, args=(i,)) for i in range(len(prompts))]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        together = sum(done) / (time.perf_counter() - start)
        counts[:] = [0] * len(prompts)
        streams = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
        for t in streams:
            t.start()
        for t in streams:
            t.join()
        dep.teardown()
        return {
            "alone": alone,
            "together": together,
            "ttft_p50": statistics.median(first),
            "ttft_p99": _pct(first, 0.99),
        }
    finally:
        cli = Path(sys.executable).with_name("cobalt")
        subprocess.run([str(cli), "controller", "stop"], check=False, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens per request")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--size", default="small", help="random_model size: tiny or small")
    parser.add_argument("--http", action="store_true", help="also through a deployment")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    new = 24 if args.quick else 64
    model, tokenizer = ct.llm.random_model(args.size, seed=0)
    if args.device == "cuda":
        model = model.to("cuda", dtype=torch.bfloat16)
    prompts = _prompts(STREAMS)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"model: random Llama {args.size}, {params:.1f}M parameters, on {args.device}, "
        f"torch threads {torch.get_num_threads()}; {STREAMS} requests x {new} new tokens, greedy"
    )

    sequential_generate(model, tokenizer, prompts[:1], 4)  # warm up
    seq = sequential_generate(model, tokenizer, prompts, new)
    static = static_batch_generate(model, tokenizer, prompts, new)
    engine = ct.llm.Engine(model, tokenizer)
    engine.generate(prompts[0], max_tokens=4, temperature=0)
    cont = engine_streams(engine, prompts, new)
    engine.close()

    print()
    print(f"{'16 concurrent streams':<44}{'tokens/s':>10}{'vs sequential':>15}")
    print(f"{'transformers generate, one at a time':<44}{seq:>10.0f}{1.0:>14.2f}x")
    print(f"{'transformers generate, static batch of 16':<44}{static:>10.0f}{static / seq:>14.2f}x")
    ratio = cont["tokens_per_s"] / seq
    print(
        f"{'cobalt Engine, continuous batching':<44}{cont['tokens_per_s']:>10.0f}{ratio:>14.2f}x"
        f"   (target >= 5x: {'met' if ratio >= 5 else 'NOT met'})"
    )
    print(
        f"  time to first token  p50 {cont['ttft_p50'] * 1000:.1f} ms   "
        f"p99 {cont['ttft_p99'] * 1000:.1f} ms"
    )
    print(
        f"  inter-token latency  p50 {cont['itl_p50'] * 1000:.1f} ms   "
        f"p99 {cont['itl_p99'] * 1000:.1f} ms"
    )

    if args.device == "cpu":
        print()
        print("speculative decoding, one stream at a time, draft = int8 copy of the model")
        print(
            f"{'k':>3}{'plain tok/s':>13}{'spec tok/s':>12}{'speedup':>9}{'acceptance':>12}"
            f"{'identical':>11}"
        )
        for k in (2, 3, 4):
            r = speculative(model, tokenizer, prompts[:6], new, k)
            print(
                f"{k:>3}{r['plain_tok_s']:>13.0f}{r['spec_tok_s']:>12.0f}{r['speedup']:>8.2f}x"
                f"{r['acceptance']:>12.2f}{r['identical']:>8}/{r['of']}"
            )

    if args.http:
        r = http_streams(args.size, prompts, new)
        print()
        print("through a deployment: /v1/completions with the openai client, greedy")
        print(f"  one request alone         {r['alone']:>8.0f} tokens/s")
        print(
            f"  16 requests at once       {r['together']:>8.0f} tokens/s"
            f"   ({r['together'] / r['alone']:.2f}x one alone; "
            f"{r['together'] / seq:.2f}x sequential transformers generate in-process)"
        )
        print(
            f"  16 streams: time to first text p50 {r['ttft_p50'] * 1000:.0f} ms, "
            f"p99 {r['ttft_p99'] * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
