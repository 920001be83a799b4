"""The hftbacktest collector reader: file order, the inline snapshot, malformed lines,
truncated gzip, venue from the depth-update shape."""

from __future__ import annotations

from pathlib import Path

from gateway import capture

from .samples import DIFF
from .samples import SNAPSHOT
from .samples import TICKER
from .samples import records
from .samples import write
from .samples import write_gz


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
    assert capture.detect_format(path) is capture.CaptureFormat.HFTBACKTEST
    recs, stats = records(path)
    assert [(r.recv_ns, r.kind, r.conn_id) for r in recs] == [
        (1000, "ws", 0),
        (1001, "ws", 0),
        (1002, "rest", capture.REST_CONN_ID),
        (1003, "ws", 0),
    ]
    assert recs[0].payload == DIFF % (1, 5)
    assert recs[2].payload == SNAPSHOT
    assert recs[2].url == capture.inline_snapshot_url("BTCUSDT")
    assert capture.rest_symbol(recs[2].url) == "BTCUSDT"
    assert (stats.lines, stats.records, stats.malformed, stats.truncated) == (4, 4, 0, False)
    assert stats.sources == [str(path)]


def test_hftbacktest_snapshot_symbol_from_stream_names_before_the_file_name(
    tmp_path: Path,
) -> None:
    # The file name says ethusdt; the streams say btcusdt: the streams win.
    path = write_gz(tmp_path / "ethusdt_20240808.gz", [b"1 " + DIFF % (1, 2), b"2 " + SNAPSHOT])
    recs, _ = records(path)
    assert capture.rest_symbol(recs[1].url) == "BTCUSDT"


def test_hftbacktest_snapshot_symbol_from_the_file_name(tmp_path: Path) -> None:
    # No stream seen yet: the collector's file name <symbol>_<date>.gz tells the symbol.
    path = write_gz(tmp_path / "ethusdt_20240808.gz", [b"1 " + SNAPSHOT, b"2 " + DIFF % (1, 2)])
    recs, _ = records(path)
    assert capture.rest_symbol(recs[0].url) == "ETHUSDT"
    # Two symbols in the streams: ambiguous, so the file name again.
    other = DIFF.replace(b"btcusdt@", b"bnbusdt@") % (1, 2)
    path = write_gz(
        tmp_path / "ethusdt_20240809.gz", [b"1 " + DIFF % (1, 2), b"2 " + other, b"3 " + SNAPSHOT]
    )
    recs, _ = records(path)
    assert capture.rest_symbol(recs[2].url) == "ETHUSDT"


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
    assert capture.detect_format(path) is capture.CaptureFormat.HFTBACKTEST
    recs, _ = records(path)
    assert [(r.recv_ns, r.kind) for r in recs] == [(5, "ws"), (6, "rest")]
    assert capture.rest_symbol(recs[1].url) == "BTCUSDT"


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


def test_detect_venue_of_hftbacktest_from_the_depth_update_shape(tmp_path: Path) -> None:
    spot = write_gz(tmp_path / "a.gz", [b"1 " + TICKER, b"2 " + DIFF % (1, 2)])
    assert capture.detect_venue(spot) == "binance"
    usdm = DIFF.replace(b'"U":', b'"pu":0,"U":')
    assert (
        capture.detect_venue(write_gz(tmp_path / "b.gz", [b"1 " + usdm % (1, 2)])) == "binance-usdm"
    )
    assert capture.detect_venue(write_gz(tmp_path / "c.gz", [b"1 " + TICKER])) is None
