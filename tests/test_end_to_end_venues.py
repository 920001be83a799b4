"""End to end per venue on loopback: simulated venue (3 endpoints) → gateway → subscriber,
one endpoint closed mid-run: the subscriber sees no gap and ends with the venue's book."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest

from feeds.sim.simulators import SimBinanceCoinm
from feeds.sim.simulators import SimBinanceUsdm
from feeds.sim.simulators import SimBybit
from feeds.sim.simulators import SimCoinbase
from feeds.sim.simulators import SimKraken
from feeds.sim.simulators import SimOkx
from gateway.core.book import L2Book
from gateway.wire.client_session import Book

from .subscriber import loopback_config
from .subscriber import serving


def _top(book: L2Book | Book, depth: int | None) -> object:
    bids, asks = book.normalized()
    return (bids, asks) if depth is None else (bids[:depth], asks[:depth])


#: venue, simulator, symbols, endpoint URLs of a simulator, levels per side held (None: all)
Case = tuple[str, Callable[..., Any], list[str], Callable[[Any], list[str]], int | None]
VENUES: list[Case] = [
    ("binance-usdm", SimBinanceUsdm, ["BTCUSDT", "ETHUSDT"], lambda sim: sim.public_urls, None),
    (
        "binance-coinm",
        SimBinanceCoinm,
        ["BTCUSD_PERP", "BTCUSD_261225"],
        lambda sim: sim.public_urls,
        None,
    ),
    ("okx", SimOkx, ["BTC-USDT", "ETH-USDT"], lambda sim: sim.public_urls, None),
    ("kraken", SimKraken, ["BTC/USD", "ETH/USD"], lambda sim: sim.v2_urls, 10),
    ("coinbase", SimCoinbase, ["BTC-USD", "ETH-USD"], lambda sim: sim.endpoint_urls, None),
    # orderbook.200: the venue's top 200 levels per side.
    (
        "bybit-spot",
        functools.partial(SimBybit, category="spot"),
        ["BTCUSDT"],
        lambda sim: sim.public_urls,
        200,
    ),
    (
        "bybit-linear",
        functools.partial(SimBybit, category="linear"),
        ["BTCUSDT", "ETHUSDT"],
        lambda sim: sim.public_urls,
        200,
    ),
]


#: Venues synced by REST snapshots.
REST_VENUES = ("binance-usdm", "binance-coinm")


# The test's own bounds (live within 15 s, caught up within 15 s) and the venue's 40 steps.
@pytest.mark.parametrize("case", VENUES, ids=[case[0] for case in VENUES])
@pytest.mark.async_timeout_s(40)
async def test_venue_end_to_end_with_an_endpoint_closed_mid_run(case: Case) -> None:
    venue, sim_class, symbols, urls, depth = case
    keys = [f"{venue}:{s}" for s in symbols]
    async with sim_class(symbols, n_endpoints=3, seed=7, interval_s=0.02, jitter_ms=10.0) as sim:
        rest = [sim.rest_url] if venue in REST_VENUES else []
        config = loopback_config(venue, symbols, urls(sim), rest)
        async with serving(config, keys) as (service, subscriber):
            client = subscriber.client
            await subscriber.until(lambda: all(client.book(k) is not None for k in keys), 15)
            await sim.wait_steps(10)
            await sim.close_endpoint(0)
            await sim.wait_steps(15)
            await sim.open_endpoint(0)
            await sim.wait_connections(0, 1)
            await sim.wait_steps(15)
            sim.pause()

            def caught_up() -> bool:
                for key, symbol in zip(keys, symbols, strict=True):
                    book = client.book(key)
                    if book is None or _top(book, depth) != _top(sim.true_book(symbol), depth):
                        return False
                return True

            await subscriber.until(caught_up, 15)
            assert client.stats.gaps == 0
            assert client.stats.snapshots == len(keys), "failovers and resyncs are deltas"
            for key in keys:
                stats = service.symbol_stats(key)
                assert stats.gaps == 0 and stats.checksum_failed == 0
