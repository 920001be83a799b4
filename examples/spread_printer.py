"""Print a symbol's spread each time it changes.

    .venv/bin/python examples/spread_printer.py [URL ...] [--symbol binance:BTCUSDT]

Follows the symbol's full book (``book`` channel) from the gateway at URL (several: tried
in order; default ``ws://127.0.0.1:8765/``, the gateway of ``make demo``) and prints one
line each time the spread changes: the best bid, the best ask and the spread, exact
decimals as the venue quotes them (nothing while a side is empty). Status changes
(``live``, ``resyncing``, ``stale``) are printed too; no spread is printed while the book is
not consistent. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from decimal import Decimal

from gateway.client import BookEvent
from gateway.client import GatewayClient
from gateway.client import StatusEvent

DEFAULT_URL = "ws://127.0.0.1:8765/"


async def print_spreads(urls: list[str], symbol: str) -> None:
    last: Decimal | None = None
    async with GatewayClient(urls, [symbol]) as client:
        async for event in client:
            if isinstance(event, StatusEvent):
                print(f"{event.symbol} status {event.state}: {event.reason}", flush=True)
                last = None  # print the spread again once the book is back
            elif isinstance(event, BookEvent):
                spread = event.book.spread()
                if spread is not None and spread != last:
                    last = spread
                    bid, ask = event.book.best_bid(), event.book.best_ask()
                    assert bid is not None and ask is not None  # a spread needs both
                    print(f"{symbol} bid {bid[0]} ask {ask[0]} spread {spread}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="*", default=[DEFAULT_URL], metavar="URL")
    parser.add_argument("--symbol", default="binance:BTCUSDT")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(print_spreads(args.urls, args.symbol))


if __name__ == "__main__":
    main()
