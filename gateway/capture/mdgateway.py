"""The project's own capture (format ``mdgateway``; the codec is :mod:`gateway.capture.codec`).

A directory of rotated gzip files ``mdgw-<session>-<index>.gz``. Given the directory, every
session in it is read, oldest first (connection ids of a later session are moved past those
of the earlier ones, and connections a session left open are closed at its last record);
given one file, every file of its session. ``ws`` records get their connection's URL; ``gap``
lines (records the writer dropped) are counted in ``ReadStats.dropped``; a file cut inside a
gzip member is read up to its last complete member and sets ``ReadStats.truncated``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

from gateway.capture import codec as mdgw
from gateway.capture import files
from gateway.capture.files import Probe
from gateway.capture.records import MAX_EXAMPLES
from gateway.capture.records import CaptureFormat
from gateway.capture.records import CaptureRecord
from gateway.capture.records import ReadStats
from gateway.capture.spec import FormatSpec
from gateway.capture.venues import agreed_venue
from gateway.capture.venues import connection_venue
from gateway.capture.venues import exchange_of
from gateway.capture.venues import venue_from_url

_EXPECTED: Final = "an mdgateway capture directory (mdgw-<session>-<n>.gz files)"

#: Lines scanned for connect records to tell the venue of a capture.
_VENUE_LINES: Final = 200_000


def detect(probe: Probe) -> bool:
    """A directory holding capture files, or a gzip file whose first member starts with a
    header."""
    if probe.is_dir:
        return bool(mdgw.session_files(probe.path))
    return probe.magic[:2] == files.GZIP_MAGIC and _starts_with_header(probe.path)


def _starts_with_header(path: Path) -> bool:
    """True when the file's first complete gzip member starts with an mdgateway header."""
    reader = mdgw.MemberReader()
    try:
        for line in mdgw.iter_lines(path, reader):
            return mdgw.looks_like_header(line)
    except OSError:
        return False
    return False


def read(path: Path, sources: list[Path], stats: ReadStats) -> Iterator[CaptureRecord]:
    offset = 0
    max_id = -1
    last_ns = 0
    session: str | None = None
    urls: dict[int, str] = {}
    for file in sources:
        parsed = mdgw.parse_name(file.name)
        name = parsed[0] if parsed else file.name
        if session is not None and name != session:
            # A new run of the gateway: the connections of the last one are over.
            for conn_id, url in urls.items():
                yield CaptureRecord(last_ns, conn_id, "disconnect", url, b"")
            urls.clear()
            offset = max_id + 1
        session = name
        reader = mdgw.MemberReader()
        for lineno, line in enumerate(mdgw.iter_lines(file, reader), 1):
            if not line.strip():
                continue
            stats.lines += 1
            try:
                rec = mdgw.decode_line(line)
            except ValueError as exc:
                stats.bad_line(file, lineno, str(exc), line)
                continue
            last_ns = rec.recv_ns
            kind = rec.kind
            if kind == "header":
                stats.skipped += 1
                continue
            if kind == "gap":
                dropped = mdgw.gap_dropped(rec.payload)
                stats.dropped += dropped
                if len(stats.examples) < MAX_EXAMPLES:
                    stats.examples.append(
                        f"{file.name}:{lineno}: the writer dropped {dropped} records here"
                    )
                continue
            conn_id = rec.conn_id + offset if rec.conn_id >= 0 else rec.conn_id
            max_id = max(max_id, conn_id)
            if kind == "connect":
                urls[conn_id] = rec.url
                # The payload names the venue: loopback and simulated URLs do not.
                yield CaptureRecord(rec.recv_ns, conn_id, "connect", rec.url, rec.payload)
            elif kind == "disconnect":
                url = urls.pop(conn_id, rec.url)
                yield CaptureRecord(rec.recv_ns, conn_id, "disconnect", rec.url or url, b"")
            elif kind == "ws":
                yield CaptureRecord(
                    rec.recv_ns, conn_id, "ws", rec.url or urls.get(conn_id, ""), rec.payload
                )
            else:
                yield CaptureRecord(rec.recv_ns, rec.conn_id, "rest", rec.url, rec.payload)
        if reader.truncated:
            stats.truncated = True
            stats.examples.append(f"{file.name}: {reader.reason}")


def venue(path: Path) -> str | None:
    """The venue of every connection URL, else the venue name its connect line records
    (loopback and simulated endpoints), when they agree; the exchange they share where they
    are markets of one (Bybit spot and linear)."""
    venues: dict[str, str] = {}
    seen = 0
    for file in mdgw.session_files(path):
        reader = mdgw.MemberReader()
        for line in mdgw.iter_lines(file, reader):
            seen += 1
            if seen > _VENUE_LINES:
                break
            if b" connect " not in line[:40]:
                continue
            try:
                rec = mdgw.decode_line(line)
            except ValueError:
                continue
            found = connection_venue(rec.url)
            if found is not None:
                venues.setdefault(found, venue_from_url(rec.url) or found)
                continue
            named = mdgw.connect_venue(rec.payload)
            if named:
                venues.setdefault(named, exchange_of(named))
    return agreed_venue(venues)


SPEC: Final = FormatSpec(
    CaptureFormat.MDGATEWAY,
    _EXPECTED,
    detect,
    read,
    venue,
    sources=mdgw.session_files,
    by_bytes=True,
)
