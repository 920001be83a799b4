"""Every connection of a 200-symbol, 3-endpoint configuration restarted at once: the
gateway crosses none of the simulated venue's limits and every book is live again within a
bound derived from its budgets."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
from websockets.frames import CloseCode

from feeds.binance import snapshot_weight
from feeds.sim.limits import VENUE_LIMITS
from feeds.sim.simulators import SimBinanceSpot
from gateway.core.model import SymbolState
from gateway.wire.config import Config
from gateway.wire.config import LimitsConfig

from .subscriber import loopback_config
from .subscriber import serving

SYMBOLS = [f"S{i:03d}USDT" for i in range(200)]
KEYS = [f"binance:{s}" for s in SYMBOLS]
ENDPOINTS = 3
#: Binance's limits with the attempt window scaled down (300 per 5 minutes become 10 per
#: 2 s) and 100 streams per connection instead of 1024, so that 200 symbols (400 streams)
#: are sharded and the attempt budget binds; the simulator and the gateway share them.
ATTEMPTS, WINDOW_S, STREAMS = 10, 2.0, 100
SNAPSHOT_LIMIT = 100
#: The gateway's share of each limit (gateway.core.budget).
SHARE = 0.8
BACKOFF_MAX_S = 0.5
#: Loopback work the budgets do not bound: handshakes, 200 REST snapshots, parsing, on a
#: shared machine.
WORK_S = 8.0


def _config(sim: SimBinanceSpot) -> Config:
    limits = LimitsConfig(
        connect_attempts=ATTEMPTS, connect_window_s=WINDOW_S, streams_per_connection=STREAMS
    )
    return loopback_config(
        "binance",
        SYMBOLS,
        sim.endpoint_urls,
        [sim.rest_url],
        snapshot_limit=SNAPSHOT_LIMIT,
        backoff_max_s=BACKOFF_MAX_S,
        limits=limits,
    )


def _bound_s(connections: int) -> float:
    """Every connection reconnects within ceil(n / budget) attempt windows (the window may
    still hold the previous attempts), after at most one backoff; the snapshots of every
    book fit in one REST window's budget, so they wait for none."""
    budget = int(ATTEMPTS * SHARE)
    rest_weight = len(SYMBOLS) * snapshot_weight(SNAPSHOT_LIMIT)
    assert rest_weight <= 6000 * SHARE
    return math.ceil(connections / budget) * WINDOW_S + BACKOFF_MAX_S + WORK_S


# The waits (live within 2 bounds, then down and live again within one each), and setup.
@pytest.mark.async_timeout_s(4 * _bound_s(4 * ENDPOINTS) + WORK_S)
async def test_restarting_every_connection_at_once_crosses_no_limit() -> None:
    limits = replace(
        VENUE_LIMITS["binance-spot"],
        connect_attempts=ATTEMPTS,
        connect_window_s=WINDOW_S,
        max_streams=STREAMS,
    )
    async with SimBinanceSpot(
        SYMBOLS, ENDPOINTS, seed=7, interval_s=0.5, actions_per_step=1.0, limits=limits
    ) as sim:
        config = _config(sim)
        async with serving(config, KEYS) as (service, subscriber):
            venue = service.venues[0]
            connections = list(venue.connections.values())
            # 400 streams at 100 per connection: 4 groups, on each of the 3 endpoints.
            assert len(connections) == 4 * ENDPOINTS
            bound_s = _bound_s(len(connections))

            def all_live() -> bool:
                return all(service.books[k].state is SymbolState.LIVE for k in KEYS)

            await subscriber.until(all_live, 2 * bound_s)
            for index in range(ENDPOINTS):
                sim.close_connections(index, CloseCode.GOING_AWAY, "venue restart")
            closed_s = time.monotonic()
            await subscriber.until(lambda: not all_live(), bound_s)
            await subscriber.until(all_live, bound_s)
            elapsed_s = time.monotonic() - closed_s
            assert elapsed_s < bound_s
            assert all(c.stats.reconnects >= 1 for c in connections)
            # The attempt budget bound: some connections waited for it.
            assert sum(c.stats.budget_waits for c in connections) > 0
        stats = sim.limit_stats()
        assert stats.violations == 0 and stats.bans == 0, stats
        assert sim.rest_stats.rate_limited == 0
