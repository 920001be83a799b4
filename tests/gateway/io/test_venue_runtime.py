"""A venue's shell stopping: the stop is clean whatever state each slot's renewal is in,
nothing is renewed by the stop's own events, and the connections it ends are no venue
outage (the symbols are published stale for the stop, with no warning)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from collections.abc import Collection
from pathlib import Path

import pytest

from feeds.sim.simulators import SimBinanceSpot
from feeds.sim.simulators import SimBinanceUsdm
from gateway.capture import CaptureReader
from gateway.core.model import STOPPING_REASON
from gateway.core.model import GatewayEvent
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.renewal import Renewal
from gateway.io.capture_writer import CaptureWriter
from gateway.io.venue_runtime import VenueRuntime
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import demo_config
from tests.harness import wait_until
from tests.subscriber import loopback_config
from tests.subscriber import serving

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


#: Nothing listens there: the connections' own attempts fail (and are retried).
UNREACHABLE = ["ws://127.0.0.1:1", "ws://127.0.0.1:2"]


def unreachable_venue(
    symbols: list[str], published: list[GatewayEvent] | None = None
) -> VenueRuntime:
    """A venue of ``symbols`` on :data:`UNREACHABLE`; its publications into ``published``."""
    config = loopback_config(VENUE, symbols, UNREACHABLE, ["http://127.0.0.1:3"])
    publish = (lambda _: None) if published is None else published.extend
    return VenueRuntime(config.venues[0], itertools.count(), publish, time.monotonic_ns)


async def stopped_by_a_failure(venue: VenueRuntime, before: Callable[[], Collection[int]]) -> None:
    """Runs ``venue`` with every connection told up and calls ``before``; then a sibling
    task fails, the group cancels the others, and each connection ``before`` returned falls
    as it is cancelled."""
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
            falling = before()
            for conn_id in falling:
                tasks.create_task(falls_with_the_stop(conn_id))
            if not falling:
                opened.set()
            tasks.create_task(fails())
    assert [type(error) for error in raised.value.exceptions] == [Failed]
    assert venue.stopping


async def test_a_task_tree_cancelled_by_a_failure_stops_the_renewals_first() -> None:
    """The venue's connections are told up and endpoint 0's two are due (one renews, one
    waits); a sibling task fails, and a connection falls as the group cancels it."""
    venue = unreachable_venue(SYMBOLS)
    renewals = venue.renewals
    # Endpoint 0's book slot and trade slot.
    due_slots = [s for s, spec in venue.slots.items() if spec.endpoint.startswith(UNREACHABLE[0])]
    open_before: set[int] = set()
    outcomes_before: dict[int, tuple[int, int, int]] = {}

    def renewing() -> list[int]:
        for slot in due_slots:
            venue.on_frame(renewals.serving(slot), SHUTDOWN_NOTICE, time.time_ns())
        states = [renewals.state(s) for s in due_slots]
        assert states == [Renewal.CATCHING_UP, Renewal.QUEUED] and not venue.stopping
        open_before.update(venue.connections)
        outcomes_before.update(outcomes(venue))
        return [renewals.serving(due_slots[0])]

    await stopped_by_a_failure(venue, renewing)
    assert all(renewals.state(slot) is Renewal.STOPPED for slot in renewals.slots)
    assert set(venue.connections) <= open_before
    assert outcomes(venue) == outcomes_before


# --- the stop is no outage --------------------------------------------------------------------

PIPELINE_LOG = "gateway.core.pipeline"
TWO = ["BTCUSDT", "ETHUSDT"]


def pipeline_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == PIPELINE_LOG]


@pytest.mark.parametrize("falling", ["every", "none"])
async def test_the_stop_publishes_each_symbol_stale_once_and_logs_one_info_line(
    caplog: pytest.LogCaptureFixture, falling: str
) -> None:
    """Every connection falls with the stop, or none is left up to fall (the venue is
    stopped all the same)."""
    caplog.set_level(logging.INFO, logger=PIPELINE_LOG)
    published: list[GatewayEvent] = []
    venue = unreachable_venue(TWO, published)

    def connections() -> list[int]:
        caplog.clear()
        return list(venue.connections) if falling == "every" else []

    await stopped_by_a_failure(venue, connections)
    assert published == [
        StatusChange(f"{VENUE}:{s}", SymbolState.STALE, STOPPING_REASON) for s in TWO
    ]
    assert pipeline_lines(caplog) == [
        ("INFO", f"{VENUE}: 2 symbols now stale (the gateway is stopping), 0 of them stale already")
    ]


async def test_every_connection_down_while_running_is_an_outage_warned_per_symbol(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every connection falls while the venue runs: each symbol is warned stale with the
    outage's reason; the stop after it finds them stale already and publishes them stale
    with its own reason (subscribers hear why it ends), warning of nothing."""
    published: list[GatewayEvent] = []
    venue = unreachable_venue(TWO, published)

    def outage() -> list[int]:
        for conn_id in list(venue.connections):
            venue.on_state(conn_id, False)
        assert not venue.stopping
        return list(venue.connections)

    await stopped_by_a_failure(venue, outage)
    down = "every upstream connection down"
    assert published == [
        StatusChange(f"{VENUE}:{s}", SymbolState.STALE, reason)
        for reason in (down, STOPPING_REASON)
        for s in TWO
    ]
    assert [line for line in pipeline_lines(caplog) if line[0] == "WARNING"] == [
        ("WARNING", f"{VENUE}:{s}: stale ({down})") for s in TWO
    ]


@pytest.mark.async_timeout_s(40)
async def test_a_stopped_gateway_warns_of_no_outage_and_captures_its_disconnects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A live gateway recording a capture is stopped (its task cancelled): no warning from
    the pipeline, one INFO line, every symbol stale, and the capture holds the disconnect
    of every connection that was up."""
    symbols = TWO
    keys = [f"binance:{s}" for s in symbols]
    caplog.set_level(logging.INFO, logger=PIPELINE_LOG)
    async with SimBinanceSpot(symbols, n_endpoints=2, seed=3, interval_s=0.02) as sim:
        binance = dataclasses.replace(DEMO_VENUES[0], symbols=tuple(symbols))
        capture = CaptureWriter(tmp_path, flush_s=0.05)
        config = demo_config([(binance, sim)], port=0)
        async with serving(config, keys, capture=capture) as (service, subscriber):
            await subscriber.until(
                lambda: all(state is SymbolState.LIVE for _, state in service.symbols()), 15
            )
            up = {
                c
                for c, connection in service.venues[0].connections.items()
                if connection.stats.connected
            }
            caplog.clear()
        # Leaving `serving` cancelled the service.
    assert pipeline_lines(caplog) == [
        ("INFO", "binance: 2 symbols now stale (the gateway is stopping), 0 of them stale already")
    ]
    assert all(state is SymbolState.STALE for _, state in service.symbols())
    assert up and capture.stats.dropped == 0
    disconnected = {r.conn_id for r in CaptureReader(tmp_path) if r.kind == "disconnect"}
    assert disconnected >= up
