"""What every capture reader yields and reports.

Pure: values and functions on bytes and text. Every format becomes one iterator of
:class:`CaptureRecord`, in the order the frames were received; :class:`ReadStats` says what
the reader saw and skipped. Times become integer nanoseconds from their decimal text, never
through a float.
"""

from __future__ import annotations

import decimal
import enum
import re
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Final
from typing import Literal
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import msgspec

__all__ = [
    "INLINE_SNAPSHOT_SCHEME",
    "REST_CONN_ID",
    "REST_SYMBOL_PARAMS",
    "CaptureFormat",
    "CaptureFormatError",
    "CaptureRecord",
    "ReadStats",
    "RecordKind",
    "decimal_seconds_to_ns",
    "inline_snapshot_url",
    "is_inline_snapshot",
    "json_seconds_to_ns",
    "rest_record",
    "rest_symbol",
]


class CaptureFormatError(Exception):
    """The file cannot be read as any supported capture format.

    The one error the capture readers raise for bad input; the message names the path and
    what was expected. Raised before the first record, never in the middle of a file.
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
#: Malformed lines quoted in ReadStats.
MAX_EXAMPLES: Final = 5


class CaptureRecord(msgspec.Struct, frozen=True, gc=False):
    """One recorded event.

    - ``ws``: ``payload`` is one WebSocket frame received on ``conn_id`` at ``recv_ns``;
      ``url`` is the connection's URL, or ``""`` when the capture did not record it.
    - ``rest``: ``payload`` is a REST response body; ``url`` is the request URL (symbol in its
      ``symbol=`` or ``instId=`` query parameter, see :func:`rest_symbol`); ``conn_id`` is
      ``REST_CONN_ID``.
    - ``connect`` / ``disconnect``: connection ``conn_id`` to ``url`` opened or ended;
      ``payload`` is empty.

    ``recv_ns`` is the local receive time in nanoseconds since the Unix epoch.
    """

    recv_ns: int
    conn_id: int
    kind: RecordKind
    url: str
    payload: bytes


def rest_record(recv_ns: int, url: str, body: bytes) -> CaptureRecord:
    """The record of a REST response with body ``body`` from ``url``."""
    return CaptureRecord(recv_ns, REST_CONN_ID, "rest", url, body)


def inline_snapshot_url(symbol: str) -> str:
    """The URL given to a REST snapshot whose request URL the format did not record."""
    return f"{INLINE_SNAPSHOT_SCHEME}:snapshot?symbol={symbol}"


def is_inline_snapshot(url: str) -> bool:
    """A REST record's URL made by :func:`inline_snapshot_url` (no request URL recorded)."""
    return urlsplit(url).scheme == INLINE_SNAPSHOT_SCHEME


#: Query parameters naming the symbol of a venue's REST depth request, in the order read:
#: ``symbol`` (Binance, Bybit, the inline URL), ``instId`` (OKX).
REST_SYMBOL_PARAMS: Final = ("symbol", "instId")


def rest_symbol(url: str) -> str | None:
    """The symbol a REST URL names (the first non-empty :data:`REST_SYMBOL_PARAMS`), or
    None."""
    query = parse_qs(urlsplit(url).query)
    for name in REST_SYMBOL_PARAMS:
        values = query.get(name)
        if values:
            return values[0]
    return None


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


def json_seconds_to_ns(raw: bytes) -> int:
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
        if len(self.examples) < MAX_EXAMPLES:
            name = source.name if isinstance(source, Path) else source
            self.examples.append(f"{name}:{lineno}: {reason}: {line[:80]!r}")
