"""NDJSON of raw frames: numbered by line, told by the shape of its frames."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.capture import CaptureFormat
from gateway.capture import CaptureFormatError
from gateway.capture import CaptureReader
from gateway.capture import detect_format
from gateway.capture import detect_venue

from .samples import records
from .samples import write
from .samples import write_gz

KRAKEN_LINES = [
    b'{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online"}]}',
    b'{"method":"subscribe","result":{"channel":"book","depth":10,"symbol":"BTC/USD"},'
    b'"success":true,"time_in":"2026-07-07T23:00:03.501510Z"}',
    b'{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD","bids":[],"asks":[]}]}',
    b"",
    b"not a frame",
    b'{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],"asks":[]}]}',
]


def test_ndjson_records_are_numbered_by_line(tmp_path: Path) -> None:
    path = write(tmp_path / "live-btc-eth.ndjson", KRAKEN_LINES)
    assert detect_format(path) is CaptureFormat.NDJSON
    assert detect_venue(path) == "kraken"
    recs, stats = records(path)
    # No time is recorded: recv_ns is the 0-based line index (blank lines still count).
    assert [(r.recv_ns, r.kind, r.conn_id, r.url) for r in recs] == [
        (0, "ws", 0, ""),
        (1, "ws", 0, ""),
        (2, "ws", 0, ""),
        (5, "ws", 0, ""),
    ]
    assert [r.payload for r in recs] == [KRAKEN_LINES[i] for i in (0, 1, 2, 5)]
    assert (stats.lines, stats.records, stats.malformed) == (5, 4, 1)
    gz = write_gz(tmp_path / "live.ndjson.gz", KRAKEN_LINES)
    assert detect_format(gz) is CaptureFormat.NDJSON
    assert list(CaptureReader(gz)) == recs


@pytest.mark.parametrize(
    ("first", "venue"),
    [
        (
            b'{"type":"subscriptions","channels":[{"name":"level2_50","product_ids":["BTC-USD"]}]}',
            "coinbase-exchange",
        ),
        (
            b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","1","2"]]}',
            "coinbase-exchange",
        ),
        (
            b'{"channel":"l2_data","client_id":"","timestamp":"2026-08-09T00:00:00Z",'
            b'"sequence_num":0,"events":[{"type":"snapshot","product_id":"BTC-USD"}]}',
            "coinbase",
        ),
        (b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[]}', "okx"),
        (b'{"success":true,"ret_msg":"subscribe","conn_id":"x","op":"subscribe"}', "bybit"),
        (
            b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","U":1,"u":2,"pu":0}}',
            "binance-usdm",
        ),
    ],
)
def test_ndjson_of_each_venue(tmp_path: Path, first: bytes, venue: str) -> None:
    path = write(tmp_path / "frames.ndjson", [first])
    assert detect_format(path) is CaptureFormat.NDJSON
    assert detect_venue(path) == venue


@pytest.mark.parametrize(
    "lines",
    [
        [b'{"a":1}', b'{"b":2}'],  # JSON, but no venue's frames
        [b'{"channel":"book"', b"{}"],  # a first line that is not JSON
        [b'["not", "a venue"]'],
    ],
)
def test_ndjson_needs_json_frames_of_a_known_venue(tmp_path: Path, lines: list[bytes]) -> None:
    with pytest.raises(CaptureFormatError, match="unrecognised capture format"):
        detect_format(write(tmp_path / "x.ndjson", lines))
