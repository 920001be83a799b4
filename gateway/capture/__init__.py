"""Captures: the project's own codec and a reader per recorded format, behind one registry.

Pure: bytes in, records out. A format is a module (``hftbacktest``, ``cryptofeed_raw``,
``cryptofeed_jsonl``, ``bybit_history``, ``ndjson``, ``mdgateway`` over ``codec``) with a
:class:`FormatSpec`; :mod:`~gateway.capture.registry` tells a file's format and reads it;
:mod:`~gateway.capture.venues` tells venues by asking the venue adapters.
"""

from gateway.capture.records import (
    INLINE_SNAPSHOT_SCHEME,
    REST_CONN_ID,
    REST_SYMBOL_PARAMS,
    CaptureFormat,
    CaptureFormatError,
    CaptureRecord,
    ReadStats,
    RecordKind,
    decimal_seconds_to_ns,
    inline_snapshot_url,
    is_inline_snapshot,
    rest_symbol,
)
from gateway.capture.registry import FORMATS, CaptureReader, detect_format, detect_venue
from gateway.capture.spec import FormatSpec
from gateway.capture.venues import (
    KNOWN_VENUES,
    connection_venue,
    venue_from_frame,
    venue_from_url,
)

__all__ = [
    "FORMATS",
    "INLINE_SNAPSHOT_SCHEME",
    "KNOWN_VENUES",
    "REST_CONN_ID",
    "REST_SYMBOL_PARAMS",
    "CaptureFormat",
    "CaptureFormatError",
    "CaptureReader",
    "CaptureRecord",
    "FormatSpec",
    "ReadStats",
    "RecordKind",
    "connection_venue",
    "decimal_seconds_to_ns",
    "detect_format",
    "detect_venue",
    "inline_snapshot_url",
    "is_inline_snapshot",
    "rest_symbol",
    "venue_from_frame",
    "venue_from_url",
]
