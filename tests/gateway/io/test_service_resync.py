"""Snapshots per symbol against the simulated Binance venue on loopback: one symbol's REST
answers fail for a (scaled-down) minute while the others sync and stay live."""

from __future__ import annotations

import asyncio

from feeds.sim.faults import FaultPlan
from feeds.sim.simulators import SimBinanceSpot
from gateway.core.model import SymbolState
from gateway.io.client import Event, StatusEvent
from gateway.wire.config import Config
from tests.subscriber import loopback_config, serving

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
KEYS = [f"binance:{s}" for s in SYMBOLS]
#: The failing symbol's outage, seconds of the venue's time (a minute, scaled down).
OUTAGE_S = 2.0


def _config(sim: SimBinanceSpot) -> Config:
    return loopback_config(
        "binance",
        SYMBOLS,
        sim.endpoint_urls,
        [sim.rest_url],
        max_concurrent_snapshots=2,
        snapshot_backoff_max_s=0.2,
    )


async def _one_symbols_outage() -> None:
    plan = FaultPlan(f"rest[BTCUSDT]:5xx@0+{OUTAGE_S}", seed=3, n_endpoints=2)
    async with SimBinanceSpot(SYMBOLS, n_endpoints=2, seed=3, interval_s=0.02, faults=plan) as sim:
        states: dict[str, list[SymbolState]] = {key: [] for key in KEYS}

        def on_update(event: Event) -> None:
            if isinstance(event, StatusEvent):
                states[event.symbol].append(event.state)

        async with serving(_config(sim), KEYS, on_update=on_update) as (service, subscriber):
            others = KEYS[1:]
            await subscriber.until(
                lambda: all(SymbolState.LIVE in states[k] for k in others), timeout_s=OUTAGE_S
            )
            fetcher = service.venues[0].fetcher
            assert fetcher is not None
            assert sim.fault_time() < OUTAGE_S, "B and C went live during A's outage"
            assert service.books["binance:BTCUSDT"].state is not SymbolState.LIVE
            assert fetcher.stats.failures >= 1
            await subscriber.until(
                lambda: SymbolState.LIVE in states["binance:BTCUSDT"], timeout_s=OUTAGE_S + 3.0
            )
            assert sim.fault_time() >= OUTAGE_S
            for key in others:
                # Live once, and never anything else since: A's retries touched nothing.
                assert states[key][states[key].index(SymbolState.LIVE) :] == [SymbolState.LIVE]
                assert service.symbol_stats(key).resyncs == 0
            assert fetcher.stats.max_in_flight <= 2
            assert service.venues[0].stats.snapshots_superseded == 0


def test_one_symbols_failing_snapshots_never_hold_back_the_others() -> None:
    asyncio.run(asyncio.wait_for(_one_symbols_outage(), 20))
