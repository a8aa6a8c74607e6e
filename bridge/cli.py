"""The ``bridge`` command: ``serve``, the simulator's ``call`` and ``load``, ``ncco`` and
``twiml``.

A mistake on the command line prints one line (``bridge: error: ...``) and exits 2; no
traceback ever reaches a user for a bad argument.

Import rule: may import anything in the package; nothing imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from bridge import __version__
from bridge.config import ServerConfig, add_config_arguments, config_from
from bridge.errors import ConfigError
from bridge.handlers import build_handler
from bridge.handlers.speech import resolve_service, upstream_headers
from bridge.logs import setup_logging
from bridge.ncco_cli import add_subcommand as add_ncco_subcommand
from bridge.runtime import run
from bridge.server import serve
from bridge.sim import add_subcommands
from bridge.startup import check_output_dirs
from bridge.twiml import add_subcommand as add_twiml_subcommand
from bridge.workers import run_supervisor


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; we print the error alone, as one line."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"bridge: error: {message}\n")
        sys.exit(2)


def _run_serve(args: argparse.Namespace) -> int:
    config = config_from(args)
    check_output_dirs(config)
    setup_logging(config.log_level, config.log_format)
    # A missing key or header variable stops us here, before any worker starts.
    if config.upstream_dialect != "raw":
        resolve_service(config)
    else:
        upstream_headers(config, os.environ)
    if config.workers > 1:
        return run_supervisor(config)
    run(_serve_until_signal(config))
    return 0


async def _serve_until_signal(config: ServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    handler = build_handler(config)
    try:
        await serve(config, handler, stop)
    finally:
        handler.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="bridge", description="Websocket audio bridge for Vonage calls.")
    parser.add_argument("--version", action="version", version=f"bridge {__version__}")
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", required=True, parser_class=OneLineParser
    )
    serve_parser = sub.add_parser("serve", help="run the bridge server")
    add_config_arguments(serve_parser)
    serve_parser.set_defaults(func=_run_serve)
    add_subcommands(sub)
    add_ncco_subcommand(sub)
    add_twiml_subcommand(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        sys.stderr.write(f"bridge: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
