"""``cobalt agent`` (also ``python -m cobalt_executors.agent``): attach this machine.

The credential comes from ``--token``, ``--token-file`` or the variable
``COBALT_AGENT_TOKEN``; executors that start agents use the variable, so that
the credential never shows in a process list.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from cobalt_common.errors import Error
from cobalt_executors.agent._agent import Agent, AgentConfig

TOKEN_VARIABLE = "COBALT_AGENT_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--controller", required=True, help="the controller's host:port")
    parser.add_argument("--executor", required=True, help="the executor this machine joins")
    parser.add_argument("--token", default="", help=f"the agent credential (or ${TOKEN_VARIABLE})")
    parser.add_argument("--token-file", default="", help="a file holding the credential")
    parser.add_argument(
        "--fingerprint", default="", help="the controller certificate's SHA-256 (beyond loopback)"
    )
    parser.add_argument("--work-dir", default="", help="the agent's own folder (logs, payloads)")
    parser.add_argument("--cpus", type=float, default=0, help="CPUs to offer (default: all)")
    parser.add_argument("--memory", default="", help='memory to offer, e.g. "64GB" (default: all)')
    parser.add_argument("--workers", type=int, default=0, help="warm workers (default: CPUs)")
    parser.add_argument(
        "--emulate-gpus", default="", help='GPUs to pretend to have, as JSON: {"h100": 2}'
    )
    parser.add_argument("--allocation", default="", help="where this agent runs (a job id)")
    parser.add_argument(
        "--expires-at", type=float, default=0.0, help="when the allocation ends (unix seconds)"
    )
    parser.add_argument(
        "--walltime",
        type=float,
        default=0.0,
        help="seconds from now until the allocation ends (instead of --expires-at)",
    )
    parser.add_argument("--agent-id", default="", help="a stable id (default: a random one)")
    parser.add_argument(
        "--stream-payloads",
        action="store_true",
        help="fetch and send payloads through the controller even where its blob "
        "directory is visible here",
    )


def config_from(args: argparse.Namespace) -> AgentConfig:
    token = args.token or os.environ.get(TOKEN_VARIABLE, "")
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
    if not token:
        raise SystemExit(
            f"cobalt agent: no credential; pass --token, --token-file or ${TOKEN_VARIABLE}. "
            "`cobalt agent-token --executor NAME` on the controller's machine prints one."
        )
    options: dict[str, Any] = {}
    if args.cpus:
        options["cpus"] = args.cpus
    if args.memory:
        options["memory"] = args.memory
    if args.workers:
        options["workers"] = args.workers
    if args.emulate_gpus:
        try:
            options["emulate_gpus"] = json.loads(args.emulate_gpus)
        except ValueError:
            raise SystemExit(
                f'cobalt agent: --emulate-gpus must be JSON such as {{"h100": 2}}, '
                f"not {args.emulate_gpus!r}."
            ) from None
    work_dir = Path(args.work_dir or Path.home() / ".cobalt" / "agent")
    config = AgentConfig(
        controller=args.controller,
        credential=token,
        executor=args.executor,
        work_dir=work_dir,
        fingerprint=args.fingerprint,
        options=options,
        allocation=args.allocation,
        expires_at=args.expires_at or (time.time() + args.walltime if args.walltime > 0 else 0.0),
        stream_payloads=args.stream_payloads,
    )
    if args.agent_id:
        config.agent_id = args.agent_id
    return config


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        agent = Agent(config_from(args))
    except Error as exc:
        print(f"cobalt agent: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop())
    started = time.monotonic()
    try:
        agent.run()
    except Error as exc:
        print(f"cobalt agent: {exc}", file=sys.stderr)
        return 3
    logging.getLogger("cobalt.agent").info("stopped after %.0f s", time.monotonic() - started)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cobalt agent", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
