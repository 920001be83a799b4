"""``GET /metrics``: the gateway's counters in Prometheus' text format, read at scrape time.

:class:`GatewayCollector` is a prometheus_client custom collector. It keeps no metric of its
own and nothing on the receive path touches it: each scrape reads the stats objects the
components keep anyway (connections, venue pipelines, symbol arbiters, trade dedup, REST
fetchers, the fan-out, the capture writer) and builds the metric families afresh; the text
is prometheus_client's exposition (:func:`prometheus_client.generate_latest`).
``docs/metrics.md`` lists every name.

Exporting a counter a stats object already keeps is one line: a :class:`Stat` in the table
of that object (``SYMBOL_STATS`` for :class:`~gateway.core.arbiter.SymbolStats`, ...), and
its row in docs/metrics.md (a test holds the two together).
"""

from __future__ import annotations

import http
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    StateSetMetricFamily,
)
from prometheus_client.registry import Collector

from gateway.core.histogram import Histogram
from gateway.core.model import SymbolState
from gateway.io.health import HttpAnswer

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from gateway.io.capture_writer import CaptureWriter
    from gateway.io.fanout import Fanout
    from gateway.io.venue_runtime import VenueRuntime

#: Every name the gateway exports starts with it.
PREFIX: Final = "mdgateway_"
#: The text format 0.0.4, which every Prometheus reads; the gateway's names (plain
#: ``[a-z_]``) make generate_latest's output exactly that format.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class MetricsSource(Protocol):
    """What the metrics are read from at each scrape (the :class:`~gateway.io.service.Service`)."""

    @property
    def venues(self) -> Sequence[VenueRuntime]: ...
    @property
    def fanout(self) -> Fanout: ...
    @property
    def capture(self) -> CaptureWriter | None: ...


#: The ``connection`` label of REST snapshot bodies (counted as bad frames of no connection).
REST_CONNECTION: Final = "rest"


class Stat(NamedTuple):
    """One metric read from an attribute of a stats object at each scrape."""

    #: The metric's name after :data:`PREFIX`; a counter is exposed with ``_total``.
    name: str
    #: The attribute of the stats object (a number; a bool is 0 or 1).
    attribute: str
    help: str
    #: False: a gauge (a value that goes up and down).
    counter: bool = True


# --- the tables: one line per exported counter ----------------------------------------------

#: gateway.core.pipeline.VenueStats; labels venue.
VENUE_STATS: Final = (
    Stat("venue_bad_frames", "bad_frames", "Frames and REST bodies the venue's parser rejected."),
    Stat("venue_unknown_symbols", "unknown_symbols", "Book updates for symbols not carried."),
    Stat("venue_notices", "notices", "Control messages from the venue (acks, errors, notices)."),
    Stat("venue_connection_gaps", "connection_gaps", "Connection-wide sequence jumps."),
    Stat("venue_resubscribes", "resubscribes", "Resubscriptions of a symbol on a connection."),
    Stat(
        "venue_book_updates_on_trade_connections",
        "book_updates_on_trade_connections",
        "Book updates received on trade-only connections, ignored.",
    ),
    Stat(
        "venue_snapshots_superseded",
        "snapshots_superseded",
        "REST snapshots discarded: answers to a superseded fetch attempt.",
    ),
    Stat(
        "venue_silent_channels",
        "silent_channels",
        "Symbol channels found dead on a connection that carries other traffic.",
    ),
    Stat("venue_revived_channels", "revived_channels", "Dead symbol channels that came back."),
    Stat("venue_rejected_symbols", "rejected_symbols", "Symbols the venue refused."),
)

#: gateway.io.upstream.FetcherStats; labels venue.
FETCHER_STATS: Final = (
    Stat("snapshot_requests", "requests", "REST snapshot requests sent."),
    Stat("snapshots_fetched", "snapshots", "REST snapshots received and handed to the books."),
    Stat("snapshot_failures", "failures", "REST snapshot requests that failed."),
    Stat("rest_rate_limited", "rate_limited", "REST responses saying the rate limit was hit."),
    Stat("rest_rate_limit_waits", "rate_limit_waits", "Waits for the REST weight budget."),
    Stat(
        "rest_rate_limit_wait_seconds",
        "rate_limit_wait_s",
        "Seconds waited for the REST weight budget.",
    ),
    Stat(
        "snapshot_requests_in_flight",
        "in_flight",
        "REST snapshot requests in flight.",
        counter=False,
    ),
)

