"""The contract of a format module: :class:`FormatSpec`, how its files are recognised and read.

Each format module defines one ``SPEC``; :mod:`gateway.capture.registry` asks them in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.capture.files import Probe
from gateway.capture.records import CaptureFormat
from gateway.capture.records import CaptureRecord
from gateway.capture.records import ReadStats


def _only_the_path(path: Path) -> list[Path]:
    return [path]


@dataclass(frozen=True)
class FormatSpec:
    """One capture format: how its files are recognised and read. Each format module
    defines one; :mod:`gateway.capture.registry` asks them in turn."""

    format: CaptureFormat
    #: What a capture of the format looks like, for the message of an unrecognised file.
    expected: str
    #: True when the probed file is of the format. Raises CaptureFormatError, naming the
    #: path, for a file of the format that cannot be read, so that the user learns why
    #: rather than that nothing matched.
    detect: Callable[[Probe], bool]
    #: The records of the capture at a path whose files are the given sources, counted in
    #: the stats; bad lines are counted, never raised.
    read: Callable[[Path, list[Path], ReadStats], Iterator[CaptureRecord]]
    #: The venue the capture recorded, or None when it cannot be told.
    venue: Callable[[Path], str | None]
    #: The files a capture at a path is read from, the named one first.
    sources: Callable[[Path], list[Path]] = _only_the_path
    #: Prefixes of lines that carry nothing and that detection looks past (cryptofeed's
    #: ``configuration:`` line).
    preamble: tuple[bytes, ...] = ()
    #: Told from the file's bytes (a directory, a gzip member's header) before its text is
    #: read: asked before the other formats, so that a file whose text cannot be read as a
    #: whole (a gzip member cut short) is still told.
    by_bytes: bool = False
