"""cryptofeed's raw capture reader: the ws/http pair merged on receive time, reconnects,
malformed lines, the http half refused, venue from the connect URL or the feed name."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.capture import REST_CONN_ID
from gateway.capture import CaptureFormat
from gateway.capture import CaptureFormatError
from gateway.capture import CaptureReader
from gateway.capture import detect_format
from gateway.capture import detect_venue
from gateway.capture import rest_symbol

from .samples import DIFF
from .samples import SNAPSHOT
from .samples import WS_URL
from .samples import cryptofeed_pair
from .samples import records
from .samples import write


def test_cryptofeed_pair_is_merged_by_receive_time(tmp_path: Path) -> None:
    ws = cryptofeed_pair(
        tmp_path,
        [
            f"{WS_URL} <-> 100.5".encode(),
            b"101.25: " + DIFF % (1, 5),
            b"102: " + DIFF % (6, 7),
            b"104.000000001: " + DIFF % (8, 9),
            b"",
        ],
        [
            b"https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000 -> 103.5: " + SNAPSHOT,
            b"https://api.binance.com/api/v3/depth?symbol=ETHUSDT&limit=1000 -> 100.75: "
            + SNAPSHOT,
        ],
    )
    assert detect_format(ws) is CaptureFormat.CRYPTOFEED_RAW
    recs, stats = records(ws)
    assert [(r.recv_ns, r.kind, r.conn_id) for r in recs] == [
        (100_500_000_000, "connect", 0),
        # The http file's own order is kept: its second line is older than the ws lines
        # after it, but merging never reorders lines of one file.
        (101_250_000_000, "ws", 0),
        (102_000_000_000, "ws", 0),
        (103_500_000_000, "rest", REST_CONN_ID),
        (100_750_000_000, "rest", REST_CONN_ID),
        (104_000_000_001, "ws", 0),
    ]
    assert recs[0].url == WS_URL and recs[0].payload == b""
    assert recs[1].url == WS_URL and recs[1].payload == DIFF % (1, 5)
    assert rest_symbol(recs[3].url) == "BTCUSDT"
    assert recs[3].payload == SNAPSHOT
    assert stats.sources == [str(ws), str(tmp_path / "BINANCE.http.0.0")]
    assert (stats.records, stats.malformed) == (6, 0)


def test_cryptofeed_merge_puts_rest_between_frames_by_time(tmp_path: Path) -> None:
    ws = cryptofeed_pair(
        tmp_path,
        [f"{WS_URL} <-> 1".encode()] + [b"%d.5: " % t + DIFF % (t, t) for t in range(2, 8)],
        [
            b"https://api.binance.com/api/v3/depth?symbol=BTCUSDT -> 4.6: " + SNAPSHOT,
            b"https://api.binance.com/api/v3/depth?symbol=BTCUSDT -> 6.1: " + SNAPSHOT,
        ],
    )
    recs, _ = records(ws)
    times = [r.recv_ns for r in recs]
    assert times == sorted(times)
    kinds = [r.kind for r in recs]
    assert kinds == ["connect", "ws", "ws", "ws", "rest", "ws", "rest", "ws", "ws"]


def test_cryptofeed_reconnect_is_a_new_connection(tmp_path: Path) -> None:
    other = "wss://data-stream.binance.vision/stream?streams=btcusdt@depth@100ms"
    ws = cryptofeed_pair(
        tmp_path,
        [
            f"{WS_URL} <-> 1".encode(),
            b"2: " + DIFF % (1, 2),
            f"{WS_URL} <- 2.5: ".encode() + b'{"method":"SUBSCRIBE"}',
            f"{other} <-> 3".encode(),
            b"4: " + DIFF % (3, 4),
        ],
        None,
    )
    recs, stats = records(ws)
    assert [(r.kind, r.conn_id, r.url) for r in recs] == [
        ("connect", 0, WS_URL),
        ("ws", 0, WS_URL),
        ("disconnect", 0, WS_URL),
        ("connect", 1, other),
        ("ws", 1, other),
    ]
    assert [r.recv_ns for r in recs][2:4] == [3_000_000_000, 3_000_000_000]
    assert stats.skipped == 1
    assert stats.sources == [str(ws)]  # no http file beside it: read without REST


def test_cryptofeed_rotated_file_without_connect_line(tmp_path: Path) -> None:
    path = write(tmp_path / "BINANCE.ws.1.1", [b"7.5: " + DIFF % (1, 2)])
    assert detect_format(path) is CaptureFormat.CRYPTOFEED_RAW
    recs, _ = records(path)
    assert [(r.kind, r.conn_id, r.url, r.recv_ns) for r in recs] == [("ws", 0, "", 7_500_000_000)]


def test_cryptofeed_malformed_lines_in_both_files_are_counted(tmp_path: Path) -> None:
    ws = cryptofeed_pair(
        tmp_path,
        [
            f"{WS_URL} <-> 1".encode(),
            b"2: " + DIFF % (1, 2),
            b"not a line of this format",
            b"3.x: " + DIFF % (3, 4),
            b"4: " + DIFF % (3, 4),
        ],
        [
            b"https://api.binance.com/api/v3/depth?symbol=BTCUSDT 2.5: " + SNAPSHOT,
            b"https://api.binance.com/api/v3/depth?symbol=BTCUSDT -> 2.6: " + SNAPSHOT,
        ],
    )
    recs, stats = records(ws)
    assert [r.kind for r in recs] == ["connect", "ws", "rest", "ws"]
    assert stats.malformed == 3
    assert any(e.startswith("BINANCE.http.0.0:1: ") for e in stats.examples)


def test_cryptofeed_http_siblings_in_numeric_order(tmp_path: Path) -> None:
    ws = cryptofeed_pair(tmp_path, [f"{WS_URL} <-> 1".encode()], [])
    for name in ("BINANCE.http.0.10", "BINANCE.http.0.2", "BINANCE_FUTURES.http.0.0"):
        write(tmp_path / name, [])
    names = [p.name for p in CaptureReader(ws).sources()]
    assert names == ["BINANCE.ws.1.0", "BINANCE.http.0.0", "BINANCE.http.0.2", "BINANCE.http.0.10"]


def test_detect_format_rejects_the_http_half_with_a_pointer_to_the_ws_file(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path / "BINANCE.http.0.0",
        [b"https://api.binance.com/api/v3/depth?symbol=BTCUSDT -> 2.5: " + SNAPSHOT],
    )
    with pytest.raises(CaptureFormatError, match=r"NAME\.ws\.N\.M") as info:
        detect_format(path)
    assert str(path) in str(info.value)


def test_detect_venue_of_cryptofeed_from_the_connect_url_then_the_name(tmp_path: Path) -> None:
    spot = cryptofeed_pair(tmp_path, [f"{WS_URL} <-> 1".encode()], None)
    assert detect_venue(spot) == "binance"
    futures = write(
        tmp_path / "X.ws.1.0", [b"wss://fstream.binance.com/stream?streams=a@depth <-> 1"]
    )
    assert detect_venue(futures) == "binance-usdm"
    rotated = write(tmp_path / "BINANCE_FUTURES.ws.2.3", [b"1.5: {}"])
    assert detect_venue(rotated) == "binance-usdm"
    unknown = write(tmp_path / "capture.ws.1.0", [b"1.5: {}"])
    assert detect_venue(unknown) is None
