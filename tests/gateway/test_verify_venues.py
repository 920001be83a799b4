"""verify on the real sessions of the venues beyond Binance spot (issue: all six venues)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.verify import verify_capture

RealData = Callable[[str], Path]


def test_okx_books_verify_every_checksum(real_data: RealData) -> None:
    report = verify_capture(real_data("okx/cryptofeed/OKX.ws.1.0"))
    assert report.venue == "okx"
    symbols = report.symbols
    assert sorted(symbols) == ["okx:BTC-USD-220527", "okx:BTC-USDT", "okx:UNI-USD-SWAP"]
    assert sum(s.checksum_ok for s in symbols.values()) == 290
    assert sum(s.checksum_failed for s in symbols.values()) == 0
    for s in symbols.values():
        assert s.gaps == 0 and s.crossed == 0 and s.synced
    assert (symbols["okx:BTC-USDT"].bid_levels, symbols["okx:BTC-USDT"].ask_levels) == (400, 400)
