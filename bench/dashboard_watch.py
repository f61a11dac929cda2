"""What a dashboard page watching a dispatch costs: fan-out throughput with and without one.

Starts one controller, then alternates fan-outs of trivial tasks that nobody
watches with fan-outs that a watcher follows from the moment they are
dispatched. The watcher runs in its own process and does what the dispatch
page does: it reads the dispatch's view, subscribes to ``/api/events`` for it,
and reads the view again whenever it is told to resync. ``--browser`` also
measures a real page in headless Chromium (Debian's ``/usr/bin/chromium``,
driven by Playwright), opened on the dispatch as soon as it is dispatched, as
a user following its link would; the browser's own CPU time is counted
against the machine too, as it would be on a laptop.

    .venv/bin/python bench/dashboard_watch.py                 # 4 rounds, 2,000 tasks
    .venv/bin/python bench/dashboard_watch.py --rounds 6 --browser

Prints the median time of each mode and the slowdown; a measurement, not a test.
To measure an older revision, check it out and put its ``sdk``, ``controller``,
``executors`` and ``common`` folders first on ``PYTHONPATH``.
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
from cobalt._embedded import start_controller

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workloads import fanout
from cobalt_bench import stop

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
import sys
from playwright.sync_api import sync_playwright
ENDED = "() => /completed|failed|cancelled/.test(document.querySelector('h1 .st')?.textContent)"
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page()
    print("ready", flush=True)
    for url in sys.stdin:  # one dispatch page a line, opened as soon as it is given
        page.goto(url.strip())
        page.wait_for_function(ENDED, timeout=120000)
        print("{}", flush=True)
    browser.close()
"""


class Browser:
    """Headless Chromium, started before the rounds so that its start is not measured."""

    def __init__(self) -> None:
        pipe = subprocess.PIPE
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BROWSER], stdin=pipe, stdout=pipe, text=True
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        assert self.stdout.readline().strip() == "ready"

    def open(self, url: str) -> None:
        self.stdin.write(url + "\n")
        self.stdin.flush()

    def wait(self) -> None:
        assert self.stdout.readline().strip() == "{}"

    def close(self) -> None:
        self.stdin.close()
        self.proc.wait(timeout=60)


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time of a process (Linux), its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _round(
    mode: str, n: int, dashboard: str, token: str, browser: Browser | None
) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    dispatch_id = ct.dispatch(fanout)(n)
    watcher = None
    if mode == "sse":
        argv = [sys.executable, "-c", WATCHER, dashboard, token, dispatch_id]
        watcher = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    elif mode == "browser" and browser is not None:
        browser.open(f"{dashboard.rstrip('/')}/dispatches/{dispatch_id}?token={token}")
    result = ct.get_result(dispatch_id, wait=True)
    elapsed = time.perf_counter() - start
    assert result.result == sum(range(1, n + 1)), result
    seen: dict[str, Any] = {}
    if watcher is not None:
        out, _ = watcher.communicate(timeout=120)
        lines = out.strip().splitlines()
        seen = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if mode == "browser" and browser is not None:
        browser.wait()
    return elapsed, seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fanout", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--browser", action="store_true", help="also watch in headless Chromium")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cobalt-bench-"))
    os.environ["COBALT_HOME"] = str(home)
    # Started and stopped as cobalt_bench.py does, so that older code runs this too.
    pid = start_controller(home).pid
    modes = ["none", "sse", *(["browser"] if args.browser else [])]
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    seen: dict[str, dict[str, Any]] = {}
    browser = None
    try:
        # The token and the dashboard's address, as the controller wrote them down.
        written = json.loads((home / "controller.json").read_text())
        token, dashboard = written["token"], written["dashboard"]
        ct.dispatch_sync(fanout)(50)
        browser = Browser() if args.browser else None
        for _ in range(args.rounds):
            for mode in modes:
                before = cpu_seconds(pid)
                elapsed, seen[mode] = _round(mode, args.fanout, dashboard, token, browser)
                times[mode].append(elapsed)
                cpu[mode].append(cpu_seconds(pid) - before)
                print(f"{mode:8} {elapsed:7.3f} s {seen[mode]}", file=sys.stderr)
    finally:
        if browser is not None:
            browser.close()
        stop(pid)
    base = statistics.median(times["none"])
    base_cpu = statistics.median(cpu["none"])
    print(
        f"\n{'watcher':<10} {'median s':>9} {'tasks/s':>9} {'slowdown':>9} "
        f"{'controller CPU s':>17} {'extra':>7}  what it saw"
    )
    for mode in modes:
        typical = statistics.median(times[mode])
        slowdown = (typical / base - 1) * 100
        used = statistics.median(cpu[mode])
        print(
            f"{mode:<10} {typical:9.3f} {(args.fanout + 1) / typical:9.0f} {slowdown:8.1f}% "
            f"{used:17.2f} {(used / base_cpu - 1) * 100:6.1f}%  {seen.get(mode) or ''}"
        )
    print("slowdown: of the fan-out's time; extra: of the controller's CPU time (its own work)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
