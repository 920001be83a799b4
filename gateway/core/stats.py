"""The gateway's counters: every component's stats class, declared here once.

A field made with :func:`counter` or :func:`gauge` is exported by ``/metrics``
(:mod:`gateway.io.metrics`) under the metric name and help its metadata holds; one made
with :func:`counter_by` (counts by key) as a counter with a sample per key, the key the
value of the label its metadata names. :func:`exported` lists them, in field order. The
other fields (errors, clock readings, maxima) are read by logs, verify and the views; each
is listed with its reason in tests/gateway/core/test_stats.py, which fails on a field
neither exported nor listed. Exporting a counter a stats class keeps is one argument,
``metric=``, plus its row in docs/metrics.md (a test holds the two together).

The components own and update their stats objects (``stats.frames += 1``); the metrics
read them at each scrape. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any
from typing import Final
from typing import NamedTuple
from typing import TypeVar
from typing import overload

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: The key of a field's :class:`Metric` in its metadata.
_METRIC: Final = "metric"

_V = TypeVar("_V")


class Metric(NamedTuple):
    """A stats field's export, kept in its metadata: :class:`Stat` without the attribute."""

    name: str
    help: str
    counter: bool = True
    label: str | None = None


class Stat(NamedTuple):
    """One exported metric, read from ``attribute`` of a stats object at each scrape."""

    #: The metric's name without the exporter's prefix; a counter is exposed with ``_total``.
    name: str
    #: The attribute of the stats object: a number (a bool is 0 or 1), or with ``label``
    #: a mapping of keys to numbers.
    attribute: str
    help: str
    #: False: a gauge (a value that goes up and down).
    counter: bool = True
    #: Counts by key: the label whose values are the mapping's keys, one sample per key.
    label: str | None = None


@overload
def counter(help: str, *, metric: str) -> int: ...
@overload
def counter(help: str, *, metric: str, initial: _V) -> _V: ...
def counter(help: str, *, metric: str, initial: object = 0) -> Any:
    """A dataclass field counting up from ``initial``, exported as the counter ``metric``."""
    return dataclasses.field(default=initial, metadata={_METRIC: Metric(metric, help)})


@overload
def gauge(help: str, *, metric: str) -> int: ...
@overload
def gauge(help: str, *, metric: str, initial: _V) -> _V: ...
def gauge(help: str, *, metric: str, initial: object = 0) -> Any:
    """A dataclass field that goes up and down, exported as the gauge ``metric``."""
    metadata = {_METRIC: Metric(metric, help, counter=False)}
    return dataclasses.field(default=initial, metadata=metadata)


def counter_by(help: str, *, metric: str, label: str) -> dict[Any, int]:
    """A dataclass field counting by key (a dict, empty at first), exported as the counter
    ``metric`` with one sample per key, the key (as text) the value of ``label``.

    Each key is a series: the keys must come from a small set the code fixes (close
    codes, statuses, causes, configured URLs), never from what a peer sends.
    """
    metadata = {_METRIC: Metric(metric, help, label=label)}
    return dataclasses.field(default_factory=dict, metadata=metadata)


def exported(stats_class: type[DataclassInstance]) -> tuple[Stat, ...]:
    """The exported fields of a stats dataclass, in field order."""
    fields = dataclasses.fields(stats_class)
    metrics = [(f.name, f.metadata[_METRIC]) for f in fields if _METRIC in f.metadata]
    return tuple(Stat(m.name, name, m.help, m.counter, m.label) for name, m in metrics)


# --- upstream (gateway.io.upstream) -----------------------------------------------------------


@dataclass(slots=True)
class ConnectionStats:
    """One upstream connection's (:class:`gateway.io.upstream.Connection`)."""

    connected: bool = gauge(
        "1 while the connection is open.", metric="connection_up", initial=False
    )
    frames: int = counter("Frames received.", metric="connection_frames")
    #: Payloads, as websockets hands them over.
    received_bytes: int = counter(
        "Bytes of the frames received.", metric="connection_received_bytes"
    )
    connects: int = counter("Connections opened.", metric="connection_connects")
    reconnects: int = counter("Connections opened after the first.", metric="connection_reconnects")
    #: Refused, timed out or rejected before the connection was open.
    failed_attempts: int = counter(
        "Connection attempts that failed.", metric="connection_failed_attempts"
    )
    #: Waits before an attempt because the venue's connection-attempt budget was spent.
    budget_waits: int = counter(
        "Waits for the venue's connection-attempt budget.", metric="connection_budget_waits"
    )
    rate_limited: int = counter(
        "Handshakes the venue refused over its limits (429, 418).",
        metric="connection_rate_limited",
    )
    #: Closed by the gateway (1009) at a frame above ``max_frame_bytes``, unread.
    oversized_frames: int = counter(
        "Frames above max_frame_bytes: the connection closed and reopened.",
        metric="connection_oversized_frames",
    )
    messages_sent: int = counter("Messages sent to the venue.", metric="connection_messages_sent")
    messages_dropped: int = counter(
        "Messages to the venue not sent: connection down or its queue full.",
        metric="connection_messages_dropped",
    )
    last_error: str = ""
    connected_since_s: float = 0.0
    #: The smoothed score (gateway.core.score), set by the connection's owner; 0 until scored.
    score: float = gauge(
        "Book connections: the score, 0-1.", metric="connection_score", initial=0.0
    )


