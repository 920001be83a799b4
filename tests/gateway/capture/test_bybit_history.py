"""Bybit's historical order-book download: zipped or not, its venue, other archives refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.capture import CaptureFormat
from gateway.capture import CaptureFormatError
from gateway.capture import CaptureReader
from gateway.capture import detect_format
from gateway.capture import detect_venue

from .samples import ob_line
from .samples import records
from .samples import write
from .samples import write_zip


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
