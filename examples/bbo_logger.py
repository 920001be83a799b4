"""Log the top of book of symbols with timestamps.

    .venv/bin/python examples/bbo_logger.py [URL ...] [--symbol KEY ...]

Subscribes to the ``bbo`` channel (no book is kept on this side) of the gateway at URL
(several: tried in order; default ``ws://127.0.0.1:8765/``, the gateway of ``make demo``)
and logs one line per change of a symbol's best bid or ask: the time the client received
it (UTC, microseconds), the symbol, the book's ``epoch:seq``, bid and ask as
``qty@price``. Status changes are logged too. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime

from gateway.client import BboEvent
from gateway.client import GatewayClient
from gateway.client import Level
from gateway.client import StatusEvent

DEFAULT_URL = "ws://127.0.0.1:8765/"


def utc(ns: int) -> str:
    """``ns`` since the Unix epoch as an ISO time with microseconds."""
    when = datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.UTC)
    return when.isoformat(timespec="microseconds")


def side(level: Level | None) -> str:
    return "-" if level is None else f"{level[1]}@{level[0]}"


async def log_bbo(urls: list[str], symbols: list[str]) -> None:
    async with GatewayClient(urls, symbols, channels=["bbo"]) as client:
        async for event in client:
            if isinstance(event, BboEvent):
                print(
                    f"{utc(event.recv_ns)} {event.symbol} {event.epoch}:{event.seq} "
                    f"bid {side(event.bid)} ask {side(event.ask)}",
                    flush=True,
                )
            elif isinstance(event, StatusEvent):
                print(
                    f"{utc(event.recv_ns)} {event.symbol} status {event.state}: {event.reason}",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="*", default=[DEFAULT_URL], metavar="URL")
    parser.add_argument(
        "--symbol", action="append", dest="symbols", help="repeat for more [binance:BTCUSDT]"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(log_bbo(args.urls, args.symbols or ["binance:BTCUSDT"]))


if __name__ == "__main__":
    main()
