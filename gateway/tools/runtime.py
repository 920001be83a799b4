"""What every command shares: logging, the event loop with signal handling, capture options."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.io.capture_writer import CaptureWriter


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


def make_capture(directory: Path | None) -> CaptureWriter | None:
    """The capture writer of ``--capture DIR``, or None."""
    if directory is None:
        return None
    from gateway.io.capture_writer import CaptureWriter

    return CaptureWriter(directory)


def add_capture_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--capture",
        type=Path,
        metavar="DIR",
        help="record every raw upstream frame, connection event and REST snapshot into DIR "
        "(docs/capture-format.md); `mdgateway verify DIR` reads it",
    )


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number no less than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}: {text!r}")
        return value

    return parse
