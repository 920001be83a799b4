"""Make-before-break renewals against the simulated venues: by age and by the venue's
notice, on sequenced venues (Binance spot, OKX, and Binance USD-M with its trade-only
connections) and an unsequenced one (Kraken). Subscribers see nothing but ``live`` and no
gap; never are two connections of a venue renewed at once; every old connection closes
only after its replacement caught up."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import msgspec
import pytest

from feeds.sim.faults import FaultPlan
from feeds.sim.simulators import SimBinanceSpot
from feeds.sim.simulators import SimBinanceUsdm
from feeds.sim.simulators import SimKraken
from feeds.sim.simulators import SimOkx
from feeds.sim.simulators import SimVenue
from gateway.core.renewal import Renewal
from gateway.io.client import Event
from gateway.io.service import Service
from gateway.io.venue_runtime import VenueRuntime
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import DemoVenue
from gateway.tools.demo import demo_config
from gateway.wire.config import Config

from .subscriber import Subscriber
from .subscriber import serving

#: Connections this young are renewed (minus up to 5 % jitter): several renewals a run.
AGE_S = 1.2
#: Renewals each slot must have completed before the run ends.
RENEWALS_PER_SLOT = 2


def renewing(config: Config) -> Config:
    venues = [
        msgspec.structs.replace(v, max_connection_age_s=AGE_S, renew_timeout_s=5.0)
        for v in config.venues
    ]
    return msgspec.structs.replace(config, venues=venues)


class Watch:
    """Samples the renewal invariants at every connection change and subscriber update."""

    def __init__(self) -> None:
        self.venue: VenueRuntime | None = None
        self.most_catching_up = 0
        self.samples = 0

    def on_update(self, _: Event) -> None:
        self.sample()

    def sample(self) -> bool:
        """True once every slot was renewed :data:`RENEWALS_PER_SLOT` times."""
        if self.venue is None:
            return False
        renewals = self.venue.renewals
        catching_up = [s for s in renewals.slots if renewals.state(s) is Renewal.CATCHING_UP]
        self.most_catching_up = max(self.most_catching_up, len(catching_up))
        self.samples += 1
        return all(renewals.stats(s).caught_up >= RENEWALS_PER_SLOT for s in renewals.slots)


async def _renew(
    demo: DemoVenue,
    keys: list[str],
    sim_class: Callable[..., SimVenue],
    n_endpoints: int,
    faults: str | None,
) -> tuple[Service, Subscriber, Watch]:
    plan = FaultPlan(faults, seed=1, n_endpoints=n_endpoints) if faults else None
    watch = Watch()
    async with sim_class(
        list(demo.symbols), n_endpoints=n_endpoints, seed=5, interval_s=0.02, faults=plan
    ) as sim:
        config = renewing(demo_config([(demo, sim)], port=0))
        async with serving(config, keys, on_update=watch.on_update) as (service, subscriber):
            watch.venue = service.venues[0]
            await subscriber.until(lambda: all(k in subscriber.venue_ids for k in keys), 10)
            live_from = len(subscriber.statuses)
            assert subscriber.statuses[-1] == "live"
            async with asyncio.timeout(30):
                await service.connection_changes.wait_until(watch.sample)
            assert subscriber.statuses[live_from:] == [], "nothing but live once live"
        if plan is not None:
            assert sim.fault_time() > max(a.t_s for a in plan.schedule()), "every notice sent"
        return service, subscriber, watch


async def run_renewals(
    demo: DemoVenue, sim_class: Callable[..., SimVenue], n_endpoints: int, faults: str | None = None
) -> Service:
    """The gateway renewing every connection to ``sim_class`` (``demo``'s symbols on
    ``n_endpoints`` endpoints, the venue's notices in ``faults``) until each slot was
    renewed :data:`RENEWALS_PER_SLOT` times, with :func:`check` passed; the stopped service."""
    keys = [f"{demo.venue}:{s}" for s in demo.symbols]
    service, subscriber, watch = await _renew(demo, keys, sim_class, n_endpoints, faults)
    check(service, subscriber, watch, keys)
    return service


def check(service: Service, subscriber: Subscriber, watch: Watch, keys: list[str]) -> None:
    venue = service.venues[0]
    assert watch.samples > 10 and watch.most_catching_up == 1
    assert subscriber.client.stats.gaps == 0
    for key in keys:
        stats = service.symbol_stats(key)
        assert stats.gaps == 0 and stats.resyncs == 0, key
    for slot in venue.renewals.slots:
        renewals = venue.renewals.stats(slot)
        # Each old connection closed after its replacement caught up, never otherwise.
        assert renewals.timed_out == 0 and renewals.old_down == 0, (slot, renewals)
    assert len(venue.connections) <= len(venue.slots) + 1


@pytest.mark.async_timeout_s(60)
async def test_binance_renewals_by_age_and_notice_are_invisible_to_subscribers() -> None:
    binance = dataclasses.replace(DEMO_VENUES[0], symbols=("BTCUSDT", "ETHUSDT"))
    service = await run_renewals(binance, SimBinanceSpot, 3, "ep0:notice@1;ep1:notice@1.5")
    renewals = service.venues[0].renewals
    assert sum(renewals.stats(s).due.get("notice", 0) for s in renewals.slots) >= 1


@pytest.mark.async_timeout_s(60)
async def test_kraken_renewals_by_age_are_invisible_to_subscribers() -> None:
    await run_renewals(dataclasses.replace(DEMO_VENUES[2], symbols=("BTC/USD",)), SimKraken, 2)


@pytest.mark.async_timeout_s(60)
async def test_okx_renewals_by_its_notice_and_age_are_invisible_to_subscribers() -> None:
    okx = dataclasses.replace(DEMO_VENUES[1], symbols=("BTC-USDT",))
    service = await run_renewals(okx, SimOkx, 2, "ep0:notice@1")
    assert service.venues[0].renewals.stats(0).due.get("notice", 0) == 1


@pytest.mark.async_timeout_s(60)
async def test_trade_only_connections_are_renewed_in_the_venue_line_too() -> None:
    usdm = dataclasses.replace(DEMO_VENUES[5], symbols=("BTCUSDT",))
    venue = (await run_renewals(usdm, SimBinanceUsdm, 2)).venues[0]
    trade_slots = [s for s, spec in venue.slots.items() if spec.trades_only]
    assert trade_slots and all(venue.renewals.stats(s).caught_up >= 2 for s in trade_slots)
