"""cryptofeed's "format 2" capture (format ``cryptofeed-jsonl``).

``NAME.jsonl``, gzip or plain (the zstd original must be decompressed first). One JSON
record per line: ``t`` is ``header``, ``connect`` (``addr``), ``send``, ``recv`` (``data``,
or ``b64`` for binary frames) or ``http`` (``url``, ``data``); ``conn`` names the connection
(``BYBIT.ws.2``) and ``ts`` is the receive time in epoch seconds. Each recorded connection
gets an integer ``conn_id`` (in order of first appearance; a second ``connect`` on the same
``conn`` is a reconnect: a ``disconnect`` of the old id and a new id); http records are
``rest`` records with their URL; header and send records are skipped. Records are yielded in
``ts`` order, each connection's own order kept: a file already in time order is read in one
pass; one whose connections were written one after another (files converted from
cryptofeed's format 1, like the sample data) is read once per connection, the passes merged.
"""

from __future__ import annotations

import binascii
import heapq
import re
from collections.abc import Iterator
from operator import attrgetter
from pathlib import Path
from typing import Final

import msgspec

from gateway.capture import files
from gateway.capture.files import Probe
from gateway.capture.records import CaptureFormat
from gateway.capture.records import CaptureRecord
from gateway.capture.records import ReadStats
from gateway.capture.records import json_seconds_to_ns
from gateway.capture.records import rest_record
from gateway.capture.spec import FormatSpec
from gateway.capture.venues import agreed_venue
from gateway.capture.venues import connection_venue
from gateway.capture.venues import cryptofeed_venue
from gateway.capture.venues import venue_from_url

_EXPECTED: Final = (
    'a cryptofeed format-2 JSONL capture (records with "t": header/connect/send/recv/http)'
)

#: The kinds of records, and the pattern that finds one in a line prefix (cryptofeed's own
#: records put ``t`` after ``conn`` and ``ts``).
_KINDS: Final = frozenset({"header", "http", "connect", "send", "recv"})
_KIND: Final = re.compile(rb'"t"\s*:\s*"(header|http|connect|send|recv)"')
_FORMAT: Final = 2
#: Bytes of a line cut at the detection limit that its kind is searched in.
_KIND_PREFIX: Final = 4096


class _Probe(msgspec.Struct):
    t: str
    format: int | None = None


_probe_decoder: Final = msgspec.json.Decoder(_Probe)


def detect(probe: Probe) -> bool:
    """True when the first line is a format-2 record: a whole line must decode with a known
    ``t``; a line cut at the detection limit is judged by its prefix. A header of another
    format version is refused (CaptureFormatError)."""
    line = probe.first
    if not line.lstrip().startswith(b"{"):
        return False
    if not probe.first_whole:
        return _KIND.search(line[:_KIND_PREFIX]) is not None
    try:
        record = _probe_decoder.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False
    if record.t not in _KINDS:
        return False
    if record.t == "header" and record.format != _FORMAT:
        raise probe.refused(
            f"cryptofeed capture format {record.format!r} is not supported (format {_FORMAT} is)"
        )
    return True


class _Record(msgspec.Struct):
    t: str
    conn: str | None = None
    ts: msgspec.Raw = msgspec.Raw()
    data: str | None = None
    b64: str | None = None
    url: str | None = None
    addr: str | None = None
    exchange: str | None = None


_decoder: Final = msgspec.json.Decoder(_Record)


class _Line(msgspec.Struct, frozen=True, gc=False):
    """One format-2 record, checked: ``recv_ns`` is -1 for header records."""

    kind: str
    conn: str
    recv_ns: int
    url: str
    payload: bytes


def _parse_line(line: bytes) -> _Line:
    """The record of one line; ValueError (with the reason) when it is not a valid one."""
    try:
        r = _decoder.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a format-2 record ({exc})") from None
    if r.t not in _KINDS:
        raise ValueError(f"unknown record type {r.t!r}")
    if r.t == "header":
        return _Line("header", "", -1, "", b"")
    if not r.ts:
        raise ValueError(f"{r.t} record without ts")
    recv_ns = json_seconds_to_ns(bytes(r.ts))
    conn = r.conn or ""
    if r.t in ("recv", "connect", "send") and not conn:
        raise ValueError(f"{r.t} record without conn")
    if r.t == "connect":
        if not r.addr:
            raise ValueError("connect record without addr")
        return _Line("connect", conn, recv_ns, r.addr, b"")
    if r.t == "send":
        return _Line("send", conn, recv_ns, r.addr or "", b"")
    if r.data is not None:
        try:
            payload = r.data.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("data is not valid text") from None
    elif r.b64 is not None:
        try:
            payload = binascii.a2b_base64(r.b64.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError):
            raise ValueError("b64 is not base64") from None
    else:
        raise ValueError(f"{r.t} record without data")
    if r.t == "http":
        if not r.url:
            raise ValueError("http record without url")
        return _Line("http", conn, recv_ns, r.url, payload)
    return _Line("recv", conn, recv_ns, "", payload)


