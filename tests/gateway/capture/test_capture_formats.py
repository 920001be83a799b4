"""Capture readers on small synthetic files: both formats, exact times, merge order,
malformed lines, detection errors, venue detection, and purity of the module."""

from __future__ import annotations

import ast
import base64
import gzip
import json
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

import gateway.capture.formats as cf
from gateway.capture.formats import (
    KNOWN_VENUES,
    REST_CONN_ID,
    CaptureFormat,
    CaptureFormatError,
    CaptureReader,
    CaptureRecord,
    connection_venue,
    decimal_seconds_to_ns,
    detect_format,
    detect_venue,
    inline_snapshot_url,
    rest_symbol,
    venue_from_frame,
    venue_from_url,
)

DIFF = (
    b'{"stream":"btcusdt@depth@100ms","data":'
    b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":%d,"u":%d,"b":[],"a":[]}}'
)
TICKER = (
    b'{"stream":"btcusdt@bookTicker","data":{"u":5,"s":"BTCUSDT","b":"1","B":"1","a":"2","A":"1"}}'
)
SNAPSHOT = b'{"lastUpdateId":10,"bids":[["1.0","2"]],"asks":[["2.0","3"]]}'
WS_URL = "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms"


def write_gz(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    return path


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def records(path: Path) -> tuple[list[CaptureRecord], cf.ReadStats]:
    reader = CaptureReader(path)
    out = list(reader)
    return out, reader.stats


# --- times --------------------------------------------------------------------------------


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


# --- hftbacktest --------------------------------------------------------------------------


def test_hftbacktest_records_in_file_order_with_inline_snapshot_as_rest(tmp_path: Path) -> None:
    path = write_gz(
        tmp_path / "btcusdt_20240808.gz",
        [
            b"1000 " + DIFF % (1, 5),
            b"1001 " + TICKER,
            b"1002 " + SNAPSHOT,
            b"1003 " + DIFF % (6, 9),
        ],
    )
    assert detect_format(path) is CaptureFormat.HFTBACKTEST
    recs, stats = records(path)
    assert [(r.recv_ns, r.kind, r.conn_id) for r in recs] == [
        (1000, "ws", 0),
        (1001, "ws", 0),
        (1002, "rest", REST_CONN_ID),
        (1003, "ws", 0),
    ]
    assert recs[0].payload == DIFF % (1, 5)
    assert recs[2].payload == SNAPSHOT
    assert recs[2].url == inline_snapshot_url("BTCUSDT")
    assert rest_symbol(recs[2].url) == "BTCUSDT"
    assert (stats.lines, stats.records, stats.malformed, stats.truncated) == (4, 4, 0, False)
    assert stats.sources == [str(path)]


def test_hftbacktest_snapshot_symbol_from_stream_names_before_the_file_name(
    tmp_path: Path,
) -> None:
    # The file name says ethusdt; the streams say btcusdt: the streams win.
    path = write_gz(tmp_path / "ethusdt_20240808.gz", [b"1 " + DIFF % (1, 2), b"2 " + SNAPSHOT])
    recs, _ = records(path)
    assert rest_symbol(recs[1].url) == "BTCUSDT"


def test_hftbacktest_snapshot_symbol_from_the_file_name(tmp_path: Path) -> None:
    # No stream seen yet: the collector's file name <symbol>_<date>.gz tells the symbol.
    path = write_gz(tmp_path / "ethusdt_20240808.gz", [b"1 " + SNAPSHOT, b"2 " + DIFF % (1, 2)])
    recs, _ = records(path)
    assert rest_symbol(recs[0].url) == "ETHUSDT"
    # Two symbols in the streams: ambiguous, so the file name again.
    other = DIFF.replace(b"btcusdt@", b"bnbusdt@") % (1, 2)
    path = write_gz(
        tmp_path / "ethusdt_20240809.gz", [b"1 " + DIFF % (1, 2), b"2 " + other, b"3 " + SNAPSHOT]
    )
    recs, _ = records(path)
    assert rest_symbol(recs[2].url) == "ETHUSDT"


def test_hftbacktest_snapshot_of_unknown_symbol_is_a_malformed_line(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "capture.gz", [b"1 " + SNAPSHOT, b"2 " + DIFF % (1, 2)])
    recs, stats = records(path)
    assert [r.kind for r in recs] == ["ws"]
    assert stats.malformed == 1
    assert "unknown symbol" in stats.examples[0]


def test_hftbacktest_malformed_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    path = write_gz(
        tmp_path / "btcusdt_20240808.gz",
        [
            b"1 " + DIFF % (1, 2),
            b"garbage",
            b"",
            b"12x " + DIFF % (3, 4),
            b"13",
            b"   ",
            b"14 " + DIFF % (3, 4),
        ],
    )
    recs, stats = records(path)
    assert [r.recv_ns for r in recs] == [1, 14]
    assert stats.malformed == 3
    assert stats.lines == 5  # blank lines are not lines of the capture
    assert len(stats.examples) == 3
    assert stats.examples[0].startswith("btcusdt_20240808.gz:2: ")


def test_hftbacktest_plain_text_is_read_too(tmp_path: Path) -> None:
    path = write(tmp_path / "btcusdt_20240808", [b"5 " + DIFF % (1, 2), b"6 " + SNAPSHOT])
    assert detect_format(path) is CaptureFormat.HFTBACKTEST
    recs, _ = records(path)
    assert [(r.recv_ns, r.kind) for r in recs] == [(5, "ws"), (6, "rest")]
    assert rest_symbol(recs[1].url) == "BTCUSDT"


def test_hftbacktest_truncated_gzip_yields_what_it_has_and_says_so(tmp_path: Path) -> None:
    lines = [b"%d " % i + DIFF % (i, i) for i in range(1, 2001)]
    whole = write_gz(tmp_path / "whole.gz", lines).read_bytes()
    cut = tmp_path / "btcusdt_20240808.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    recs, stats = records(cut)
    assert stats.truncated
    assert 0 < len(recs) < 2000
    # Every record read before the cut is whole and in order.
    assert [r.recv_ns for r in recs[:-1]] == list(range(1, len(recs)))


# --- cryptofeed raw -----------------------------------------------------------------------


def cryptofeed_pair(tmp_path: Path, ws: list[bytes], http: list[bytes] | None) -> Path:
    ws_path = write(tmp_path / "BINANCE.ws.1.0", ws)
    if http is not None:
        write(tmp_path / "BINANCE.http.0.0", http)
    return ws_path


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


def test_records_are_frozen_msgspec_structs() -> None:
    rec = CaptureRecord(1, 0, "ws", "", b"x")
    with pytest.raises(AttributeError):
        rec.recv_ns = 2  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(rec), type=CaptureRecord) == rec


