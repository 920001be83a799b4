"""A Binance COIN-M capture in the hftbacktest collector's format, written from the simulated
venue (no real one is at hand): ``verify`` reads it as ``binance-coinm`` and rebuilds the
venue's book with no gap; ``replay`` serves it to the gateway, whose subscriber ends with
verify's book."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from feeds.sim.binance_coinm import BinanceCoinmProtocol
from feeds.sim.book_process import BookProcess
from feeds.sim.replay import ReplayServer
from gateway.capture import CaptureFormat
from gateway.capture import detect_format
from gateway.capture import detect_venue
from gateway.core.book import L2Book
from gateway.tools.replay import load_plan
from gateway.tools.verify import verify_capture
from gateway.wire.config import parse_config

from .subscriber import serving

SYMBOL = "BTCUSD_PERP"
KEY = f"binance-coinm:{SYMBOL}"
START_NS = 1_796_000_000_000_000_000
INTERVAL_NS = 100_000_000
#: Steps recorded before the collector's REST snapshot, and in all.
BEFORE_SNAPSHOT, STEPS = 10, 300


def write_capture(directory: Path) -> tuple[Path, int, L2Book]:
    """``btcusd_perp_<date>.gz``: the depth and aggTrade frames of STEPS steps, one line
    ``<recv_ns> <frame>`` each, and the REST depth body inline after BEFORE_SNAPSHOT steps,
    as the collector writes them. Returns the path, the last ``u`` and the venue's book."""
    protocol = BinanceCoinmProtocol(seed=3, max_incoming_per_s=None, rest_weight_limit_1m=None)
    protocol.attach({SYMBOL: BookProcess(SYMBOL, 3, actions_per_step=4.0)})
    lines: list[bytes] = []
    for step in range(STEPS):
        now_ns = START_NS + step * INTERVAL_NS
        lines.extend(b"%d %s" % (now_ns, pub.frame) for pub in protocol.step(now_ns))
        if step == BEFORE_SNAPSHOT:
            body = protocol.snapshot_body(SYMBOL, 1000, now_ns)
            lines.append(b"%d %s" % (now_ns + 1, body))
    path = directory / "btcusd_perp_20261201.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    last_id = protocol.last_id(SYMBOL)
    assert last_id is not None
    return path, last_id, protocol.true_book(SYMBOL)


def test_verify_reads_a_coinm_capture_with_no_gap_and_the_venues_book(tmp_path: Path) -> None:
    path, last_id, true_book = write_capture(tmp_path)
    assert detect_format(path) is CaptureFormat.HFTBACKTEST
    assert detect_venue(path) == "binance-coinm"
    report = verify_capture(path, depth=1000)
    assert report.venue == "binance-coinm" and report.ok
    assert list(report.symbols) == [KEY]
    symbol = report.symbols[KEY]
    assert symbol.synced and symbol.gaps == 0 and symbol.crossed == 0
    assert symbol.updates > STEPS - BEFORE_SNAPSHOT - 20
    assert symbol.last_id == last_id
    assert symbol.bids == list(true_book.bids())[:1000]
    assert symbol.asks == list(true_book.asks())[:1000]


@pytest.mark.async_timeout_s(120)
async def test_replay_of_a_coinm_capture_gives_verifys_book(tmp_path: Path) -> None:
    path, last_id, _ = write_capture(tmp_path)
    report = verify_capture(path).symbols[KEY]
    async with ReplayServer(load_plan([path], 2), speed=None) as replay:
        # The gateway's TOML, pointed at the replay.
        config = parse_config(
            f"""
            [server]
            port = 0
            [[venues]]
            venue = "binance-coinm"
            symbols = ["{SYMBOL}"]
            endpoints = {json.dumps(replay.endpoint_urls)}
            rest = ["{replay.rest_url}"]
            stall_timeout_s = 30
            backoff_initial_s = 0.05
            backoff_max_s = 1
            reorder_window_ms = 2000
            """
        )
        async with serving(config, [KEY]) as (_, subscriber):
            await asyncio.wait_for(replay.finished.wait(), 60)
            await subscriber.until(lambda: subscriber.venue_ids.get(KEY) == last_id, 30)
            assert replay.rest_served >= 1
            assert subscriber.client.stats.gaps == 0
            book = subscriber.client.book(KEY)
    assert book is not None
    assert book.bids()[:20] == report.bids[:20]
    assert book.asks()[:20] == report.asks[:20]
