"""Chaos on loopback: every upstream endpoint down while the venue takes 2 s of steps.

Subscribers are told `stale` once every endpoint is down, then get a fresh snapshot and
`live` once an endpoint is back; their book is the venue's afterwards; buffers stay
bounded."""

from __future__ import annotations

import dataclasses

import pytest

from feeds.sim.simulators import SimBinanceSpot
from gateway.core.model import SymbolState
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import demo_config

from .subscriber import serving

KEY = "binance:BTCUSDT"
#: Bounds of the waits: the states follow connection events, not timers.
STALE_WITHIN_S = 5.0
LIVE_AGAIN_WITHIN_S = 5.0
#: Venue steps taken while every endpoint is down (2 s of the venue's time).
STEPS_DOWN = 100


@pytest.mark.async_timeout_s(40)
async def test_all_endpoints_down_for_two_seconds_is_stale_then_live_with_a_fresh_snapshot() -> (
    None
):
    async with SimBinanceSpot(["BTCUSDT"], n_endpoints=3, seed=5, interval_s=0.02) as sim:
        binance = dataclasses.replace(DEMO_VENUES[0], symbols=("BTCUSDT",))
        config = demo_config([(binance, sim)], port=0)
        async with serving(config, [KEY], backoff_max_s=0.2) as (service, subscriber):
            client = subscriber.client
            await subscriber.until(lambda: client.book(KEY) is not None, 10)
            snapshots_before = client.stats.snapshots
            down = len(subscriber.statuses)
            for index in range(3):
                await sim.close_endpoint(index)
            stale = SymbolState.STALE.value
            await subscriber.until(lambda: stale in subscriber.statuses[down:], STALE_WITHIN_S)
            await sim.wait_steps(STEPS_DOWN)  # the venue moves on while every copy is down
            up = len(subscriber.statuses)
            for index in range(3):
                await sim.open_endpoint(index)
            live = SymbolState.LIVE.value
            await subscriber.until(lambda: live in subscriber.statuses[up:], LIVE_AGAIN_WITHIN_S)
            # Stale came first, and nothing said live while every endpoint was down.
            assert live not in subscriber.statuses[down:up], subscriber.statuses[down:]
            # The venue moved on while every copy was down: a fresh snapshot, no seq gap.
            assert client.stats.snapshots == snapshots_before + 1
            assert client.stats.gaps == 0
            sim.pause()
            truth = sim.true_book("BTCUSDT").normalized()

            def caught_up() -> bool:
                book = client.book(KEY)
                return book is not None and book.normalized() == truth

            await subscriber.until(caught_up, 10)
            arbiter = service.books[KEY]
            assert arbiter.pending <= 4096 and arbiter.stats.resyncs == 1
            assert all(not s.behind for s in service.fanout.subscriber_stats())
