"""The ``mdgateway`` command: run, demo, verify."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from gateway.capture_writer import CaptureWriter


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # websockets logs every connection at INFO; the gateway logs what matters of them.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.getLogger().level))


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Runs ``main`` on uvloop (asyncio where uvloop is missing) until it returns or
    SIGINT/SIGTERM arrives; a signal cancels it, so every task it started is stopped."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX platform
        return asyncio.run(_until_signal(main))
    return uvloop.run(_until_signal(main))


async def _until_signal(main: Coroutine[Any, Any, int]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.TaskGroup() as tasks:
            work = tasks.create_task(main)
            stopper = tasks.create_task(stop.wait())
            done, _ = await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                stopper.cancel()
                return work.result()
            work.cancel()
            print("mdgateway: stopped by signal", file=sys.stderr)
            return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# --- run -------------------------------------------------------------------------------------


def _with_overrides(config: Config, port: int | None, host: str | None) -> Config:
    import msgspec

    server = config.server
    if port is not None:
        server = msgspec.structs.replace(server, port=port)
    if host is not None:
        server = msgspec.structs.replace(server, host=host)
    return msgspec.structs.replace(config, server=server)


def make_capture(directory: Path | None) -> CaptureWriter | None:
    """The capture writer of ``--capture DIR``, or None."""
    if directory is None:
        return None
    from gateway.capture_writer import CaptureWriter

    return CaptureWriter(directory)


async def _run_service(config: Config, capture_dir: Path | None = None) -> int:
    from gateway.service import Service

    service = Service(config, capture=make_capture(capture_dir))
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(service.run(ready))
        await ready.wait()
        logging.getLogger("mdgateway").info(
            "gateway ready: ws://%s:%d, %d symbols",
            config.server.host,
            service.port,
            len(service.books),
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = _with_overrides(load_config(Path(args.config)), args.port, args.host)
    except ConfigError as exc:
        print(f"mdgateway: bad configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_level or config.log_level)
    return run_loop(_run_service(config, args.capture))


def add_capture_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--capture",
        type=Path,
        metavar="DIR",
        help="record every raw upstream frame, connection event and REST snapshot into DIR "
        "(docs/capture-format.md); `mdgateway verify DIR` reads it",
    )


# --- entry ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mdgateway",
        description="Redundant exchange feeds arbitrated into one clean L2 book per symbol.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the gateway as a service")
    run.add_argument("--config", required=True, help="TOML configuration file")
    run.add_argument("--port", type=int, help="subscriber port (overrides the config)")
    run.add_argument("--host", help="subscriber bind address (overrides the config)")
    run.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    add_capture_argument(run)
    run.set_defaults(func=cmd_run)

    from gateway import demo

    demo_parser = commands.add_parser(
        "demo", help="run the gateway on simulated venues with endpoint faults, and watch it"
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(func=demo.main)

    sim_parser = commands.add_parser(
        "sim", help="run the simulated venue alone on fixed loopback ports"
    )
    demo.add_sim_arguments(sim_parser)
    sim_parser.set_defaults(func=demo.sim_main)

    from gateway import verify

    verify_parser = commands.add_parser(
        "verify", help="rebuild books offline from a capture file and report per symbol"
    )
    verify.add_arguments(verify_parser)
    verify_parser.set_defaults(func=verify.main)

    from gateway import tap

    tap_parser = commands.add_parser(
        "tap", help="follow one symbol of a gateway, check seq and book, and summarize"
    )
    tap.add_arguments(tap_parser)
    tap_parser.set_defaults(func=tap.main)

    from gateway import replay

    replay_parser = commands.add_parser(
        "replay", help="serve a capture from K loopback endpoints and REST, as the venue would"
    )
    replay.add_arguments(replay_parser)
    replay_parser.set_defaults(func=replay.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
