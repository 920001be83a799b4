"""cryptofeed's raw capture (format ``cryptofeed-raw``).

``NAME.ws.N.M`` with the REST responses in ``NAME.http.N.M`` beside it. The ws file has
``<url> <-> <connect_epoch_s>`` at each (re)connect, then ``<recv_epoch_s>: <frame>`` lines
(and ``<url> <- <epoch_s>: <sent>`` lines, which are skipped). An http line is
``<url> -> <recv_epoch_s>: <body>``. The files are merged on receive time. cryptofeed
records no close: a new connect line ends the previous connection.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from operator import attrgetter
from pathlib import Path
from typing import Final

from gateway.capture import files
from gateway.capture.files import Probe
from gateway.capture.records import CaptureFormat
from gateway.capture.records import CaptureRecord
from gateway.capture.records import ReadStats
from gateway.capture.records import decimal_seconds_to_ns
from gateway.capture.records import rest_record
from gateway.capture.spec import FormatSpec
from gateway.capture.venues import cryptofeed_venue
from gateway.capture.venues import venue_from_url

_EXPECTED: Final = (
    "a cryptofeed raw capture NAME.ws.N.M (first line '<wss://url> <-> <connect_epoch_s>', "
    "then '<recv_epoch_s>: <frame>')"
)

_CONNECT: Final = re.compile(rb"wss?://\S+ <-> \d+(?:\.\d+)?\s*")
_FRAME: Final = re.compile(rb"\d+(?:\.\d+)?: ")
_HTTP: Final = re.compile(rb"https?://\S+ -> \d+(?:\.\d+)?: ")
_SENT: Final = re.compile(rb"wss?://\S+ <- \d+(?:\.\d+)?: ")
_CONFIG: Final = b"configuration: "
_WS_NAME: Final = re.compile(r"(?P<name>.+)\.ws\.(?P<n>\d+)\.(?P<m>\d+)")


def detect(probe: Probe) -> bool:
    first = probe.first
    if _CONNECT.fullmatch(first) or _FRAME.match(first):
        return True
    if _HTTP.match(first):
        raise probe.refused(
            "this is the REST half (NAME.http.N.M) of a cryptofeed raw capture; "
            "pass the NAME.ws.N.M file beside it"
        )
    return False


def sources(ws_path: Path) -> list[Path]:
    """The ws file, then the ``NAME.http.N.M`` files beside it in (N, M) order."""
    m = _WS_NAME.fullmatch(ws_path.name)
    if m is None:
        return [ws_path]
    pattern = re.compile(re.escape(m.group("name")) + r"\.http\.(\d+)\.(\d+)")
    found: list[tuple[int, int, Path]] = []
    for candidate in ws_path.parent.iterdir():
        hm = pattern.fullmatch(candidate.name)
        if hm is not None and candidate.is_file():
            found.append((int(hm.group(1)), int(hm.group(2)), candidate))
    return [ws_path, *(p for _, _, p in sorted(found))]


def read(path: Path, sources: list[Path], stats: ReadStats) -> Iterator[CaptureRecord]:
    streams = [_read_ws(path, stats)]
    streams += [_read_http(p, stats) for p in sources[1:]]
    # Each file is in receive order; merging keeps each file's own order even where the
    # wall clock stepped back, and puts the ws file first on equal times.
    return heapq.merge(*streams, key=attrgetter("recv_ns"))


def _read_ws(path: Path, stats: ReadStats) -> Iterator[CaptureRecord]:
    conn_id = -1
    url = ""
    for lineno, line in files.lines(path, stats):
        if _FRAME.match(line):
            stamp, _, frame = line.partition(b": ")
            if conn_id < 0:
                conn_id = 0  # a rotated file continues a connection opened in an earlier one
            yield CaptureRecord(decimal_seconds_to_ns(stamp), conn_id, "ws", url, frame)
        elif _CONNECT.fullmatch(line):
            target, _, stamp = line.partition(b" <-> ")
            recv_ns = decimal_seconds_to_ns(stamp.strip())
            if conn_id >= 0:
                yield CaptureRecord(recv_ns, conn_id, "disconnect", url, b"")
            conn_id += 1
            url = target.decode("utf-8", "replace")
            yield CaptureRecord(recv_ns, conn_id, "connect", url, b"")
        elif _SENT.match(line) or line.startswith(_CONFIG):
            stats.skipped += 1
        else:
            stats.bad_line(path, lineno, "not '<recv_epoch_s>: <frame>' nor a connect line", line)


def _read_http(path: Path, stats: ReadStats) -> Iterator[CaptureRecord]:
    for lineno, line in files.lines(path, stats):
        if not _HTTP.match(line):
            stats.bad_line(path, lineno, "not '<url> -> <recv_epoch_s>: <body>'", line)
            continue
        url, _, rest = line.partition(b" -> ")
        stamp, _, body = rest.partition(b": ")
        yield rest_record(decimal_seconds_to_ns(stamp), url.decode("utf-8", "replace"), body)


def venue(path: Path) -> str | None:
    """The venue of the host of the first connection URL that names one, else the one of
    the feed NAME of the file."""
    for line in files.head(path):
        if _CONNECT.fullmatch(line):
            found = venue_from_url(line.partition(b" <-> ")[0].decode("utf-8", "replace"))
            if found is not None:
                return found
    m = _WS_NAME.fullmatch(path.name)
    return cryptofeed_venue(m.group("name")) if m else None


SPEC: Final = FormatSpec(
    CaptureFormat.CRYPTOFEED_RAW,
    _EXPECTED,
    detect,
    read,
    venue,
    sources=sources,
    preamble=(_CONFIG,),
)
