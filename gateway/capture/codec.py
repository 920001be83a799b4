"""The project's own capture format (``docs/capture-format.md``): the pure codec.

Pure: bytes and files in, bytes and records out; no asyncio, no sockets. The asyncio
writer that feeds :class:`CaptureFileWriter` off the hot path is
:mod:`gateway.io.capture_writer`.

A capture is a directory of gzip files, one *session* (one run of the gateway) split into
numbered files by size and time: ``mdgw-<session>-<index>.gz``, ``<session>`` the UTC start
time (``20240131T120000.123456Z``), ``<index>`` six digits from 000000. Names sort in
recorded order. Each file is a sequence of complete gzip members (one per flush), so a file
cut anywhere (kill -9) reads up to its last complete member. Decompressed, each file is
lines::

    <recv_ns:19 digits> <kind> <conn_id> <enc> <url> <payload>\\n

``kind`` is ``ws``, ``rest``, ``connect``, ``disconnect``, ``gap`` or ``header``; ``enc`` is
``t`` (payload bytes as they are: they hold no ``\\n`` nor ``\\r``) or ``b`` (base64);
``url`` is percent-encoded (empty for none). The first line of every file is a ``header``.
"""

from __future__ import annotations

import base64
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import BinaryIO
from typing import Final
from typing import Literal
from urllib.parse import quote
from urllib.parse import unquote

import msgspec

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CaptureFileWriter",
    "Line",
    "LineKind",
    "MemberReader",
    "decode_line",
    "encode_line",
    "file_name",
    "gzip_member",
    "is_capture_file",
    "looks_like_header",
    "parse_name",
    "session_files",
]

FORMAT_NAME: Final = "mdgateway-capture"
FORMAT_VERSION: Final = 1

LineKind = Literal["ws", "rest", "connect", "disconnect", "gap", "header"]
_KINDS: Final = frozenset({"ws", "rest", "connect", "disconnect", "gap", "header"})
#: Width of the timestamp prefix: nanoseconds since the epoch up to the year 2286.
TS_WIDTH: Final = 19
_MAX_TS: Final = 10**TS_WIDTH - 1
#: Characters of a URL written as they are; everything else is percent-encoded.
_URL_SAFE: Final = "!#$&'()*+,/:;=?@[]~"
_NAME: Final = re.compile(r"mdgw-(?P<session>\d{8}T\d{6}\.\d{6}Z)-(?P<index>\d{6})\.gz")
_HEADER_START: Final = re.compile(rb"\d{19} header -?\d+ [tb] ")


@dataclass(frozen=True, slots=True)
class Line:
    """One decoded line. ``kind`` ``gap``: ``payload`` is JSON ``{"dropped": n,
    "first_ns": t0, "last_ns": t1}``; ``header``: JSON ``{"format", "version", "session",
    "index"}``; ``connect``: JSON ``{"venue": name}`` (may be empty)."""

    recv_ns: int
    kind: LineKind
    conn_id: int
    url: str
    payload: bytes


def encode_line(recv_ns: int, kind: LineKind, conn_id: int, url: str, payload: bytes) -> bytes:
    """One record as a line, its ``\\n`` included. Raises ValueError for a time outside
    ``0 .. 10**19 - 1``."""
    if not 0 <= recv_ns <= _MAX_TS:
        raise ValueError(f"recv_ns out of range: {recv_ns}")
    if b"\n" in payload or b"\r" in payload:
        enc, data = b"b", base64.b64encode(payload)
    else:
        enc, data = b"t", payload
    url_field = quote(url, safe=_URL_SAFE).encode("ascii") if url else b""
    head = b"%019d %s %d %s %s " % (recv_ns, kind.encode("ascii"), conn_id, enc, url_field)
    return head + data + b"\n"


