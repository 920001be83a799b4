"""Readers of market-data capture files that exist in the wild (DESIGN §4).

Pure: files in, records out; no asyncio, no sockets. Every format becomes one iterator of
:class:`CaptureRecord`, in the order the frames were received, read as a stream: memory
holds one line per open file, never the whole capture.

Formats (``../shared/data/real/binance/SOURCES.md``):

- ``hftbacktest``: the hftbacktest collector's output, one file per symbol named
  ``<symbol>_<YYYYMMDD>.gz``, gzip text (plain text is read too). Each line is
  ``<recv_ns> <frame>``. The REST depth snapshot sits inline as a JSON body without a
  ``stream`` key; it becomes a ``rest`` record. No connection boundaries are recorded: every
  frame is on connection 0.
- ``cryptofeed-raw``: cryptofeed's raw capture, ``NAME.ws.N.M`` with the REST responses in
  ``NAME.http.N.M`` beside it. The ws file has ``<url> <-> <connect_epoch_s>`` at each
  (re)connect, then ``<recv_epoch_s>: <frame>`` lines (and ``<url> <- <epoch_s>: <sent>``
  lines, which are skipped). An http line is ``<url> -> <recv_epoch_s>: <body>``. The files
  are merged on receive time.

Times become integer nanoseconds from their decimal text, never through a float.

Lines that do not have the format's syntax are counted in :class:`ReadStats` and skipped;
only a file whose format cannot be told raises :class:`CaptureFormatError`. Whether a frame
is a valid venue message is not this module's business: the venue parser decides.
"""

from __future__ import annotations

import enum
import gzip
import heapq
import io
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Final, Literal
from urllib.parse import parse_qs, urlsplit

import msgspec

__all__ = [
    "INLINE_SNAPSHOT_SCHEME",
    "KNOWN_VENUES",
    "REST_CONN_ID",
    "CaptureFormat",
    "CaptureFormatError",
    "CaptureReader",
    "CaptureRecord",
    "ReadStats",
    "RecordKind",
    "decimal_seconds_to_ns",
    "detect_format",
    "detect_venue",
    "inline_snapshot_url",
    "rest_symbol",
    "venue_from_url",
]


class CaptureFormatError(Exception):
    """The file cannot be read as any supported capture format.

    The one error this module raises for bad input; the message names the path and what was
    expected. Raised before the first record, never in the middle of a file.
    """


class CaptureFormat(enum.StrEnum):
    HFTBACKTEST = "hftbacktest"
    CRYPTOFEED_RAW = "cryptofeed-raw"


RecordKind = Literal["ws", "rest", "connect", "disconnect"]

#: ``conn_id`` of REST records: they come from no WebSocket connection.
REST_CONN_ID: Final = -1
#: Scheme of the URL given to a REST record whose format did not record the request URL.
INLINE_SNAPSHOT_SCHEME: Final = "capture"


class CaptureRecord(msgspec.Struct, frozen=True, gc=False):
    """One recorded event.

    - ``ws``: ``payload`` is one WebSocket frame received on ``conn_id`` at ``recv_ns``;
      ``url`` is the connection's URL, or ``""`` when the capture did not record it.
    - ``rest``: ``payload`` is a REST response body; ``url`` is the request URL (symbol in its
      ``symbol=`` query parameter, see :func:`rest_symbol`); ``conn_id`` is ``REST_CONN_ID``.
    - ``connect`` / ``disconnect``: connection ``conn_id`` to ``url`` opened or ended;
      ``payload`` is empty.

    ``recv_ns`` is the local receive time in nanoseconds since the Unix epoch.
    """

    recv_ns: int
    conn_id: int
    kind: RecordKind
    url: str
    payload: bytes


def inline_snapshot_url(symbol: str) -> str:
    """The URL given to a REST snapshot whose request URL the format did not record."""
    return f"{INLINE_SNAPSHOT_SCHEME}:snapshot?symbol={symbol}"


def rest_symbol(url: str) -> str | None:
    """The ``symbol=`` query parameter of a REST URL, or None."""
    values = parse_qs(urlsplit(url).query).get("symbol")
    return values[0] if values else None


_DECIMAL_SECONDS: Final = re.compile(r"(\d+)(?:\.(\d+))?")


