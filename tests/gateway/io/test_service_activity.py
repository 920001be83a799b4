"""Channel activity against the simulated OKX venue on loopback: one symbol's channel dies
on one connection while the connection keeps carrying the other symbol."""

from __future__ import annotations

import asyncio

from feeds import okx
from feeds.sim.simulators import SimOkx
from gateway.core.model import SymbolState
from gateway.io.client import Event, StatusEvent
from gateway.wire.config import Config
from tests.subscriber import loopback_config, serving

SYMBOLS = ["BTC-USDT", "ETH-USDT"]
KEYS = [f"okx:{s}" for s in SYMBOLS]


def _config(sim: SimOkx) -> Config:
    silence = {"silence_factor": 10.0, "silence_min_s": 0.3, "silence_max_s": 2.0}
    return loopback_config("okx", SYMBOLS, sim.public_urls, [], **silence)


async def _one_dead_channel() -> None:
    async with SimOkx(SYMBOLS, n_endpoints=2, seed=4, interval_s=0.02) as sim:
        states: dict[str, list[SymbolState]] = {key: [] for key in KEYS}

        def on_update(event: Event) -> None:
            if isinstance(event, StatusEvent):
                states[event.symbol].append(event.state)

        async with serving(_config(sim), KEYS, on_update=on_update) as (service, subscriber):
            venue = service.venues[0]
            live = [SymbolState.SYNCING, SymbolState.LIVE]
            await subscriber.until(lambda: all(states[k] == live for k in KEYS), 10)
            resubscribes = venue.stats.resubscribes
            # The venue drops BTC-USDT's channel on connection 0 (as an unsubscribe does);
            # ETH-USDT's updates go on there.
            first = min(venue.connections)
            assert venue.connections[first].send(okx.unsubscribe_messages(["BTC-USDT"]))
            await subscriber.until(lambda: venue.stats.revived_channels >= 1, 10)
            assert venue.stats.silent_channels >= 1
            assert venue.stats.resubscribes > resubscribes, "resubscribed on that connection"
            assert venue.connections[first].stats.reconnects == 0, "the connection was kept"
            # Alive on the other connection all along: never stale, nothing to resync.
            assert states == {key: live for key in KEYS}
            assert service.symbol_stats("okx:BTC-USDT").resyncs == 0


def test_a_channel_dead_on_one_connection_is_resubscribed_there_and_the_symbol_stays_live() -> None:
    asyncio.run(asyncio.wait_for(_one_dead_channel(), 20))
