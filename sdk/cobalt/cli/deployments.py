"""``cobalt deployments``: list, inspect, tear down deployments and read their decisions."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from cobalt._client import get_client
from cobalt._deployment import format_logs
from cobalt._deployment_metrics import DeploymentMetrics
from cobalt._result import format_cost, format_table
from cobalt_common.errors import Error
from cobalt_common.hardware import format_duration
from cobalt_common.v1 import controller_pb2 as pb

_STATUS = {
    pb.DEPLOYMENT_STATUS_STARTING: "starting",
    pb.DEPLOYMENT_STATUS_ACTIVE: "active",
    pb.DEPLOYMENT_STATUS_FAILED: "failed",
    pb.DEPLOYMENT_STATUS_STOPPED: "stopped",
}


def status_word(value: int) -> str:
    """A deployment's status in words."""
    return _STATUS.get(value, "unknown")  # type: ignore[call-overload, no-any-return]


def auth_word(d: pb.Deployment) -> str:
    return "token" if d.auth else "OPEN (no auth)"


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _list(args: argparse.Namespace) -> int:
    client = get_client()
    resp = client.call(
        client.stub.DeploymentList, pb.DeploymentListRequest(include_stopped=args.all), timeout=30
    )
    if not resp.deployments:
        print("no deployments" + ("" if args.all else " running (--all shows stopped ones)"))
        return 0
    rows = [
        (
            d.name,
            status_word(d.status),
            f"{d.ready_replicas}/{d.desired_replicas}",
            auth_word(d),
            ", ".join(r.path for r in d.routes),
            format_cost(d.cost_usd, d.emulated),
            d.url,
        )
        for d in resp.deployments
    ]
    header = ("deployment", "status", "replicas", "auth", "routes", "cost", "url")
    print(format_table(header, rows, right=(2, 5)))
    return 0


def _get(name: str) -> pb.Deployment:
    client = get_client()
    d: pb.Deployment = client.call(
        client.stub.DeploymentGet, pb.DeploymentGetRequest(name=name), timeout=30
    )
    return d


def _show(args: argparse.Namespace) -> int:
    d = _get(args.name)
    print(f"deployment {d.name} (version {d.version}): {status_word(d.status)}")
    print(f"url:      {d.url}")
    print(f"auth:     {auth_word(d)}")
    print(f"routes:   {', '.join(r.path + (' (stream)' if r.streaming else '') for r in d.routes)}")
    print(f"replicas: {d.ready_replicas} ready of {d.desired_replicas} wanted")
    print(f"cost:     {format_cost(d.cost_usd, d.emulated)}")
    if d.error:
        print(f"error:\n{d.error}")
    _print_metrics(d.name)
    if d.replicas:
        now = time.time()
        rows = [
            (
                r.replica_id,
                r.status,
                r.executor,
                str(r.in_flight),
                format_duration(now - r.started_at) if r.started_at else "-",
                r.url or "-",
            )
            for r in d.replicas
        ]
        print()
        print(format_table(("replica", "status", "executor", "in flight", "up", "url"), rows, (3,)))
    return 0


def _print_metrics(name: str) -> None:
    client = get_client()
    try:
        msg = client.call(
            client.stub.DeploymentMetrics, pb.DeploymentGetRequest(name=name), timeout=30
        )
    except Error as exc:  # an older controller has no metrics to give
        print(f"\nmetrics: not available ({exc})")
        return
    rows = DeploymentMetrics.from_pb(msg).rows()
    width = max(len(label) for label, _ in rows)
    print("\nmetrics:")
    for label, value in rows:
        print(f"  {label.ljust(width)}  {value}")


def _inputs(text: str) -> str:
    if not text:
        return ""
    try:
        data: Any = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        return " ".join(f"{k}={_short(v)}" for k, v in data.items())
    return _short(data)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value


def _events(args: argparse.Namespace) -> int:
    client = get_client()
    resp = client.call(
        client.stub.DeploymentEvents,
        pb.DeploymentEventsRequest(name=args.name, limit=args.limit),
        timeout=30,
    )
    if not resp.events:
        print(f"no events recorded for {args.name}")
        return 0
    for e in reversed(resp.events):  # oldest first, like a log
        print(f"{_clock(e.time)}  {e.kind:<16} {e.message}")
        inputs = _inputs(e.inputs_json)
        if inputs and args.inputs:
            print(f"{'':21}{'':17}inputs: {inputs}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    client = get_client()
    resp = client.call(
        client.stub.DeploymentLogs,
        pb.DeploymentLogsRequest(name=args.name, tail_bytes=args.tail_bytes),
        timeout=60,
    )
    print(format_logs(resp.replicas))
    return 0


def _teardown(args: argparse.Namespace) -> int:
    client = get_client()
    d = client.call(
        client.stub.DeploymentTeardown, pb.DeploymentGetRequest(name=args.name), timeout=60
    )
    print(
        f"deployment {d.name}: {status_word(d.status)}; cost {format_cost(d.cost_usd, d.emulated)}"
    )
    return 0


def _token(args: argparse.Namespace) -> int:
    client = get_client()
    if args.rotate:
        d = client.call(
            client.stub.DeploymentTokenRotate, pb.DeploymentGetRequest(name=args.name), timeout=30
        )
        print("new token (the old one no longer works):", file=sys.stderr)
    else:
        d = _get(args.name)
    print(d.token if d.auth else f"{d.name} is open: it takes no token (deployed with auth=False)")
    return 0


def add_parser(sub: Any) -> None:
    """Adds ``cobalt deployments ...`` to the command line."""
    dep = sub.add_parser("deployments", help="list and manage deployed services")
    dep.set_defaults(fn=_list, all=False)
    dsub = dep.add_subparsers(dest="action")
    ls = dsub.add_parser("list", help="deployments with status, replicas, auth and cost")
    ls.add_argument("--all", action="store_true", help="also those torn down")
    ls.set_defaults(fn=_list)
    show = dsub.add_parser("show", help="one deployment and its replicas")
    show.add_argument("name")
    show.set_defaults(fn=_show)
    ev = dsub.add_parser("events", help="scaling decisions and replica changes, with reasons")
    ev.add_argument("name")
    ev.add_argument("--limit", type=int, default=100)
    ev.add_argument("--inputs", action="store_true", help="also print each decision's inputs")
    ev.set_defaults(fn=_events)
    lg = dsub.add_parser("logs", help="what the replicas printed, endpoint errors included")
    lg.add_argument("name")
    lg.add_argument("--tail-bytes", type=int, default=64 * 1024, help="per replica and stream")
    lg.set_defaults(fn=_logs)
    td = dsub.add_parser("teardown", help="stop a deployment's replicas and its routes")
    td.add_argument("name")
    td.set_defaults(fn=_teardown)
    tok = dsub.add_parser("token", help="print a deployment's token, or rotate it")
    tok.add_argument("name")
    tok.add_argument("--rotate", action="store_true", help="issue a new token")
    tok.set_defaults(fn=_token)
