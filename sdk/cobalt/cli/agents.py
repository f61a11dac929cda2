"""``cobalt agent`` attaches this machine to a controller; ``cobalt agent-token``
prints a credential for that, with the whole command to run."""

from __future__ import annotations

import argparse
import shlex
import time
from typing import Any

from cobalt._client import get_client
from cobalt_common.hardware import parse_duration_s
from cobalt_common.v1 import controller_pb2 as pb


def _agent(args: argparse.Namespace) -> int:
    from cobalt_executors.agent._cli import run

    return run(args)


def _token(args: argparse.Namespace) -> int:
    client = get_client()
    ttl = parse_duration_s(args.ttl, option="--ttl") if args.ttl else 0.0
    reply = client.call(
        client.stub.AgentTokenCreate,
        pb.AgentTokenCreateRequest(executor=args.executor, ttl_s=ttl, allocation=args.allocation),
    )
    if args.quiet:
        print(reply.token)
        return 0
    command = [
        "cobalt",
        "agent",
        "--controller",
        reply.address,
        "--executor",
        args.executor,
    ]
    if reply.fingerprint:
        command += ["--fingerprint", reply.fingerprint]
    expires = time.strftime("%Y-%m-%d %H:%M", time.localtime(reply.expires_at))
    print(f"An agent credential for executor {args.executor!r}, valid until {expires}.")
    print("Keep it secret: it lets a machine take this executor's tasks. On that machine run:\n")
    print(f"  COBALT_AGENT_TOKEN={shlex.quote(reply.token)} \\\n    {shlex.join(command)}")
    return 0


def add_parser(sub: Any) -> None:
    """Adds ``cobalt agent`` and ``cobalt agent-token``."""
    from cobalt_executors.agent._cli import add_arguments

    agent = sub.add_parser("agent", help="attach this machine to a controller as an agent")
    add_arguments(agent)
    agent.set_defaults(fn=_agent)
    token = sub.add_parser("agent-token", help="print a credential for agents of one executor")
    token.add_argument("--executor", required=True, help="an executor of type agents")
    token.add_argument("--ttl", default="", help='how long it lasts, e.g. "7d" (default 30 days)')
    token.add_argument("--allocation", default="", help="only for an agent of this allocation")
    token.add_argument("--quiet", action="store_true", help="print only the credential")
    token.set_defaults(fn=_token)