#: gateway.io.upstream.ConnectionStats; labels venue, connection.
CONNECTION_STATS: Final = (
    Stat("connection_up", "connected", "1 while the connection is open.", counter=False),
    Stat("connection_frames", "frames", "Frames received."),
    Stat("connection_received_bytes", "received_bytes", "Bytes of the frames received."),
    Stat("connection_connects", "connects", "Connections opened."),
    Stat("connection_reconnects", "reconnects", "Connections opened after the first."),
    Stat("connection_failed_attempts", "failed_attempts", "Connection attempts that failed."),
    Stat(
        "connection_rate_limited",
        "rate_limited",
        "Handshakes the venue refused over its limits (429, 418).",
    ),
    Stat("connection_messages_sent", "messages_sent", "Messages sent to the venue."),
    Stat(
        "connection_messages_dropped",
        "messages_dropped",
        "Messages to the venue not sent: connection down or its queue full.",
    ),
    Stat("connection_score", "score", "Book connections: the score, 0-1.", counter=False),
)

#: gateway.core.renewal.SlotRenewals; labels venue, slot.
SLOT_RENEWAL_STATS: Final = (
    Stat("slot_renewals", "caught_up", "Renewals whose replacement caught up first."),
    Stat("slot_renewals_timed_out", "timed_out", "Renewals closed at renew_timeout_s."),
    Stat("slot_renewals_old_down", "old_down", "Renewals ended by the old connection's fall."),
)

#: gateway.core.score.ReplacementPolicy; labels venue.
REPLACEMENT_STATS: Final = (
    Stat("venue_connection_replacements", "replaced", "Worst-scored connections replaced."),
)

#: gateway.core.score.StandbyPolicy (venues with standby endpoints); labels venue.
STANDBY_STATS: Final = (
    Stat("venue_standby_activations", "activations", "Times the standby endpoints connected."),
)

#: gateway.core.arbiter.SymbolStats; labels venue, symbol.
SYMBOL_STATS: Final = (
    Stat("symbol_updates", "updates", "Book updates applied."),
    Stat("symbol_duplicates", "duplicates", "Copies of updates already applied, dropped."),
    Stat("symbol_stale_updates", "stale", "Updates older than the book's snapshot, dropped."),
    Stat("symbol_gaps", "gaps", "Updates lost on every connection."),
    Stat("symbol_resyncs", "resyncs", "Book rebuilds after a gap or a failed replica."),
    Stat("symbol_crossed_books", "crossed", "Books found crossed when published."),
    Stat("symbol_snapshots", "snapshots", "Snapshots applied."),
    Stat("symbol_snapshots_unused", "snapshots_unused", "Snapshots not used."),
    Stat("symbol_pending_dropped", "pending_dropped", "Buffered updates dropped (buffer full)."),
    Stat("symbol_bad_updates", "bad_updates", "Updates or snapshots the book refused."),
    Stat("symbol_checksum_ok", "checksum_ok", "Venue checksums that matched."),
    Stat("symbol_checksum_failures", "checksum_failed", "Venue checksums that did not match."),
    Stat("symbol_jumps", "jumps", "In-band snapshots newer than the book, published as deltas."),
    Stat("symbol_venue_resets", "venue_resets", "Sequence resets declared or recognised."),
    Stat("symbol_implausible_updates", "implausible", "Updates held: ids jumped too far."),
    Stat("symbol_confirmed_updates", "confirmed", "Held updates confirmed, then applied."),
    Stat("symbol_obsolete_updates", "obsolete", "Held or buffered updates made obsolete."),
    Stat("symbol_failovers", "failovers", "Moves of the output to another replica."),
    Stat("symbol_replica_failures", "replica_failures", "Replicas found wrong, resubscribed."),
    Stat(
        "symbol_audit_disagreements",
        "audit_disagreements",
        "Sampled updates whose copies from different connections disagreed.",
    ),
    Stat("symbol_audit_rest_ok", "audit_rest_ok", "Audit REST snapshots that agreed."),
    Stat("symbol_audit_rest_drift", "audit_rest_drift", "Audit REST snapshots that drifted."),
    Stat("symbol_audit_rest_skipped", "audit_rest_skipped", "Audit REST snapshots not compared."),
)

