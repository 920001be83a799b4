"""verify on the real sessions of the venues beyond Binance spot (issue: all six venues)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.tools.verify import verify_capture

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


def test_kraken_v2_session_verifies_2962_checksums(real_data: RealData) -> None:
    report = verify_capture(real_data("kraken/flashbook/live-btc-eth.ndjson"))
    assert report.venue == "kraken" and report.ok
    symbols = report.symbols
    assert sorted(symbols) == ["kraken:BTC/USD", "kraken:ETH/USD"]
    assert sum(s.checksum_ok for s in symbols.values()) == 2962
    assert sum(s.checksum_failed for s in symbols.values()) == 0
    for s in symbols.values():
        assert s.gaps == 0 and s.crossed == 0 and (s.bid_levels, s.ask_levels) == (10, 10)


def test_binance_usdm_session_has_no_gap_on_any_symbol(real_data: RealData) -> None:
    report = verify_capture(real_data("binance/cryptofeed/BINANCE_FUTURES.ws.1.0"))
    assert report.venue == "binance-usdm" and report.ok
    assert sorted(report.symbols) == [
        "binance-usdm:AKROUSDT",
        "binance-usdm:CTKUSDT",
        "binance-usdm:KEEPUSDT",
        "binance-usdm:SUSHIUSDT",
    ]
    for s in report.symbols.values():
        assert s.gaps == 0 and s.crossed == 0 and s.synced and s.updates > 100


def test_bybit_sessions_have_no_gap(real_data: RealData) -> None:
    report = verify_capture(real_data("bybit/cryptofeed/BYBIT.jsonl.gz"))
    assert report.ok
    assert sorted(report.symbols) == [
        "bybit-linear:BTCUSDT",
        "bybit-linear:DOGEUSDT",
        "bybit-linear:ETHUSDT",
        "bybit-linear:SOLUSDT",
        "bybit-spot:BTCUSDT",
        "bybit-spot:ETHUSDT",
    ]
    updates = {k: s.updates for k, s in report.symbols.items()}
    assert updates["bybit-linear:BTCUSDT"] == 413 and updates["bybit-spot:ETHUSDT"] == 249
    for s in report.symbols.values():
        assert s.gaps == 0 and s.crossed == 0 and (s.bid_levels, s.ask_levels) == (200, 200)
    history = verify_capture(real_data("bybit/nautilus_trader/xrpusdt-ob500.data.zip"))
    assert history.ok and list(history.symbols) == ["bybit-linear:XRPUSDT"]
    assert history.symbols["bybit-linear:XRPUSDT"].gaps == 0


def test_coinbase_sessions(real_data: RealData) -> None:
    advanced = verify_capture(real_data("coinbase/cryptofeed/COINBASE.jsonl.gz"))
    assert advanced.venue == "coinbase" and advanced.ok
    assert advanced.connection_gaps == 0
    assert {k: s.updates for k, s in advanced.symbols.items()} == {
        "coinbase:BTC-USD": 399,
        "coinbase:ETH-USD": 374,
    }
    exchange = verify_capture(real_data("coinbase/flashbook/live-btc-eth.ndjson"))
    assert exchange.venue == "coinbase-exchange" and exchange.ok
    for s in exchange.symbols.values():
        assert s.crossed == 0
    assert {k: s.updates for k, s in exchange.symbols.items()} == {
        "coinbase-exchange:BTC-USD": 979,
        "coinbase-exchange:ETH-USD": 919,
    }
