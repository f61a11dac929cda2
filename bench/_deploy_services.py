"""Services the deployment benchmark serves, and the servers it compares against.

Run as a script, it serves one of them outside any controller and prints the
port it listens on:

    python bench/_deploy_services.py replica   # the same replica app a deployment runs
    python bench/_deploy_services.py bare      # a bare ASGI app on uvicorn, same function
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import cobalt as ct


def echo_fn(x: int = 0) -> dict[str, int]:
    return {"x": x}


@ct.service(name="bench-echo", min_replicas=1, max_replicas=1)
def echo_service() -> dict[str, Any]:
    return {}


@echo_service.endpoint("/echo")
def echo(x: int = 0) -> dict[str, int]:
    return echo_fn(x)


def cold_service(scaledown_s: float) -> ct.Service[[]]:
    @ct.service(
        name="bench-cold",
        min_replicas=0,
        max_replicas=1,
        scaledown_window=scaledown_s,
        autoscaling=ct.Autoscaling(min_replicas=0, max_replicas=1, downscale_delay=0),
    )
    def cold() -> dict[str, Any]:
        return {}

    @cold.endpoint("/echo")
    def echo(x: int = 0) -> dict[str, int]:
        return {"x": x}

    return cold


def step_service(
    work_ms: float, target: int, max_replicas: int, scaledown_s: float
) -> ct.Service[[]]:
    # A quarter CPU per replica: the endpoint waits rather than computes, and
    # eight replicas must fit on a small machine's inventory.
    @ct.service(
        name="bench-step",
        cpus=0.25,
        autoscaling=ct.Autoscaling(
            min_replicas=0,
            max_replicas=max_replicas,
            target_concurrency=target,
            scaledown_window=scaledown_s,
            downscale_delay=5,
        ),
    )
    def step() -> dict[str, Any]:
        return {}

    @step.endpoint("/work")
    async def work(x: int = 0) -> dict[str, int]:
        import asyncio

        await asyncio.sleep(work_ms / 1000)
        return {"x": x}

    return step


class BareApp:
    """The same function behind a bare ASGI app: the throughput baseline."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        out = json.dumps(echo_fn(**json.loads(body or b"{}")), separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": out})


def main(kind: str) -> None:
    import uvicorn

    from cobalt._runtime.replica import ReplicaEntry, bind, serve

    sock = bind("127.0.0.1")
    print(sock.getsockname()[1], flush=True)
    if kind == "replica":
        entry = ReplicaEntry(echo_service)
        serve(entry.build_app(entry.initialize((), {})), sock)
    else:
        config = uvicorn.Config(
            BareApp(),
            loop="uvloop",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
        )
        uvicorn.Server(config).run(sockets=[sock])
    time.sleep(0)


if __name__ == "__main__":
    main(sys.argv[1])