#: The symbol's arbiter (gateway.core.arbiter.SymbolArbiter); labels venue, symbol.
ARBITER_GAUGES: Final = (
    Stat("symbol_pending_updates", "pending", "Updates waiting for missing ids.", counter=False),
)

#: gateway.core.arbiter.ConnectionStats (one symbol, one connection); labels venue, symbol,
#: connection.
SYMBOL_CONNECTION_STATS: Final = (
    Stat("symbol_connection_updates", "received", "Book updates received."),
    Stat("symbol_connection_first_wins", "first_wins", "Updates this connection brought first."),
    Stat("symbol_connection_duplicates", "duplicates", "Updates another connection brought first."),
    Stat("symbol_connection_implausible", "implausible", "Updates held: ids jumped too far."),
    Stat(
        "symbol_connection_disagreements",
        "disagreements",
        "Held updates the connection's own stream contradicted: reconnected.",
    ),
    Stat(
        "symbol_connection_audit_disagreements",
        "audit_disagreements",
        "Sampled copies of this connection that disagreed with the others' (counted only).",
    ),
)

#: gateway.core.arbiter.TradeDedup; labels venue, symbol.
TRADE_STATS: Final = (
    Stat("trades", "accepted", "Trades published (first copy)."),
    Stat("trade_duplicates", "duplicates", "Trade copies dropped."),
)

#: gateway.io.fanout.FanoutStats; no labels.
FANOUT_STATS: Final = (
    Stat("fanout_subscribers", "subscribers", "Subscribers connected.", counter=False),
    Stat("fanout_connections", "subscribers_total", "Subscribers accepted."),
    Stat("fanout_refused", "rejected", "Subscribers refused (max_subscribers)."),
    Stat("fanout_messages_sent", "messages_sent", "Messages written to subscribers."),
    Stat("fanout_sent_bytes", "bytes_sent", "Bytes written to subscribers."),
    Stat("fanout_writes", "writes", "Transport writes to subscribers (messages coalesced)."),
    Stat("fanout_dropped_messages", "dropped", "Messages not written: subscriber behind."),
    Stat("fanout_conflations", "conflations", "Times a subscriber fell behind."),
    Stat("fanout_slow_disconnects", "slow_disconnects", "Subscribers closed as too slow."),
    Stat("fanout_bad_requests", "bad_requests", "Subscriber requests refused."),
    Stat("fanout_rate_limited", "rate_limited", "Subscriber requests refused: request rate."),
    Stat("fanout_subscriber_errors", "subscriber_errors", "Subscribers closed: internal error."),
    Stat("fanout_recoveries", "recoveries", "Books recovered for reconnecting subscribers."),
    Stat("fanout_recovered_messages", "recovered_messages", "Deltas re-sent on recovery."),
    Stat("fanout_recovery_misses", "recovery_misses", "Recoveries refused: a snapshot sent."),
)

#: gateway.io.capture_writer.CaptureStats (with --capture); no labels.
CAPTURE_STATS: Final = (
    Stat("capture_records", "records", "Records handed to the capture."),
    Stat("capture_written", "written", "Records written to the capture files."),
    Stat("capture_dropped", "dropped", "Records dropped from the capture."),
    Stat("capture_gaps", "gaps", "Gap records written."),
)


# --- the collector --------------------------------------------------------------------------

#: One object's label values, and the object.
Row = tuple[Sequence[str], object]


def families(stats: Sequence[Stat], labels: Sequence[str], rows: Iterable[Row]) -> list[Metric]:
    """One family per :class:`Stat`, with one sample per row."""
    built: list[CounterMetricFamily | GaugeMetricFamily] = [
        CounterMetricFamily(PREFIX + stat.name, stat.help, labels=labels)
        if stat.counter
        else GaugeMetricFamily(PREFIX + stat.name, stat.help, labels=labels)
        for stat in stats
    ]
    for values, obj in rows:
        for family, stat in zip(built, stats, strict=True):
            family.add_metric(values, float(getattr(obj, stat.attribute)))
    return list(built)


def histogram_buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [
        ("+Inf" if math.isinf(bound) else repr(bound), float(count))
        for bound, count in histogram.cumulative()
    ]


