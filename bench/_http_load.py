"""Load and latency tools for the deployment benchmarks: wrk and a keep-alive client.

wrk (Debian package ``wrk``) generates the load: it is written in C, so on a
small machine it takes less CPU from the servers than a Python generator would.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is needed for this benchmark: sudo apt-get install -y wrk")
    return path


@dataclass
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def failed(self) -> int:
        return self.non_2xx + self.socket_errors


_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}
local bodies = {{{bodies}}}
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""


def _unit_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    url: str,
    body: dict[str, object] | list[dict[str, object]],
    *,
    token: str = "",
    connections: int,
    seconds: float,
    threads: int = 1,
    timeout_s: float = 2.0,
) -> WrkResult:
    """POSTs ``body`` to ``url`` from ``connections`` keep-alive connections for ``seconds``;
    given a list of bodies, each request sends the next one in turn."""
    wrk = require_wrk()
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    bodies = body if isinstance(body, list) else [body]
    script = _SCRIPT.format(bodies=", ".join(json.dumps(json.dumps(b)) for b in bodies), auth=auth)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            [
                wrk,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds:g}s",
                "--timeout",
                f"{timeout_s:g}s",
                "--latency",
                "-s",
                f.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        ).stdout
    finally:
        Path(f.name).unlink()
    requests = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"requests in ([\d.]+)(\w+)", out)
    assert m is not None
    seconds_run = _unit_ms(m.group(1), m.group(2)) / 1000.0
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    return WrkResult(
        requests=requests,
        seconds=seconds_run,
        non_2xx=int(non.group(1)) if non else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
        p50_ms=_unit_ms(*p50.groups()) if p50 else float("nan"),
        p99_ms=_unit_ms(*p99.groups()) if p99 else float("nan"),
    )


def sequential_latency(
    url: str,
    body: dict[str, object],
    *,
    token: str = "",
    n: int = 2000,
    headers: dict[str, str] | None = None,
) -> tuple[float, float]:
    """p50 and p99 in ms of ``n`` requests one after another on one keep-alive connection."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    data = json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    times = []
    for i in range(n + 50):
        t0 = time.perf_counter()
        conn.request("POST", parts.path, body=data, headers=hdrs)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}")
        if i >= 50:  # warm-up
            times.append((time.perf_counter() - t0) * 1000)
    conn.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def post_once(url: str, body: dict[str, object], token: str = "", timeout: float = 60) -> int:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    hdrs = {"Content-Type": "application/json"}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    conn.request("POST", parts.path, body=json.dumps(body).encode(), headers=hdrs)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status
