"""Endpoint scoring against the simulated venues: a slow endpoint is replaced
(make-before-break), on an idle standby endpoint where there is one (rotation); standby
endpoints connect while every primary is gone and are released once the primaries are
back."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from websockets.frames import CloseCode

from feeds.sim.faults import FaultPlan
from feeds.sim.simulators import SimBinanceSpot
from gateway.core.renewal import Renewal
from gateway.core.score import Standby
from gateway.io.service import Service
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import demo_config
from gateway.wire.config import Config

from .subscriber import Subscriber
from .subscriber import serving

KEY = "binance:BTCUSDT"


def binance_config(sim: SimBinanceSpot, **venue: Any) -> Config:
    spot = dataclasses.replace(DEMO_VENUES[0], symbols=("BTCUSDT",))
    config = demo_config([(spot, sim)], port=0)
    return msgspec.structs.replace(
        config, venues=[msgspec.structs.replace(config.venues[0], **venue)]
    )


#: Replacement quick enough for a test: worst by 0.1 for 1 s, once.
FAST_REPLACEMENT: dict[str, Any] = {
    "replace_margin": 0.1,
    "replace_after_s": 1.0,
    "replace_cooldown_s": 1000.0,
    "renew_timeout_s": 5.0,
}


@contextlib.asynccontextmanager
async def slow_endpoint_replaced(
    n_standby: int,
) -> AsyncIterator[tuple[SimBinanceSpot, Service, Subscriber, list[str]]]:
    """Simulated endpoints 0-2 the primaries, 2 of them 150 ms late, and ``n_standby``
    standby ones; the gateway served until it replaced endpoint 2's connection for its
    score and the replacement caught up. Yields the venue, the service, the subscriber and
    the statuses it saw since the book was first live."""
    n_endpoints = 3 + n_standby
    plan = FaultPlan("ep2:delay=150ms", seed=1, n_endpoints=n_endpoints)
    async with SimBinanceSpot(
        ["BTCUSDT"], n_endpoints=n_endpoints, seed=5, interval_s=0.02, faults=plan
    ) as sim:
        urls = sim.endpoint_urls
        config = binance_config(
            sim, endpoints=urls[:3], standby_endpoints=urls[3:], **FAST_REPLACEMENT
        )
        async with serving(config, [KEY]) as (service, subscriber):
            await subscriber.until(lambda: KEY in subscriber.venue_ids, 10)
            live_from = len(subscriber.statuses)
            renewals = service.venues[0].renewals

            def replaced() -> bool:
                stats = renewals.stats(2)
                return bool(stats.due.get("score")) and stats.caught_up >= 1

            async with asyncio.timeout(30):
                await service.connection_changes.wait_until(replaced)
            yield sim, service, subscriber, subscriber.statuses[live_from:]


@pytest.mark.async_timeout_s(60)
async def test_a_slow_endpoint_is_replaced_without_subscribers_noticing() -> None:
    async with slow_endpoint_replaced(0) as (_sim, service, subscriber, statuses_after):
        pass
    venue = service.venues[0]
    assert venue.replacement.replaced == 1
    # No other endpoint is free: the replacement stayed on the slow one.
    assert venue.runtime_stats.rotations == 0
    assert [venue.slots[s].endpoint for s in (0, 1, 2)] == venue.rotation
    assert [venue.renewals.stats(s).due.get("score", 0) for s in (0, 1, 2)] == [0, 0, 1]
    assert statuses_after == [] and subscriber.client.stats.gaps == 0
    stats = service.symbol_stats(KEY)
    assert stats.gaps == 0 and stats.resyncs == 0


@pytest.mark.async_timeout_s(60)
async def test_a_replaced_connection_rotates_to_an_idle_standby_endpoint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.io.venue_runtime")
    async with slow_endpoint_replaced(1) as (sim, service, subscriber, statuses_after):
        venue, urls = service.venues[0], sim.endpoint_urls
        async with asyncio.timeout(10):
            await sim.wait_connections(2, 0)  # the slow endpoint's is closed
        assert sim.stats(3).connections_open == 1
        serving_url = venue.connections[venue.renewals.serving(2)].url
        assert serving_url.startswith(urls[3] + "/")
        assert venue.standby is not None and venue.standby.state is Standby.IDLE
    assert venue.runtime_stats.rotations == 1 and venue.replacement.replaced == 1
    rotations = ("mdgateway_venue_endpoint_rotations_total", {"venue": "binance"})
    assert service.metrics.get_sample_value(*rotations) == 1.0
    # The slot moved to the standby endpoint; the standby slot took the one it left.
    assert [venue.slots[s].endpoint for s in (0, 1, 2)] == [urls[0], urls[1], urls[3]]
    assert [venue.slots[s].endpoint for s in venue.standby_slots] == [urls[2]]
    assert venue.slots[venue.standby_slots[0]].standby and not venue.slots[2].standby
    assert statuses_after == [] and subscriber.client.stats.gaps == 0
    assert service.symbol_stats(KEY).gaps == 0
    lines = [r.getMessage() for r in caplog.records if "moves from" in r.getMessage()]
    assert lines == [f"binance: slot 2: the replacement moves from {urls[2]} to {urls[3]}"]


@pytest.mark.async_timeout_s(60)
async def test_standby_endpoints_connect_while_every_primary_is_gone_and_are_released(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.io.venue_runtime")
    # Endpoints 0 and 1 are the primaries, 2 the standby.
    async with SimBinanceSpot(["BTCUSDT"], n_endpoints=3, seed=5, interval_s=0.02) as sim:
        urls = sim.endpoint_urls
        config = binance_config(
            sim,
            endpoints=urls[:2],
            standby_endpoints=urls[2:],
            standby_after_s=0.5,
            standby_release_after_s=1.5,
        )
        async with serving(config, [KEY]) as (service, subscriber):
            venue = service.venues[0]
            await subscriber.until(lambda: KEY in subscriber.venue_ids, 10)
            assert len(venue.connections) == 2, "the standby is not connected at first"

            def standby_frames() -> int:
                return sum(
                    c.stats.frames
                    for c in venue.connections.values()
                    if c.slot in venue.standby_slots
                )

            # The primaries refuse until the standby streams.
            for index in (0, 1):
                await sim.close_endpoint(index, CloseCode.GOING_AWAY, "refused")
            async with asyncio.timeout(20):
                await service.connection_changes.wait_until(lambda: standby_frames() > 0)
            frames = standby_frames()
            loop = asyncio.get_running_loop()
            reopened_s = loop.time()
            for index in (0, 1):
                await sim.open_endpoint(index)
            async with asyncio.timeout(20):
                await service.connection_changes.wait_until(
                    lambda: (
                        venue.standby is not None
                        and venue.standby.state is Standby.IDLE
                        and len(venue.connections) == 2
                    )
                )
            released_after_s = loop.time() - reopened_s
    assert released_after_s >= 1.5, "released once the primaries were back for 1.5 s"
    venue = service.venues[0]
    assert venue.standby is not None and venue.standby.activations == 1
    assert frames > 0 and subscriber.statuses[-1] == "live"
    assert all(venue.renewals.state(s) is Renewal.STOPPED for s in venue.renewals.slots)
    assert venue.renewals.slots == [0, 1], "the standby slot was given up"
    standby_lines = [
        (r.levelno, r.getMessage(), getattr(r, "venue", None))
        for r in caplog.records
        if "standby endpoints" in r.getMessage()
    ]
    assert standby_lines == [
        (
            logging.WARNING,
            "binance: every primary endpoint silent for 0.5 s; connecting the standby endpoints",
            "binance",
        ),
        (
            logging.INFO,
            "binance: primaries healthy for 1.5 s; releasing the standby endpoints",
            "binance",
        ),
    ]
