"""``verify A B``: a real session split into files verifies to the whole file's report; a
later file alone never syncs and says why; wrong order or a hole is a gap at the boundary."""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.tools.verify import VerifyReport
from gateway.tools.verify import verify_capture

RealData = Callable[[str], Path]

HFT = "binance/hftbacktest/spot/btcusdt_20240808.gz"


def _split(source: Path, tmp_path: Path, cuts: list[int]) -> list[Path]:
    """The file's lines cut before each line index in ``cuts``, as daily-file names."""
    with gzip.open(source, "rb") as f:
        lines = f.readlines()
    bounds = [0, *cuts, len(lines)]
    paths = []
    for day, (start, end) in enumerate(itertools.pairwise(bounds), 8):
        path = tmp_path / f"btcusdt_202408{day:02d}.gz"
        with gzip.open(path, "wb", compresslevel=1) as f:  # level 9 takes seconds
            f.writelines(lines[start:end])
        paths.append(path)
    return paths


def _comparable(report: VerifyReport) -> tuple[object, ...]:
    return (
        report.symbols,
        report.records,
        report.bad_frames,
        report.connection_gaps,
        report.malformed_lines,
        report.truncated,
        report.venue,
        report.format,
    )


@pytest.fixture(scope="module")
def whole(real_data: RealData) -> VerifyReport:
    report = verify_capture(real_data(HFT), depth=5)
    assert report.ok and report.boundaries == [] and report.notes == []
    return report


@pytest.mark.parametrize(
    "cuts",
    [[3], [8], [9], [20_000], [41_248], [5, 20_000], [100, 7_777, 30_001]],
    ids=str,
)
def test_a_session_split_anywhere_verifies_as_the_whole_file(
    real_data: RealData, tmp_path: Path, whole: VerifyReport, cuts: list[int]
) -> None:
    paths = _split(real_data(HFT), tmp_path, cuts)
    report = verify_capture(paths, depth=5)
    assert _comparable(report) == _comparable(whole)
    assert report.ok
    assert report.files == [str(p) for p in paths]
    assert [(b.after, b.before) for b in report.boundaries] == [
        (str(a), str(b)) for a, b in itertools.pairwise(paths)
    ]
    assert all(b.ok for b in report.boundaries)


def test_a_later_file_alone_never_syncs_and_says_why(real_data: RealData, tmp_path: Path) -> None:
    _, later = _split(real_data(HFT), tmp_path, [20_000])
    report = verify_capture(later)
    assert not report.ok
    assert [s.synced for s in report.symbols.values()] == [False]
    assert len(report.notes) == 1 and "no depth snapshot" in report.notes[0]


def test_files_in_the_wrong_order_are_a_gap_at_the_boundary(
    real_data: RealData, tmp_path: Path
) -> None:
    first, later = _split(real_data(HFT), tmp_path, [20_000])
    report = verify_capture([later, first])
    assert not report.ok
    [boundary] = report.boundaries
    assert (boundary.after, boundary.before) == (str(later), str(first))
    assert boundary.out_of_order


def test_a_missing_file_is_a_gap_at_the_boundary(real_data: RealData, tmp_path: Path) -> None:
    first, _hole, last = _split(real_data(HFT), tmp_path, [20_000, 25_000])
    report = verify_capture([first, last])
    assert not report.ok
    [boundary] = report.boundaries
    assert (boundary.after, boundary.before) == (str(first), str(last))
    assert not boundary.out_of_order
    assert boundary.gaps == ["binance:BTCUSDT"]
    # The gap is the book's own, counted once.
    assert report.symbols["binance:BTCUSDT"].gaps == 1