@dataclass(slots=True)
class FetcherStats:
    """A venue's REST snapshot fetcher's (:class:`gateway.io.upstream.SnapshotFetcher`)."""

    requests: int = counter("REST snapshot requests sent.", metric="snapshot_requests")
    snapshots: int = counter(
        "REST snapshots received and handed to the books.", metric="snapshots_fetched"
    )
    failures: int = counter("REST snapshot requests that failed.", metric="snapshot_failures")
    #: Responses with 429 or 418.
    rate_limited: int = counter(
        "REST responses saying the rate limit was hit.", metric="rest_rate_limited"
    )
    #: Waits before a request for the weight budget or a venue's ban, and their seconds.
    rate_limit_waits: int = counter(
        "Waits for the REST weight budget.", metric="rest_rate_limit_waits"
    )
    rate_limit_wait_s: float = counter(
        "Seconds waited for the REST weight budget.",
        metric="rest_rate_limit_wait_seconds",
        initial=0.0,
    )
    #: Responses abandoned because their body exceeded ``max_body_bytes`` (in ``failures``).
    oversized: int = counter(
        "REST snapshot bodies too large, abandoned.", metric="snapshot_oversized"
    )
    in_flight: int = gauge(
        "REST snapshot requests in flight.", metric="snapshot_requests_in_flight"
    )
    #: The most requests ever in flight at once.
    max_in_flight: int = 0
    last_error: str = ""
    #: Of ``snapshots``, by the configured REST base that answered.
    by_base: dict[str, int] = counter_by(
        "REST snapshots received, by the REST base that answered.",
        metric="snapshots_fetched_by_base",
        label="base",
    )


# --- the venue pipeline and its books (gateway.core) ------------------------------------------


@dataclass(slots=True)
class VenueStats:
    """Counted by the venue's pipeline (:class:`gateway.core.pipeline.VenuePipeline`): the
    venue breaking its contract, and what it led to."""

    bad_frames: int = counter(
        "Frames and REST bodies the venue's parser rejected.", metric="venue_bad_frames"
    )
    #: Book updates and snapshots for symbols the pipeline does not carry.
    unknown_symbols: int = counter(
        "Book updates for symbols not carried.", metric="venue_unknown_symbols"
    )
    notices: int = counter(
        "Control messages from the venue (acks, errors, notices).", metric="venue_notices"
    )
    #: The connection lost messages and is resubscribed.
    connection_gaps: int = counter(
        "Connection-wide sequence jumps.", metric="venue_connection_gaps"
    )
    #: Messages at or below their connection's last number: ignored.
    connection_late_messages: int = counter(
        "Messages late on their connection's sequence, ignored.",
        metric="venue_connection_late_messages",
    )
    #: Resubscribe actions given.
    resubscribes: int = counter(
        "Resubscriptions of a symbol on a connection.", metric="venue_resubscribes"
    )
    #: Asked again by the pipeline (:mod:`gateway.core.awaiting`); each is also one of
    #: ``resubscribes``.
    unanswered_resubscribes: int = counter(
        "Resubscriptions no snapshot answered in time on a connection still up, asked again.",
        metric="venue_unanswered_resubscribes",
    )
    #: Book updates and snapshots too: never given to the books, whose trust in a connection
    #: (stale when every book connection is down) they would break.
    book_updates_on_trade_connections: int = counter(
        "Book updates received on trade-only connections, ignored.",
        metric="venue_book_updates_on_trade_connections",
    )
    #: Books (or replicas) the venue left crossed, on a venue whose books never cross
    #: (each symbol's count: ``SymbolStats.crossed_faults``).
    crossed_books: int = counter(
        "Crossed books and replicas, not published.", metric="venue_crossed_books"
    )
    snapshots_superseded: int = counter(
        "REST snapshots discarded: answers to a superseded fetch attempt.",
        metric="venue_snapshots_superseded",
    )
    #: Found by :mod:`gateway.core.activity`.
    silent_channels: int = counter(
        "Symbol channels found dead on a connection that carries other traffic.",
        metric="venue_silent_channels",
    )
    revived_channels: int = counter(
        "Dead symbol channels that came back.", metric="venue_revived_channels"
    )
    #: By an error reply or a close reason naming them.
    rejected_symbols: int = counter("Symbols the venue refused.", metric="venue_rejected_symbols")


