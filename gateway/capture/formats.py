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
- ``cryptofeed-jsonl``: cryptofeed's "format 2" capture (``NAME.jsonl``, gzip or plain; the
  zstd original must be decompressed first). One JSON record per line: ``t`` is ``header``,
  ``connect`` (``addr``), ``send``, ``recv`` (``data``, or ``b64`` for binary frames) or
  ``http`` (``url``, ``data``); ``conn`` names the connection (``BYBIT.ws.2``) and ``ts`` is
  the receive time in epoch seconds. Each recorded connection gets an integer ``conn_id``
  (in order of first appearance; a second ``connect`` on the same ``conn`` is a reconnect:
  a ``disconnect`` of the old id and a new id); http records are ``rest`` records with their
  URL; header and send records are skipped. Records are yielded in ``ts`` order, each
  connection's own order kept: a file already in time order is read in one pass; one whose
  connections were written one after another (files converted from cryptofeed's format 1,
  like the sample data) is read once per connection, the passes merged.
- ``bybit-history``: Bybit's historical order-book download (``<date>_<SYMBOL>_ob500.data.zip``:
  a zip holding ``.data`` files of v5 WebSocket book messages, one per line, with ``cts``),
  zipped or not. The download records no local time: ``recv_ns`` is the message's ``ts``
  (the venue's push time, ms) in ns. Connection 0, URL ``""``.
- ``mdgateway``: the project's own capture (:mod:`gateway.capture.codec`):
  a directory of rotated gzip files ``mdgw-<session>-<index>.gz``. Given the directory,
  every session in it is read, oldest first (connection ids of a later session are moved
  past those of the earlier ones, and connections a session left open are closed at its
  last record); given one file, every file of its session. ``ws`` records get their
  connection's URL; ``gap`` lines (records the writer dropped) are counted in
  ``ReadStats.dropped``; a file cut inside a gzip member is read up to its last complete
  member and sets ``ReadStats.truncated``.
- ``ndjson``: one raw frame per line and nothing else (the flashbook fixtures). No time is
  recorded: ``recv_ns`` is the 0-based line index, which gives the order and nothing more.
  One connection (0), URL ``""``. Told apart from other JSON by the shape of its frames
  (:func:`venue_from_frame`).

Times become integer nanoseconds from their decimal text, never through a float.

Lines that do not have the format's syntax are counted in :class:`ReadStats` and skipped;
only a file whose format cannot be told raises :class:`CaptureFormatError`. Whether a frame
is a valid venue message is not this module's business: the venue parser decides.
"""

from __future__ import annotations

import binascii
import decimal
import enum
import gzip
import heapq
import io
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Final, Literal
from urllib.parse import parse_qs, urlsplit

import msgspec

from gateway.capture import codec as mdgw

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
    "connection_venue",
    "decimal_seconds_to_ns",
    "detect_format",
    "detect_venue",
    "inline_snapshot_url",
    "rest_symbol",
    "venue_from_frame",
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
    CRYPTOFEED_JSONL = "cryptofeed-jsonl"
    BYBIT_HISTORY = "bybit-history"
    NDJSON = "ndjson"
    MDGATEWAY = "mdgateway"


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


def _json_seconds_to_ns(raw: bytes) -> int:
    """A JSON number of seconds as integer nanoseconds: exact for plain decimals, through
    :class:`decimal.Decimal` (still exact, truncated) for exponent forms."""
    try:
        return decimal_seconds_to_ns(raw)
    except ValueError:
        pass
    try:
        value = decimal.Decimal(raw.decode("ascii"))
    except (UnicodeDecodeError, decimal.InvalidOperation):
        raise ValueError(f"not a number of seconds: {raw[:40]!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"not a non-negative number of seconds: {raw[:40]!r}")
    return int(value.scaleb(9))


# --- venues -------------------------------------------------------------------------------

#: WebSocket and REST hosts of the venues the gateway knows, by host suffix (first match).
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
    # Bybit's regional entities (exchange-protocols.md §7).
    ("bybit.tr", "bybit"),
    ("bybit.id", "bybit"),
    ("bybit.kz", "bybit"),
    ("bybitgeorgia.ge", "bybit"),
    ("manepa.jp", "bybit"),
    ("kraken.com", "kraken"),
    # Coinbase Exchange (ws-feed, formerly Pro) before Coinbase Advanced Trade.
    ("exchange.coinbase.com", "coinbase-exchange"),
    ("pro.coinbase.com", "coinbase-exchange"),
    ("coinbase.com", "coinbase"),
)

#: Bybit's product categories: each is a venue ``bybit-<category>`` (own books and ids).
_BYBIT_CATEGORIES: Final = ("spot", "linear", "inverse", "option", "spread")
_BYBIT_PATH: Final = re.compile(r"/v5/public/(" + "|".join(_BYBIT_CATEGORIES) + r")(?:/|$)")

#: Every venue name that :func:`detect_venue` can return. ``bybit`` is the exchange, told
#: when the category is not (or a capture holds several).
KNOWN_VENUES: Final = frozenset(venue for _, venue in _VENUE_HOSTS) | frozenset(
    f"bybit-{category}" for category in _BYBIT_CATEGORIES
)

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
    """The venue whose WebSocket or REST host ``url`` names, or None.

    From the host alone, so Bybit is ``bybit`` whatever the category: see
    :func:`connection_venue`.
    """
    host = (urlsplit(url).hostname or "").lower()
    for suffix, venue in _VENUE_HOSTS:
        if host == suffix or host.endswith("." + suffix):
            return venue
    return None


def connection_venue(url: str) -> str | None:
    """The venue of a connection or REST URL, as precise as the URL tells.

    :func:`venue_from_url`, refined where one host serves several venues: a Bybit URL
    names its category in the path (``wss://stream.bybit.com/v5/public/linear`` is
    ``bybit-linear``) or in a ``category=`` query parameter (REST); else it is ``bybit``.
    """
    venue = venue_from_url(url)
    if venue != "bybit":
        return venue
    parts = urlsplit(url)
    m = _BYBIT_PATH.search(parts.path)
    category = m.group(1) if m else (parse_qs(parts.query).get("category") or [""])[0]
    return f"bybit-{category}" if category in _BYBIT_CATEGORIES else venue


# Frame shapes, searched in the first bytes of a frame (key order differs between venues
# and even between the categories of one venue, so each is a key/value pattern).
_SHAPE_PREFIX: Final = 4096
_BYBIT_TOPIC: Final = re.compile(
    rb'"topic"\s*:\s*"(?:orderbook|publicTrade|tickers|kline|liquidation|allLiquidation)\.'
)
_BYBIT_REPLY: Final = re.compile(rb'"op"\s*:\s*"(?:subscribe|unsubscribe|ping|pong)"')
_BYBIT_REPLY_FIELD: Final = re.compile(rb'"(?:ret_msg|conn_id)"\s*:')
_OKX_ARG: Final = re.compile(rb'"arg"\s*:\s*\{\s*"channel"\s*:')
_CHANNEL: Final = re.compile(rb'"channel"\s*:\s*"')
_SEQUENCE_NUM: Final = re.compile(rb'"sequence_num"\s*:')
_KRAKEN_CHANNEL: Final = re.compile(
    rb'"channel"\s*:\s*"(?:book|trade|ticker|status|heartbeat|ohlc|instrument|level3)"'
)
_KRAKEN_REPLY: Final = re.compile(rb'"method"\s*:\s*"(?:subscribe|unsubscribe|pong)"')
_KRAKEN_REPLY_FIELD: Final = re.compile(rb'"time_in"\s*:')
_COINBASE_EXCHANGE_TYPE: Final = re.compile(
    rb'"type"\s*:\s*"(?:snapshot|l2update|match|last_match|ticker|heartbeat|received|open|'
    rb'done|change|activate)"'
)
_PRODUCT_ID: Final = re.compile(rb'"product_id"\s*:')
_COINBASE_SUBSCRIPTIONS: Final = re.compile(rb'"type"\s*:\s*"subscriptions"')
_CHANNELS: Final = re.compile(rb'"channels"\s*:')
_BINANCE_DEPTH: Final = re.compile(rb'"e"\s*:\s*"depthUpdate"')


def venue_from_frame(frame: bytes) -> str | None:
    """The venue whose wire format one raw frame has, or None.

    By shape: Bybit topics (``orderbook.N.SYM``, ``publicTrade.SYM``, ...) and replies are
    ``bybit`` (the category is not in the frame); OKX ``"arg":{"channel":..}`` is ``okx``;
    a ``channel`` with a ``sequence_num`` is Coinbase Advanced Trade (``coinbase``,
    ``"channel":"l2_data"``); Kraken v2 channels (``{"channel":"book"``, ``status``,
    ``heartbeat``, ...) and replies are ``kraken``; ``"type":"l2update"`` / ``"snapshot"``
    (and the other ws-feed types) with a ``product_id``, or ``subscriptions``, are
    ``coinbase-exchange``; a Binance ``depthUpdate`` is ``binance``, ``binance-usdm`` (it
    has ``pu``) or ``binance-coinm`` (``ps``). Only the first 4 KB are looked at.
    """
    head = frame[:_SHAPE_PREFIX]
    if _BYBIT_TOPIC.search(head) or (_BYBIT_REPLY.search(head) and _BYBIT_REPLY_FIELD.search(head)):
        return "bybit"
    if _OKX_ARG.search(head):
        return "okx"
    if _CHANNEL.search(head) and _SEQUENCE_NUM.search(head):
        return "coinbase"
    if _KRAKEN_CHANNEL.search(head) or (
        _KRAKEN_REPLY.search(head) and _KRAKEN_REPLY_FIELD.search(head)
    ):
        return "kraken"
    if (_COINBASE_EXCHANGE_TYPE.search(head) and _PRODUCT_ID.search(head)) or (
        _COINBASE_SUBSCRIPTIONS.search(head) and _CHANNELS.search(head)
    ):
        return "coinbase-exchange"
    if _BINANCE_DEPTH.search(head):
        if b'"ps":' in head:
            return "binance-coinm"
        if b'"pu":' in head:
            return "binance-usdm"
        return "binance"
    return None


# --- line syntax --------------------------------------------------------------------------

_GZIP_MAGIC: Final = b"\x1f\x8b"
_ZIP_MAGICS: Final = (b"PK\x03\x04", b"PK\x05\x06")
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
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
#: The kinds of cryptofeed format-2 records, and the pattern that finds one in a line
#: prefix (cryptofeed's own records put ``t`` after ``conn`` and ``ts``).
_CF2_KINDS: Final = frozenset({"header", "http", "connect", "send", "recv"})
_CF2_KIND: Final = re.compile(rb'"t"\s*:\s*"(header|http|connect|send|recv)"')
_CF2_FORMAT: Final = 2
_BYBIT_BOOK_TOPIC: Final = re.compile(rb'"topic"\s*:\s*"orderbook\.(\d+)\.([^"]+)"')
_BYBIT_CTS: Final = re.compile(rb'"cts"\s*:')


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
    #: Records the capture's writer dropped (``gap`` lines of the mdgateway format).
    dropped: int = 0

    def bad_line(self, source: Path | str, lineno: int, reason: str, line: bytes) -> None:
        self.malformed += 1
        if len(self.examples) < _MAX_EXAMPLES:
            name = source.name if isinstance(source, Path) else source
            self.examples.append(f"{name}:{lineno}: {reason}: {line[:80]!r}")


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


#: What a compressed stream raises when its data ends early or is corrupt.
_COMPRESSED_ERRORS: Final = (EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile)


def _stream_lines(
    f: Iterable[bytes], source: str, stats: ReadStats | None
) -> Iterator[tuple[int, bytes]]:
    """``(line number, line without its end)`` of the non-blank lines of ``f``. Counted in
    ``stats`` when given; a compressed stream that ends early ends the iteration (and sets
    ``stats.truncated``)."""
    try:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                if stats is not None:
                    stats.lines += 1
                yield lineno, line
    except _COMPRESSED_ERRORS as exc:
        if stats is not None:
            stats.truncated = True
            stats.examples.append(f"{source}: compressed data ends early: {exc}")


def _lines(path: Path, stats: ReadStats | None) -> Iterator[tuple[int, bytes]]:
    """:func:`_stream_lines` of the file, decompressed when it is gzip."""
    with _open(path) as f:
        yield from _stream_lines(f, path.name, stats)


def _read_head(path: Path) -> bytes:
    """The first bytes of the file, decompressed when it is gzip."""
    try:
        with _open(path) as f:
            return f.read(_SNIFF_BYTES)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CaptureFormatError(f"{path}: gzip data is unreadable ({exc})") from None
    except OSError as exc:
        raise CaptureFormatError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def _split_head(data: bytes) -> tuple[list[bytes], bool]:
    """The non-blank lines of a head, and whether the last one is whole (not cut at
    :data:`_SNIFF_BYTES`)."""
    last_whole = len(data) < _SNIFF_BYTES or data.endswith(b"\n")
    lines = [line.rstrip(b"\r") for line in data.split(b"\n") if line.strip()]
    return lines, last_whole


def _head(path: Path) -> list[bytes]:
    """The first few non-blank lines (or line prefixes) of the file, decompressed."""
    return _split_head(_read_head(path))[0]


def _magic(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError as exc:
        raise CaptureFormatError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def _zip_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The ``.data`` members of a Bybit download (all files when none is named so)."""
    files = [info for info in zf.infolist() if not info.is_dir()]
    data = [info for info in files if info.filename.endswith(".data")]
    return data or files


def _zip_head(path: Path) -> list[bytes]:
    """The first lines of the first data member of a zip archive."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = _zip_members(zf)
            if not members:
                raise CaptureFormatError(
                    f"{path}: the zip archive is empty; expected a Bybit historical order-book "
                    "download holding a .data file"
                )
            with zf.open(members[0]) as f:
                data = f.read(_SNIFF_BYTES)
    except (zipfile.BadZipFile, *_COMPRESSED_ERRORS) as exc:
        raise CaptureFormatError(f"{path}: zip data is unreadable ({exc})") from None
    except OSError as exc:
        raise CaptureFormatError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    return _split_head(data)[0]


# --- detection ----------------------------------------------------------------------------

_EXPECTED: Final = (
    "expected an hftbacktest collector file (lines '<recv_ns> <frame>', usually gzip), a "
    "cryptofeed raw capture NAME.ws.N.M (first line '<wss://url> <-> <connect_epoch_s>', "
    "then '<recv_epoch_s>: <frame>'), a cryptofeed format-2 JSONL capture (records with "
    '"t": header/connect/send/recv/http), a Bybit historical order-book download '
    "(.data.zip), NDJSON of raw venue frames (one per line), or an mdgateway capture "
    "directory (mdgw-<session>-<n>.gz files)"
)


class _Cf2Probe(msgspec.Struct):
    t: str
    format: int | None = None


_cf2_probe_decoder: Final = msgspec.json.Decoder(_Cf2Probe)


def _cf2_kind(line: bytes, whole: bool) -> str | None:
    """The record kind when ``line`` is a cryptofeed format-2 record, else None.

    A whole line must decode with a known ``t``; a line cut at the sniff limit is judged by
    its prefix.
    """
    if not line.lstrip().startswith(b"{"):
        return None
    if not whole:
        m = _CF2_KIND.search(line[:_SHAPE_PREFIX])
        return m.group(1).decode() if m else None
    try:
        probe = _cf2_probe_decoder.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if probe.t not in _CF2_KINDS:
        return None
    if probe.t == "header" and probe.format != _CF2_FORMAT:
        raise CaptureFormatError(
            f"cryptofeed capture format {probe.format!r} is not supported (format {_CF2_FORMAT} is)"
        )
    return probe.t


def _is_json(line: bytes, whole: bool) -> bool:
    """True when ``line`` is a JSON object or array (judged by its start when cut)."""
    if line.lstrip()[:1] not in (b"{", b"["):
        return False
    if not whole:
        return True
    try:
        msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False
    return True


def _is_bybit_history_line(line: bytes) -> bool:
    """A Bybit v5 book message with ``cts``: a line of Bybit's historical download."""
    head = line[:_SHAPE_PREFIX]
    return bool(_BYBIT_BOOK_TOPIC.search(head) and _BYBIT_CTS.search(line))


def _detect_zip(path: Path) -> CaptureFormat:
    lines = _zip_head(path)
    if lines and _is_bybit_history_line(lines[0]):
        return CaptureFormat.BYBIT_HISTORY
    start = lines[0][:60] if lines else b""
    raise CaptureFormatError(
        f"{path}: a zip archive that is not a Bybit historical order-book download (its "
        f"data starts {start!r}); {_EXPECTED}"
    )


def detect_format(path: Path) -> CaptureFormat:
    """The format of the capture at ``path``, told from its content, not its name.

    Raises CaptureFormatError, naming the path and the formats expected, when the file
    cannot be read, is empty, or has none of the known shapes.
    """
    if path.is_dir():
        if mdgw.session_files(path):
            return CaptureFormat.MDGATEWAY
        raise CaptureFormatError(
            f"{path}: a directory without mdgateway capture files (mdgw-<session>-<n>.gz)"
        )
    magic = _magic(path)
    if magic[:2] == _GZIP_MAGIC and _mdgw_head(path):
        return CaptureFormat.MDGATEWAY
    if magic in _ZIP_MAGICS:
        return _detect_zip(path)
    if magic == _ZSTD_MAGIC:
        raise CaptureFormatError(
            f"{path}: zstd-compressed; decompress it first (zstd -d), or recompress it with "
            "gzip, which is read directly"
        )
    head, last_whole = _split_head(_read_head(path))
    lines = [line for line in head if not line.startswith(_CF_CONFIG)]
    if not lines:
        raise CaptureFormatError(f"{path}: the file is empty; {_EXPECTED}")
    first = lines[0]
    first_whole = len(lines) > 1 or last_whole
    if _HFT_LINE.match(first):
        return CaptureFormat.HFTBACKTEST
    if _CF_CONNECT.fullmatch(first) or _CF_FRAME.match(first):
        return CaptureFormat.CRYPTOFEED_RAW
    if _CF_HTTP.match(first):
        raise CaptureFormatError(
            f"{path}: this is the REST half (NAME.http.N.M) of a cryptofeed raw capture; "
            "pass the NAME.ws.N.M file beside it"
        )
    try:
        kind = _cf2_kind(first, first_whole)
    except CaptureFormatError as exc:
        raise CaptureFormatError(f"{path}: {exc}") from None
    if kind is not None:
        return CaptureFormat.CRYPTOFEED_JSONL
    if _is_json(first, first_whole):
        if _is_bybit_history_line(first):
            return CaptureFormat.BYBIT_HISTORY
        if any(venue_from_frame(line) is not None for line in lines):
            return CaptureFormat.NDJSON
    raise CaptureFormatError(
        f"{path}: unrecognised capture format, starts {first[:60]!r}; {_EXPECTED}"
    )


def detect_venue(path: Path, fmt: CaptureFormat | None = None) -> str | None:
    """The venue that the capture at ``path`` recorded, or None when it cannot be told.

    cryptofeed raw: the host of the first connection URL, else the feed NAME of the file.
    hftbacktest: the shape of the first depth update (Binance spot, USD-M or COIN-M).
    cryptofeed JSONL: the venue of every connection URL (:func:`connection_venue`; the whole
    file is scanned for them) when they agree; when they differ (a Bybit capture with spot
    and linear connections) the exchange (``bybit``), and the venue of each record is then
    ``connection_venue(record.url)``; without connect records, the header's exchange.
    Bybit history: ``bybit-linear`` for ``orderbook.500`` books of a USDT/USDC symbol (500
    levels were offered for derivatives only), else ``bybit``.
    NDJSON: the shape of the first frame that has one (:func:`venue_from_frame`).
    mdgateway: the venue of every connection URL, else the venue name its connect line
    records (loopback and simulated endpoints), when they agree.
    """
    fmt = fmt or detect_format(path)
    if fmt is CaptureFormat.MDGATEWAY:
        return _mdgw_venue(path)
    if fmt is CaptureFormat.CRYPTOFEED_JSONL:
        return _cf2_venue(path)
    if fmt is CaptureFormat.BYBIT_HISTORY:
        return _bybit_history_venue(path)
    if fmt is CaptureFormat.NDJSON:
        for lineno, line in _lines(path, None):
            if lineno > _SNIFF_LINES:
                break
            venue = venue_from_frame(line)
            if venue is not None:
                return venue
        return None
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

    ``path`` is the file a user names: an hftbacktest file, the ``NAME.ws.N.M`` file of a
    cryptofeed raw pair (its ``NAME.http.*`` siblings are found and merged in), a cryptofeed
    format-2 JSONL file, a Bybit historical download or an NDJSON file. The format is
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
        if self.format is CaptureFormat.MDGATEWAY:
            return mdgw.session_files(self.path)
        return [self.path]

    def __iter__(self) -> Iterator[CaptureRecord]:
        self.stats = stats = ReadStats()
        sources = self.sources()
        stats.sources = [str(p) for p in sources]
        records: Iterator[CaptureRecord]
        if self.format is CaptureFormat.HFTBACKTEST:
            records = _read_hftbacktest(self.path, stats)
        elif self.format is CaptureFormat.CRYPTOFEED_JSONL:
            records = _read_cryptofeed_jsonl(self.path, stats)
        elif self.format is CaptureFormat.BYBIT_HISTORY:
            records = _read_bybit_history(self.path, stats)
        elif self.format is CaptureFormat.NDJSON:
            records = _read_ndjson(self.path, stats)
        elif self.format is CaptureFormat.MDGATEWAY:
            records = _read_mdgateway(sources, stats)
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


# --- cryptofeed format 2 ------------------------------------------------------------------


class _Cf2Record(msgspec.Struct):
    t: str
    conn: str | None = None
    ts: msgspec.Raw = msgspec.Raw()
    data: str | None = None
    b64: str | None = None
    url: str | None = None
    addr: str | None = None
    exchange: str | None = None


_cf2_decoder: Final = msgspec.json.Decoder(_Cf2Record)


class _Cf2Line(msgspec.Struct, frozen=True, gc=False):
    """One format-2 record, checked: ``recv_ns`` is -1 for header records."""

    kind: str
    conn: str
    recv_ns: int
    url: str
    payload: bytes


def _cf2_line(line: bytes) -> _Cf2Line:
    """The record of one line; ValueError (with the reason) when it is not a valid one."""
    try:
        r = _cf2_decoder.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a format-2 record ({exc})") from None
    if r.t not in _CF2_KINDS:
        raise ValueError(f"unknown record type {r.t!r}")
    if r.t == "header":
        return _Cf2Line("header", "", -1, "", b"")
    if not r.ts:
        raise ValueError(f"{r.t} record without ts")
    recv_ns = _json_seconds_to_ns(bytes(r.ts))
    conn = r.conn or ""
    if r.t in ("recv", "connect", "send") and not conn:
        raise ValueError(f"{r.t} record without conn")
    if r.t == "connect":
        if not r.addr:
            raise ValueError("connect record without addr")
        return _Cf2Line("connect", conn, recv_ns, r.addr, b"")
    if r.t == "send":
        return _Cf2Line("send", conn, recv_ns, r.addr or "", b"")
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
        return _Cf2Line("http", conn, recv_ns, r.url, payload)
    return _Cf2Line("recv", conn, recv_ns, "", payload)


class _Cf2Scan(msgspec.Struct):
    #: Lanes (``conn`` values, ``""`` for records without one) in order of first appearance.
    lanes: list[str]
    #: The ``conn_id`` of each connection of each ws lane: a reconnect adds one.
    conn_ids: dict[str, list[int]]
    #: True when the records' times never step back in file order.
    in_order: bool


def _scan_cryptofeed_jsonl(path: Path, stats: ReadStats) -> _Cf2Scan:
    """One pass over the file: counts its lines, checks each record, numbers the
    connections and tells whether the file is in time order."""
    lanes: dict[str, None] = {}
    conn_ids: dict[str, list[int]] = {}
    opened: set[str] = set()
    next_id = 0
    latest = -1
    in_order = True
    for lineno, line in _lines(path, stats):
        try:
            rec = _cf2_line(line)
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
    return _Cf2Scan(list(lanes), conn_ids, in_order)


def _cf2_records(
    path: Path, conn_ids: dict[str, list[int]], lane: str | None
) -> Iterator[CaptureRecord]:
    """The records of the file, or of one lane of it; lines are not counted (the scan did)
    and invalid ones are skipped (the scan counted them)."""
    needle = msgspec.json.encode(lane) if lane else None
    cursor: dict[str, int] = {}
    urls: dict[str, str] = {}
    opened: set[str] = set()
    for _, line in _lines(path, None):
        if needle is not None and needle not in line:
            continue
        try:
            rec = _cf2_line(line)
        except ValueError:
            continue
        if rec.kind == "header" or (lane is not None and rec.conn != lane):
            continue
        if rec.kind == "http":
            yield CaptureRecord(rec.recv_ns, REST_CONN_ID, "rest", rec.url, rec.payload)
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


def _read_cryptofeed_jsonl(path: Path, stats: ReadStats) -> Iterator[CaptureRecord]:
    scan = _scan_cryptofeed_jsonl(path, stats)
    if scan.in_order or len(scan.lanes) < 2:
        yield from _cf2_records(path, scan.conn_ids, None)
        return
    # The connections were written one after another: read each on its own and merge them
    # on time (each keeps its own order; equal times go in order of first appearance).
    lanes = [_cf2_records(path, scan.conn_ids, lane) for lane in scan.lanes]
    yield from heapq.merge(*lanes, key=attrgetter("recv_ns"))


def _cf2_venue(path: Path) -> str | None:
    """See :func:`detect_venue`."""
    exchange: str | None = None
    venues: dict[str, None] = {}
    for _, line in _lines(path, None):
        if b'"header"' not in line and b'"connect"' not in line:
            continue
        try:
            rec = _cf2_decoder.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError):
            continue
        if rec.t == "header" and rec.exchange and exchange is None:
            exchange = rec.exchange
        elif rec.t == "connect" and rec.addr:
            venue = connection_venue(rec.addr)
            if venue is not None:
                venues.setdefault(venue)
    if len(venues) == 1:
        return next(iter(venues))
    if venues:
        # Several categories of one exchange (Bybit spot and linear): the exchange.
        families = {"bybit" if v.startswith("bybit-") else v for v in venues}
        return families.pop() if len(families) == 1 else None
    return _CRYPTOFEED_NAMES.get(exchange.upper()) if exchange else None


# --- Bybit historical download ------------------------------------------------------------


class _BybitTs(msgspec.Struct):
    ts: int


_bybit_ts_decoder: Final = msgspec.json.Decoder(_BybitTs)


def _bybit_history_lines(path: Path, stats: ReadStats) -> Iterator[tuple[str, int, bytes]]:
    """``(source name, line number, line)`` of the ``.data`` members, or of the plain file."""
    if _magic(path) not in _ZIP_MAGICS:
        for lineno, line in _lines(path, stats):
            yield path.name, lineno, line
        return
    try:
        with zipfile.ZipFile(path) as zf:
            for info in _zip_members(zf):
                source = f"{path.name}!{info.filename}"
                with zf.open(info) as f:
                    for lineno, line in _stream_lines(f, source, stats):
                        yield source, lineno, line
    except _COMPRESSED_ERRORS as exc:
        stats.truncated = True
        stats.examples.append(f"{path.name}: zip data is unreadable: {exc}")


def _read_bybit_history(path: Path, stats: ReadStats) -> Iterator[CaptureRecord]:
    for source, lineno, line in _bybit_history_lines(path, stats):
        try:
            ts = _bybit_ts_decoder.decode(line).ts
        except (msgspec.DecodeError, UnicodeDecodeError):
            stats.bad_line(source, lineno, "not a Bybit message with an integer ts", line)
            continue
        if ts < 0:
            stats.bad_line(source, lineno, "negative ts", line)
            continue
        yield CaptureRecord(ts * 1_000_000, 0, "ws", "", line)


def _bybit_history_venue(path: Path) -> str | None:
    """See :func:`detect_venue`."""
    head = _zip_head(path) if _magic(path) in _ZIP_MAGICS else _head(path)
    m = _BYBIT_BOOK_TOPIC.search(head[0][:_SHAPE_PREFIX]) if head else None
    if m is None:
        return None
    depth, symbol = int(m.group(1)), m.group(2)
    if depth == 500 and symbol.endswith((b"USDT", b"USDC", b"PERP")):
        return "bybit-linear"
    return "bybit"


# --- NDJSON -------------------------------------------------------------------------------


def _read_ndjson(path: Path, stats: ReadStats) -> Iterator[CaptureRecord]:
    for lineno, line in _lines(path, stats):
        if line.lstrip()[:1] not in (b"{", b"["):
            stats.bad_line(path, lineno, "not a JSON frame", line)
            continue
        # No time is recorded: the line index keeps the order, and says nothing more.
        yield CaptureRecord(lineno - 1, 0, "ws", "", line)


# --- mdgateway ------------------------------------------------------------------------------

#: Lines scanned for connect records to tell the venue of an mdgateway capture.
_MDGW_VENUE_LINES: Final = 200_000


def _mdgw_head(path: Path) -> bool:
    """True when the file's first complete gzip member starts with an mdgateway header."""
    reader = mdgw.MemberReader()
    try:
        for line in mdgw.iter_lines(path, reader):
            return mdgw.looks_like_header(line)
    except OSError:
        return False
    return False


def _read_mdgateway(files: list[Path], stats: ReadStats) -> Iterator[CaptureRecord]:
    offset = 0
    max_id = -1
    last_ns = 0
    session: str | None = None
    urls: dict[int, str] = {}
    for path in files:
        parsed = mdgw.parse_name(path.name)
        name = parsed[0] if parsed else path.name
        if session is not None and name != session:
            # A new run of the gateway: the connections of the last one are over.
            for conn_id, url in urls.items():
                yield CaptureRecord(last_ns, conn_id, "disconnect", url, b"")
            urls.clear()
            offset = max_id + 1
        session = name
        reader = mdgw.MemberReader()
        for lineno, line in enumerate(mdgw.iter_lines(path, reader), 1):
            if not line.strip():
                continue
            stats.lines += 1
            try:
                rec = mdgw.decode_line(line)
            except ValueError as exc:
                stats.bad_line(path, lineno, str(exc), line)
                continue
            last_ns = rec.recv_ns
            kind = rec.kind
            if kind == "header":
                stats.skipped += 1
                continue
            if kind == "gap":
                dropped = mdgw.gap_dropped(rec.payload)
                stats.dropped += dropped
                if len(stats.examples) < _MAX_EXAMPLES:
                    stats.examples.append(
                        f"{path.name}:{lineno}: the writer dropped {dropped} records here"
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
            stats.examples.append(f"{path.name}: {reader.reason}")


def _mdgw_venue(path: Path) -> str | None:
    """See :func:`detect_venue`."""
    venues: dict[str, None] = {}
    seen = 0
    for file in mdgw.session_files(path):
        reader = mdgw.MemberReader()
        for line in mdgw.iter_lines(file, reader):
            seen += 1
            if seen > _MDGW_VENUE_LINES:
                break
            if b" connect " not in line[:40]:
                continue
            try:
                rec = mdgw.decode_line(line)
            except ValueError:
                continue
            venue = connection_venue(rec.url) or mdgw.connect_venue(rec.payload)
            if venue:
                venues.setdefault(venue)
    if len(venues) == 1:
        return next(iter(venues))
    families = {"bybit" if v.startswith("bybit-") else v for v in venues}
    return families.pop() if len(families) == 1 else None
