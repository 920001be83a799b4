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


async def _one_symbols_outage(endpoint_faults: str) -> dict[str, list[SymbolState]]:
    """Runs until B and C are live after ``endpoint_faults`` and A is live after its REST
    outage; returns every symbol's states in order."""
    spec = f"rest[BTCUSDT]:5xx@0+{OUTAGE_S};{endpoint_faults}"
    plan = FaultPlan(spec, seed=3, n_endpoints=2)
    async with SimBinanceSpot(SYMBOLS, n_endpoints=2, seed=3, interval_s=0.02, faults=plan) as sim:
        states: dict[str, list[SymbolState]] = {key: [] for key in KEYS}

        def on_update(event: Event) -> None:
            if isinstance(event, StatusEvent):
                states[event.symbol].append(event.state)

        def live_again(key: str) -> bool:
            """Live, and after the endpoints' faults (if any) live again."""
            if not endpoint_faults:
                return SymbolState.LIVE in states[key]
            return states[key][-1:] == [SymbolState.LIVE] and SymbolState.STALE in states[key]

        async with serving(_config(sim), KEYS, on_update=on_update) as (service, subscriber):
            others = KEYS[1:]
            await subscriber.until(lambda: all(live_again(k) for k in others), OUTAGE_S)
            fetcher = service.venues[0].fetcher
            assert fetcher is not None
            assert sim.fault_time() < OUTAGE_S, "B and C are live during A's outage"
            assert SymbolState.LIVE not in states["binance:BTCUSDT"]
            assert fetcher.stats.failures >= 1
            await subscriber.until(
                lambda: SymbolState.LIVE in states["binance:BTCUSDT"], timeout_s=OUTAGE_S + 3.0
            )
            assert sim.fault_time() >= OUTAGE_S
            assert fetcher.stats.max_in_flight <= 2
            assert service.venues[0].stats.snapshots_superseded == 0
            return states


def test_one_symbols_failing_snapshots_never_hold_back_the_others() -> None:
    states = asyncio.run(asyncio.wait_for(_one_symbols_outage(""), 20))
    for key in KEYS[1:]:
        # Live once, and never anything else since: A's retries touched nothing.
        assert states[key][states[key].index(SymbolState.LIVE) :] == [SymbolState.LIVE]


def test_the_others_resync_and_go_live_while_one_symbols_snapshots_fail() -> None:
    # Both endpoints refuse for 0.3 s: every book misses updates and resyncs.
    states = asyncio.run(asyncio.wait_for(_one_symbols_outage("ep*:refuse@0.8+0.3"), 20))
    for key in KEYS[1:]:
        after_outage = states[key][states[key].index(SymbolState.STALE) :]
        # Resynced from a snapshot, live again while A's snapshots fail.
        assert after_outage == [SymbolState.STALE, SymbolState.RESYNCING, SymbolState.LIVE]
