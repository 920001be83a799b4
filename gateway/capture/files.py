"""Reading capture files as lines, and probing a file's first bytes for detection.

Pure: files in, bytes out; no asyncio, no sockets. Gzip files are decompressed wherever they
are read; memory holds one line per open file, never the whole capture.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from collections.abc import Iterable
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Final

import msgspec

from gateway.capture.records import CaptureFormatError
from gateway.capture.records import ReadStats

GZIP_MAGIC: Final = b"\x1f\x8b"
ZIP_MAGICS: Final = (b"PK\x03\x04", b"PK\x05\x06")
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
#: Bytes read from the start of a file to tell its format.
SNIFF_BYTES: Final = 64 * 1024
#: Lines read from the start of a file to tell its venue from its frames.
SNIFF_LINES: Final = 2000
#: What a compressed stream raises when its data ends early or is corrupt.
COMPRESSED_ERRORS: Final = (EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile)


@contextmanager
def open_capture(path: Path) -> Iterator[io.BufferedIOBase]:
    """The file's bytes, decompressed when it starts with the gzip magic."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
        raw.seek(0)
        if magic != GZIP_MAGIC:
            yield raw
            return
        # GzipFile over an open file object does not close it: the outer ``with`` does.
        with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
            yield unzipped


def stream_lines(
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
    except COMPRESSED_ERRORS as exc:
        if stats is not None:
            stats.truncated = True
            stats.examples.append(f"{source}: compressed data ends early: {exc}")


def lines(path: Path, stats: ReadStats | None) -> Iterator[tuple[int, bytes]]:
    """:func:`stream_lines` of the file, decompressed when it is gzip."""
    with open_capture(path) as f:
        yield from stream_lines(f, path.name, stats)


def first_lines(path: Path) -> Iterator[bytes]:
    """The non-blank lines among the first :data:`SNIFF_LINES` of the file."""
    for lineno, line in lines(path, None):
        if lineno > SNIFF_LINES:
            return
        yield line


def _cannot_read(path: Path, exc: OSError) -> CaptureFormatError:
    return CaptureFormatError(f"{path}: cannot read the file ({exc.strerror or exc})")


def read_head(path: Path) -> bytes:
    """The first bytes of the file, decompressed when it is gzip."""
    try:
        with open_capture(path) as f:
            return f.read(SNIFF_BYTES)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CaptureFormatError(f"{path}: gzip data is unreadable ({exc})") from None
    except OSError as exc:
        raise _cannot_read(path, exc) from None


def split_head(data: bytes) -> tuple[list[bytes], bool]:
    """The non-blank lines of a head, and whether the last one is whole (not cut at
    :data:`SNIFF_BYTES`)."""
    last_whole = len(data) < SNIFF_BYTES or data.endswith(b"\n")
    found = [line.rstrip(b"\r") for line in data.split(b"\n") if line.strip()]
    return found, last_whole


def head(path: Path) -> list[bytes]:
    """The first few non-blank lines (or line prefixes) of the file, decompressed."""
    return split_head(read_head(path))[0]


def magic(path: Path) -> bytes:
    """The first four bytes of the file as stored."""
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError as exc:
        raise _cannot_read(path, exc) from None


def zip_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The ``.data`` members of an archive (all files when none is named so)."""
    files = [info for info in zf.infolist() if not info.is_dir()]
    data = [info for info in files if info.filename.endswith(".data")]
    return data or files


def zip_head(path: Path, expected: str) -> list[bytes]:
    """The first lines of the first data member of a zip archive; ``expected`` says what
    the archive should hold when it holds nothing."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = zip_members(zf)
            if not members:
                raise CaptureFormatError(f"{path}: the zip archive is empty; expected {expected}")
            with zf.open(members[0]) as f:
                data = f.read(SNIFF_BYTES)
    except (zipfile.BadZipFile, *COMPRESSED_ERRORS) as exc:
        raise CaptureFormatError(f"{path}: zip data is unreadable ({exc})") from None
    except OSError as exc:
        raise _cannot_read(path, exc) from None
    return split_head(data)[0]


def is_json(line: bytes, whole: bool) -> bool:
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


class Probe:
    """What detection reads of a file, read once and shared by every format's check.

    ``lines`` are the first non-blank lines of the decompressed head, past any preamble
    line (one starting with a prefix in ``preamble``); ``first`` is the first of them and
    ``first_whole`` whether it was read to its end. A directory has no magic and no lines.
    Reading raises CaptureFormatError naming the path.
    """

    def __init__(self, path: Path, preamble: tuple[bytes, ...] = ()) -> None:
        self.path = path
        self.is_dir = path.is_dir()
        self._preamble = preamble

    @cached_property
    def magic(self) -> bytes:
        return b"" if self.is_dir else magic(self.path)

    @cached_property
    def _head(self) -> tuple[list[bytes], bool]:
        if self.is_dir:
            return [], True
        found, last_whole = split_head(read_head(self.path))
        kept = [line for line in found if not (self._preamble and line.startswith(self._preamble))]
        return kept, last_whole

    @property
    def lines(self) -> list[bytes]:
        return self._head[0]

    @property
    def first(self) -> bytes:
        return self.lines[0] if self.lines else b""

    @property
    def first_whole(self) -> bool:
        return len(self.lines) > 1 or self._head[1]

    def refused(self, reason: str) -> CaptureFormatError:
        """The error for a file of a format that cannot be read: ``reason``, after the path."""
        return CaptureFormatError(f"{self.path}: {reason}")

    def first_is_json(self) -> bool:
        return bool(self.lines) and is_json(self.first, self.first_whole)
