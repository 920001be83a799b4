"""A multi-venue capture (``mdgateway demo --capture``) replayed: every recorded connection
on its own endpoint, named in the table, and the written config runs the gateway against
the replay with every symbol of every venue served."""

from __future__ import annotations

import signal
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest

from feeds.sim.replay import ReplayServer
from gateway.capture import CaptureReader
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.replay import gateway_config
from gateway.tools.replay import load_session
from gateway.wire.config import ServerConfig
from gateway.wire.config import load_config
from gateway.wire.config import parse_config

from .subscriber import mdgateway_process
from .subscriber import run_mdgateway
from .subscriber import serving


@pytest.fixture(scope="module")
def demo_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("demo") / "capture"
    result = run_mdgateway(
        "demo",
        "--duration",
        "2",
        "--no-view",
        "--port",
        "0",
        "--capture",
        str(directory),
        timeout_s=120,
    )
    assert result.returncode == 0, result.stderr
    return directory


def _recorded_connections(path: Path) -> int:
    return len({r.conn_id for r in CaptureReader(path) if r.kind == "ws"})


@pytest.mark.async_timeout_s(90)
async def test_the_written_config_runs_the_gateway_against_every_venue(demo_capture: Path) -> None:
    session = load_session([demo_capture], None)
    async with ReplayServer(session.plan, speed=1.0) as replay:
        text, left_out = gateway_config(session, replay.endpoint_urls, replay.rest_url)
        assert left_out == []
        config = parse_config(text)
        config = msgspec.structs.replace(config, server=ServerConfig(port=0))
        keys = [f"{v.venue}:{s}" for v in config.venues for s in v.symbols]
        assert {v.venue for v in config.venues} == {v.venue for v in DEMO_VENUES}
        async with serving(config, keys) as (service, subscriber):
            await subscriber.until(lambda: set(subscriber.venue_ids) == set(keys), 60)
            # Each path of an endpoint gets its own recorded stream: no depth on the trade
            # connections of the futures venues.
            for venue in service.venues:
                assert venue.pipeline.stats.book_updates_on_trade_connections == 0, venue.cfg
            assert any(venue.trade_connections for venue in service.venues)
            books = dict(subscriber.venue_ids)
    assert {key.partition(":")[0] for key in books} == {v.venue for v in DEMO_VENUES}


def test_the_command_prints_the_table_and_writes_the_config(
    demo_capture: Path, tmp_path: Path
) -> None:
    config_path = tmp_path / "replay.toml"
    replay = ("replay", str(demo_capture), "--speed", "max", "--write-config", str(config_path))
    with mdgateway_process(*replay) as process:
        assert process.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("config "):
            line = process.stdout.readline()
            assert line, "the replay ended before writing its config"
            lines.append(line.strip())
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    table = [line.split() for line in lines if line.startswith("endpoint ")]
    # Every recorded connection is on a row of its own, with its venue.
    assert len(table) == _recorded_connections(demo_capture)
    assert len({row[4] for row in table}) == len(table)
    assert {row[2] for row in table} >= {"binance", "okx", "kraken", "coinbase"}
    # USD-M's depth and trade connections to one endpoint share one replay endpoint.
    usdm = [row[1] for row in table if row[2] == "binance-usdm"]
    assert len(usdm) == 2 * len(set(usdm))
    config = load_config(config_path)
    # Every replay endpoint is configured, on the path its recorded connection used.
    endpoints = {url for venue in config.venues for url in venue.endpoints}
    assert {urlsplit(url).netloc for url in endpoints} == {urlsplit(row[1]).netloc for row in table}
    assert {v.venue: v.endpoints for v in config.venues}["okx"][0].endswith("/ws/v5/public")
    rest = [line.split()[1] for line in lines if line.startswith("rest ")]
    assert {v.venue: v.rest for v in config.venues}["binance"] == rest
    assert process.returncode == 0, stderr
