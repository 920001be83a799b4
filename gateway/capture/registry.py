"""The capture formats, how a file's format is told, and the reader of any of them.

Pure: files in, records out. Each format is a module with a :class:`FormatSpec` (``SPEC``):
how its files are recognised, read and attributed to a venue. :data:`FORMATS` lists them in
the order detection asks them. Lines that do not have a format's syntax are counted in
:class:`ReadStats` and skipped; only a file whose format cannot be told raises
:class:`CaptureFormatError`. Whether a frame is a valid venue message is not this layer's
business: the venue parser decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

from gateway.capture import bybit_history
from gateway.capture import cryptofeed_jsonl
from gateway.capture import cryptofeed_raw
from gateway.capture import files
from gateway.capture import hftbacktest
from gateway.capture import mdgateway
from gateway.capture import ndjson
from gateway.capture.records import CaptureFormat
from gateway.capture.records import CaptureFormatError
from gateway.capture.records import CaptureRecord
from gateway.capture.records import ReadStats
from gateway.capture.spec import FormatSpec

__all__ = ["FORMATS", "CaptureReader", "detect_format", "detect_venue", "spec_of"]

#: Every format. Detection asks those told by their bytes first, then the others in this
#: order: NDJSON, told by the shape of any frame, last.
FORMATS: Final[tuple[FormatSpec, ...]] = (
    hftbacktest.SPEC,
    cryptofeed_raw.SPEC,
    cryptofeed_jsonl.SPEC,
    bybit_history.SPEC,
    ndjson.SPEC,
    mdgateway.SPEC,
)
_DETECTION_ORDER: Final = tuple(sorted(FORMATS, key=lambda spec: not spec.by_bytes))
_BY_FORMAT: Final = {spec.format: spec for spec in FORMATS}
_PREAMBLE: Final = tuple(prefix for spec in FORMATS for prefix in spec.preamble)
_EXPECTED: Final = (
    "expected " + ", ".join(spec.expected for spec in FORMATS[:-1]) + ", or " + FORMATS[-1].expected
)


def spec_of(fmt: CaptureFormat) -> FormatSpec:
    """The module spec of a format."""
    return _BY_FORMAT[fmt]


def detect_format(path: Path) -> CaptureFormat:
    """The format of the capture at ``path``, told from its content, not its name.

    Raises CaptureFormatError, naming the path and the formats expected, when the file
    cannot be read, is empty, or has none of the known shapes.
    """
    probe = files.Probe(path, _PREAMBLE)
    if probe.magic == files.ZSTD_MAGIC:
        raise CaptureFormatError(
            f"{path}: zstd-compressed; decompress it first (zstd -d), or recompress it with "
            "gzip, which is read directly"
        )
    for spec in _DETECTION_ORDER:
        if spec.detect(probe):
            return spec.format
    if probe.is_dir:
        raise CaptureFormatError(f"{path}: a directory that holds no capture; {_EXPECTED}")
    if not probe.lines:
        raise CaptureFormatError(f"{path}: the file is empty; {_EXPECTED}")
    raise CaptureFormatError(
        f"{path}: unrecognised capture format, starts {probe.first[:60]!r}; {_EXPECTED}"
    )


def detect_venue(path: Path, fmt: CaptureFormat | None = None) -> str | None:
    """The venue that the capture at ``path`` recorded, or None when it cannot be told.

    Each format tells it its own way (see each module's ``venue``), always by asking the
    venue adapters (:mod:`gateway.capture.venues`). Where a capture mixes markets of one
    exchange (Bybit spot and linear) it is the exchange, and the venue of each record is
    then ``connection_venue(record.url)``.
    """
    return spec_of(fmt or detect_format(path)).venue(path)


class CaptureReader:
    """Iterates the records of one capture, in receive order; ``stats`` fills as it goes.

    ``path`` is the file (or directory) a user names: an hftbacktest file, the
    ``NAME.ws.N.M`` file of a cryptofeed raw pair (its ``NAME.http.*`` siblings are found
    and merged in), a cryptofeed format-2 JSONL file, a Bybit historical download, an NDJSON
    file, or an mdgateway capture (directory or file). The format is detected from the
    content unless ``fmt`` is given. Construction raises CaptureFormatError; iteration
    raises nothing for bad lines (they are counted) and may be repeated, each time reading
    the files afresh.
    """

    def __init__(self, path: Path, fmt: CaptureFormat | None = None) -> None:
        self.path = path
        self.format = fmt or detect_format(path)
        self.stats = ReadStats()

    def sources(self) -> list[Path]:
        """The files this capture is read from, the named file first."""
        return spec_of(self.format).sources(self.path)

    def __iter__(self) -> Iterator[CaptureRecord]:
        self.stats = stats = ReadStats()
        sources = self.sources()
        stats.sources = [str(p) for p in sources]
        for record in spec_of(self.format).read(self.path, sources, stats):
            stats.records += 1
            yield record
