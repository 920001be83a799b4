"""Capture readers on small synthetic files: both formats, exact times, merge order,
malformed lines, detection errors, venue detection, and purity of the module."""

from __future__ import annotations

import ast
import gzip
from pathlib import Path

import msgspec
import pytest

import gateway.capture_formats as cf
from gateway.capture_formats import (
    REST_CONN_ID,
    CaptureFormat,
    CaptureFormatError,
    CaptureReader,
    CaptureRecord,
    decimal_seconds_to_ns,
    detect_format,
    detect_venue,
    inline_snapshot_url,
    rest_symbol,
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
