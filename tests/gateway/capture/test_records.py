"""Records and times: exact decimal seconds, frozen records, the symbol of a REST URL."""

from __future__ import annotations

import msgspec
import pytest

from gateway.capture import CaptureRecord
from gateway.capture import decimal_seconds_to_ns
from gateway.capture import inline_snapshot_url
from gateway.capture import rest_symbol


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1633998512.0633569", 1_633_998_512_063_356_900),
        ("1633998512.320639", 1_633_998_512_320_639_000),
        ("1", 1_000_000_000),
        ("0.000000001", 1),
        ("1.5", 1_500_000_000),
        ("1723161254.999999999", 1_723_161_254_999_999_999),
        # Below a nanosecond is truncated, not rounded.
        ("1.0000000019", 1_000_000_001),
        (b"1633998511.159679", 1_633_998_511_159_679_000),
    ],
)
def test_decimal_seconds_to_ns_is_exact(text: str | bytes, ns: int) -> None:
    assert decimal_seconds_to_ns(text) == ns


def test_decimal_seconds_differ_from_the_float_route() -> None:
    # The reason for parsing digits: a float cannot hold this time to the nanosecond.
    text = "1633998512.0633569"
    assert int(float(text) * 1e9) != decimal_seconds_to_ns(text)


@pytest.mark.parametrize("text", ["", "1.", ".5", "-1", "1e9", "1,5", " 1", "nan", "1.2.3"])
def test_decimal_seconds_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        decimal_seconds_to_ns(text)


def test_records_are_frozen_msgspec_structs() -> None:
    rec = CaptureRecord(1, 0, "ws", "", b"x")
    with pytest.raises(AttributeError):
        rec.recv_ns = 2  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(rec), type=CaptureRecord) == rec


@pytest.mark.parametrize(
    ("url", "symbol"),
    [
        ("https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000", "BTCUSDT"),
        ("https://www.okx.com/api/v5/market/books?instId=BTC-USDT&sz=400", "BTC-USDT"),
        (inline_snapshot_url("ETHUSDT"), "ETHUSDT"),
        # An empty parameter names nothing: the next one is read.
        ("http://h/api/v5/market/books?symbol=&instId=BTC-USDT", "BTC-USDT"),
        ("https://api.binance.com/api/v3/depth?limit=1000", None),
    ],
)
def test_a_rest_url_names_its_symbol_in_symbol_or_inst_id(url: str, symbol: str | None) -> None:
    assert rest_symbol(url) == symbol