def decimal_seconds_to_ns(text: str | bytes) -> int:
    """Seconds written as a decimal (``"1633998512.0633569"``) as integer nanoseconds.

    Exact: the digits are read as integers. Digits below a nanosecond are truncated.
    Raises ValueError for anything but ``digits[.digits]``.
    """
    s = text.decode("ascii", "replace") if isinstance(text, bytes) else text
    m = _DECIMAL_SECONDS.fullmatch(s)
    if m is None:
        raise ValueError(f"not a decimal number of seconds: {s!r}")
    whole, frac = m.group(1), m.group(2) or ""
    return int(whole) * 1_000_000_000 + int(frac[:9].ljust(9, "0"))


# --- venues -------------------------------------------------------------------------------

#: WebSocket and REST hosts of the venues the gateway knows, by host suffix.
_VENUE_HOSTS: Final = (
    ("fstream.binance.com", "binance-usdm"),
    ("fapi.binance.com", "binance-usdm"),
    ("dstream.binance.com", "binance-coinm"),
    ("dapi.binance.com", "binance-coinm"),
    ("stream.binance.com", "binance"),
    ("data-stream.binance.vision", "binance"),
    ("api.binance.com", "binance"),
    ("data-api.binance.vision", "binance"),
    ("okx.com", "okx"),
    ("okex.com", "okx"),
    ("bybit.com", "bybit"),
    ("kraken.com", "kraken"),
    ("coinbase.com", "coinbase"),
)

#: Every venue name that :func:`detect_venue` can return.
KNOWN_VENUES: Final = frozenset(venue for _, venue in _VENUE_HOSTS)

#: cryptofeed feed ids (the NAME of ``NAME.ws.N.M``) of the known venues.
_CRYPTOFEED_NAMES: Final = {
    "BINANCE": "binance",
    "BINANCE_FUTURES": "binance-usdm",
    "BINANCE_DELIVERY": "binance-coinm",
    "OKX": "okx",
    "OKEX": "okx",
    "BYBIT": "bybit",
    "KRAKEN": "kraken",
    "COINBASE": "coinbase",
}


def venue_from_url(url: str) -> str | None:
    """The venue whose WebSocket or REST host ``url`` names, or None."""
    host = (urlsplit(url).hostname or "").lower()
    for suffix, venue in _VENUE_HOSTS:
        if host == suffix or host.endswith("." + suffix):
            return venue
    return None


# --- line syntax --------------------------------------------------------------------------

_GZIP_MAGIC: Final = b"\x1f\x8b"
#: Bytes read from the start of a file to tell its format.
_SNIFF_BYTES: Final = 64 * 1024
#: Lines read from the start of an hftbacktest file to tell the venue.
_SNIFF_LINES: Final = 2000
#: Malformed lines quoted in ReadStats.
_MAX_EXAMPLES: Final = 5

_HFT_LINE: Final = re.compile(rb"\d{1,20} [{\[]")
_CF_CONNECT: Final = re.compile(rb"wss?://\S+ <-> \d+(?:\.\d+)?\s*")
_CF_FRAME: Final = re.compile(rb"\d+(?:\.\d+)?: ")
_CF_HTTP: Final = re.compile(rb"https?://\S+ -> \d+(?:\.\d+)?: ")
_CF_SENT: Final = re.compile(rb"wss?://\S+ <- \d+(?:\.\d+)?: ")
_CF_CONFIG: Final = b"configuration: "
_CF_WS_NAME: Final = re.compile(r"(?P<name>.+)\.ws\.(?P<n>\d+)\.(?P<m>\d+)")
_HFT_NAME: Final = re.compile(r"(?P<symbol>[A-Za-z0-9]+)_\d{8}(?:\.gz)?")
_STREAM_SYMBOL: Final = re.compile(rb'\{"stream":"([^"@]+)@')


@dataclass
class ReadStats:
    """What a reader saw. ``sources`` are the files read, in the order they were opened."""

    sources: list[str] = field(default_factory=list)
    #: Non-blank lines read.
    lines: int = 0
    records: int = 0
    #: Lines of a known kind that carry nothing for a record (cryptofeed sent frames).
    skipped: int = 0
    #: Lines without the format's syntax: counted and skipped.
    malformed: int = 0
    #: A few malformed lines, as ``"<file>:<line>: <reason>"``.
    examples: list[str] = field(default_factory=list)
    #: A compressed file ended before its end marker (a capture cut short).
    truncated: bool = False

    def bad_line(self, source: Path, lineno: int, reason: str, line: bytes) -> None:
        self.malformed += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(f"{source.name}:{lineno}: {reason}: {line[:80]!r}")


