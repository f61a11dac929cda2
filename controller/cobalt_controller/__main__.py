"""``python -m cobalt_controller serve``: run the controller in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cobalt_common.errors import ConfigError, Error
from cobalt_common.paths import cobalt_home, config_file
from cobalt_common.startup import CONFIG_EXIT_CODE, config_error_line
from cobalt_controller._config import load_config
from cobalt_controller._server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cobalt_controller")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the controller in the foreground")
    run.add_argument("--home", type=Path, default=None, help="data directory ($COBALT_HOME)")
    run.add_argument("--address", default=None, help="host:port to listen on")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    home = (args.home or cobalt_home()).expanduser()
    try:
        config = load_config(home)
        if args.address:
            config.address = args.address
        serve(config)
    except ConfigError as exc:
        message = str(exc)
        path = config_file(home)
        if path.exists() and str(path) not in message:
            message = f"{path}: {message}"
        # For whoever started this process in the background (cobalt._embedded).
        print(config_error_line(message), flush=True)
        print(f"cobalt controller: {message}", file=sys.stderr, flush=True)
        return CONFIG_EXIT_CODE
    except Error as exc:
        print(f"cobalt controller: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
