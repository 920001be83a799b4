"""The ``mdgateway`` command and its subcommands: run, demo, sim, verify, tap, replay, top."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from gateway.tools import demo
from gateway.tools import replay
from gateway.tools import tap
from gateway.tools import top
from gateway.tools import verify
from gateway.tools.runtime import Parser
from gateway.tools.runtime import UsageError
from gateway.tools.runtime import add_capture_argument
from gateway.tools.runtime import configure_logging
from gateway.tools.runtime import log_level
from gateway.tools.runtime import make_capture
from gateway.tools.runtime import port_number
from gateway.tools.runtime import run_loop
from gateway.tools.runtime import stack_dumps
from gateway.wire.config import LOG_FORMATS
from gateway.wire.config import Config
from gateway.wire.config import ConfigError
from gateway.wire.config import load_config
from gateway.wire.config import validate

# --- run -------------------------------------------------------------------------------------


def _with_overrides(config: Config, port: int | None, host: str | None) -> Config:
    import msgspec

    server = config.server
    if port is not None:
        server = msgspec.structs.replace(server, port=port)
    if host is not None:
        server = msgspec.structs.replace(server, host=host)
    return msgspec.structs.replace(config, server=server)


async def _run_service(config: Config, capture_dir: Path | None = None) -> int:
    from gateway.io.service import Service

    service = Service(config, capture=make_capture(capture_dir))
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(service.run(ready))
        await ready.wait()
        logging.getLogger("mdgateway").info(
            "gateway ready: ws://%s:%d, %d symbol%s",
            config.server.host,
            service.port,
            len(service.books),
            "" if len(service.books) == 1 else "s",
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = validate(_with_overrides(load_config(Path(args.config)), args.port, args.host))
    except ConfigError as exc:
        raise UsageError(f"bad configuration: {exc}") from None
    configure_logging(args.log_level or config.log_level, args.log_format or config.log_format)
    hint = "; change [server] host/port in the configuration, or pass --host/--port (0: any free)"
    with stack_dumps():  # SIGUSR1: every thread's stack on stderr, even with the loop blocked
        return run_loop(_run_service(config, args.capture), listen_hint=hint)


#: A tool's ``add_arguments``: the arguments its ``main`` takes from the namespace.
AddArguments = Callable[[argparse.ArgumentParser], None]
#: A subcommand's ``main``: its exit status.
Command = Callable[[argparse.Namespace], int]

# --- entry ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mdgateway",
        description="Redundant exchange feeds arbitrated into one clean L2 book per symbol.",
    )
    parser.add_argument("--version", action="version", version=f"mdgateway {version('mdgateway')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the gateway as a service")
    run.add_argument("--config", required=True, help="TOML configuration file")
    run.add_argument(
        "--port", type=port_number, help="subscriber port, 0-65535 (overrides the config)"
    )
    run.add_argument("--host", help="subscriber bind address (overrides the config)")
    run.add_argument(
        "--log-level",
        type=log_level,
        help="DEBUG, INFO, WARNING or ERROR (default: the config's log_level)",
    )
    run.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text lines, or json: one object a line (default: the config's log_format)",
    )
    add_capture_argument(run)
    run.set_defaults(func=cmd_run)

    help_texts = {
        "demo": "run the gateway on simulated venues with endpoint faults, and watch it",
        "sim": "run the simulated venues alone on loopback ports, for mdgateway run",
        "verify": "rebuild books offline from a capture (files or a directory), report per symbol",
        "tap": "follow one symbol of a gateway, check seq and book, and summarize",
        "replay": "serve a capture from K loopback endpoints and REST, as the venue would",
        "top": "watch a running gateway: books, endpoints, subscribers and their lag",
    }
    tools: tuple[tuple[str, AddArguments, Command], ...] = (
        ("demo", demo.add_arguments, demo.main),
        ("sim", demo.add_sim_arguments, demo.sim_main),
        ("verify", verify.add_arguments, verify.main),
        ("tap", tap.add_arguments, tap.main),
        ("replay", replay.add_arguments, replay.main),
        ("top", top.add_arguments, top.main),
    )
    for name, add_arguments, command in tools:
        tool_parser = commands.add_parser(name, help=help_texts[name])
        add_arguments(tool_parser)
        tool_parser.set_defaults(func=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command of ``argv``; a UsageError is answered with one line on stderr and
    exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except UsageError as exc:
        print(f"mdgateway {args.command}: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
