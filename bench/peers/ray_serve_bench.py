"""Ray Serve deployment benchmark; prints one JSON line on stdout.

The same measurements bench/deploy.py takes of cobalt, with the same tools
(bench/_http_load.py and wrk), against Ray Serve's HTTP proxy:

- sequential p50/p99 of ``POST /echo`` on one keep-alive connection;
- throughput with wrk, 32 connections;
- cold start: one request to a deployment scaled to zero replicas.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

# Scale to zero in seconds rather than tens of seconds: replicas and handles
# report their load to the controller every 10 s by default, so a replica
# would linger for about that long after its last request. These only shorten
# the wait between cold rounds; the scale-up on the cold request itself does
# not wait for them (a handle with zero replicas reports at once). Set before
# Ray starts so its workers inherit them.
os.environ.setdefault("RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "0.5")
os.environ.setdefault("RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "0.5")

import ray
from _common import exit_on_sigterm, log
from ray import serve
from starlette.requests import Request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _http_load import post_once, run_wrk, sequential_latency

BODY: dict[str, object] = {"x": 1}

# A short look-back with the deprecated metrics_interval_s left at its 10 s
# default warns; the push intervals above are what apply.
warnings.filterwarnings("ignore", message="`look_back_period_s`", category=FutureWarning)


# max_ongoing_requests: cobalt's default per-replica max_concurrency (2 x a
# target of 8). At Serve's default of 5, 27 of wrk's 32 connections wait in
# the proxy's back-off loop and throughput collapses (about 18 req/s here).
@serve.deployment(num_replicas=1, max_ongoing_requests=16, ray_actor_options={"num_cpus": 1})
class Echo:
    async def __call__(self, request: Request) -> dict[str, int]:
        body = await request.json()
        return {"x": int(body.get("x", 0))}


@serve.deployment(
    ray_actor_options={"num_cpus": 1},
    # Stop a replica at once when scaling down (no requests are in flight).
    graceful_shutdown_wait_loop_s=0.1,
    graceful_shutdown_timeout_s=1.0,
    autoscaling_config={
        "min_replicas": 0,
        "initial_replicas": 0,
        "max_replicas": 1,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 0.0,
        # cobalt's cold service scales down after 1 s idle.
        "downscale_delay_s": 1.0,
        "downscale_to_zero_delay_s": 1.0,
        "look_back_period_s": 1.0,
    },
)
class ColdEcho:
    async def __call__(self, request: Request) -> dict[str, int]:
        body = await request.json()
        return {"x": int(body.get("x", 0))}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def replicas(app: str) -> int:
    """Replicas of the app's deployments in any state (starting, running, stopping)."""
    status = serve.status().applications.get(app)
    if status is None:
        return -1
    return sum(sum(d.replica_states.values()) for d in status.deployments.values())


def wait_replicas(app: str, want: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if replicas(app) == want:
            return time.monotonic() - start
        time.sleep(0.1)
    raise TimeoutError(f"{app} did not reach {want} replicas in {timeout:g}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk duration")
    parser.add_argument("--cold-rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests")
    parser.add_argument("--budget", type=int, default=230, help="give up after this many s")
    args = parser.parse_args()
    exit_on_sigterm()

    def out_of_time(signum: int, frame: Any) -> None:
        raise TimeoutError(f"ray-serve benchmark ran past its budget of {args.budget} s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(args.budget)

    started = time.monotonic()
    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        log("ray", ray.__version__, "serve up after", round(time.monotonic() - started, 1), "s")
        serve.run(Echo.bind(), name="echo", route_prefix="/echo")
        url = f"http://127.0.0.1:{port}/echo"
        if post_once(url, BODY) != 200:
            raise RuntimeError(f"{url} did not answer 200")
        log("sequential latency")
        p50, p99 = sequential_latency(url, BODY, n=args.requests)
        log("wrk")
        load = run_wrk(url, BODY, connections=32, seconds=args.seconds)
        serve.delete("echo")

        log("cold start")
        serve.run(ColdEcho.bind(), name="cold", route_prefix="/cold")
        cold_url = f"http://127.0.0.1:{port}/cold"
        cold: list[float] = []
        to_zero: list[float] = []
        for _ in range(args.cold_rounds):
            to_zero.append(wait_replicas("cold", 0, timeout=60))
            t0 = time.perf_counter()
            status = post_once(cold_url, BODY)
            cold.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"cold request answered {status}")
            log(f"  cold {cold[-1]:.3f} s")
        serve.delete("cold")
    finally:
        signal.alarm(0)
        serve.shutdown()
        ray.shutdown()
    result = {
        "peer": "ray-serve",
        "version": ray.__version__,
        "seq_requests": args.requests,
        "seq_p50_ms": round(p50, 3),
        "seq_p99_ms": round(p99, 3),
        "rps": round(load.rps, 1),
        "failed": load.failed,
        "wrk_p50_ms": load.p50_ms,
        "wrk_p99_ms": load.p99_ms,
        "cold_s": [round(t, 4) for t in cold],
        "cold_median_s": round(statistics.median(cold), 4),
        "cold_max_s": round(max(cold), 4),
        "to_zero_wait_s": [round(t, 2) for t in to_zero],
        "total_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