def decode_line(line: bytes) -> Line:
    """The record of one line (with or without its ``\\n``); ValueError when it is not one."""
    if line.endswith(b"\n"):
        line = line[:-1]
    parts = line.split(b" ", 5)
    if len(parts) != 6:
        raise ValueError("not '<recv_ns> <kind> <conn_id> <enc> <url> <payload>'")
    stamp, kind_b, conn_b, enc, url_b, data = parts
    if len(stamp) != TS_WIDTH or not stamp.isdigit():
        raise ValueError("bad timestamp")
    kind = kind_b.decode("ascii", "replace")
    if kind not in _KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    try:
        conn_id = int(conn_b)
    except ValueError:
        raise ValueError("bad connection id") from None
    if enc == b"t":
        payload = data
    elif enc == b"b":
        try:
            payload = base64.b64decode(data, validate=True)
        except ValueError:
            raise ValueError("bad base64 payload") from None
    else:
        raise ValueError(f"unknown payload encoding {enc!r}")
    try:
        url = unquote(url_b.decode("ascii"), errors="strict")
    except UnicodeError:
        raise ValueError("bad url") from None
    return Line(int(stamp), kind, conn_id, url, payload)  # type: ignore[arg-type]


def looks_like_header(line: bytes) -> bool:
    """True when ``line`` starts like the header line of a capture file of this format."""
    return bool(_HEADER_START.match(line)) and FORMAT_NAME.encode() in line[:200]


# --- gzip members ---------------------------------------------------------------------------


def gzip_member(data: bytes, level: int = 6) -> bytes:
    """``data`` as one complete gzip member (no file name, mtime 0)."""
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


@dataclass
class MemberReader:
    """Reads a file of concatenated gzip members, one complete member at a time.

    ``truncated`` is set when the file ends inside a member or holds data that is not gzip;
    that member's partial content is discarded. Never raises for bad content.
    """

    chunk_bytes: int = 64 * 1024
    truncated: bool = False
    #: Why the reading stopped early, when it did.
    reason: str = ""

    def members(self, f: BinaryIO) -> Iterator[bytes]:
        d = zlib.decompressobj(31)
        started = False
        out: list[bytes] = []
        while True:
            chunk = f.read(self.chunk_bytes)
            if not chunk:
                break
            while chunk:
                started = True
                try:
                    out.append(d.decompress(chunk))
                except zlib.error as exc:
                    self.truncated = True
                    self.reason = f"corrupt gzip data: {exc}"
                    return
                if not d.eof:
                    break
                yield b"".join(out)
                out = []
                chunk = d.unused_data
                d = zlib.decompressobj(31)
                started = False
        if started:
            self.truncated = True
            self.reason = "the file ends inside a gzip member (cut by a crash?)"


# --- files and sessions ---------------------------------------------------------------------


