"""``mdgateway sim --faults SPEC --seed N``: every simulated venue runs under the fault plan."""

from __future__ import annotations

import contextlib

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from gateway.tools.cli import build_parser
from gateway.tools.demo import DEMO_VENUES, sim_fault_plan
from gateway.tools.runtime import UsageError
from gateway.wire.venues import ADAPTERS


def test_the_plan_is_seeded_per_venue_as_the_venue_is() -> None:
    args = build_parser().parse_args(
        ["sim", "--endpoints", "2", "--seed", "5", "--faults", "ep1: drop=0.5"]
    )
    plan = sim_fault_plan(args, 3)
    assert plan is not None
    assert (plan.seed, plan.n_endpoints) == (8, 2)
    assert plan.endpoints[1].drop == 0.5 and plan.endpoints[0].drop is None
    assert sim_fault_plan(build_parser().parse_args(["sim"]), 0) is None


def test_a_bad_spec_names_the_bad_token() -> None:
    args = build_parser().parse_args(["sim", "--faults", "ep0: explode@1"])
    with pytest.raises(UsageError, match=r"bad --faults: .*explode@1"):
        sim_fault_plan(args, 0)


@pytest.mark.async_timeout_s(30)
async def test_sim_faults_apply_to_the_simulated_venue() -> None:
    args = build_parser().parse_args(
        ["sim", "--venues", "binance", "--endpoints", "2", "--faults", "ep0: refuse@0+60"]
    )
    [venue] = args.venues
    index = DEMO_VENUES.index(venue)
    start = venue.start(list(venue.symbols), 2, args.seed, None, None, sim_fault_plan(args, index))
    async with start as sim:
        adapter = ADAPTERS[venue.venue]
        urls = [adapter.stream_url(url, ["BTCUSDT"]) for url in venue.urls(sim)]
        # Endpoint 0 is refused from the start: a connection is refused or closed.
        with contextlib.suppress(OSError, InvalidHandshake, ConnectionClosed):
            async with connect(urls[0], compression=None, open_timeout=5) as ws:
                await ws.wait_closed()
                assert ws.close_reason == "fault: refuse"
        assert not sim.stats(0).is_open
        # Endpoint 1 has no fault: it streams.
        async with connect(urls[1], compression=None, open_timeout=5) as ws:
            assert await ws.recv()
        assert sim.stats(1).is_open
