"""The hftbacktest collector's capture (format ``hftbacktest``).

One file per symbol named ``<symbol>_<YYYYMMDD>.gz``, gzip text (plain text is read too).
Each line is ``<recv_ns> <frame>``. The REST depth snapshot sits inline as a JSON body
without a ``stream`` key; it becomes a ``rest`` record (:func:`inline_snapshot_url` of the
one symbol of the streams, else of the file name). No connection boundaries are recorded:
every frame is on connection 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from gateway.capture import files
from gateway.capture.files import Probe
from gateway.capture.records import CaptureFormat
from gateway.capture.records import CaptureRecord
from gateway.capture.records import ReadStats
from gateway.capture.records import inline_snapshot_url
from gateway.capture.records import rest_record
from gateway.capture.spec import FormatSpec
from gateway.capture.venues import first_frame_venue

_EXPECTED: Final = "an hftbacktest collector file (lines '<recv_ns> <frame>', usually gzip)"

_LINE: Final = re.compile(rb"\d{1,20} [{\[]")
_NAME: Final = re.compile(r"(?P<symbol>[A-Za-z0-9_]+)_\d{8}(?:\.gz)?")
_STREAM_SYMBOL: Final = re.compile(rb'\{"stream":"([^"@]+)@')


def detect(probe: Probe) -> bool:
    return bool(_LINE.match(probe.first))


def read(path: Path, sources: list[Path], stats: ReadStats) -> Iterator[CaptureRecord]:
    name = _NAME.fullmatch(path.name)
    file_symbol = name.group("symbol").upper() if name else None
    # The symbol of the inline snapshot: the one symbol of the streams seen so far.
    stream_symbol: bytes | None = None
    many_symbols = False
    for lineno, line in files.lines(path, stats):
        stamp, sep, frame = line.partition(b" ")
        if not sep or not stamp.isdigit() or not frame:
            stats.bad_line(path, lineno, "not '<recv_ns> <frame>'", line)
            continue
        recv_ns = int(stamp)
        m = _STREAM_SYMBOL.match(frame)
        if m is not None or b'"stream":' in frame:
            if m is not None and not many_symbols:
                if stream_symbol is None:
                    stream_symbol = m.group(1)
                elif m.group(1) != stream_symbol:
                    many_symbols = True
            yield CaptureRecord(recv_ns, 0, "ws", "", frame)
            continue
        if stream_symbol is not None and not many_symbols:
            symbol: str | None = stream_symbol.decode("ascii", "replace").upper()
        else:
            symbol = file_symbol
        if symbol is None:
            stats.bad_line(path, lineno, "REST snapshot of unknown symbol", line)
            continue
        yield rest_record(recv_ns, inline_snapshot_url(symbol), frame)


def venue(path: Path) -> str | None:
    """The venue of the first frame of the first lines whose shape tells one (Binance
    spot, USD-M or COIN-M depth updates)."""
    return first_frame_venue(line.partition(b" ")[2] for line in files.first_lines(path))


SPEC: Final = FormatSpec(CaptureFormat.HFTBACKTEST, _EXPECTED, detect, read, venue)
