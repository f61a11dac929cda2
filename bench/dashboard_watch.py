"""What a dashboard page watching a dispatch costs: fan-out throughput with and without one.

Starts one controller, then alternates fan-outs of trivial tasks that nobody
watches with fan-outs that a watcher follows from the moment they are
dispatched. The watcher runs in its own process and does what the dispatch
page does: it reads the dispatch's view, subscribes to ``/api/events`` for it,
and reads the view again whenever it is told to resync. ``--browser`` also
measures a real page in headless Chromium (Debian's ``/usr/bin/chromium``,
driven by Playwright), whose own CPU time is counted against the machine too.

    .venv/bin/python bench/dashboard_watch.py                 # 4 rounds, 2,000 tasks
    .venv/bin/python bench/dashboard_watch.py --rounds 6 --browser

Prints the median time of each mode and the slowdown; a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cobalt as ct
from cobalt._client import get_client
from cobalt._discovery import read_controller_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workloads import fanout

WATCHER = r"""
import json, sys, httpx
base, token, dispatch_id = sys.argv[1:4]
headers = {"Authorization": f"Bearer {token}"}
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "BUDGET_EXCEEDED")
messages = rows = reads = 0
with httpx.Client(base_url=base, headers=headers, timeout=None) as http:
    def ended():
        global reads
        reads += 1
        view = http.get(f"/api/dispatches/{dispatch_id}").json()
        return view["dispatch"]["status"] in ENDED, view["as_of"]
    done, since = ended()
    params = {"dispatch": dispatch_id, "since": str(since)}
    with http.stream("GET", "/api/events", params=params) as events:
        for line in events.iter_lines():
            if done:
                break
            if not line.startswith("data: "):
                continue
            message = json.loads(line[6:])
            messages += 1
            if message["type"] == "resync":
                done = ended()[0]
            elif message["type"] == "dispatch":
                rows += len(message["tasks"])
                done = message["dispatch"]["status"] in ENDED
print(json.dumps({"messages": messages, "rows": rows, "reads": reads}), flush=True)
"""

BROWSER = r"""
import sys, time
from playwright.sync_api import sync_playwright
url = sys.argv[1]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page()
    page.goto(url)
    print("ready", flush=True)
    page.wait_for_function(
        "() => /COMPLETED|FAILED|CANCELLED/.test(document.body.innerText)", timeout=120000
    )
    browser.close()
print("{}", flush=True)
"""


def _watch(mode: str, dashboard: str, token: str, dispatch_id: str) -> subprocess.Popen[str]:
    if mode == "sse":
        argv = [sys.executable, "-c", WATCHER, dashboard, token, dispatch_id]
    else:
        url = f"{dashboard.rstrip('/')}/dispatches/{dispatch_id}?token={token}"
        argv = [sys.executable, "-c", BROWSER, url]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def _round(mode: str, n: int, dashboard: str, token: str) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    dispatch_id = ct.dispatch(fanout)(n)
    watcher = None if mode == "none" else _watch(mode, dashboard, token, dispatch_id)
    result = ct.get_result(dispatch_id, wait=True)
    elapsed = time.perf_counter() - start
    assert result.result == sum(range(1, n + 1)), result
    seen: dict[str, Any] = {}
    if watcher is not None:
        out, _ = watcher.communicate(timeout=120)
        lines = out.strip().splitlines()
        seen = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return elapsed, seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fanout", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--browser", action="store_true", help="also watch in headless Chromium")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cobalt-bench-"))
    os.environ["COBALT_HOME"] = str(home)
    cli = Path(sys.executable).with_name("cobalt")
    subprocess.run([str(cli), "controller", "start"], check=True, stdout=subprocess.DEVNULL)
    modes = ["none", "sse", *(["browser"] if args.browser else [])]
    times: dict[str, list[float]] = {m: [] for m in modes}
    seen: dict[str, dict[str, Any]] = {}
    try:
        info = read_controller_info(home)
        assert info is not None
        dashboard = get_client().status().dashboard
        ct.dispatch_sync(fanout)(50)
        for _ in range(args.rounds):
            for mode in modes:
                elapsed, seen[mode] = _round(mode, args.fanout, dashboard, info.token)
                times[mode].append(elapsed)
                print(f"{mode:8} {elapsed:7.3f} s {seen[mode]}", file=sys.stderr)
    finally:
        subprocess.run([str(cli), "controller", "stop"], check=False, stdout=subprocess.DEVNULL)
    base = statistics.median(times["none"])
    print(f"\n{'watcher':<10} {'median s':>9} {'tasks/s':>9} {'slowdown':>9}  what it saw")
    for mode in modes:
        typical = statistics.median(times[mode])
        slowdown = (typical / base - 1) * 100
        print(
            f"{mode:<10} {typical:9.3f} {(args.fanout + 1) / typical:9.0f} "
            f"{slowdown:8.1f}%  {seen.get(mode) or ''}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