@contextmanager
def _open(path: Path) -> Iterator[io.BufferedIOBase]:
    """The file's bytes, decompressed when it starts with the gzip magic."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
        raw.seek(0)
        if magic != _GZIP_MAGIC:
            yield raw
            return
        # GzipFile over an open file object does not close it: the outer ``with`` does.
        with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
            yield unzipped


def _lines(path: Path, stats: ReadStats) -> Iterator[tuple[int, bytes]]:
    """``(line number, line without its end)`` of the non-blank lines; a compressed file
    that ends early sets ``stats.truncated`` and ends the iteration."""
    with _open(path) as f:
        try:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip(b"\r\n")
                if line.strip():
                    stats.lines += 1
                    yield lineno, line
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            stats.truncated = True
            stats.examples.append(f"{path.name}: compressed data ends early: {exc}")


def _head(path: Path) -> list[bytes]:
    """The first few non-blank lines (or line prefixes) of the file, decompressed."""
    try:
        with _open(path) as f:
            data = f.read(_SNIFF_BYTES)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CaptureFormatError(f"{path}: gzip data is unreadable ({exc})") from None
    except OSError as exc:
        raise CaptureFormatError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    return [line.rstrip(b"\r") for line in data.split(b"\n") if line.strip()]


# --- detection ----------------------------------------------------------------------------

_EXPECTED: Final = (
    "expected an hftbacktest collector file (lines '<recv_ns> <frame>', usually gzip) or a "
    "cryptofeed raw capture NAME.ws.N.M (first line '<wss://url> <-> <connect_epoch_s>', "
    "then '<recv_epoch_s>: <frame>')"
)


def detect_format(path: Path) -> CaptureFormat:
    """The format of the capture at ``path``, told from its content, not its name.

    Raises CaptureFormatError, naming the path and the formats expected, when the file
    cannot be read, is empty, or has none of the known shapes.
    """
    head = _head(path)
    lines = [line for line in head if not line.startswith(_CF_CONFIG)]
    if not lines:
        raise CaptureFormatError(f"{path}: the file is empty; {_EXPECTED}")
    first = lines[0]
    if _HFT_LINE.match(first):
        return CaptureFormat.HFTBACKTEST
    if _CF_CONNECT.fullmatch(first) or _CF_FRAME.match(first):
        return CaptureFormat.CRYPTOFEED_RAW
    if _CF_HTTP.match(first):
        raise CaptureFormatError(
            f"{path}: this is the REST half (NAME.http.N.M) of a cryptofeed raw capture; "
            "pass the NAME.ws.N.M file beside it"
        )
    raise CaptureFormatError(
        f"{path}: unrecognised capture format, starts {first[:60]!r}; {_EXPECTED}"
    )


def detect_venue(path: Path, fmt: CaptureFormat | None = None) -> str | None:
    """The venue that the capture at ``path`` recorded, or None when it cannot be told.

    cryptofeed: the host of the first connection URL, else the feed NAME of the file.
    hftbacktest: the shape of the first depth update (Binance spot, USD-M or COIN-M).
    """
    fmt = fmt or detect_format(path)
    if fmt is CaptureFormat.CRYPTOFEED_RAW:
        for line in _head(path):
            if _CF_CONNECT.fullmatch(line):
                venue = venue_from_url(line.partition(b" <-> ")[0].decode("utf-8", "replace"))
                if venue is not None:
                    return venue
        m = _CF_WS_NAME.fullmatch(path.name)
        return _CRYPTOFEED_NAMES.get(m.group("name").upper()) if m else None
    stats = ReadStats()
    for lineno, line in _lines(path, stats):
        if lineno > _SNIFF_LINES:
            break
        if b'"e":"depthUpdate"' in line:
            if b'"ps":' in line:
                return "binance-coinm"
            if b'"pu":' in line:
                return "binance-usdm"
            return "binance"
    return None


# --- readers ------------------------------------------------------------------------------


class CaptureReader:
    """Iterates the records of one capture, in receive order; ``stats`` fills as it goes.

    ``path`` is the file a user names: an hftbacktest file, or the ``NAME.ws.N.M`` file of
    a cryptofeed pair (its ``NAME.http.*`` siblings are found and merged in). The format is
    detected from the content unless ``fmt`` is given. Construction raises
    CaptureFormatError; iteration raises nothing for bad lines (they are counted) and may be
    repeated, each time reading the files afresh.
    """

    def __init__(self, path: Path, fmt: CaptureFormat | None = None) -> None:
        self.path = path
        self.format = fmt or detect_format(path)
        self.stats = ReadStats()

    def sources(self) -> list[Path]:
        """The files this capture is read from, the named file first."""
        if self.format is CaptureFormat.CRYPTOFEED_RAW:
            return [self.path, *_cryptofeed_http_files(self.path)]
        return [self.path]

    def __iter__(self) -> Iterator[CaptureRecord]:
        self.stats = stats = ReadStats()
        sources = self.sources()
        stats.sources = [str(p) for p in sources]
        if self.format is CaptureFormat.HFTBACKTEST:
            records = _read_hftbacktest(self.path, stats)
        else:
            streams = [_read_cryptofeed_ws(self.path, stats)]
            streams += [_read_cryptofeed_http(p, stats) for p in sources[1:]]
            # Each file is in receive order; merging keeps each file's own order even where
            # the wall clock stepped back, and puts the ws file first on equal times.
            records = heapq.merge(*streams, key=attrgetter("recv_ns"))
        for record in records:
            stats.records += 1
            yield record


def _read_hftbacktest(path: Path, stats: ReadStats) -> Iterator[CaptureRecord]:
    name = _HFT_NAME.fullmatch(path.name)
    file_symbol = name.group("symbol").upper() if name else None
    # The symbol of the inline snapshot: the one symbol of the streams seen so far.
    stream_symbol: bytes | None = None
    many_symbols = False
    for lineno, line in _lines(path, stats):
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
        yield CaptureRecord(recv_ns, REST_CONN_ID, "rest", inline_snapshot_url(symbol), frame)


def _cryptofeed_http_files(ws_path: Path) -> list[Path]:
    """``NAME.http.N.M`` files beside ``NAME.ws.N.M``, in (N, M) order."""
    m = _CF_WS_NAME.fullmatch(ws_path.name)
    if m is None:
        return []
    pattern = re.compile(re.escape(m.group("name")) + r"\.http\.(\d+)\.(\d+)")
    found: list[tuple[int, int, Path]] = []
    for candidate in ws_path.parent.iterdir():
        hm = pattern.fullmatch(candidate.name)
        if hm is not None and candidate.is_file():
            found.append((int(hm.group(1)), int(hm.group(2)), candidate))
    return [p for _, _, p in sorted(found)]


def _read_cryptofeed_ws(path: Path, stats: ReadStats) -> Iterator[CaptureRecord]:
    conn_id = -1
    url = ""
    for lineno, line in _lines(path, stats):
        if _CF_FRAME.match(line):
            stamp, _, frame = line.partition(b": ")
            if conn_id < 0:
                conn_id = 0  # a rotated file continues a connection opened in an earlier one
            yield CaptureRecord(decimal_seconds_to_ns(stamp), conn_id, "ws", url, frame)
        elif _CF_CONNECT.fullmatch(line):
            target, _, stamp = line.partition(b" <-> ")
            recv_ns = decimal_seconds_to_ns(stamp.strip())
            if conn_id >= 0:
                # cryptofeed records no close: a new connect line ends the previous one.
                yield CaptureRecord(recv_ns, conn_id, "disconnect", url, b"")
            conn_id += 1
            url = target.decode("utf-8", "replace")
            yield CaptureRecord(recv_ns, conn_id, "connect", url, b"")
        elif _CF_SENT.match(line) or line.startswith(_CF_CONFIG):
            stats.skipped += 1
        else:
            stats.bad_line(path, lineno, "not '<recv_epoch_s>: <frame>' nor a connect line", line)


def _read_cryptofeed_http(path: Path, stats: ReadStats) -> Iterator[CaptureRecord]:
    for lineno, line in _lines(path, stats):
        if not _CF_HTTP.match(line):
            stats.bad_line(path, lineno, "not '<url> -> <recv_epoch_s>: <body>'", line)
            continue
        url, _, rest = line.partition(b" -> ")
        stamp, _, body = rest.partition(b": ")
        yield CaptureRecord(
            decimal_seconds_to_ns(stamp),
            REST_CONN_ID,
            "rest",
            url.decode("utf-8", "replace"),
            body,
        )
