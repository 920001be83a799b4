"""A symbol the venue refuses, against the simulated venues on loopback: reported by name,
``stale`` with the venue's words, and never holding back the venue's other symbols."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from collections.abc import Coroutine
from typing import Any

import pytest

from feeds.sim.simulators import SimBinanceSpot
from feeds.sim.simulators import SimBybit
from feeds.sim.simulators import SimCoinbase
from feeds.sim.simulators import SimKraken
from feeds.sim.simulators import SimOkx
from gateway.core.model import SymbolState
from gateway.io.client import ClientState
from gateway.io.client import Event
from gateway.io.client import StatusEvent
from gateway.wire.config import Config
from tests.subscriber import loopback_config
from tests.subscriber import serving


def _config(venue: str, symbols: list[str], endpoints: list[str], rest: list[str]) -> Config:
    return loopback_config(venue, symbols, endpoints, rest, backoff_max_s=0.2, healthy_after_s=0.5)


async def _rejected(venue: str, config: Config, good: str, bad: str) -> None:
    """Runs until ``good`` is live and ``bad`` refused, and checks both."""
    keys = [f"{venue}:{good}", f"{venue}:{bad}"]
    statuses: dict[str, list[tuple[ClientState, str]]] = {key: [] for key in keys}

    def on_update(event: Event) -> None:
        if isinstance(event, StatusEvent):
            statuses[event.symbol].append((event.state, event.reason))

    async with serving(config, keys, on_update=on_update) as (service, subscriber):
        await subscriber.until(
            lambda: any(state is SymbolState.LIVE for state, _ in statuses[keys[0]]), 10
        )
        await subscriber.until(lambda: bool(statuses[keys[1]]), 10)
        state, reason = statuses[keys[1]][-1]
        assert state is SymbolState.STALE and reason.startswith("rejected by the venue: ")
        assert bad in reason.upper()
        assert dict(service.symbols())[keys[1]] is SymbolState.STALE
        runtime = service.venues[0]
        assert runtime.stats.rejected_symbols == 1 and runtime.subscribed == [good]
        assert service.books[keys[0]].state is SymbolState.LIVE


async def _binance() -> None:
    async with SimBinanceSpot(["BTCUSDT"], n_endpoints=2, seed=2, interval_s=0.02) as sim:
        config = _config(
            "binance", ["BTCUSDT", "DOGEUSDT"], list(sim.endpoint_urls), [sim.rest_url]
        )
        await _rejected("binance", config, "BTCUSDT", "DOGEUSDT")


async def _coinbase() -> None:
    async with SimCoinbase(["BTC-USD"], n_endpoints=2, seed=2, interval_s=0.02) as sim:
        config = _config("coinbase", ["BTC-USD", "DOGE-USD"], list(sim.endpoint_urls), [])
        await _rejected("coinbase", config, "BTC-USD", "DOGE-USD")


async def _bybit() -> None:
    async with SimBybit(["BTCUSDT"], n_endpoints=2, seed=2, interval_s=0.02) as sim:
        config = _config("bybit-spot", ["BTCUSDT", "DOGEUSDT"], list(sim.public_urls), [])
        await _rejected("bybit-spot", config, "BTCUSDT", "DOGEUSDT")


async def _okx() -> None:
    async with SimOkx(["BTC-USDT"], n_endpoints=2, seed=2, interval_s=0.02) as sim:
        config = _config("okx", ["BTC-USDT", "DOGE-USDT"], sim.public_urls, [])
        await _rejected("okx", config, "BTC-USDT", "DOGE-USDT")


async def _kraken() -> None:
    async with SimKraken(["BTC/USD"], n_endpoints=2, seed=2, interval_s=0.02) as sim:
        config = _config("kraken", ["BTC/USD", "DOGE/USD"], sim.v2_urls, [])
        await _rejected("kraken", config, "BTC/USD", "DOGE/USD")


@pytest.mark.parametrize(
    "run_venue",
    [_binance, _coinbase, _bybit, _okx, _kraken],
    ids=["binance", "coinbase", "bybit-spot", "okx", "kraken"],
)
def test_a_refused_symbol_is_named_stale_and_never_holds_back_the_others(
    run_venue: Callable[[], Coroutine[Any, Any, None]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.core.pipeline")
    asyncio.run(asyncio.wait_for(run_venue(), 20))
    named = [r.getMessage() for r in caplog.records if "rejected by the venue" in r.getMessage()]
    assert len(named) == 1, "one clear line naming the symbol"
