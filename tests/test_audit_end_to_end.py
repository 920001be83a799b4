"""The audits (gateway.core.audit) of the real gateway against the simulated Binance spot on
loopback: a connection whose copies carry other levels for the same ids is the one
counted, and periodic REST snapshots agree with the live book, or drift when the venue's
REST book is wrong; neither audit ever changes the book."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from feeds.sim.faults import FaultPlan
from feeds.sim.simulators import SimBinanceSpot
from gateway.core.model import SymbolState
from gateway.core.sequenced import SequencedBook
from gateway.core.stats import SymbolStats
from gateway.io.service import Service
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import demo_config
from gateway.wire.config import Config

from .subscriber import serving

SEED = 5
SYMBOL = "BTCUSDT"
KEY = f"binance:{SYMBOL}"
INTERVAL_S = 0.02
BOUND_S = 15.0


def _config(sim: SimBinanceSpot, audit_interval_s: float) -> Config:
    demo = dataclasses.replace(DEMO_VENUES[0], symbols=(SYMBOL,))
    config = demo_config([(demo, sim)], port=0)
    venue = msgspec.structs.replace(config.venues[0], audit_interval_s=audit_interval_s)
    return msgspec.structs.replace(config, venues=[venue])


def _stats(service: Service) -> SymbolStats:
    return service.books[KEY].stats


@pytest.mark.async_timeout_s(40)
async def test_a_connection_whose_copies_disagree_is_the_one_counted() -> None:
    # Endpoint 1's copies come late (always duplicates) and half of them carry a wrong
    # quantity for the same ids.
    plan = FaultPlan("ep1:alter=0.5,delay=10ms", seed=SEED, n_endpoints=3)
    sim = SimBinanceSpot([SYMBOL], 3, SEED, INTERVAL_S, faults=plan)
    async with sim, serving(_config(sim, 0.0), [KEY]) as (service, subscriber):
        book = service.books[KEY]
        assert isinstance(book, SequencedBook)
        book.audit_every = 1
        conn_ids = list(service.venues[0].connections)
        stats = _stats(service)
        renewals = service.venues[0].renewals
        altered_slot = renewals.slot_of(conn_ids[1])
        assert altered_slot is not None

        def counted() -> bool:
            return stats.conn(conn_ids[1]).audit_disagreements >= 3

        await subscriber.until(counted, BOUND_S)
        assert stats.conn(conn_ids[0]).audit_disagreements == 0
        assert stats.conn(conn_ids[2]).audit_disagreements == 0
        assert stats.audit_disagreements >= 3
        # The contradicted connection, and only it, was reset: reopened at once when its
        # own copy completed the sample, else replaced (make before break).
        connections = service.venues[0].connections
        resets = {slot: renewals.stats(slot).due.get("contradicted", 0) for slot in renewals.slots}
        for conn_id in conn_ids:
            if conn_id in connections:
                resets[connections[conn_id].slot] += connections[conn_id].stats.reconnects
        assert resets[altered_slot] >= 1
        assert sum(resets.values()) == resets[altered_slot]
        assert book.state is SymbolState.LIVE and stats.resyncs == 0
        sim.pause()
        truth = sim.true_book(SYMBOL).normalized()

        def caught_up() -> bool:
            return book.book.normalized() == truth

        await subscriber.until(caught_up, BOUND_S)


async def _rest_audits(spec: str, drift: bool) -> None:
    plan = FaultPlan(spec, seed=SEED, n_endpoints=2) if spec else None
    sim = SimBinanceSpot([SYMBOL], 2, SEED, INTERVAL_S, faults=plan)
    async with sim, serving(_config(sim, 0.1), [KEY]) as (service, subscriber):
        stats = _stats(service)
        if drift:
            await subscriber.until(lambda: stats.audit_rest_drift >= 1, BOUND_S)
        else:
            await subscriber.until(lambda: stats.audit_rest_ok >= 3, BOUND_S)
            assert stats.audit_rest_drift == 0
        # Never applied: the book was built from one snapshot and stayed live.
        assert stats.snapshots == 1 and stats.resyncs == 0
        assert service.books[KEY].state is SymbolState.LIVE


@pytest.mark.async_timeout_s(40)
async def test_rest_audits_of_a_correct_book_find_no_drift() -> None:
    await _rest_audits("", drift=False)


@pytest.mark.async_timeout_s(40)
async def test_a_wrong_rest_book_is_drift_and_never_applied() -> None:
    # The venue's REST books are wrong once the gateway is in sync.
    await _rest_audits("rest:alter@1+100", drift=True)