@dataclass(slots=True)
class SymbolConnectionStats:
    """One symbol's, per upstream connection (:attr:`SymbolStats.connections`)."""

    received: int = counter("Book updates received.", metric="symbol_connection_updates")
    #: Updates from this connection that were the first copy and were applied.
    first_wins: int = counter(
        "Updates this connection brought first.", metric="symbol_connection_first_wins"
    )
    duplicates: int = counter(
        "Updates another connection brought first.", metric="symbol_connection_duplicates"
    )
    #: Ids jumped beyond ``max_id_jump``.
    implausible: int = counter(
        "Updates held: ids jumped too far.", metric="symbol_connection_implausible"
    )
    #: The connection was reset.
    disagreements: int = counter(
        "Implausible copies of the connection contradicted: reconnected.",
        metric="symbol_connection_disagreements",
    )
    #: Copies of the same ids (:mod:`gateway.core.audit`); a connection a majority blames
    #: is reset, the book never changed.
    audit_disagreements: int = counter(
        "Sampled copies of this connection that disagreed with the others'.",
        metric="symbol_connection_audit_disagreements",
    )


@dataclass(slots=True)
class SymbolStats:
    """One symbol's arbiter's (:class:`gateway.core.arbiter.SymbolArbiter`)."""

    updates: int = counter("Book updates applied.", metric="symbol_updates")
    duplicates: int = counter(
        "Copies of updates already applied, dropped.", metric="symbol_duplicates"
    )
    #: Older than the snapshot the book was built from, or of the sequence before a venue
    #: reset that their connection has not delivered yet.
    stale: int = counter(
        "Updates older than the book's snapshot, dropped.", metric="symbol_stale_updates"
    )
    gaps: int = counter("Updates lost on every connection.", metric="symbol_gaps")
    resyncs: int = counter(
        "Book rebuilds: a gap, a crossed book, a venue reset, a failed replica.",
        metric="symbol_resyncs",
    )
    #: Book states published crossed (a venue whose books may cross), or found crossed.
    crossed: int = counter("Books found crossed when published.", metric="symbol_crossed_books")
    #: Crossed books and replicas on a venue whose books never cross: not published,
    #: rebuilt (:data:`gateway.core.arbiter.SNAPSHOT_RETRY_INITIAL_S`).
    crossed_faults: int = counter(
        "Crossed books and replicas, not published: rebuilt.", metric="symbol_crossed_faults"
    )
    #: Levels pruned beyond the cap of levels per side (``max_levels``).
    levels_pruned: int = counter(
        "Levels pruned beyond max_levels per side.", metric="symbol_levels_pruned"
    )
    snapshots: int = counter("Snapshots applied.", metric="symbol_snapshots")
    #: Older than the stream, crossed, refused (a bad level), or not wanted (an older in-band
    #: snapshot, a late copy of a reset, a reset older by the venue's time than the book's).
    snapshots_unused: int = counter("Snapshots not used.", metric="symbol_snapshots_unused")
    #: The oldest buffered or held update, discarded at ``max_pending``.
    pending_dropped: int = counter(
        "Buffered or held updates dropped (max_pending).", metric="symbol_pending_dropped"
    )
    bad_updates: int = counter(
        "Updates or snapshots the book refused.", metric="symbol_bad_updates"
    )
    checksum_ok: int = counter("Venue checksums that matched.", metric="symbol_checksum_ok")
    checksum_failed: int = counter(
        "Venue checksums that did not match.", metric="symbol_checksum_failures"
    )
    #: A sequence jump.
    jumps: int = counter(
        "In-band snapshots newer than the book, published as deltas.", metric="symbol_jumps"
    )
    #: Declared (Bybit ``u == 1``), or recognised (every connection fell below the book's id
    #: and stayed there, or a snapshot below it agreed with them).
    venue_resets: int = counter(
        "Sequence resets declared or recognised.", metric="symbol_venue_resets"
    )
    #: Ids jumped beyond ``max_id_jump``.
    implausible: int = counter(
        "Updates held: ids jumped too far.", metric="symbol_implausible_updates"
    )
    #: By identical copies from a majority of the connections.
    confirmed: int = counter(
        "Held updates confirmed, then applied.", metric="symbol_confirmed_updates"
    )
    #: Contradicted, or made so by a resync.
    obsolete: int = counter(
        "Held or buffered updates made obsolete.", metric="symbol_obsolete_updates"
    )
    #: Audits (:mod:`gateway.core.audit`), counted, never changing a book. REST snapshots
    #: are compared with the live book at their id.
    audit_disagreements: int = counter(
        "Sampled updates whose copies from different connections disagreed.",
        metric="symbol_audit_disagreements",
    )
    audit_rest_ok: int = counter("Audit REST snapshots that agreed.", metric="symbol_audit_rest_ok")
    audit_rest_drift: int = counter(
        "Audit REST snapshots that drifted.", metric="symbol_audit_rest_drift"
    )
    audit_rest_skipped: int = counter(
        "Audit REST snapshots not compared.", metric="symbol_audit_rest_skipped"
    )
    #: Unsequenced mode: the output moved to another connection's replica.
    failovers: int = counter("Moves of the output to another replica.", metric="symbol_failovers")
    #: Unsequenced mode: replicas found wrong (checksum, lost message) and resubscribed.
    replica_failures: int = counter(
        "Replicas found wrong, resubscribed.", metric="symbol_replica_failures"
    )
    connections: dict[int, SymbolConnectionStats] = dataclasses.field(default_factory=dict)

    def conn(self, conn_id: int) -> SymbolConnectionStats:
        stats = self.connections.get(conn_id)
        if stats is None:
            stats = self.connections[conn_id] = SymbolConnectionStats()
        return stats


