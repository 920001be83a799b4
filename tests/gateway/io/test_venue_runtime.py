"""A venue's shell stopping in the middle of its renewals: the stop is clean whatever state
each slot's renewal is in, and nothing is renewed by the stop's own events."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from feeds.sim.simulators import SimBinanceUsdm
from gateway.core.renewal import Renewal
from gateway.io.venue_runtime import VenueRuntime
from tests.harness import wait_until
from tests.subscriber import loopback_config, serving

#: Binance's notice that the connection will be closed: renewed, make before break.
SHUTDOWN_NOTICE = b'{"e":"serverShutdown","E":1}'

VENUE = "binance-usdm"
SYMBOLS = ["BTCUSDT"]
KEYS = [f"{VENUE}:{s}" for s in SYMBOLS]


def renewal_under_way(venue: VenueRuntime) -> bool:
    """A slot's replacement is connected and catching up beside its old connection."""
    renewals = venue.renewals
    for slot in renewals.slots:
        replacement = renewals.replacement(slot)
        if (
            renewals.state(slot) is Renewal.CATCHING_UP
            and replacement is not None
            and venue.connections[replacement].stats.connected
        ):
            return True
    return False


def outcomes(venue: VenueRuntime) -> dict[int, tuple[int, int, int]]:
    """Per slot, its renewals ended by catching up, by the timeout, by the old going down."""
    renewals = venue.renewals
    return {
        slot: (s.caught_up, s.timed_out, s.old_down)
        for slot in renewals.slots
        for s in [renewals.stats(slot)]
    }


@pytest.mark.async_timeout_s(40)
async def test_a_stop_while_one_renewal_catches_up_and_another_waits_renews_nothing() -> None:
    """Endpoint 0's book and trade connections are both due (the venue's notice): one
    renews, the other waits in line (due, not yet granted). The service stops as soon as
    the replacement is up and catching up beside the old connection, its timeout pending."""
    async with SimBinanceUsdm(SYMBOLS, n_endpoints=2, seed=3, interval_s=0.02) as sim:
        config = loopback_config(VENUE, SYMBOLS, sim.public_urls, [sim.rest_url])
        async with serving(config, KEYS) as (service, subscriber):
            venue = service.venues[0]
            renewals = venue.renewals
            await subscriber.until(lambda: "live" in subscriber.statuses, 15)
            sim.send_shutdown_notice(0)
            await wait_until(service.connection_changes, lambda: renewal_under_way(venue), 15)
            states = {renewals.state(slot) for slot in renewals.slots}
            open_before, outcomes_before = set(venue.connections), outcomes(venue)
        # Leaving `serving` cancelled the service: it stopped without an error.
    assert states == {Renewal.STEADY, Renewal.QUEUED, Renewal.CATCHING_UP}
    assert all(renewals.state(slot) is Renewal.STOPPED for slot in renewals.slots)
    assert renewals.holder is None
    # No replacement was opened, no renewal ended (the old connections fell with the stop).
    assert set(venue.connections) <= open_before
    assert outcomes(venue) == outcomes_before


class Failed(Exception):
    """A task of the group running the venue failed: the group cancels the others."""


async def test_a_task_tree_cancelled_by_a_failure_stops_the_renewals_first() -> None:
    """The venue's connections are told up and endpoint 0's two are due (one renews, one
    waits); a sibling task fails, and a connection falls as the group cancels it."""
    # Nothing listens there: the connections' own attempts fail (and are retried).
    endpoints = ["ws://127.0.0.1:1", "ws://127.0.0.1:2"]
    config = loopback_config(VENUE, SYMBOLS, endpoints, ["http://127.0.0.1:3"])
    venue = VenueRuntime(config.venues[0], itertools.count(), lambda _: None, time.monotonic_ns)
    renewals = venue.renewals
    # Endpoint 0's book slot and trade slot.
    due_slots = [s for s, spec in venue.slots.items() if spec.endpoint.startswith(endpoints[0])]
    opened = asyncio.Event()

    async def falls_with_the_stop(conn_id: int) -> None:
        try:
            opened.set()
            await asyncio.Event().wait()
        finally:
            venue.on_state(conn_id, False)

    async def fails() -> None:
        await opened.wait()
        raise Failed

    with pytest.raises(ExceptionGroup) as raised:
        async with asyncio.TaskGroup() as tasks:
            venue.start(tasks)
            for conn_id in list(venue.connections):
                venue.on_state(conn_id, True)
            for slot in due_slots:
                venue.on_frame(renewals.serving(slot), SHUTDOWN_NOTICE, time.time_ns())
            states = [renewals.state(s) for s in due_slots]
            assert states == [Renewal.CATCHING_UP, Renewal.QUEUED] and not venue.stopping
            renewing = due_slots[0]
            open_before, outcomes_before = set(venue.connections), outcomes(venue)
            tasks.create_task(falls_with_the_stop(renewals.serving(renewing)))
            tasks.create_task(fails())
    assert [type(error) for error in raised.value.exceptions] == [Failed]
    assert venue.stopping
    assert all(renewals.state(slot) is Renewal.STOPPED for slot in renewals.slots)
    assert set(venue.connections) <= open_before
    assert outcomes(venue) == outcomes_before