def test_reader_can_be_iterated_twice(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "btcusdt_20240808.gz", [b"1 " + DIFF % (1, 2)])
    reader = CaptureReader(path)
    assert list(reader) == list(reader)
    assert reader.stats.records == 1


# --- detection ----------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (b"# a markdown file\n", "unrecognised capture format"),
        (b'{"stream":"btcusdt@depth","data":{}}\n', "unrecognised capture format"),
        (gzip.compress(b'{"type":"l2update"}\n'), "unrecognised capture format"),
        (b"\x1f\x8bnot really gzip", "gzip data is unreadable"),
    ],
)
def test_detect_format_errors_name_the_path_and_what_was_expected(
    tmp_path: Path, content: bytes, match: str
) -> None:
    path = tmp_path / "capture.bin"
    path.write_bytes(content)
    with pytest.raises(CaptureFormatError, match=match) as info:
        detect_format(path)
    message = str(info.value)
    assert str(path) in message
    if "unrecognised" in match or "empty" in match:
        assert "expected" in message and "hftbacktest" in message and "cryptofeed" in message


def test_detect_format_on_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.gz"
    with pytest.raises(CaptureFormatError, match="cannot read") as info:
        CaptureReader(path)
    assert str(path) in str(info.value)


# --- venues -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "venue"),
    [
        ("wss://stream.binance.com:9443/stream?streams=a", "binance"),
        ("wss://stream.binance.com:443/ws", "binance"),
        ("wss://data-stream.binance.vision/stream", "binance"),
        ("https://api.binance.com/api/v3/depth?symbol=X", "binance"),
        ("wss://fstream.binance.com/stream?streams=a", "binance-usdm"),
        ("https://fapi.binance.com/fapi/v1/depth", "binance-usdm"),
        ("wss://ws.okx.com:8443/ws/v5/public", "okx"),
        ("wss://stream.bybit.com/v5/public/linear", "bybit"),
        ("wss://ws.kraken.com/v2", "kraken"),
        ("wss://advanced-trade-ws.coinbase.com", "coinbase"),
        ("wss://example.com/binance.com", None),
        ("wss://notbinance.com/", None),
        ("", None),
    ],
)
def test_venue_from_url(url: str, venue: str | None) -> None:
    assert venue_from_url(url) == venue


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


