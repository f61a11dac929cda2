"""The ``cobalt`` command: the root parser and the controller, cost and dashboard commands."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time

from cobalt._client import get_client
from cobalt._discovery import read_controller_info
from cobalt._embedded import start_controller
from cobalt._result import format_table
from cobalt.cli.agents import add_parser as add_agents_parser
from cobalt.cli.deployments import add_parser as add_deployments_parser
from cobalt.cli.dispatches import add_parser as add_dispatches_parser
from cobalt_common.errors import ControllerUnavailableError, Error
from cobalt_common.hardware import format_duration, gpu_label
from cobalt_common.paths import cobalt_home
from cobalt_common.pricing import format_usd
from cobalt_common.processes import pid_running
from cobalt_common.spend import spend_by, total
from cobalt_common.v1 import controller_pb2 as pb


def _start(_: argparse.Namespace) -> int:
    info = start_controller(cobalt_home())
    print(f"controller running at {info.address} (pid {info.pid}); data in {cobalt_home()}")
    return 0


def _stop(_: argparse.Namespace) -> int:
    info = read_controller_info(cobalt_home())
    if info is None:
        print("no controller is running")
        return 0
    try:
        client = get_client()
        client.call(client.stub.ControllerStop, pb.ControllerStopRequest(), timeout=10)
    except ControllerUnavailableError:
        if info.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    # An exited controller that its parent has not reaped yet (a zombie) has stopped.
    while info.pid and pid_running(info.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"controller (pid {info.pid}) stopped")
    return 0


def _status(_: argparse.Namespace) -> int:
    status = get_client().status()
    print(f"controller {status.version} at {status.address} (pid {status.pid})")
    print(f"state: {status.database_url}")
    print(f"active dispatches: {status.active_dispatches}\n")
    if status.dashboard:
        print(f"dashboard: {status.dashboard} (`cobalt dashboard` opens it)")
    if status.gateway:
        print(f"gateway:   {status.gateway} (`cobalt deployments` lists what it serves)")
    if status.machine:
        free = status.machine_free
        print(f"machine:   {status.machine}; free now {free} (the local executors share it)")
    rows = [
        (e.name, e.type, "config" if e.configured else "client", e.capacity, e.free, e.prices)
        for e in status.executors
    ]
    print(format_table(("executor", "type", "from", "capacity", "free now", "prices"), rows))
    return 0


def _cost(args: argparse.Namespace) -> int:
    client = get_client()
    since = time.time() - args.days * 86400 if args.days else 0.0
    rows = client.call(client.stub.CostSummary, pb.CostSummaryRequest(since=since)).rows
    if not rows:
        print("no spend recorded" + (f" in the last {args.days} days" if args.days else ""))
        return 0
    emulated = any(r.emulated and r.cost_usd for r in rows)
    for title, by_cost, key in (
        ("day", False, lambda r: r.day),
        ("executor", True, lambda r: r.executor),
        ("GPU type", True, lambda r: gpu_label(r.gpu, r.emulated)),
    ):
        table = [
            (name, str(s.tasks), format_duration(s.billed_s), format_usd(s.cost_usd))
            for name, s in spend_by(rows, key, most_first=by_cost)
        ]
        t = total(rows)
        table.append(("total", str(t.tasks), format_duration(t.billed_s), format_usd(t.cost_usd)))
        print(format_table((title, "tasks", "billed", "cost"), table, right=(1, 2, 3)))
        print()
    if emulated:
        print("Emulated GPUs are priced as the GPUs they stand for.")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    client = get_client()
    status = client.status()
    if not status.dashboard:
        print(
            "cobalt: this controller serves no dashboard; set [controller] dashboard_address "
            'in config.toml (for example "127.0.0.1:8470") and restart it.',
            file=sys.stderr,
        )
        return 1
    url = f"{status.dashboard.rstrip('/')}/?token={client.info.token}"
    print(url)
    graphical = sys.platform in ("darwin", "win32") or any(
        os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY")
    )
    if graphical and not args.no_open:
        import webbrowser

        webbrowser.open(url)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cobalt", description="cobalt remote compute")
    sub = parser.add_subparsers(dest="command", required=True)
    ctl = sub.add_parser("controller", help="start, stop or inspect the controller")
    ctl_sub = ctl.add_subparsers(dest="action", required=True)
    ctl_sub.add_parser("start", help="start a controller in the background").set_defaults(fn=_start)
    ctl_sub.add_parser("stop", help="stop the running controller").set_defaults(fn=_stop)
    ctl_sub.add_parser("status", help="show the controller and its executors").set_defaults(
        fn=_status
    )
    add_dispatches_parser(sub)
    cost = sub.add_parser("cost", help="spend per day, executor and GPU type")
    cost.add_argument("--days", type=int, default=30, help="how far back; 0 for all time")
    cost.set_defaults(fn=_cost)
    dash = sub.add_parser("dashboard", help="print the web dashboard's address and open it")
    dash.add_argument("--no-open", action="store_true", help="only print the address")
    dash.set_defaults(fn=_dashboard)
    add_deployments_parser(sub)
    add_agents_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except Error as exc:
        print(f"cobalt: {exc}", file=sys.stderr)
        return 1
