"""Channel activity against the simulated OKX venue on loopback: one symbol's channel dies
on one connection while the connection keeps carrying the other symbol."""

from __future__ import annotations

import asyncio

from feeds import kraken
from feeds import okx
from feeds.sim.simulators import SimKraken
from feeds.sim.simulators import SimOkx
from gateway.core.model import SymbolState
from gateway.io.client import ClientState
from gateway.io.client import Event
from gateway.io.client import StatusEvent
from gateway.wire.config import Config
from tests.subscriber import loopback_config
from tests.subscriber import serving

SYMBOLS = ["BTC-USDT", "ETH-USDT"]
KEYS = [f"okx:{s}" for s in SYMBOLS]


SILENCE = {"silence_factor": 10.0, "silence_min_s": 0.3, "silence_max_s": 2.0}


def _config(sim: SimOkx) -> Config:
    return loopback_config("okx", SYMBOLS, sim.public_urls, [], **SILENCE)


async def _one_dead_channel() -> None:
    async with SimOkx(SYMBOLS, n_endpoints=2, seed=4, interval_s=0.02) as sim:
        states: dict[str, list[ClientState]] = {key: [] for key in KEYS}

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


async def _one_dead_replica() -> None:
    symbols = ["BTC/USD", "ETH/USD"]
    keys = [f"kraken:{s}" for s in symbols]
    async with SimKraken(symbols, n_endpoints=2, seed=4, interval_s=0.02) as sim:
        config = loopback_config("kraken", symbols, sim.v2_urls, [], **SILENCE)
        async with serving(config, keys) as (service, subscriber):
            venue = service.venues[0]
            await subscriber.until(
                lambda: all(service.books[k].state is SymbolState.LIVE for k in keys), 10
            )
            first = min(venue.connections)
            # BTC/USD's book stops on connection 0; its heartbeats and ETH/USD go on.
            assert venue.connections[first].send(kraken.unsubscribe_messages(["BTC/USD"]))
            await subscriber.until(lambda: venue.stats.revived_channels >= 1, 10)
            assert venue.stats.silent_channels >= 1
            assert venue.connections[first].stats.reconnects == 0
            assert service.books["kraken:BTC/USD"].state is SymbolState.LIVE
            assert service.books["kraken:ETH/USD"].state is SymbolState.LIVE


def test_an_unsequenced_venues_dead_replica_is_resubscribed_on_its_connection() -> None:
    asyncio.run(asyncio.wait_for(_one_dead_replica(), 20))