class GatewayCollector(Collector):
    """Reads the service's stats at each scrape; see the module docstring."""

    def __init__(self, service: MetricsSource) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        service = self._service
        venues = service.venues
        yield from families(VENUE_STATS, ("venue",), [((v.cfg.venue,), v.stats) for v in venues])
        fetchers = [((v.cfg.venue,), v.fetcher.stats) for v in venues if v.fetcher is not None]
        yield from families(FETCHER_STATS, ("venue",), fetchers)
        yield from self._connections()
        yield from families(
            SLOT_RENEWAL_STATS,
            ("venue", "slot"),
            [
                ((v.cfg.venue, str(slot)), v.renewals.stats(slot))
                for v in venues
                for slot in v.renewals.slots
            ],
        )
        yield from families(
            REPLACEMENT_STATS, ("venue",), [((v.cfg.venue,), v.replacement) for v in venues]
        )
        standby = [((v.cfg.venue,), v.standby) for v in venues if v.standby is not None]
        yield from families(STANDBY_STATS, ("venue",), standby)
        yield from self._symbols()
        yield from families(FANOUT_STATS, (), [((), service.fanout.stats)])
        capture = service.capture
        yield from families(CAPTURE_STATS, (), [] if capture is None else [((), capture.stats)])

    def _connections(self) -> Iterator[Metric]:
        venues = self._service.venues
        labels = ("venue", "connection")
        yield from families(
            CONNECTION_STATS,
            labels,
            [
                ((v.cfg.venue, str(c.conn_id)), c.stats)
                for v in venues
                for c in v.connections.values()
            ],
        )
        info = GaugeMetricFamily(
            PREFIX + "connection_info",
            "1 per upstream connection: its endpoint, role (book, trade or standby) and slot.",
            labels=(*labels, "endpoint", "role", "slot"),
        )
        bad = CounterMetricFamily(
            PREFIX + "connection_bad_frames",
            "Frames the venue's parser rejected, per connection (REST bodies: connection=rest).",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            PREFIX + "connection_event_latency_seconds",
            "Venue event time to receive time of book updates that carry an event time.",
            labels=labels,
        )
        for v in venues:
            venue = v.cfg.venue
            for conn_id, c in v.connections.items():
                spec = v.slots[c.slot]
                role = "trade" if spec.trades_only else "standby" if spec.standby else "book"
                info.add_metric((venue, str(conn_id), c.endpoint, role, str(c.slot)), 1.0)
            for conn_id, count in v.bad_frames_by_conn.items():
                connection = REST_CONNECTION if conn_id < 0 else str(conn_id)
                bad.add_metric((venue, connection), float(count))
            for conn_id, histogram in v.pipeline.event_latency_by_conn.items():
                latency.add_metric(
                    (venue, str(conn_id)), histogram_buckets(histogram), histogram.sum
                )
        yield from (info, bad, latency)

    def _symbols(self) -> Iterator[Metric]:
        books = [
            (v.cfg.venue, key.partition(":")[2], book)
            for v in self._service.venues
            for key, book in v.books.items()
        ]
        labels = ("venue", "symbol")
        yield from families(SYMBOL_STATS, labels, [((v, s), b.stats) for v, s, b in books])
        yield from families(ARBITER_GAUGES, labels, [((v, s), b) for v, s, b in books])
        state = StateSetMetricFamily(
            PREFIX + "symbol_state", "The symbol's state: 1 for the one it is in.", labels=labels
        )
        for venue, symbol, book in books:
            state.add_metric((venue, symbol), {s.value: book.state == s for s in SymbolState})
        yield state
        yield from families(
            SYMBOL_CONNECTION_STATS,
            (*labels, "connection"),
            [
                ((venue, symbol, str(conn_id)), stats)
                for venue, symbol, book in books
                for conn_id, stats in book.stats.connections.items()
            ],
        )
        trades = [
            ((v.cfg.venue, key.partition(":")[2]), dedup)
            for v in self._service.venues
            for key, dedup in v.pipeline.trades.items()
        ]
        yield from families(TRADE_STATS, labels, trades)


def metrics_registry(service: MetricsSource) -> CollectorRegistry:
    """A registry of the service's metrics, with prometheus_client's process, platform and
    garbage-collector collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(service))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_answer(registry: CollectorRegistry) -> HttpAnswer:
    """The ``/metrics`` answer: the registry in the text exposition format."""
    return HttpAnswer(http.HTTPStatus.OK, CONTENT_TYPE, generate_latest(registry))
