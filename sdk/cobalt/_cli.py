"""The ``cobalt`` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time

from cobalt._client import controller_status, get_client, read_controller_info
from cobalt._result import format_table, status_from_pb
from cobalt_common.errors import ControllerUnavailableError, Error
from cobalt_common.paths import cobalt_home
from cobalt_common.v1 import controller_pb2 as pb


def _start(_: argparse.Namespace) -> int:
    from cobalt._embedded import start_controller

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
    while info.pid and time.monotonic() < deadline:
        try:
            os.kill(info.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    print(f"controller (pid {info.pid}) stopped")
    return 0


def _status(_: argparse.Namespace) -> int:
    status = controller_status(get_client())
    print(f"controller {status.version} at {status.address} (pid {status.pid})")
    print(f"state: {status.database_url}")
    print(f"active dispatches: {status.active_dispatches}\n")
    rows = [
        (e.name, e.type, "config" if e.configured else "client", e.capacity, e.free)
        for e in status.executors
    ]
    print(format_table(("executor", "type", "from", "capacity", "free now"), rows))
    return 0


def _dispatches(args: argparse.Namespace) -> int:
    client = get_client()
    resp = client.call(client.stub.DispatchList, pb.DispatchListRequest(limit=args.limit))
    rows = []
    for d in resp.dispatches:
        took = f"{d.ended_at - d.started_at:.2f}s" if d.ended_at and d.started_at else "-"
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.created_at))
        rows.append(
            (d.dispatch_id, d.name, str(status_from_pb(d.status)), created, took, str(d.task_count))
        )
    print(format_table(("dispatch", "name", "status", "created", "duration", "tasks"), rows))
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
    ls = sub.add_parser("dispatches", help="list recent dispatches")
    ls.add_argument("--limit", type=int, default=20)
    ls.set_defaults(fn=_dispatches)
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except Error as exc:
        print(f"cobalt: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
