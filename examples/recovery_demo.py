"""Show a book surviving a lost connection: recovered, not rebuilt.

    .venv/bin/python examples/recovery_demo.py [URL ...] [--symbol binance:BTCUSDT]
        [--drop-after 20] [--trades]

Follows the symbol's full book, and after ``--drop-after`` book messages drops its own
connection (as a network blip would) and connects again. The client keeps the book and
sends the gateway its last ``(epoch, seq)``; the gateway answers with every delta missed
meanwhile, marked ``recovered``, and the book goes on from where it was: no snapshot, no
gap. Each line shows a book message's ``epoch:seq`` and kind; the recovery is one line
``recovered ...`` (``not recovered`` when the gateway no longer had the deltas, e.g. after
a long outage or a gateway restart: a fresh snapshot follows). It drops the connection
once and then follows the book until Ctrl-C.

With ``--trades`` it follows the symbol's trades too: each is one line ``trade
epoch:seq`` (``recovered`` when the gateway re-sent it after the reconnection), and the
recovery of the trade stream one line ``trades recovered from epoch:seq ...`` (``trades
lost after ...`` when the gateway no longer had them): every trade once, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from gateway.client import BookEvent
from gateway.client import Channel
from gateway.client import GatewayClient
from gateway.client import RecoveryEvent
from gateway.client import StatusEvent
from gateway.client import TradeEvent

DEFAULT_URL = "ws://127.0.0.1:8765/"


async def demonstrate(urls: list[str], symbol: str, drop_after: int, trades: bool) -> None:
    seen = 0
    channels: tuple[Channel, ...] = ("book", "trade") if trades else ("book",)
    async with GatewayClient(urls, [symbol], channels=channels, recover=True) as client:
        async for event in client:
            if isinstance(event, RecoveryEvent) and event.channel == "trade":
                outcome = "trades recovered from" if event.recovered else "trades lost after"
                print(
                    f"{outcome} {event.epoch}:{event.seq} on gateway {event.instance}",
                    flush=True,
                )
            elif isinstance(event, RecoveryEvent):
                outcome = "recovered" if event.recovered else "not recovered"
                print(
                    f"{outcome} from {event.epoch}:{event.seq} on gateway {event.instance}",
                    flush=True,
                )
            elif isinstance(event, TradeEvent):
                mark = " recovered" if event.recovered else ""
                print(f"trade {event.epoch}:{event.seq}{mark}", flush=True)
            elif isinstance(event, StatusEvent):
                print(f"status {event.state}: {event.reason}", flush=True)
            elif isinstance(event, BookEvent):
                print(f"{event.epoch}:{event.seq} {event.kind}", flush=True)
                seen += 1
                if seen == drop_after:
                    print("dropping the connection", flush=True)
                    await client.reconnect_now()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="*", default=[DEFAULT_URL], metavar="URL")
    parser.add_argument("--symbol", default="binance:BTCUSDT")
    parser.add_argument("--drop-after", type=int, default=20, metavar="N")
    parser.add_argument("--trades", action="store_true", help="follow the trades too")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(demonstrate(args.urls, args.symbol, args.drop_after, args.trades))


if __name__ == "__main__":
    main()