class _Scan(msgspec.Struct):
    #: Lanes (``conn`` values, ``""`` for records without one) in order of first appearance.
    lanes: list[str]
    #: The ``conn_id`` of each connection of each ws lane: a reconnect adds one.
    conn_ids: dict[str, list[int]]
    #: True when the records' times never step back in file order.
    in_order: bool


def _scan(path: Path, stats: ReadStats) -> _Scan:
    """One pass over the file: counts its lines, checks each record, numbers the
    connections and tells whether the file is in time order."""
    lanes: dict[str, None] = {}
    conn_ids: dict[str, list[int]] = {}
    opened: set[str] = set()
    next_id = 0
    latest = -1
    in_order = True
    for lineno, line in files.lines(path, stats):
        try:
            rec = _parse_line(line)
        except ValueError as exc:
            stats.bad_line(path, lineno, str(exc), line)
            continue
        if rec.kind in ("header", "send"):
            stats.skipped += 1
            continue
        lanes.setdefault(rec.conn)
        if rec.recv_ns < latest:
            in_order = False
        latest = max(latest, rec.recv_ns)
        if rec.kind == "http":
            continue
        ids = conn_ids.setdefault(rec.conn, [])
        if not ids or (rec.kind == "connect" and rec.conn in opened):
            ids.append(next_id)
            next_id += 1
        opened.add(rec.conn)
    return _Scan(list(lanes), conn_ids, in_order)


def _records(
    path: Path, conn_ids: dict[str, list[int]], lane: str | None
) -> Iterator[CaptureRecord]:
    """The records of the file, or of one lane of it; lines are not counted (the scan did)
    and invalid ones are skipped (the scan counted them)."""
    needle = msgspec.json.encode(lane) if lane else None
    cursor: dict[str, int] = {}
    urls: dict[str, str] = {}
    opened: set[str] = set()
    for _, line in files.lines(path, None):
        if needle is not None and needle not in line:
            continue
        try:
            rec = _parse_line(line)
        except ValueError:
            continue
        if rec.kind == "header" or (lane is not None and rec.conn != lane):
            continue
        if rec.kind == "http":
            yield rest_record(rec.recv_ns, rec.url, rec.payload)
            continue
        ids = conn_ids.get(rec.conn)
        if not ids:
            continue
        conn = rec.conn
        if rec.kind == "send":
            if rec.url and not urls.get(conn):
                urls[conn] = rec.url
            continue
        if rec.kind == "connect" and conn in opened and cursor[conn] + 1 < len(ids):
            yield CaptureRecord(
                rec.recv_ns, ids[cursor[conn]], "disconnect", urls.get(conn, ""), b""
            )
            cursor[conn] += 1
        cursor.setdefault(conn, 0)
        opened.add(conn)
        conn_id = ids[cursor[conn]]
        if rec.kind == "connect":
            urls[conn] = rec.url
            yield CaptureRecord(rec.recv_ns, conn_id, "connect", rec.url, b"")
        else:
            yield CaptureRecord(rec.recv_ns, conn_id, "ws", urls.get(conn, ""), rec.payload)


def read(path: Path, sources: list[Path], stats: ReadStats) -> Iterator[CaptureRecord]:
    scan = _scan(path, stats)
    if scan.in_order or len(scan.lanes) < 2:
        yield from _records(path, scan.conn_ids, None)
        return
    # The connections were written one after another: read each on its own and merge them
    # on time (each keeps its own order; equal times go in order of first appearance).
    lanes = [_records(path, scan.conn_ids, lane) for lane in scan.lanes]
    yield from heapq.merge(*lanes, key=attrgetter("recv_ns"))


def venue(path: Path) -> str | None:
    """The venue of every connection URL (:func:`connection_venue`; the whole file is
    scanned for them) when they agree; when they differ (a Bybit capture with spot and
    linear connections) the exchange they share (``bybit``), and the venue of each record is
    then ``connection_venue(record.url)``; without connect records, the header's exchange."""
    exchange: str | None = None
    venues: dict[str, str] = {}
    for _, line in files.lines(path, None):
        if b'"header"' not in line and b'"connect"' not in line:
            continue
        try:
            rec = _decoder.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError):
            continue
        if rec.t == "header" and rec.exchange and exchange is None:
            exchange = rec.exchange
        elif rec.t == "connect" and rec.addr:
            found = connection_venue(rec.addr)
            if found is not None:
                venues.setdefault(found, venue_from_url(rec.addr) or found)
    if venues:
        return agreed_venue(venues)
    return cryptofeed_venue(exchange) if exchange else None


SPEC: Final = FormatSpec(CaptureFormat.CRYPTOFEED_JSONL, _EXPECTED, detect, read, venue)
