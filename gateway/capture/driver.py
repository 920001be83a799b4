"""Capture records driving the gateway's own pipelines: the one driver of ``verify`` and
of the replay's books.

Pure: no asyncio, no clock; each record's ``recv_ns`` is the clock. Two parts:

- :class:`VenueRouter` says which venue each record belongs to, fed the records in
  recorded order (it remembers each connection's venue):

  - ``forced``: every record is the default venue's (``verify --venue``);
  - a connect: the venue its URL names (:func:`~gateway.capture.venues.connection_venue`),
    else the one its payload names (the project's own captures,
    :func:`~gateway.capture.codec.connect_venue`), else None: the connection is told by its
    first frame, as one with no connect record;
  - a frame or disconnect: its connection's venue; a connection not yet told gets the
    venue its URL names, else (a frame) the one its shape shows
    (:func:`~gateway.capture.venues.venue_from_frame`), else the default;
  - a REST record: the venue its URL names, else the one whose depth snapshot path
    (``snapshot_paths``) its path ends with (a REST base may carry a path of its own), else
    the default.

  A name that is an exchange (``bybit``: its URL or frames do not tell the market) is the
  default venue when that is one of the exchange's markets, else the exchange's first.
  None: no venue the gateway supports (and no default).
- :class:`RecordDriver` feeds records, with the venue the router gave, to one
  :class:`~gateway.core.pipeline.VenuePipeline` per venue. Before each record every
  pipeline's armed timer fires at the record's ``recv_ns``. A connection with no connect
  record (hftbacktest, NDJSON, Bybit history) is up from its first frame: an in-band
  snapshot first would otherwise find every connection down. A REST record is a depth
  snapshot when its URL is the inline scheme (:data:`INLINE_SNAPSHOT_SCHEME`) or its path
  ends with one of the venue's snapshot paths (any other REST call is not fed); its symbol
  is the URL's (:func:`~gateway.capture.records.rest_symbol`), and a snapshot URL naming
  none is a bad frame of the venue's pipeline, counted. ``venues`` limits the venues
  driven: the records of any other are not fed.

Publications and actions of the pipelines are not needed offline and are dropped; as
nothing is sent, the pipelines keep no request awaiting its snapshot (``awaiting`` None).
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from gateway.capture.codec import connect_venue
from gateway.capture.records import CaptureRecord
from gateway.capture.records import is_inline_snapshot
from gateway.capture.records import rest_symbol
from gateway.capture.venues import connection_venue
from gateway.capture.venues import venue_from_frame
from gateway.core.arbiter import DEFAULT_ARBITER_LIMITS
from gateway.core.arbiter import ArbiterLimits
from gateway.core.model import VenueContractError
from gateway.core.pipeline import VenuePipeline
from gateway.wire.venues import ADAPTERS
from gateway.wire.venues import VenueAdapter

__all__ = ["RecordDriver", "VenueRouter", "venue_adapter"]


def venue_adapter(name: str | None, prefer: VenueAdapter | None = None) -> VenueAdapter | None:
    """The adapter of a venue name; of an exchange's name (``bybit``), ``prefer`` when it is
    one of the exchange's markets, else the exchange's first; None for any other name."""
    if not name:
        return None
    adapter = ADAPTERS.get(name)
    if adapter is not None:
        return adapter
    if prefer is not None and prefer.exchange == name:
        return prefer
    return next((a for a in ADAPTERS.values() if a.exchange == name), None)


class VenueRouter:
    """Which venue each record belongs to: see the module doc. Ask in recorded order."""

    def __init__(self, default: VenueAdapter | None, *, forced: bool = False) -> None:
        """``default``: the venue of records nothing else tells; ``forced``: of every
        record (then ``default`` is required)."""
        if forced and default is None:
            raise ValueError("a forced venue needs a default")
        self.default = default
        self.forced = forced
        #: The venue of each connection told so far.
        self._conn_venue: dict[int, VenueAdapter] = {}

    def venue_of(self, record: CaptureRecord) -> VenueAdapter | None:
        """The venue of ``record``, the next in recorded order."""
        if self.forced:
            return self.default
        if record.kind == "rest":
            return self._rest_venue(record.url)
        if record.kind == "connect":
            adapter = self._adapter(connection_venue(record.url)) or self._adapter(
                connect_venue(record.payload)
            )
            if adapter is None:
                # Told by its first frame, as a connection with no connect record.
                self._conn_venue.pop(record.conn_id, None)
                return None
        else:
            known = self._conn_venue.get(record.conn_id)
            if known is not None:
                return known
            adapter = self._adapter(connection_venue(record.url)) if record.url else None
            if adapter is None and record.kind == "ws":
                adapter = self._adapter(venue_from_frame(record.payload))
            adapter = adapter or self.default
            if record.kind == "disconnect":
                return adapter
        if adapter is not None:
            self._conn_venue[record.conn_id] = adapter
        return adapter

    def _rest_venue(self, url: str) -> VenueAdapter | None:
        adapter = self._adapter(connection_venue(url))
        if adapter is None and not is_inline_snapshot(url):
            path = urlsplit(url).path
            adapter = next(
                (a for a in ADAPTERS.values() if path.endswith(a.snapshot_paths)),
                None,
            )
        return adapter or self.default

    def _adapter(self, name: str | None) -> VenueAdapter | None:
        return venue_adapter(name, self.default)


class RecordDriver:
    """One pipeline per venue, fed records with their venues: see the module doc."""

    def __init__(
        self,
        *,
        limits: ArbiterLimits = DEFAULT_ARBITER_LIMITS,
        venues: Collection[str] | None = None,
    ) -> None:
        """``limits``: every pipeline's arbiter limits; ``venues``: the venues driven
        (None: every venue)."""
        self.limits = limits
        self.venues = venues
        #: The pipeline of each venue driven, by venue name, created at its first record.
        self.pipelines: dict[str, VenuePipeline] = {}
        #: REST depth snapshots fed.
        self.rest_snapshots = 0
        #: Connections with a connect record or a frame fed: up.
        self._conns_seen: set[int] = set()

    def pipeline(self, adapter: VenueAdapter) -> VenuePipeline:
        """The venue's pipeline, created now if it has none yet."""
        pipeline = self.pipelines.get(adapter.venue)
        if pipeline is None:
            # Nothing is written offline: no request's wait for its snapshot would start.
            pipeline = self.pipelines[adapter.venue] = VenuePipeline(
                adapter, None, limits=self.limits, awaiting=None
            )
        return pipeline

    def feed(self, record: CaptureRecord, adapter: VenueAdapter | None) -> None:
        """One record, of the venue ``adapter`` (None: no venue, not fed); after every
        record before it, in recorded order."""
        now_ns = record.recv_ns
        for pipeline in self.pipelines.values():
            if pipeline.timer_armed:
                pipeline.on_timer(now_ns)
        if adapter is None or (self.venues is not None and adapter.venue not in self.venues):
            if record.kind == "connect":
                # A new connection on this id, not fed: up from its first frame.
                self._conns_seen.discard(record.conn_id)
            return
        pipeline = self.pipeline(adapter)
        if record.kind == "ws":
            if record.conn_id not in self._conns_seen:
                # No connect record fed for it: up from its first frame.
                self._conns_seen.add(record.conn_id)
                pipeline.receive_connection(record.conn_id, True, now_ns)
            pipeline.receive_frame(record.conn_id, record.payload, now_ns, now_ns)
        elif record.kind == "connect":
            self._conns_seen.add(record.conn_id)
            pipeline.receive_connection(record.conn_id, True, now_ns)
        elif record.kind == "disconnect":
            pipeline.receive_connection(record.conn_id, False, now_ns)
        elif record.kind == "rest":
            self._rest(pipeline, adapter.snapshot_paths, record)

    def _rest(self, pipeline: VenuePipeline, paths: tuple[str, ...], record: CaptureRecord) -> None:
        if not is_inline_snapshot(record.url) and not urlsplit(record.url).path.endswith(paths):
            return
        symbol = rest_symbol(record.url)
        if symbol is None:
            reason = VenueContractError("REST snapshot URL names no symbol")
            pipeline.reject_frame(record.conn_id, record.payload, reason)
            return
        self.rest_snapshots += 1
        pipeline.receive_rest(symbol, record.payload, record.recv_ns, record.recv_ns)
