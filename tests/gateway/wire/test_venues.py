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


@pytest.mark.parametrize("venue", list(ADAPTERS))
def test_a_venue_with_rest_snapshots_states_the_depths_it_serves_and_its_default(
    venue: str,
) -> None:
    adapter = ADAPTERS[venue]
    check, default = adapter.check_snapshot_limit, adapter.default_snapshot_limit
    if adapter.snapshot_url is None:
        assert check is None and default is None
        return
    assert check is not None and default is not None
    check(default)
    # 1000 where the venue serves it, else its largest.
    assert default == 1000 or (default < 1000 and not _serves(check, 1000))
    assert all(not _serves(check, limit) for limit in range(default + 1, 1000))
    url = adapter.snapshot_url("https://rest.example", "BTCUSDT", default)
    assert url.startswith("https://rest.example/") and f"={default}" in url
    for refused in (0, 5001):
        with pytest.raises(ValueError, match="snapshot limit must be"):
            check(refused)
        with pytest.raises(ValueError, match="snapshot limit must be"):
            adapter.snapshot_url("https://rest.example", "BTCUSDT", refused)


def _serves(check: Callable[[int], None], limit: int) -> bool:
    try:
        check(limit)
    except ValueError:
        return False
    return True
