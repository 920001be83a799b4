"""Chaos with the fault language: every endpoint fails at some point, one is always whole.

Endpoint 0 duplicates, delays and reorders (nothing lost) and is closed at 1 s; endpoint 1
duplicates and stalls from 1.5 s to 2 s; endpoint 2 drops and corrupts frames all along. At
every moment one endpoint delivers every update, so subscribers must see exactly the books
of a fault-free run of the same seeded venue: no gap, nothing twice, nothing out of order."""

from __future__ import annotations

import asyncio
import dataclasses

import msgspec
import pytest

from feeds.sim.faults import FaultPlan
from feeds.sim.simulators import SimBinanceSpot
from gateway.io.client import BookEvent
from gateway.io.client import Event
from gateway.io.client import GatewayClient
from gateway.io.service import Service
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import demo_config

from .subscriber import serving

KEY = "binance:BTCUSDT"
SPEC = (
    "ep0:dup=0.1,delay=3ms~3ms,reorder=2,close@1;"
    "ep1:dup=0.1,stall@1.5+0.5;"
    "ep2:drop=0.1,corrupt=0.05"
)
#: How long a gap waits for the whole copy before it is declared lost.
REORDER_WINDOW_MS = 2000.0
#: Venue steps to run: 2.2 s of the venue's time, past every timed fault of SPEC.
RUN_STEPS = 110


async def _run(faults: str | None) -> tuple[dict[int, object], list[int], GatewayClient, Service]:
    """Books the subscriber saw, by venue id, and the venue ids in the order seen."""
    plan = FaultPlan(faults, seed=3, n_endpoints=3) if faults else None
    async with SimBinanceSpot(
        ["BTCUSDT"], n_endpoints=3, seed=21, interval_s=0.02, faults=plan
    ) as sim:
        binance = dataclasses.replace(DEMO_VENUES[0], symbols=("BTCUSDT",))
        config = demo_config([(binance, sim)], port=0)
        # The whole copy may come late on a busy machine (the venue shares the gateway's
        # loop): a gap must wait for it, not be declared after the demo's 100 ms.
        venue = msgspec.structs.replace(config.venues[0], reorder_window_ms=REORDER_WINDOW_MS)
        config = msgspec.structs.replace(config, venues=[venue])
        books: dict[int, object] = {}
        order: list[int] = []

        def keep(update: Event) -> None:
            if isinstance(update, BookEvent):
                books[update.venue_id] = update.book.normalized()
                order.append(update.venue_id)

        async with serving(config, [KEY], 0.2, keep) as (service, subscriber):
            await sim.wait_steps(RUN_STEPS)
            if plan is not None:  # every timed fault is over by then
                stalls = [w.end_s for faults in plan.endpoints for w in faults.stalls]
                assert sim.fault_time() > max([a.t_s for a in plan.schedule()] + stalls)
        return books, order, subscriber.client, service


@pytest.mark.async_timeout_s(80)
async def test_faults_on_every_endpoint_but_one_always_whole_change_nothing_for_subscribers() -> (
    None
):
    # Both venues at once, on the one loop: the clean run's books are its seeded venue's,
    # whatever the timing, and the faulty run waits its steps all the same. A task group,
    # so that one run's failure stops the other.
    async with asyncio.TaskGroup() as tasks:
        clean_run = tasks.create_task(_run(None))
        faulty_run = tasks.create_task(_run(SPEC))
    clean = clean_run.result()[0]
    books, order, client, service = faulty_run.result()
    assert client.stats.gaps == 0 and client.stats.snapshots == 1
    assert order == sorted(set(order)), "nothing twice, nothing out of order"
    stats = service.symbol_stats(KEY)
    assert stats.gaps == 0 and stats.resyncs == 0
    venue = service.venues[0]
    assert venue.stats.bad_frames > 0, "corrupt frames arrived and were counted"
    assert venue.connections[0].stats.reconnects >= 1, "endpoint 0 was closed"
    assert stats.conn(1).duplicates > 0 and stats.duplicates > len(order)
    common = set(books) & set(clean)
    assert len(common) > 50
    for venue_id in common:
        assert books[venue_id] == clean[venue_id], venue_id
