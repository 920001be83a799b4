"""Endpoint scoring against the simulated venues: a slow endpoint is replaced
(make-before-break), standby endpoints connect while every primary is gone and are
released once the primaries are back."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import msgspec
import pytest
from websockets.frames import CloseCode

from feeds.sim.faults import FaultPlan
from feeds.sim.simulators import SimBinanceSpot
from gateway.core.renewal import Renewal
from gateway.core.score import Standby
from gateway.io.service import Service
from gateway.tools.demo import DEMO_VENUES, demo_config
from gateway.wire.config import Config

from .subscriber import Subscriber, serving

KEY = "binance:BTCUSDT"


def binance_config(sim: SimBinanceSpot, **venue: Any) -> Config:
    spot = dataclasses.replace(DEMO_VENUES[0], symbols=("BTCUSDT",))
    config = demo_config([(spot, sim)], port=0)
    return msgspec.structs.replace(
        config, venues=[msgspec.structs.replace(config.venues[0], **venue)]
    )


def test_a_slow_endpoint_is_replaced_without_subscribers_noticing() -> None:
    async def scenario() -> tuple[Service, Subscriber, list[str]]:
        plan = FaultPlan("ep2:delay=150ms", seed=1, n_endpoints=3)
        async with SimBinanceSpot(
            ["BTCUSDT"], n_endpoints=3, seed=5, interval_s=0.02, faults=plan
        ) as sim:
            config = binance_config(
                sim,
                replace_margin=0.1,
                replace_after_s=1.0,
                replace_cooldown_s=1000.0,
                renew_timeout_s=5.0,
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
                return service, subscriber, subscriber.statuses[live_from:]

    service, subscriber, statuses_after = asyncio.run(asyncio.wait_for(scenario(), 60))
    venue = service.venues[0]
    assert venue.replacement.replaced == 1
    assert [venue.renewals.stats(s).due.get("score", 0) for s in (0, 1, 2)] == [0, 0, 1]
    assert statuses_after == [] and subscriber.client.stats.gaps == 0
    stats = service.symbol_stats(KEY)
    assert stats.gaps == 0 and stats.resyncs == 0


def test_standby_endpoints_connect_while_every_primary_is_gone_and_are_released(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.io.venue_runtime")

    async def scenario() -> tuple[Service, list[str], int, float]:
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
                return service, subscriber.statuses, frames, loop.time() - reopened_s

    service, statuses, frames, released_after_s = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert released_after_s >= 1.5, "released once the primaries were back for 1.5 s"
    venue = service.venues[0]
    assert venue.standby is not None and venue.standby.activations == 1
    assert frames > 0 and statuses[-1] == "live"
    assert all(venue.renewals.state(s) is Renewal.STEADY for s in venue.renewals.slots)
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