@dataclass(slots=True)
class SlotRenewals:
    """Counted per connection slot by :class:`gateway.core.renewal.VenueRenewals`."""

    #: Renewals asked for, by cause ("age", "notice", "score", "subscribe budget",
    #: "contradicted", "venue reset").
    due: dict[str, int] = counter_by(
        "Renewals asked for, by cause.", metric="slot_renewals_due", label="cause"
    )
    #: The replacement caught up before the old connection closed.
    caught_up: int = counter("Renewals whose replacement caught up first.", metric="slot_renewals")
    #: Within ``renew_timeout_s``.
    timed_out: int = counter(
        "Renewals closed at renew_timeout_s.", metric="slot_renewals_timed_out"
    )
    old_down: int = counter(
        "Renewals ended by the old connection's fall.", metric="slot_renewals_old_down"
    )


@dataclass(slots=True)
class VenueRuntimeStats:
    """Counted by a venue's runtime (:class:`gateway.io.venue_runtime.VenueRuntime`)."""

    #: Replacements of a connection for its score opened on another endpoint.
    rotations: int = counter(
        "Score replacements opened on another endpoint.", metric="venue_endpoint_rotations"
    )


# --- the subscriber side (gateway.io) ---------------------------------------------------------


@dataclass(slots=True)
class FanoutStats:
    """Counted over the fan-out's life (:class:`gateway.io.fanout.Fanout`)."""

    subscribers: int = gauge("Subscribers connected.", metric="fanout_subscribers")
    subscribers_total: int = counter("Subscribers accepted.", metric="fanout_connections")
    rejected: int = counter("Subscribers refused (max_subscribers).", metric="fanout_refused")
    messages_sent: int = counter("Messages written to subscribers.", metric="fanout_messages_sent")
    bytes_sent: int = counter("Bytes written to subscribers.", metric="fanout_sent_bytes")
    #: A subscriber's messages of one loop turn go out in one write.
    writes: int = counter(
        "Transport writes to subscribers (messages coalesced).", metric="fanout_writes"
    )
    dropped: int = counter(
        "Messages not written: subscriber behind.", metric="fanout_dropped_messages"
    )
    conflations: int = counter("Times a subscriber fell behind.", metric="fanout_conflations")
    slow_disconnects: int = counter(
        "Subscribers closed as too slow.", metric="fanout_slow_disconnects"
    )
    bad_requests: int = counter("Subscriber requests refused.", metric="fanout_bad_requests")
    #: Closed with 1011 because serving them raised (a bug, isolated).
    subscriber_errors: int = counter(
        "Subscribers closed: internal error.", metric="fanout_subscriber_errors"
    )
    #: Close frames the gateway sent first, by close code (1008, 1009, 1011, 1013...).
    closes_sent: dict[int, int] = counter_by(
        "Close frames sent to subscribers first, by close code.",
        metric="fanout_closes_sent",
        label="code",
    )
    rate_limited: int = counter(
        "Subscriber requests refused: request rate.", metric="fanout_rate_limited"
    )
    #: HTTP requests refused at the handshake, by status (421, 401, 403, 404).
    http_refused: dict[int, int] = counter_by(
        "HTTP requests refused at the handshake, by status.",
        metric="fanout_http_refused",
        label="status",
    )
    #: Symbols recovered from the ring (``subscribe.recover``).
    recoveries: int = counter(
        "Books recovered for reconnecting subscribers.", metric="fanout_recoveries"
    )
    recovered_messages: int = counter(
        "Deltas re-sent on recovery.", metric="fanout_recovered_messages"
    )
    recovery_misses: int = counter(
        "Recoveries refused: a snapshot sent.", metric="fanout_recovery_misses"
    )
    #: Trade streams recovered from the trade rings (``subscribe.recover_trades``).
    trade_recoveries: int = counter(
        "Trade streams recovered for reconnecting subscribers.", metric="fanout_trade_recoveries"
    )
    recovered_trades: int = counter("Trades re-sent on recovery.", metric="fanout_recovered_trades")
    trade_recovery_misses: int = counter(
        "Trade recoveries refused: the missed trades are not all held.",
        metric="fanout_trade_recovery_misses",
    )
    #: Trades a subscriber missed while behind, re-sent when it caught up.
    conflation_replayed_trades: int = counter(
        "Trades re-sent from the trade rings to subscribers that caught up.",
        metric="fanout_conflation_replayed_trades",
    )
    conflation_trade_misses: int = counter(
        "Trade gaps of subscribers that caught up, no longer held: not re-sent.",
        metric="fanout_conflation_trade_misses",
    )


