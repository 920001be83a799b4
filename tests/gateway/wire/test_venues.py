"""The venue registry's defaults measured against the venues' recorded sessions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.capture.registry import CaptureReader
from gateway.wire.venues import ADAPTERS

#: How many times its largest recorded frame a venue's default frame cap holds at least.
FRAME_MARGIN = 6


@pytest.mark.parametrize(
    ("relpath", "venues"),
    [
        ("binance/hftbacktest/spot/btcusdt_20240808.gz", ("binance",)),
        ("binance/cryptofeed/BINANCE.ws.1.0", ("binance",)),
        ("binance/cryptofeed/BINANCE_FUTURES.ws.1.0", ("binance-usdm", "binance-coinm")),
        ("okx/cryptofeed/OKX.ws.1.0", ("okx",)),
        ("bybit/cryptofeed/BYBIT.jsonl.gz", ("bybit-spot", "bybit-linear")),
        ("bybit/nautilus_trader/xrpusdt-ob500.data.zip", ("bybit-linear",)),
        ("kraken/flashbook/live-btc-eth.ndjson", ("kraken",)),
        ("coinbase/cryptofeed/COINBASE.jsonl.gz", ("coinbase",)),
        ("coinbase/flashbook/live-btc-eth.ndjson", ("coinbase-exchange",)),
    ],
)
def test_the_default_frame_cap_is_far_above_the_largest_recorded_frame(
    real_data: Callable[[str], Path], relpath: str, venues: tuple[str, ...]
) -> None:
    largest = max(len(r.payload) for r in CaptureReader(real_data(relpath)) if r.kind == "ws")
    assert largest > 500  # the capture's frames were read
    for venue in venues:
        assert ADAPTERS[venue].max_frame_bytes >= FRAME_MARGIN * largest, venue
