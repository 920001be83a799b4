"""Capture on: simulated Binance spot (3 endpoints, one closed mid-run) → gateway with
``capture`` → ``verify_capture(DIR)``: 0 gaps, and the final books equal the gateway's."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from feeds.sim.simulators import SimBinanceSpot
from gateway.capture import CaptureFormat
from gateway.capture import CaptureReader
from gateway.io.capture_writer import CaptureWriter
from gateway.io.service import Service
from gateway.tools.demo import DEMO_VENUES
from gateway.tools.demo import demo_config
from gateway.tools.verify import verify_capture

from .subscriber import run_mdgateway
from .subscriber import serving

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
KEYS = [f"binance:{s}" for s in SYMBOLS]
#: Venue steps between the endpoint's failure and return (0.5 s of the venue's time).
STEPS = 25


async def _capture_a_run(directory: Path) -> Service:
    async with SimBinanceSpot(
        SYMBOLS, n_endpoints=3, seed=7, interval_s=0.02, jitter_ms=15.0, snapshot_delay_s=0.02
    ) as sim:
        binance = dataclasses.replace(DEMO_VENUES[0], symbols=tuple(SYMBOLS))
        capture = CaptureWriter(directory, flush_s=0.05, rotate_bytes=16 * 1024)
        config = demo_config([(binance, sim)], port=0)
        async with serving(config, KEYS, capture=capture) as (service, subscriber):
            await subscriber.until(lambda: len(subscriber.venue_ids) == len(KEYS), 10)
            await sim.wait_steps(STEPS)
            await sim.close_endpoint(1)
            await sim.wait_steps(STEPS)
            await sim.open_endpoint(1)
            await sim.wait_connections(1, 1)
            await sim.wait_steps(STEPS)
            sim.pause()
            last = {f"binance:{s}": sim.last_id(s) for s in SYMBOLS}
            await subscriber.until(lambda: subscriber.venue_ids == last, 10)
        assert all(service.books[key].applied_id == last[key] for key in KEYS)
        assert capture.stats.dropped == 0 and capture.stats.written == capture.stats.records > 0
        return service


def test_a_captured_run_verifies_with_no_gap_and_the_gateways_books(tmp_path: Path) -> None:
    service = asyncio.run(asyncio.wait_for(_capture_a_run(tmp_path), 45))
    assert len(list(tmp_path.iterdir())) > 1, "rotated by size"
    reader = CaptureReader(tmp_path)
    kinds = {r.kind for r in reader}
    assert reader.format is CaptureFormat.MDGATEWAY and not reader.stats.truncated
    assert kinds == {"connect", "disconnect", "ws", "rest"}
    report = verify_capture(tmp_path, depth=100_000)
    assert report.venue == "binance" and report.ok and report.bad_frames == 0
    assert set(report.symbols) == {f"binance:{s}" for s in SYMBOLS}
    for key, symbol_report in report.symbols.items():
        book = service.books[key]
        assert symbol_report.gaps == 0 and symbol_report.synced
        assert symbol_report.last_id == book.applied_id
        assert symbol_report.bids == book.book.bids() and symbol_report.asks == book.book.asks()


def test_demo_capture_of_several_venues_verifies(tmp_path: Path) -> None:
    """`mdgateway demo --capture DIR` on simulated venues of both modes: the capture is
    self-contained, and verify rebuilds every book with 0 gaps (venues taken from the
    recorded connect lines, since loopback URLs name none)."""
    capture = tmp_path / "cap"
    result = run_mdgateway(
        *("demo", "--venues", "okx,kraken,binance-usdm", "--duration", "4", "--port", "0"),
        *("--no-view", "--fault-every", "1.5", "--outage", "0.5", "--capture", str(capture)),
        timeout_s=45,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = verify_capture(capture)
    assert report.ok, report
    assert report.venue == "binance-usdm,kraken,okx"
    assert sorted(report.symbols) == [
        "binance-usdm:BTCUSDT",
        "binance-usdm:ETHUSDT",
        "kraken:BTC/USD",
        "kraken:ETH/USD",
        "okx:BTC-USDT",
        "okx:ETH-USDT",
    ]
    assert sum(s.checksum_ok for s in report.symbols.values()) > 0