@dataclass(slots=True)
class FdExhaustionStats:
    """The process's descriptor exhaustion's (:class:`gateway.io.logs.FdExhaustion`)."""

    episodes: int = counter(
        "Episodes of running out of file descriptors (each logged once).",
        metric="fd_exhaustion_episodes",
    )
    failures: int = counter(
        "Connects, accepts and probes that failed out of file descriptors.",
        metric="fd_exhaustion_failures",
    )
    #: asyncio retries an accept a second after it failed out of descriptors, even when
    #: the server closed since: such a retry is counted here, not logged as an error.
    retries_after_close: int = counter(
        "Accept retries after descriptor exhaustion that found their server closed.",
        metric="fanout_accept_retries_after_close",
    )


@dataclass(slots=True)
class CaptureStats:
    """The capture writer's (:class:`gateway.io.capture_writer.CaptureWriter`)."""

    records: int = counter("Records handed to the capture.", metric="capture_records")
    #: Dropped on the event loop by ``CaptureWriter.record``: the queue was full (or the
    #: writer stopped). Each thread counts in a field of its own (:attr:`dropped` sums
    #: them), so no increment is lost and recording takes no lock.
    dropped_on_record: int = 0
    #: Dropped in the writer thread: the disk failed.
    dropped_on_write: int = 0
    #: Each stands for a run of dropped records.
    gaps: int = counter("Gap records written.", metric="capture_gaps")
    #: Lines, headers excluded.
    written: int = counter("Records written to the capture files.", metric="capture_written")
    #: Gzip members written: one per flush, more when a flush exceeds the member size.
    flushes: int = counter(
        "Gzip members written to the capture files.", metric="capture_gzip_members"
    )
    #: Records that could not be encoded (a time outside the format's range).
    unencodable: int = counter(
        "Records that could not be encoded, skipped.", metric="capture_unencodable"
    )
    #: The error that stopped the writing (the disk failed); the feed goes on.
    failed: str = ""

    @property
    def dropped(self) -> int:
        """Records dropped from the capture, by either thread (exported as
        :data:`CAPTURE_DROPPED`)."""
        return self.dropped_on_record + self.dropped_on_write


#: :attr:`CaptureStats.dropped`, the sum of two fields, exported as one counter.
CAPTURE_DROPPED: Final = Stat("capture_dropped", "dropped", "Records dropped from the capture.")
