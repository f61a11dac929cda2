"""Deployments: gateway overhead, throughput, cold start and a step load, in one run.

    .venv/bin/python bench/deploy.py            # everything (about 3 minutes)
    .venv/bin/python bench/deploy.py --quick    # shorter load phases

Needs wrk (``apt-get install wrk``), which generates the load on loopback.
Prints figures and ratios; these are measurements, not pass/fail tests:

- gateway overhead: p50/p99 of one request at a time through the gateway
  against the same replica app called directly (target: p50 adds <= 1 ms);
- throughput: a trivial endpoint through the gateway against a bare uvicorn
  app serving the same function (target: >= 50% of bare);
- cold start: first response from zero replicas (target: <= 1.5 s);
- step load: 1 then 64 concurrent clients, then idle: time to the target
  replica count (target <= 10 s), failed requests (target 0), time back to zero.

Peers (``--peers``, default ``ray-serve``; ``--peers`` alone skips them) are
installed in their own venvs (bench/_peers.py) and measured in the same run,
after cobalt's phases, with the same tools: Ray Serve's p50/p99 through its
HTTP proxy beside cobalt's through its gateway, its wrk throughput and its
cold start from zero replicas, with the ratios cobalt / peer.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _http_load import post_once, require_wrk, run_wrk, sequential_latency  # noqa: E402
from _peers import PEERS, run_peer  # noqa: E402

DEPLOY_PEERS = [name for name, spec in PEERS.items() if spec["bench"] == "deploy"]
PEER_TIMEOUT_S = 300.0


def _serve_outside(kind: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_deploy_services.py"), kind],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/echo"


def _wait_replicas(dep: Any, want: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if dep.replicas == want:
            return time.monotonic() - start
        time.sleep(0.1)
    raise TimeoutError(f"{dep.name} did not reach {want} replicas in {timeout:g}s")


def bench_overhead_and_throughput(ct: Any, seconds: float) -> dict[str, float]:
    from _deploy_services import echo_service

    dep = ct.deploy(echo_service)()
    gateway = f"{dep.url}/echo"
    replica, direct = _serve_outside("replica")
    bare, bare_url = _serve_outside("bare")
    try:
        body = {"x": 1}
        g50, g99 = sequential_latency(gateway, body, token=dep.token or "")
        d50, d99 = sequential_latency(direct, body)
        results = {"gw_p50": g50, "gw_p99": g99, "direct_p50": d50, "direct_p99": d99}
        for name, url, token in (
            ("bare", bare_url, ""),
            ("direct", direct, ""),
            ("gateway", gateway, dep.token or ""),
        ):
            r = run_wrk(url, body, token=token, connections=32, seconds=seconds)
            results[f"{name}_rps"] = r.rps
            results[f"{name}_failed"] = r.failed
    finally:
        for proc in (replica, bare):
            proc.terminate()
            proc.wait(10)
        dep.teardown()
    return results


def bench_cold_start(ct: Any, rounds: int) -> list[float]:
    from _deploy_services import cold_service

    dep = ct.deploy(cold_service(scaledown_s=1.0))()
    times = []
    try:
        for _ in range(rounds):
            _wait_replicas(dep, 0, timeout=60)
            t0 = time.perf_counter()
            status = post_once(f"{dep.url}/echo", {"x": 1}, token=dep.token or "")
            times.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"cold request answered {status}")
    finally:
        dep.teardown()
    return times


def bench_step(ct: Any, step_s: float, work_ms: float) -> dict[str, Any]:
    from _deploy_services import step_service

    target, clients, max_replicas = 8, 64, 8
    dep = ct.deploy(step_service(work_ms, target, max_replicas, scaledown_s=15))()
    url = f"{dep.url}/work"
    body = {"x": 1}
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), dep.replicas))
            time.sleep(0.25)

    try:
        warm = run_wrk(url, body, token=dep.token or "", connections=1, seconds=10)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t_step = time.monotonic()
        load = run_wrk(url, body, token=dep.token or "", connections=clients, seconds=step_s)
        t_idle = time.monotonic()
        want = min(max_replicas, math.ceil(clients / target))
        reached = next((t - t_step for t, n in samples if t >= t_step and n >= want), None)
        peak = max((n for _, n in samples), default=0)
        back_to_zero = None
        deadline = t_idle + 180
        while time.monotonic() < deadline:
            if dep.replicas == 0:
                back_to_zero = time.monotonic() - t_idle
                break
            time.sleep(0.5)
        stop.set()
    finally:
        dep.teardown()
    return {
        "want": want,
        "reached_s": reached,
        "peak": peak,
        "failed": warm.failed + load.failed,
        "requests": warm.requests + load.requests,
        "rps": load.rps,
        "p50": load.p50_ms,
        "p99": load.p99_ms,
        "back_to_zero_s": back_to_zero,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter load phases")
    parser.add_argument(
        "--peers",
        nargs="*",
        default=DEPLOY_PEERS,
        choices=DEPLOY_PEERS,
        help="peers to measure after cobalt (none: skip them)",
    )
    args = parser.parse_args()
    require_wrk()
    home = tempfile.mkdtemp(prefix="cobalt-bench-deploy-")
    os.environ["COBALT_HOME"] = home
    for var in ("COBALT_CONTROLLER_ADDRESS", "COBALT_CONTROLLER_TOKEN"):
        os.environ.pop(var, None)
    import cobalt as ct

    try:
        tp = bench_overhead_and_throughput(ct, seconds=5 if args.quick else 10)
        cold = bench_cold_start(ct, rounds=3 if args.quick else 5)
        step = bench_step(ct, step_s=20 if args.quick else 60, work_ms=20)
    finally:
        cli = Path(sys.executable).with_name("cobalt")
        subprocess.run([str(cli), "controller", "stop"], check=False, capture_output=True)

    seconds, rounds = (5, 3) if args.quick else (10, 5)
    peers: dict[str, dict[str, Any]] = {}
    for peer in args.peers:
        print(f"measuring {peer} ...", file=sys.stderr, flush=True)
        peer_args = ["--seconds", str(seconds), "--cold-rounds", str(rounds)]
        peers[peer] = run_peer(peer, peer_args, timeout_s=PEER_TIMEOUT_S)

    print("\ngateway overhead (one request at a time, 2,000 requests)")
    print(f"  direct to replica  p50 {tp['direct_p50']:.3f} ms  p99 {tp['direct_p99']:.3f} ms")
    print(f"  through gateway    p50 {tp['gw_p50']:.3f} ms  p99 {tp['gw_p99']:.3f} ms")
    print(
        f"  added              p50 {tp['gw_p50'] - tp['direct_p50']:+.3f} ms  "
        f"p99 {tp['gw_p99'] - tp['direct_p99']:+.3f} ms   (target: p50 <= +1 ms)"
    )
    for peer, r in peers.items():
        if "error" in r:
            continue
        print(
            f"  {peer + ' proxy':<18} p50 {r['seq_p50_ms']:.3f} ms  p99 {r['seq_p99_ms']:.3f} ms"
            f"   cobalt gateway / {peer}: p50 {tp['gw_p50'] / r['seq_p50_ms']:.2f}, "
            f"p99 {tp['gw_p99'] / r['seq_p99_ms']:.2f}"
        )
    print("\nthroughput (wrk, 32 connections)")
    for name in ("bare", "direct", "gateway"):
        print(f"  {name:<8} {tp[f'{name}_rps']:>9,.0f} req/s  failed {tp[f'{name}_failed']:.0f}")
    for peer, r in peers.items():
        if "error" not in r:
            print(f"  {peer:<8} {r['rps']:>9,.0f} req/s  failed {r['failed']:.0f}")
    print(f"  gateway / bare uvicorn = {tp['gateway_rps'] / tp['bare_rps']:.2f}   (target >= 0.50)")
    for peer, r in peers.items():
        if "error" not in r and r["rps"]:
            print(f"  gateway / {peer} = {tp['gateway_rps'] / r['rps']:.2f}")
    print("\ncold start from zero replicas")
    print(
        f"  median {statistics.median(cold):.3f} s, max {max(cold):.3f} s over {len(cold)} "
        "(target <= 1.5 s)"
    )
    for peer, r in peers.items():
        if "error" in r:
            continue
        print(
            f"  {peer}: median {r['cold_median_s']:.3f} s, max {r['cold_max_s']:.3f} s over "
            f"{len(r['cold_s'])}   cobalt / {peer}: median "
            f"{statistics.median(cold) / r['cold_median_s']:.2f}"
        )
    print(f"\nstep load: 1 then 64 clients, {step['requests']:,} requests")
    reached = f"{step['reached_s']:.1f} s" if step["reached_s"] is not None else "not reached"
    print(f"  target {step['want']} replicas reached after {reached} (peak {step['peak']})")
    print(f"  failed requests {step['failed']}   (target 0)")
    print(
        f"  under load {step['rps']:,.0f} req/s, p50 {step['p50']:.1f} ms, p99 {step['p99']:.1f} ms"
    )
    zero = step["back_to_zero_s"]
    print(f"  back to zero {zero:.1f} s after the load stopped" if zero else "  never back to zero")
    for peer, r in peers.items():
        if "error" in r:
            print(f"\n{peer}: not measured: {r['error']}")
        else:
            took = f"measured in {r['total_s']:.0f} s, after cobalt's phases"
            print(f"\n{peer} {r['version']}: {took}")
    if peers:
        print(
            "ratios are cobalt / peer: under 1 is better for cobalt in latency and cold start, "
            "over 1 in throughput"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