def test_detect_venue_of_hftbacktest_from_the_depth_update_shape(tmp_path: Path) -> None:
    spot = write_gz(tmp_path / "a.gz", [b"1 " + TICKER, b"2 " + DIFF % (1, 2)])
    assert detect_venue(spot) == "binance"
    usdm = DIFF.replace(b'"U":', b'"pu":0,"U":')
    assert detect_venue(write_gz(tmp_path / "b.gz", [b"1 " + usdm % (1, 2)])) == "binance-usdm"
    assert detect_venue(write_gz(tmp_path / "c.gz", [b"1 " + TICKER])) is None


# --- layering -----------------------------------------------------------------------------


def test_capture_formats_imports_no_event_loop_or_network() -> None:
    tree = ast.parse(Path(cf.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "websockets", "socket", "ssl", "selectors", "rich"}


# --- cryptofeed format 2 (JSONL) ----------------------------------------------------------

BYBIT_LINEAR = "wss://stream.bybit.com/v5/public/linear"
BYBIT_SPOT = "wss://stream.bybit.com/v5/public/spot"
BYBIT_DELTA = (
    b'{"topic":"orderbook.200.BTCUSDT","type":"delta","ts":1786310818130,"data":{"s":"BTCUSDT",'
    b'"b":[["65095.30","0.005"]],"a":[],"u":15076953,"seq":753843913870},"cts":1786310818129}'
)
HEADER = {"t": "header", "format": 2, "exchange": "BYBIT", "config": {}, "recorded": 1.0}


def cf2(**fields: object) -> bytes:
    """One format-2 record. Keys in the order given: cryptofeed's own writer puts ``t``
    after ``conn`` and ``ts``; files converted from format 1 put it first."""
    return json.dumps(fields, separators=(",", ":")).encode()


def test_cryptofeed_jsonl_records_in_time_order(tmp_path: Path) -> None:
    path = write_gz(
        tmp_path / "BYBIT.jsonl.gz",
        [
            cf2(**HEADER),
            cf2(
                t="http",
                conn="BYBIT.http.1",
                ts=1786310817.601629,
                url="https://api.bybit.com/v5/x?category=linear",
                data="{}",
            ),
            cf2(conn="BYBIT.ws.2", ts=1786310818.2235148, t="connect", addr=BYBIT_LINEAR),
            cf2(conn="BYBIT.ws.2", ts=1786310819.228447, t="send", addr=BYBIT_LINEAR, data="{}"),
            cf2(conn="BYBIT.ws.2", ts=1786310819.5648682, t="recv", data=BYBIT_DELTA.decode()),
            cf2(conn="BYBIT.ws.3", ts=1786310819.6, t="connect", addr=BYBIT_SPOT),
            cf2(
                conn="BYBIT.ws.3",
                ts=1786310819.7,
                t="recv",
                b64=base64.b64encode(b"\x00\xff").decode(),
            ),
            cf2(conn="BYBIT.ws.2", ts=1786310820, t="recv", data="héllo"),
        ],
    )
    assert detect_format(path) is CaptureFormat.CRYPTOFEED_JSONL
    recs, stats = records(path)
    assert [(r.kind, r.conn_id, r.url) for r in recs] == [
        ("rest", REST_CONN_ID, "https://api.bybit.com/v5/x?category=linear"),
        ("connect", 0, BYBIT_LINEAR),
        ("ws", 0, BYBIT_LINEAR),
        ("connect", 1, BYBIT_SPOT),
        ("ws", 1, BYBIT_SPOT),
        ("ws", 0, BYBIT_LINEAR),
    ]
    # Times from the JSON number's digits, exactly.
    assert recs[2].recv_ns == 1_786_310_819_564_868_200
    assert recs[5].recv_ns == 1_786_310_820_000_000_000
    assert [r.payload for r in recs] == [
        b"{}",
        b"",
        BYBIT_DELTA,
        b"",
        b"\x00\xff",
        "héllo".encode(),
    ]
    assert (stats.lines, stats.records, stats.skipped, stats.malformed) == (8, 6, 2, 0)
    assert stats.sources == [str(path)]


def test_cryptofeed_jsonl_connections_written_one_after_another_are_merged(
    tmp_path: Path,
) -> None:
    # As in files converted from format 1: one connection's records, then the next's.
    path = write(
        tmp_path / "X.jsonl",
        [
            cf2(**HEADER),
            cf2(t="connect", conn="X.ws.1", ts=1, addr=BYBIT_LINEAR),
            cf2(t="recv", conn="X.ws.1", ts=3, data="a3"),
            cf2(t="recv", conn="X.ws.1", ts=2.5, data="a2.5"),  # its clock stepped back
            cf2(t="recv", conn="X.ws.1", ts=6, data="a6"),
            cf2(t="connect", conn="X.ws.2", ts=2, addr=BYBIT_SPOT),
            cf2(t="recv", conn="X.ws.2", ts=4, data="b4"),
            cf2(t="http", conn="X.http.1", ts=0.5, url="https://api.bybit.com/a", data="h0.5"),
            cf2(t="http", conn="X.http.1", ts=5, url="https://api.bybit.com/b", data="h5"),
        ],
    )
    recs, stats = records(path)
    assert [(r.kind, r.conn_id, r.payload) for r in recs] == [
        ("rest", REST_CONN_ID, b"h0.5"),
        ("connect", 0, b""),
        ("connect", 1, b""),
        ("ws", 0, b"a3"),
        ("ws", 0, b"a2.5"),  # each connection keeps its own order
        ("ws", 1, b"b4"),
        ("rest", REST_CONN_ID, b"h5"),
        ("ws", 0, b"a6"),
    ]
    assert (stats.lines, stats.records, stats.skipped) == (9, 8, 1)


@pytest.mark.parametrize("concatenated", [False, True])
def test_cryptofeed_jsonl_reconnect_is_a_new_connection(tmp_path: Path, concatenated: bool) -> None:
    a = [
        cf2(t="connect", conn="X.ws.1", ts=1, addr=BYBIT_LINEAR),
        cf2(t="recv", conn="X.ws.1", ts=2, data="a2"),
        cf2(t="connect", conn="X.ws.1", ts=5, addr=BYBIT_LINEAR + "?again"),
        cf2(t="recv", conn="X.ws.1", ts=6, data="a6"),
    ]
    b = [
        cf2(t="connect", conn="X.ws.2", ts=3, addr=BYBIT_SPOT),
        cf2(t="recv", conn="X.ws.2", ts=4, data="b4"),
    ]
    lines = a + b if concatenated else [a[0], a[1], b[0], b[1], a[2], a[3]]
    recs, _ = records(write(tmp_path / "X.jsonl", lines))
    # Ids in order of the (re)connects in the file.
    a0, a1, b0 = (0, 1, 2) if concatenated else (0, 2, 1)
    assert [(r.kind, r.conn_id, r.url, r.recv_ns // 10**9) for r in recs] == [
        ("connect", a0, BYBIT_LINEAR, 1),
        ("ws", a0, BYBIT_LINEAR, 2),
        ("connect", b0, BYBIT_SPOT, 3),
        ("ws", b0, BYBIT_SPOT, 4),
        ("disconnect", a0, BYBIT_LINEAR, 5),
        ("connect", a1, BYBIT_LINEAR + "?again", 5),
        ("ws", a1, BYBIT_LINEAR + "?again", 6),
    ]


def test_cryptofeed_jsonl_recv_before_any_connect(tmp_path: Path) -> None:
    path = write(
        tmp_path / "X.jsonl",
        [
            cf2(conn="X.ws.1", ts=1, t="recv", data="x"),
            cf2(conn="X.ws.1", ts=2, t="send", addr=BYBIT_SPOT, data="{}"),
            cf2(conn="X.ws.1", ts=3, t="recv", data="y"),
        ],
    )
    assert detect_format(path) is CaptureFormat.CRYPTOFEED_JSONL
    recs, _ = records(path)
    # A sent frame tells the connection's URL when no connect record did.
    assert [(r.kind, r.conn_id, r.url) for r in recs] == [("ws", 0, ""), ("ws", 0, BYBIT_SPOT)]


def test_cryptofeed_jsonl_malformed_lines_are_counted(tmp_path: Path) -> None:
    path = write(
        tmp_path / "X.jsonl",
        [
            cf2(**HEADER),
            b"not json",
            cf2(t="close", conn="X.ws.1", ts=1),
            cf2(t="recv", ts=1, data="no conn"),
            cf2(t="recv", conn="X.ws.1", ts=1),
            cf2(t="recv", conn="X.ws.1", ts=1, b64="!!not base64!!"),
            cf2(t="recv", conn="X.ws.1", ts="1", data="ts as a string"),
            cf2(t="recv", conn="X.ws.1", data="no ts"),
            cf2(t="connect", conn="X.ws.1", ts=1),
            cf2(t="http", conn="X.http.1", ts=1, data="no url"),
            cf2(t="recv", conn="X.ws.1", ts=-1, data="negative"),
            cf2(t="recv", conn="X.ws.1", ts=1.5e0, data="ok"),
        ],
    )
    recs, stats = records(path)
    assert [(r.kind, r.recv_ns, r.payload) for r in recs] == [("ws", 1_500_000_000, b"ok")]
    assert (stats.malformed, stats.skipped, stats.lines) == (10, 1, 12)
    assert stats.examples[0].startswith("X.jsonl:2: ")
    assert "unknown record type 'close'" in stats.examples[1]


def test_cryptofeed_jsonl_detected_from_a_long_first_line(tmp_path: Path) -> None:
    big = "x" * 100_000  # the first line does not fit in the bytes read to detect
    path = write_gz(
        tmp_path / "capture.gz",
        [
            cf2(conn="X.http.1", ts=1, t="http", url="https://api.bybit.com/a", data=big),
            cf2(conn="X.ws.1", ts=2, t="recv", data="y"),
        ],
    )
    assert detect_format(path) is CaptureFormat.CRYPTOFEED_JSONL
    recs, _ = records(path)
    assert [len(r.payload) for r in recs] == [100_000, 1]


def test_cryptofeed_jsonl_other_format_versions_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "X.jsonl", [cf2(t="header", format=3, exchange="BYBIT")])
    with pytest.raises(CaptureFormatError, match="format 3 is not supported") as info:
        detect_format(path)
    assert str(path) in str(info.value)


def test_zstd_captures_are_refused_with_a_way_out(tmp_path: Path) -> None:
    path = tmp_path / "BYBIT.jsonl.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(20))
    with pytest.raises(CaptureFormatError, match="zstd") as info:
        detect_format(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("addrs", "exchange", "venue"),
    [
        ([BYBIT_LINEAR, BYBIT_SPOT], "BYBIT", "bybit"),
        ([BYBIT_LINEAR, BYBIT_LINEAR], "BYBIT", "bybit-linear"),
        ([BYBIT_SPOT], "BYBIT", "bybit-spot"),
        ([], "BYBIT", "bybit"),
        ([], "COINBASE", "coinbase"),
        ([], "NOPE", None),
        (["wss://advanced-trade-ws.coinbase.com"], "COINBASE", "coinbase"),
        (["wss://ws-feed.exchange.coinbase.com"], "COINBASEPRO", "coinbase-exchange"),
        (["wss://ws.okx.com:8443/ws/v5/public", BYBIT_SPOT], "X", None),
    ],
)
def test_detect_venue_of_cryptofeed_jsonl(
    tmp_path: Path, addrs: list[str], exchange: str, venue: str | None
) -> None:
    lines = [cf2(t="header", format=2, exchange=exchange, config={})]
    lines += [cf2(t="connect", conn=f"X.ws.{i}", ts=i, addr=a) for i, a in enumerate(addrs)]
    lines.append(cf2(t="recv", conn="X.ws.0", ts=9, data="{}"))
    assert detect_venue(write(tmp_path / "X.jsonl", lines)) == venue


# --- Bybit historical download ------------------------------------------------------------


def ob_line(u: int, ts: int, kind: str = "delta", topic: str = "orderbook.500.XRPUSDT") -> bytes:
    return (
        b'{"topic":"%s","type":"%s","ts":%d,"data":{"s":"XRPUSDT","b":[["1.9531","6203"]],'
        b'"a":[],"u":%d,"seq":130020238981},"cts":%d}'
        % (topic.encode(), kind.encode(), ts, u, ts - 2)
    )


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_bybit_history_zip(tmp_path: Path) -> None:
    lines = [
        ob_line(20254869, 1733011200691, "snapshot"),
        b"garbage",
        ob_line(20254870, 1733011200693),
    ]
    path = write_zip(
        tmp_path / "xrpusdt-ob500.data.zip",
        {"2024-12-01_XRPUSDT_ob500.data": b"\r\n".join(lines) + b"\r\n"},
    )
    assert detect_format(path) is CaptureFormat.BYBIT_HISTORY
    assert detect_venue(path) == "bybit-linear"
    recs, stats = records(path)
    assert [(r.kind, r.conn_id, r.url, r.recv_ns) for r in recs] == [
        ("ws", 0, "", 1_733_011_200_691_000_000),
        ("ws", 0, "", 1_733_011_200_693_000_000),
    ]
    assert [r.payload for r in recs] == [lines[0], lines[2]]
    assert (stats.lines, stats.records, stats.malformed) == (3, 2, 1)
    assert stats.examples[0].startswith("xrpusdt-ob500.data.zip!2024-12-01_XRPUSDT_ob500.data:2: ")


def test_bybit_history_unzipped_and_other_depths(tmp_path: Path) -> None:
    path = write(
        tmp_path / "2024-12-01_BTCUSDT_ob200.data",
        [ob_line(5, 1000, "snapshot", "orderbook.200.BTCUSDT"), ob_line(6, 1001)],
    )
    assert detect_format(path) is CaptureFormat.BYBIT_HISTORY
    assert detect_venue(path) == "bybit"  # spot and linear both offer 200 levels
    recs, _ = records(path)
    assert [r.recv_ns for r in recs] == [1_000_000_000, 1_001_000_000]


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ({"notes.txt": b"hello\n"}, "not a Bybit historical"),
        ({}, "empty"),
    ],
)
def test_zip_archives_that_are_not_bybit_downloads(
    tmp_path: Path, members: dict[str, bytes], match: str
) -> None:
    path = write_zip(tmp_path / "x.zip", members)
    with pytest.raises(CaptureFormatError, match=match) as info:
        detect_format(path)
    assert str(path) in str(info.value)


