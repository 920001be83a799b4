"""``mdgateway sim``: every simulated venue runs under the fault plan of ``--faults SPEC
--seed N``; its ports are ``deploy/sim-all.toml``'s, or those ``--port`` moves them to, which
``--write-config`` writes a working configuration of."""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.exceptions import InvalidHandshake

from gateway.core.model import SymbolState
from gateway.tools.cli import build_parser
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import sim_config_toml
from gateway.tools.demo import sim_fault_plan
from gateway.tools.demo import sim_ports
from gateway.tools.demo import start_sims
from gateway.tools.runtime import UsageError
from gateway.wire.config import load_config
from gateway.wire.venues import ADAPTERS
from tests.subscriber import serving

ROOT = Path(__file__).resolve().parents[3]


def test_the_default_ports_are_those_of_deploy_sim_all() -> None:
    config = load_config(ROOT / "deploy" / "sim-all.toml")
    assert [v.venue for v in config.venues] == [v.venue for v in DEMO_VENUES]
    for index, venue in enumerate(config.venues):
        ports, rest_port = sim_ports(index, len(venue.endpoints))
        assert [urlsplit(url).port for url in venue.endpoints] == ports
        assert [urlsplit(url).port for url in venue.rest] in ([], [rest_port])


def test_another_port_moves_every_venue_by_as_much() -> None:
    assert sim_ports(0, 3, 20001) == ([20001, 20002, 20003], 20009)
    assert sim_ports(6, 8, 20001) == ([20061 + i for i in range(8)], 20069)


@pytest.mark.async_timeout_s(40)
async def test_the_written_config_runs_a_gateway_on_the_venues_wherever_they_listen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sim.toml"
    args = build_parser().parse_args(
        ["sim", "--venues", "okx,binance", "--port", "0", "--write-config", str(path)]
    )
    async with contextlib.AsyncExitStack() as stack:
        sims = await start_sims(args, stack)
        path.write_text(sim_config_toml(sims))
        config = load_config(path)
        assert [v.venue for v in config.venues] == ["okx", "binance"]
        keys = [f"{v.venue}:{s}" for v in config.venues for s in v.symbols]
        async with serving(config, keys) as (service, subscriber):
            await subscriber.until(
                lambda: all(service.books[k].state is SymbolState.LIVE for k in keys), 20
            )
    announced = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in announced] == ["simulated okx", "simulated binance"]


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