def session_name(now_ns: int) -> str:
    """The session name of a capture started at ``now_ns`` (UTC, microseconds)."""
    seconds, ns = divmod(now_ns, 1_000_000_000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f".{ns // 1000:06d}Z"


def file_name(session: str, index: int) -> str:
    return f"mdgw-{session}-{index:06d}.gz"


def parse_name(name: str) -> tuple[str, int] | None:
    """``(session, index)`` of a capture file name, or None."""
    m = _NAME.fullmatch(name)
    return (m.group("session"), int(m.group("index"))) if m else None


def is_capture_file(path: Path) -> bool:
    return parse_name(path.name) is not None and path.is_file()


def session_files(path: Path) -> list[Path]:
    """The files to read for ``path``, in recorded order.

    A directory: every session in it, oldest first, each session's files by index. A file
    named like a capture file: every file of its session in its directory. Any other file:
    itself.
    """
    if path.is_dir():
        found = [(parse_name(p.name), p) for p in path.iterdir() if is_capture_file(p)]
        return [p for _, p in sorted((key, p) for key, p in found if key is not None)]
    parsed = parse_name(path.name)
    if parsed is None:
        return [path]
    session = parsed[0]
    siblings = [
        (key, p)
        for p in path.parent.iterdir()
        if (key := parse_name(p.name)) is not None and key[0] == session and p.is_file()
    ]
    return [p for _, p in sorted(siblings)]


def iter_lines(path: Path, reader: MemberReader) -> Iterator[bytes]:
    """The lines (without ``\\n``) of the complete members of one file."""
    with open(path, "rb") as f:
        for member in reader.members(f):
            lines = member.split(b"\n")
            if lines and not lines[-1]:
                lines.pop()
            yield from lines


def header_payload(session: str, index: int) -> bytes:
    return msgspec.json.encode(
        {"format": FORMAT_NAME, "version": FORMAT_VERSION, "session": session, "index": index}
    )


def gap_payload(dropped: int, first_ns: int, last_ns: int) -> bytes:
    return msgspec.json.encode({"dropped": dropped, "first_ns": first_ns, "last_ns": last_ns})


class _Gap(msgspec.Struct):
    dropped: int
    first_ns: int = 0
    last_ns: int = 0


def gap_dropped(payload: bytes) -> int:
    """How many records a gap line says were dropped (0 when it cannot be read)."""
    try:
        return msgspec.json.decode(payload, type=_Gap).dropped
    except msgspec.DecodeError:
        return 0


class _Connect(msgspec.Struct):
    venue: str = ""


def connect_venue(payload: bytes) -> str:
    """The venue name a connect line records, or ``""``."""
    try:
        return msgspec.json.decode(payload, type=_Connect).venue
    except msgspec.DecodeError:
        return ""


# --- writing ---------------------------------------------------------------------------------


@dataclass
class CaptureFileWriter:
    """Writes one session into ``directory``: synchronous, one thread at a time.

    :meth:`write` appends one gzip member holding the given lines (then the OS has it: a
    kill -9 loses nothing written), and starts the next file once the current one reaches
    ``rotate_bytes`` (compressed) or has been open ``rotate_s`` seconds. Every file starts
    with a header line. It reads no clock: each write is given the time (``now_ns``, the
    wall clock, for the session's name and the headers; ``now_s``, a monotonic clock, for
    the files' age).
    """

    directory: Path
    rotate_bytes: int = 256 * 1024 * 1024
    rotate_s: float = 3600.0
    level: int = 6
    #: Uncompressed bytes per gzip member at most: what a reader holds in memory at once.
    member_bytes: int = 4 * 1024 * 1024
    #: Named from the first write's ``now_ns`` when not given.
    session: str = ""
    index: int = -1
    bytes_in_file: int = 0
    files: list[Path] = field(default_factory=list)
    _f: BinaryIO | None = None
    _opened_s: float = 0.0

    def __post_init__(self) -> None:
        if self.rotate_bytes <= 0 or self.rotate_s <= 0:
            raise ValueError("rotate_bytes and rotate_s must be positive")
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path | None:
        return self.files[-1] if self.files else None

    def write(self, lines: list[bytes], *, now_ns: int, now_s: float) -> int:
        """Appends ``lines`` (each ending in ``\\n``) as gzip members of at most
        ``member_bytes`` uncompressed (a line longer than that is a member of its own), then
        rotates when the file is due. Returns the number of members written.

        ``now_ns``: the wall clock (ns since the epoch), stamped on a new file's header;
        ``now_s``: a monotonic clock's seconds, which the files' age is measured on."""
        if self._f is None:
            self._open_next(now_ns, now_s)
        f = self._f
        assert f is not None
        members = 0
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > self.member_bytes:
                self._append(f, chunk)
                members += 1
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._append(f, chunk)
            members += 1
        if self.bytes_in_file >= self.rotate_bytes or now_s - self._opened_s >= self.rotate_s:
            self._close_file()
        return members

    def _append(self, f: BinaryIO, lines: list[bytes]) -> None:
        member = gzip_member(b"".join(lines), self.level)
        f.write(member)
        f.flush()
        self.bytes_in_file += len(member)

    def close(self) -> None:
        self._close_file()

    def _open_next(self, now_ns: int, now_s: float) -> None:
        if not self.session:
            self.session = session_name(now_ns)
        self.index += 1
        path = self.directory / file_name(self.session, self.index)
        self._f = open(path, "ab")  # noqa: SIM115 - kept open across writes, closed in close()
        self.files.append(path)
        self._opened_s = now_s
        header = encode_line(now_ns, "header", -1, "", header_payload(self.session, self.index))
        member = gzip_member(header, self.level)
        self._f.write(member)
        self._f.flush()
        self.bytes_in_file = len(member)

    def _close_file(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
