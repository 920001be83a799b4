"""Bybit's historical order-book download (format ``bybit-history``).

``<date>_<SYMBOL>_ob500.data.zip``: a zip holding ``.data`` files of v5 WebSocket book
messages, one per line, with ``cts``; zipped or not. The download records no local time:
``recv_ns`` is the message's ``ts`` (the venue's push time, ms) in ns. Connection 0, URL
``""``.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import msgspec

from feeds import bybit
from gateway.capture import files
from gateway.capture.files import Probe
from gateway.capture.records import CaptureFormat
from gateway.capture.records import CaptureRecord
from gateway.capture.records import ReadStats
from gateway.capture.spec import FormatSpec
from gateway.capture.venues import FRAME_HEAD_BYTES

_EXPECTED: Final = "a Bybit historical order-book download (.data.zip)"

_BOOK_TOPIC: Final = re.compile(rb'"topic"\s*:\s*"orderbook\.(\d+)\.([^"]+)"')
_CTS: Final = re.compile(rb'"cts"\s*:')
_ZIP_EXPECTED: Final = "a Bybit historical order-book download holding a .data file"


class _Ts(msgspec.Struct):
    ts: int


_ts_decoder: Final = msgspec.json.Decoder(_Ts)


def _is_history_line(line: bytes) -> bool:
    """A Bybit v5 book message with ``cts``: a line of Bybit's historical download."""
    return bool(_BOOK_TOPIC.search(line[:FRAME_HEAD_BYTES]) and _CTS.search(line))


def detect(probe: Probe) -> bool:
    """A zip archive must be a download (else it is refused); a text file is one when
    its first line is a JSON book message with ``cts``."""
    if probe.magic in files.ZIP_MAGICS:
        lines = files.zip_head(probe.path, _ZIP_EXPECTED)
        if lines and _is_history_line(lines[0]):
            return True
        start = lines[0][:60] if lines else b""
        raise probe.refused(
            "a zip archive that is not a Bybit historical order-book download "
            f"(its data starts {start!r})"
        )
    return probe.first_is_json() and _is_history_line(probe.first)


def _lines(path: Path, stats: ReadStats) -> Iterator[tuple[str, int, bytes]]:
    """``(source name, line number, line)`` of the ``.data`` members, or of the plain file."""
    if files.magic(path) not in files.ZIP_MAGICS:
        for lineno, line in files.lines(path, stats):
            yield path.name, lineno, line
        return
    try:
        with zipfile.ZipFile(path) as zf:
            for info in files.zip_members(zf):
                source = f"{path.name}!{info.filename}"
                with zf.open(info) as f:
                    for lineno, line in files.stream_lines(f, source, stats):
                        yield source, lineno, line
    except files.COMPRESSED_ERRORS as exc:
        stats.truncated = True
        stats.examples.append(f"{path.name}: zip data is unreadable: {exc}")


def read(path: Path, sources: list[Path], stats: ReadStats) -> Iterator[CaptureRecord]:
    for source, lineno, line in _lines(path, stats):
        try:
            ts = _ts_decoder.decode(line).ts
        except (msgspec.DecodeError, UnicodeDecodeError):
            stats.bad_line(source, lineno, "not a Bybit message with an integer ts", line)
            continue
        if ts < 0:
            stats.bad_line(source, lineno, "negative ts", line)
            continue
        yield CaptureRecord(ts * 1_000_000, 0, "ws", "", line)


def venue(path: Path) -> str | None:
    """``bybit-linear`` for ``orderbook.500`` books of a USDT/USDC symbol (500 levels were
    offered for derivatives only), else the exchange (``bybit``)."""
    if files.magic(path) in files.ZIP_MAGICS:
        head = files.zip_head(path, _ZIP_EXPECTED)
    else:
        head = files.head(path)
    m = _BOOK_TOPIC.search(head[0][:FRAME_HEAD_BYTES]) if head else None
    if m is None:
        return None
    depth, symbol = int(m.group(1)), m.group(2)
    if depth == 500 and symbol.endswith((b"USDT", b"USDC", b"PERP")):
        return bybit.LINEAR
    return bybit.EXCHANGE


SPEC: Final = FormatSpec(CaptureFormat.BYBIT_HISTORY, _EXPECTED, detect, read, venue)
