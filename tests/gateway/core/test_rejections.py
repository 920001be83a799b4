"""named_symbols: the configured symbols a venue's error text names."""

from __future__ import annotations

import pytest

from gateway.core.rejections import named_symbols


@pytest.mark.parametrize(
    ("detail", "symbols", "named"),
    [
        (
            "closed: received 1008 (policy violation) Invalid stream name (unknown symbol): "
            "dogeusdt@depth@100ms",
            ["BTCUSDT", "DOGEUSDT"],
            ["DOGEUSDT"],
        ),
        (
            "Failed to subscribe: unknown product_ids ['DOGE-USD']",
            ["BTC-USD", "DOGE-USD"],
            ["DOGE-USD"],
        ),
        (
            "subscribe 3: Invalid topic: orderbook.50.DOGEUSDT",
            ["DOGEUSDT", "ETHUSDT"],
            ["DOGEUSDT"],
        ),
        ("subscribe BTC/USD: Currency pair not supported", ["BTC/USD"], ["BTC/USD"]),
        ("unknown product_ids ['BTC-USDT']", ["BTC-USD"], []),  # a whole token only
        ("Invalid request: too many streams", ["BTCUSDT"], []),
        ("", ["BTCUSDT"], []),
    ],
)
def test_symbols_named_as_whole_tokens(detail: str, symbols: list[str], named: list[str]) -> None:
    assert named_symbols(detail, symbols) == named