def test_truncated_zip_is_unreadable(tmp_path: Path) -> None:
    whole = write_zip(tmp_path / "whole.zip", {"a.data": ob_line(1, 1) * 100}).read_bytes()
    path = tmp_path / "cut.data.zip"
    path.write_bytes(whole[: len(whole) // 2])  # the central directory is at the end
    with pytest.raises(CaptureFormatError, match="zip data is unreadable"):
        CaptureReader(path)


# --- NDJSON -------------------------------------------------------------------------------

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


# --- venues of URLs and frames ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "venue"),
    [
        (BYBIT_LINEAR, "bybit-linear"),
        (BYBIT_SPOT, "bybit-spot"),
        ("wss://stream-testnet.bybit.com/v5/public/spot", "bybit-spot"),
        ("wss://stream.bybit.kz/v5/public/inverse", "bybit-inverse"),
        ("wss://stream.bybit.com/v5/public/option/", "bybit-option"),
        ("wss://stream.bybit.com/v5/private", "bybit"),
        ("wss://stream.bybit.com/v5/public/linearx", "bybit"),
        ("https://api.bybit.com/v5/market/orderbook?category=spot&symbol=BTCUSDT", "bybit-spot"),
        ("https://api.bybit.com/v5/market/orderbook?category=nope", "bybit"),
        ("wss://ws-feed.exchange.coinbase.com", "coinbase-exchange"),
        ("https://api.exchange.coinbase.com/products/BTC-USD/book", "coinbase-exchange"),
        ("wss://ws-feed.pro.coinbase.com", "coinbase-exchange"),
        ("wss://advanced-trade-ws.coinbase.com", "coinbase"),
        ("wss://fstream.binance.com/public/stream?streams=a", "binance-usdm"),
        ("wss://example.com/v5/public/spot", None),
    ],
)
def test_connection_venue(url: str, venue: str | None) -> None:
    assert connection_venue(url) == venue
    assert venue is None or venue in KNOWN_VENUES


def test_venue_from_url_stays_by_host() -> None:
    assert venue_from_url(BYBIT_SPOT) == "bybit"
    assert venue_from_url("wss://stream.bybit.tr/v5/public/spot") == "bybit"
    assert {"bybit-spot", "bybit-linear", "coinbase-exchange", "bybit"} <= KNOWN_VENUES


@pytest.mark.parametrize(
    ("frame", "venue"),
    [
        (BYBIT_DELTA, "bybit"),
        (b'{"topic": "publicTrade.BTCUSDT", "ts": 1, "type": "snapshot", "data": []}', "bybit"),
        (b'{"channel":"heartbeat"}', "kraken"),
        (b'{"channel":"ticker","type":"update","data":[]}', "kraken"),
        (b'{"channel":"heartbeats","sequence_num":5,"events":[]}', "coinbase"),
        (b'{"type":"match","product_id":"BTC-USD","trade_id":1}', "coinbase-exchange"),
        (b'{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"}}', "okx"),
        (b'{"arg":{"channel":"status"},"data":[]}', "okx"),
        (
            b'{"e":"depthUpdate","E":1,"s":"BTCUSD_PERP","ps":"BTCUSD","U":1,"u":2,"pu":0}',
            "binance-coinm",
        ),
        (b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2}', "binance"),
        (b'{"type":"l2update"}', None),
        (b'{"channels":["book"]}', None),
        (b'{"stream":"btcusdt@depth","data":{}}', None),
        (b'{"group":"x","raw":"{\\"channel\\":\\"book\\"}"}', None),
        (b"", None),
    ],
)
def test_venue_from_frame(frame: bytes, venue: str | None) -> None:
    assert venue_from_frame(frame) == venue


# --- the real files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relpath", "fmt", "venue", "counts"),
    [
        (
            "bybit/cryptofeed/BYBIT.jsonl.gz",
            CaptureFormat.CRYPTOFEED_JSONL,
            "bybit",
            {
                ("rest", -1): 2,
                ("connect", 0): 1,
                ("ws", 0): 2546,
                ("connect", 1): 1,
                ("ws", 1): 681,
            },
        ),
        (
            "coinbase/cryptofeed/COINBASE.jsonl.gz",
            CaptureFormat.CRYPTOFEED_JSONL,
            "coinbase",
            {("rest", -1): 1, ("connect", 0): 1, ("ws", 0): 1030},
        ),
        (
            "bybit/nautilus_trader/xrpusdt-ob500.data.zip",
            CaptureFormat.BYBIT_HISTORY,
            "bybit-linear",
            {("ws", 0): 50},
        ),
        ("kraken/flashbook/live-btc-eth.ndjson", CaptureFormat.NDJSON, "kraken", {("ws", 0): 3000}),
        (
            "coinbase/flashbook/live-btc-eth.ndjson",
            CaptureFormat.NDJSON,
            "coinbase-exchange",
            {("ws", 0): 2456},
        ),
    ],
)
def test_real_captures(
    real_data: Callable[[str], Path],
    relpath: str,
    fmt: CaptureFormat,
    venue: str,
    counts: dict[tuple[str, int], int],
) -> None:
    path = real_data(relpath)
    assert detect_format(path) is fmt
    assert detect_venue(path) == venue
    reader = CaptureReader(path)
    recs = list(reader)
    assert Counter((r.kind, r.conn_id) for r in recs) == counts
    times = [r.recv_ns for r in recs]
    assert times == sorted(times)
    assert (reader.stats.malformed, reader.stats.truncated) == (0, False)
    urls = {r.conn_id: r.url for r in recs if r.kind == "connect"}
    if fmt is CaptureFormat.CRYPTOFEED_JSONL and venue == "bybit":
        assert {c: connection_venue(u) for c, u in urls.items()} == {
            0: "bybit-linear",
            1: "bybit-spot",
        }
