"""Consecutive captures read as one session: records in file order, ids kept, stats added
up, each boundary's receive times, and files of different formats refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.capture import CaptureFormatError
from gateway.capture.chain import ChainedReader
from tests.gateway.capture.samples import DIFF
from tests.gateway.capture.samples import SNAPSHOT
from tests.gateway.capture.samples import write
from tests.gateway.capture.samples import write_gz


def _hft(path: Path, first_ns: int, ids: range, snapshot: bool = False) -> Path:
    lines = [b"%d " % (first_ns - 1) + SNAPSHOT] if snapshot else []
    lines += [b"%d " % (first_ns + i) + DIFF % (u, u) for i, u in enumerate(ids)]
    return write_gz(path, lines)


def test_files_are_read_in_order_as_one_session(tmp_path: Path) -> None:
    a = _hft(tmp_path / "btcusdt_20240808.gz", 100, range(11, 14), snapshot=True)
    b = _hft(tmp_path / "btcusdt_20240809.gz", 200, range(14, 16))
    reader = ChainedReader([a, b])
    got = list(reader)
    assert [r.kind for r in got] == ["rest", "ws", "ws", "ws", "ws", "ws"]
    assert {r.conn_id for r in got if r.kind == "ws"} == {0}  # file b continues file a
    assert [r.recv_ns for r in got][-2:] == [200, 201]
    assert reader.stats.records == 6 and reader.stats.lines == 6
    assert reader.stats.sources == [str(a), str(b)]
    [boundary] = reader.boundaries
    assert (boundary.after, boundary.before) == (str(a), str(b))
    assert (boundary.records, boundary.last_ns, boundary.first_ns) == (4, 102, 200)
    assert not boundary.out_of_order
    # Iterating again reads afresh.
    assert len(list(reader)) == 6 and len(reader.boundaries) == 1


def test_a_later_file_starting_before_the_earlier_one_ends_is_out_of_order(
    tmp_path: Path,
) -> None:
    a = _hft(tmp_path / "btcusdt_20240808.gz", 100, range(11, 14), snapshot=True)
    b = _hft(tmp_path / "btcusdt_20240809.gz", 200, range(14, 16))
    reader = ChainedReader([b, a])
    list(reader)
    assert reader.boundaries[0].out_of_order
    assert reader.boundaries[0].name == "btcusdt_20240809.gz | btcusdt_20240808.gz"


def test_one_file_is_the_plain_reader(tmp_path: Path) -> None:
    a = _hft(tmp_path / "btcusdt_20240808.gz", 100, range(11, 14), snapshot=True)
    reader = ChainedReader([a])
    assert len(list(reader)) == 4 and reader.boundaries == []
    with pytest.raises(ValueError):
        ChainedReader([])


def test_files_of_different_formats_are_refused(tmp_path: Path) -> None:
    a = _hft(tmp_path / "btcusdt_20240808.gz", 100, range(11, 14), snapshot=True)
    b = write(tmp_path / "frames.ndjson", [DIFF % (14, 14)])
    with pytest.raises(CaptureFormatError, match=r"frames\.ndjson.*share a format"):
        ChainedReader([a, b])
