"""Consecutive captures of the same connections read as one session (a collector's daily
files: only the first holds the REST snapshot, the id chain runs on across the boundary).

Pure: files in, records out. The files' records are read in the order the files are given,
each file by its own :class:`~gateway.capture.registry.CaptureReader`, keeping their
recorded connection ids: file ``k + 1`` continues the connections of file ``k``. Each
boundary between two files is a :class:`Boundary`; whether the venue's id chain runs on
across it is the book's business (``verify`` checks it), whether the receive times do is
told here (:attr:`Boundary.out_of_order`).
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.capture.records import MAX_EXAMPLES
from gateway.capture.records import CaptureFormat
from gateway.capture.records import CaptureFormatError
from gateway.capture.records import CaptureRecord
from gateway.capture.records import ReadStats
from gateway.capture.registry import CaptureReader

__all__ = ["Boundary", "ChainedReader"]


@dataclass
class Boundary:
    """Where file ``after`` ends and file ``before`` starts; the receive times on each
    side, None while a side holds no record (yet)."""

    after: str
    before: str
    #: Records read before the boundary.
    records: int
    last_ns: int | None = None
    first_ns: int | None = None

    @property
    def out_of_order(self) -> bool:
        """The later file starts before the earlier one ends: given in the wrong order, or
        not consecutive captures of one session."""
        return (
            self.last_ns is not None and self.first_ns is not None and self.first_ns < self.last_ns
        )

    @property
    def name(self) -> str:
        return f"{Path(self.after).name} | {Path(self.before).name}"


class ChainedReader:
    """Iterates the records of ``paths`` as one session, file after file; ``stats`` adds up
    the files' :class:`ReadStats` and ``boundaries`` fill as the files are read.

    Every file must be of one format (``fmt``, else the first file's); construction raises
    CaptureFormatError naming the file that is not. Iteration may be repeated.
    """

    def __init__(self, paths: Sequence[Path], fmt: CaptureFormat | None = None) -> None:
        if not paths:
            raise ValueError("a session needs at least one file")
        self.paths = list(paths)
        first = CaptureReader(self.paths[0], fmt)
        self.format = first.format
        self.readers = [first]
        for path in self.paths[1:]:
            reader = CaptureReader(path)
            if reader.format is not self.format:
                raise CaptureFormatError(
                    f"{path}: a {reader.format} capture, but {self.paths[0]} is "
                    f"{self.format}: the files of one session share a format"
                )
            self.readers.append(reader)
        self.stats = ReadStats()
        self.boundaries: list[Boundary] = []

    def __iter__(self) -> Iterator[CaptureRecord]:
        self.stats = stats = ReadStats()
        self.boundaries = []
        last_ns: int | None = None
        for index, reader in enumerate(self.readers):
            boundary: Boundary | None = None
            if index:
                boundary = Boundary(
                    str(self.paths[index - 1]), str(reader.path), stats.records, last_ns
                )
                self.boundaries.append(boundary)
            try:
                for record in reader:
                    if boundary is not None and boundary.first_ns is None:
                        boundary.first_ns = record.recv_ns
                    last_ns = record.recv_ns
                    stats.records += 1
                    yield record
            finally:
                _add(stats, reader.stats)


def _add(total: ReadStats, part: ReadStats) -> None:
    total.sources.extend(part.sources)
    total.lines += part.lines
    total.skipped += part.skipped
    total.malformed += part.malformed
    total.examples.extend(part.examples[: max(0, MAX_EXAMPLES - len(total.examples))])
    total.truncated = total.truncated or part.truncated
    total.dropped += part.dropped
