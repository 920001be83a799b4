"""One raw venue frame per line and nothing else (format ``ndjson``; the flashbook
fixtures).

No time is recorded: ``recv_ns`` is the 0-based line index, which gives the order and
nothing more. One connection (0), URL ``""``. Told apart from other JSON by the shape of its
frames (:func:`gateway.capture.venues.venue_from_frame`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

from gateway.capture import files
from gateway.capture.files import Probe
from gateway.capture.records import CaptureFormat
from gateway.capture.records import CaptureRecord
from gateway.capture.records import ReadStats
from gateway.capture.spec import FormatSpec
from gateway.capture.venues import first_frame_venue
from gateway.capture.venues import venue_from_frame

_EXPECTED: Final = "NDJSON of raw venue frames (one per line)"


def detect(probe: Probe) -> bool:
    """The first line is JSON and a line of the head is a frame of a known venue."""
    return probe.first_is_json() and any(venue_from_frame(line) for line in probe.lines)


def read(path: Path, sources: list[Path], stats: ReadStats) -> Iterator[CaptureRecord]:
    for lineno, line in files.lines(path, stats):
        if line.lstrip()[:1] not in (b"{", b"["):
            stats.bad_line(path, lineno, "not a JSON frame", line)
            continue
        # No time is recorded: the line index keeps the order, and says nothing more.
        yield CaptureRecord(lineno - 1, 0, "ws", "", line)


def venue(path: Path) -> str | None:
    """The venue of the first frame (of the first lines) whose shape tells one."""
    return first_frame_venue(files.first_lines(path))


SPEC: Final = FormatSpec(CaptureFormat.NDJSON, _EXPECTED, detect, read, venue)
