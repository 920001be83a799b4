"""Oversized upstream frames against the simulated venue: a frame above the venue's
``max_frame_bytes`` is refused unread, its connection counted, logged and reopened, while
the venue's other connections keep the book live and right."""

from __future__ import annotations

import asyncio
import logging

import pytest

from feeds.sim.faults import FaultPlan
from feeds.sim.simulators import SimBinanceSpot
from gateway.wire.venues import ADAPTERS

from .subscriber import serving
from .test_scoring_end_to_end import KEY
from .test_scoring_end_to_end import binance_config

#: Endpoint 0, which sends first, adds 5000 deletions of asks beyond the book to its frames
#: (about 130 KiB, within the book's ``max_levels``: only the frame cap refuses them).
SPEC = "ep0:oversize@1+0.2,oversize_levels=5000;ep1:delay=10ms;ep2:delay=10ms"
CAP_BYTES = 64 * 1024


@pytest.mark.async_timeout_s(40)
async def test_an_oversized_frame_reopens_its_connection_while_the_others_keep_the_book(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.io.upstream")

    plan = FaultPlan(SPEC, seed=1, n_endpoints=3)
    async with SimBinanceSpot(
        ["BTCUSDT"], n_endpoints=3, seed=5, interval_s=0.02, faults=plan
    ) as sim:
        config = binance_config(sim, max_frame_bytes=CAP_BYTES, backoff_max_s=0.2)
        async with serving(config, [KEY]) as (service, subscriber):
            venue = service.venues[0]
            first = venue.connections[min(venue.connections)]
            await subscriber.until(lambda: KEY in subscriber.venue_ids, 10)
            assert sim.fault_time() < 1.0, "synced before the fault, or it tests nothing"
            live_from = len(subscriber.statuses)
            async with asyncio.timeout(10):
                await service.connection_changes.wait_until(
                    lambda: first.stats.oversized_frames >= 1 and first.stats.connected
                )
            await sim.wait_steps(20)  # past the fault window
            sim.pause()
            truth = sim.true_book("BTCUSDT").normalized()

            def caught_up() -> bool:
                book = subscriber.client.book(KEY)
                return book is not None and book.normalized() == truth

            await subscriber.until(caught_up, 5)
            assert subscriber.statuses[live_from:] == [], "the book stayed live"
            assert subscriber.client.stats.gaps == 0
            assert first.max_frame_bytes == CAP_BYTES
            assert first.stats.reconnects >= 1
            assert service.symbol_stats(KEY).resyncs == 0
            others = [c for c in venue.connections.values() if c is not first]
            assert others and all(c.stats.oversized_frames == 0 for c in others)
    lines = [r.getMessage() for r in caplog.records if "max_frame_bytes" in r.getMessage()]
    assert lines and "exceeds limit of 65536 bytes" in lines[0]


@pytest.mark.async_timeout_s(30)
async def test_without_a_configured_cap_connections_take_the_venues() -> None:
    async with (
        SimBinanceSpot(["BTCUSDT"], n_endpoints=2, seed=5, interval_s=0.05) as sim,
        serving(binance_config(sim), [KEY]) as (service, subscriber),
    ):
        await subscriber.until(lambda: KEY in subscriber.venue_ids, 10)
        caps = [c.max_frame_bytes for c in service.venues[0].connections.values()]
    assert caps == [ADAPTERS["binance"].max_frame_bytes] * 2 == [1024 * 1024] * 2
