"""Captures: the project's own codec and a reader per recorded format, behind one registry.

Pure: bytes in, records out. A format is a module (``hftbacktest``, ``cryptofeed_raw``,
``cryptofeed_jsonl``, ``bybit_history``, ``ndjson``, ``mdgateway`` over ``codec``) with a
:class:`FormatSpec`; :mod:`~gateway.capture.registry` tells a file's format and reads it;
:mod:`~gateway.capture.venues` tells venues by asking the venue adapters.
"""

from gateway.capture.records import INLINE_SNAPSHOT_SCHEME
from gateway.capture.records import REST_CONN_ID
from gateway.capture.records import REST_SYMBOL_PARAMS
from gateway.capture.records import CaptureFormat
from gateway.capture.records import CaptureFormatError
from gateway.capture.records import CaptureRecord
from gateway.capture.records import ReadStats
from gateway.capture.records import RecordKind
from gateway.capture.records import decimal_seconds_to_ns
from gateway.capture.records import inline_snapshot_url
from gateway.capture.records import is_inline_snapshot
from gateway.capture.records import rest_symbol
from gateway.capture.registry import FORMATS
from gateway.capture.registry import CaptureReader
from gateway.capture.registry import detect_format
from gateway.capture.registry import detect_venue
from gateway.capture.spec import FormatSpec
from gateway.capture.venues import KNOWN_VENUES
from gateway.capture.venues import connection_venue
from gateway.capture.venues import venue_from_frame
from gateway.capture.venues import venue_from_url

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
