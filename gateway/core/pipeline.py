"""One venue's pipeline, sans I/O: frames, connection events, snapshots and the clock in;
publications and actions out.

In the style of websockets' ``protocol.py``: the caller owns every connection, the REST
fetcher and the clock; it hands each input to a ``receive_*`` method (or :meth:`on_timer`)
with a clock reading ``now_ns`` and gets back a :class:`Step`:

- ``publications``: what subscribers get (:data:`~gateway.core.model.GatewayEvent`), in
  order; the books already reflect them when the step is returned;
- ``actions``: what the caller must do (:data:`Action`): fetch a REST snapshot, resubscribe a
  symbol on a connection, reconnect a connection, reset the fetcher's backoff of a symbol,
  end a renewal whose replacement caught up, subscribe without a symbol the venue refused.

The caller's own stop is an input too (:meth:`VenuePipeline.stop`): the connections it ends
are then no outage of the venue.

The service drives one pipeline per venue with live frames; ``mdgateway verify`` drives the
same class with a capture's records and their receive times as the clock, so a capture
verified offline goes through the code the gateway runs. A venue breaking its contract (a
frame the parser rejects, an update for a symbol not carried, a book the venue left crossed)
is counted and logged here; anything else propagates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Final
from typing import NamedTuple
from typing import Protocol

import msgspec

from gateway.core.activity import ActivityLimits
from gateway.core.activity import ActivityMonitor
from gateway.core.activity import Silence
from gateway.core.arbiter import DEFAULT_ARBITER_LIMITS
from gateway.core.arbiter import ArbiterLimits
from gateway.core.arbiter import Checksum
from gateway.core.arbiter import ConnectionSequenceChecker
from gateway.core.arbiter import SymbolArbiter
from gateway.core.arbiter import TradeDedup
from gateway.core.awaiting import DEFAULT_AWAIT_LIMITS
from gateway.core.awaiting import AwaitedSnapshots
from gateway.core.awaiting import AwaitLimits
from gateway.core.awaiting import Unanswered
from gateway.core.book import L2Book
from gateway.core.histogram import Histogram
from gateway.core.lograte import LimitedLogger
from gateway.core.model import STOPPING_REASON
from gateway.core.model import ArbiterEvent
from gateway.core.model import BookCrossed
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import ConnectionSequence
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import GatewayEvent
from gateway.core.model import InstrumentPrecision
from gateway.core.model import ReconnectWanted
from gateway.core.model import ResubscribeWanted
from gateway.core.model import SnapshotWanted
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.model import Trade
from gateway.core.model import VenueContractError
from gateway.core.model import VenueEvent
from gateway.core.model import VenueNotice
from gateway.core.model import symbol_key
from gateway.core.rejections import named_symbols
from gateway.core.replicated import ReplicatedBook
from gateway.core.sequenced import SequencedBook
from gateway.core.snapshots import SnapshotAttempts
from gateway.core.stats import VenueStats

log = logging.getLogger(__name__)

#: Bad frames logged per connection before only every LOG_EVERY-th is.
LOG_FIRST: Final = 10
LOG_EVERY: Final = 1000
#: Buckets (upper bounds, seconds) of the venue-event-to-receive latency per connection. A
#: venue clock ahead of this host's gives values <= 0, counted in the first bucket.
EVENT_LATENCY_BOUNDS_S: Final = (
    0.0, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip


# --- actions ------------------------------------------------------------------------------


class FetchSnapshot(msgspec.Struct, frozen=True, gc=False):
    """Fetch a REST snapshot of ``symbol``; hand it to :meth:`VenuePipeline.receive_snapshot`
    with ``attempt``. A later FetchSnapshot of the symbol supersedes this one: the answer to
    this attempt is then discarded (:class:`~gateway.core.snapshots.SnapshotAttempts`)."""

    symbol: str
    attempt: int


class Resubscribe(msgspec.Struct, frozen=True, gc=False):
    """Unsubscribe and subscribe ``symbol`` again on connection ``conn_id`` (the venue then
    sends a fresh snapshot in band)."""

    conn_id: int
    symbol: str


class Reconnect(msgspec.Struct, frozen=True, gc=False):
    """Close connection ``conn_id`` and open it again: the venue asked (a shutdown notice;
    ``renew``: a healthy connection, renewed make-before-break), or an arbiter's
    ReconnectWanted: its copies disagree with the other connections' (``fault``), or the
    sequence it delivers in is unknown after a venue reset (``fault`` False: nothing
    counted against it).
    The caller closes the connection whose frame gave it at once, and renews another
    make-before-break."""

    conn_id: int
    renew: bool = False
    fault: bool = True


class SymbolRejected(msgspec.Struct, frozen=True, gc=False):
    """The venue refused ``symbol``: subscribe without it from now on (every connection's
    next connect), and, with ``resend``, send the subscription of the venue's other
    symbols on connection ``conn_id`` again (the venue refused that request whole)."""

    conn_id: int
    symbol: str
    resend: bool


class BookRebuilt(msgspec.Struct, frozen=True, gc=False):
    """The book of ``symbol`` was rebuilt from a snapshot: the next snapshot fetch for it
    need not wait. Given only to a pipeline that fetches REST snapshots."""

    symbol: str


class CaughtUp(msgspec.Struct, frozen=True, gc=False):
    """Connection ``conn_id``, watched since :meth:`VenuePipeline.watch_catch_up`, caught up:
    on a sequenced venue its copies reached every book's applied id, on an unsequenced one
    its replica of every book is valid, on a trade-only connection a trade arrived."""

    conn_id: int


Action = FetchSnapshot | Resubscribe | Reconnect | BookRebuilt | CaughtUp | SymbolRejected


class Step(msgspec.Struct, frozen=True, gc=False):
    """What one input produced. The lists belong to the caller."""

    publications: list[GatewayEvent]
    actions: list[Action]


# --- what the pipeline needs of a venue ---------------------------------------------------


class VenueRules(Protocol):
    """A venue adapter as the pipeline uses it (``gateway.wire.venues.VenueAdapter``)."""

    @property
    def venue(self) -> str: ...

    @property
    def parse(self) -> Callable[[bytes, int, int], list[VenueEvent]]:
        """``parse(raw, recv_ns, conn_id)``; raises VenueContractError on a bad frame."""
        ...

    @property
    def parse_snapshot(self) -> Callable[[str, bytes, int, int], DepthSnapshot] | None:
        """``parse_snapshot(symbol, body, recv_ns, conn_id)`` of a REST snapshot, or None."""
        ...

    @property
    def resubscribe_messages(self) -> Callable[[str], list[bytes]] | None:
        """None when the venue cannot resubscribe one symbol (no Resubscribe is asked)."""
        ...

    @property
    def checksum_at_precision(self) -> Callable[[int, int], Checksum] | None: ...

    def new_arbiter(self, symbol: str, limits: ArbiterLimits) -> SymbolArbiter:
        """``limits.max_levels`` None: the venue's default cap."""
        ...


class BookState(NamedTuple):
    """A consistent published book and where it stands, as the fan-out reads it.

    ``book`` is the live book (not a copy): read it in the same synchronous step.
    """

    book: L2Book
    epoch: int
    seq: int
    venue_id: int
    state: SymbolState


_NO_CONNECTIONS: Final[frozenset[int]] = frozenset()
#: States whose arrival is logged at INFO; the others (the book cannot be trusted) at WARNING.
_UNALARMING: Final = frozenset((SymbolState.LIVE, SymbolState.SYNCING))


class VenuePipeline:
    """One venue's books, trade dedup and connection checks, driven by its inputs.

    ``symbols``: the symbols carried; updates for others are counted as unknown. None
    carries every symbol seen (verify: a capture's symbols are not known in advance).
    ``rest_snapshots``: a wanted snapshot is fetched over REST (:class:`FetchSnapshot`);
    otherwise every connection that is up resubscribes the symbol for one in band.
    ``trade_conn_ids``: connections that carry trades only; the books are not told of them.
    ``limits``: the bounds of every book's arbiter (its ``max_levels`` None: the venue's
    default cap; its ``max_id_jump`` None: each link rule's own).
    ``conn_symbols``: the symbols of each connection that carries only some (sharded,
    :func:`gateway.core.limits.plan_connections`; later ones: :meth:`set_connection_symbols`);
    a book is told only of the connections that carry it, watched and resubscribed only on
    them. Connections not named carry every symbol.
    ``epoch_base``: the epoch before each book's first one (its first is ``epoch_base + 1``).
    ``activity``: watch each symbol's channel per connection (:mod:`gateway.core.activity`):
    a channel dead on a connection that carries other traffic counts as that connection
    down for the symbol (the arbiter decides; dead everywhere: ``stale``, with the silence
    as its reason) and is resubscribed on that connection where the venue can; None: off.
    ``awaiting``: a subscription (each symbol a connection carries, from its connect) or
    a resubscribe not answered by a snapshot on its connection within ``timeout_s`` after
    its request was written there (:meth:`receive_sent`) is asked again there, each
    further ask waiting twice as long, at most ``max_timeout_s``
    (:mod:`gateway.core.awaiting`); not while its channel is found dead there (the
    silence's own asks), nor once a sequenced book is built (another connection's snapshot
    answered it; one built from REST snapshots awaits no subscription's), nor for a symbol
    the venue refused, nor on a venue that cannot resubscribe one symbol. None: off
    (offline, where nothing is written).
    """

    def __init__(
        self,
        venue: VenueRules,
        symbols: Sequence[str] | None,
        *,
        limits: ArbiterLimits = DEFAULT_ARBITER_LIMITS,
        rest_snapshots: bool = False,
        trade_conn_ids: Collection[int] = _NO_CONNECTIONS,
        conn_symbols: Mapping[int, Collection[str]] | None = None,
        epoch_base: int = 0,
        activity: ActivityLimits | None = None,
        awaiting: AwaitLimits | None = DEFAULT_AWAIT_LIMITS,
    ) -> None:
        self.venue = venue
        #: Keys carried by each sharded connection (see ``conn_symbols``).
        self._conn_keys = {
            conn_id: frozenset(symbol_key(venue.venue, s) for s in symbols)
            for conn_id, symbols in (conn_symbols or {}).items()
        }
        self.limits = limits
        #: Every book's epochs count up from here (the service passes a base unique to
        #: the gateway instance, so epochs do not repeat across restarts).
        self.epoch_base = epoch_base
        self.rest_snapshots = rest_snapshots
        self.trade_conn_ids = set(trade_conn_ids)
        self.stats = VenueStats()
        self.bad_frames_by_conn: dict[int, int] = {}
        #: Per connection: seconds from the venue's event time to the frame's receive time,
        #: of every book update that carries an event time.
        self.event_latency_by_conn: dict[int, Histogram] = {}
        #: Crossed-book log lines, limited per symbol.
        self.crossed_log = LimitedLogger(log)
        self.sequences = ConnectionSequenceChecker()
        #: Connection-sequence log lines (late, lost), limited per connection and kind.
        self.sequence_log = LimitedLogger(log)
        #: The current REST snapshot attempt of each symbol.
        self.snapshot_attempts = SnapshotAttempts()
        self.books: dict[str, SymbolArbiter] = {}
        self.trades: dict[str, TradeDedup] = {}
        self._open = symbols is None
        #: Checksums at announced precisions of symbols not seen yet (open pipelines).
        self._checksums: dict[str, Checksum] = {}
        #: Book connections that are up, in the order they came up.
        self._up: dict[int, None] = {}
        #: Keys whose arbiter has a reorder deadline pending.
        self._waiting: set[str] = set()
        #: Per connection: its replicas found wrong (a checksum failure, a lost message)
        #: and its connection-wide sequence gaps, for its score.
        self.faults_by_conn: dict[int, int] = {}
        #: Connection scores (gateway.core.score), kept up to date by the owner; the
        #: unsequenced books' failovers follow them.
        self.conn_scores: dict[int, float] = {}
        #: Connections watched until they catch up: the last id each delivered per key.
        self._catching_up: dict[int, dict[str, int]] = {}
        #: Per watched connection: the applied id of each built book when the watch began.
        self._catch_up_targets: dict[int, dict[str, int]] = {}
        #: Each symbol's channel per connection; None: not watched.
        self.activity = None if activity is None else ActivityMonitor(activity)
        #: When the channels are next checked (a quarter of the shortest silence apart).
        self._activity_check_ns = 0
        self._activity_every_ns = (
            0 if activity is None else int(activity.min_silence_s / 4 * 1_000_000_000)
        )
        #: Silence log lines, limited per symbol.
        self.silence_log = LimitedLogger(log)
        #: Symbols the venue refused, by key: why (``stale`` with it as reason, for good).
        self.rejected: dict[str, str] = {}
        #: Symbols that delivered on a connection since forgotten (its counters gone):
        #: known to the venue, never taken for refused.
        self._delivered: set[str] = set()
        #: (connection, symbol) rejections already acted on (a venue may refuse one symbol
        #: once per request, Coinbase once per channel); cleared when the connection ends.
        self._rejected_on: set[tuple[int, str]] = set()
        #: Per connection: the keys subscribed (on connect) or resubscribed on it whose
        #: snapshot it has not delivered since. Asked again when unanswered too long after
        #: the request was written, or when a connection sequence jump may have lost that
        #: snapshot (whether their arbiter keeps a copy of that connection or not: a silent
        #: channel's was dropped). Cleared when the connection comes up or goes down. None:
        #: not kept (``awaiting`` None).
        self._awaiting = None if awaiting is None else AwaitedSnapshots(awaiting)
        #: Unanswered resubscribe log lines, limited per symbol.
        self.unanswered_log = LimitedLogger(log)
        #: Set by :meth:`stop`: every later input is ignored.
        self.stopped = False
        for symbol in symbols or ():
            self._new_book(symbol_key(venue.venue, symbol), 0)

    # --- inputs -----------------------------------------------------------------------------

    def receive_frame(self, conn_id: int, raw: bytes, recv_ns: int, now_ns: int) -> Step:
        """One WebSocket frame received on ``conn_id`` at wall-clock ``recv_ns``."""
        step = Step([], [])
        if self.stopped:
            return step
        try:
            events = self.venue.parse(raw, recv_ns, conn_id)
        except VenueContractError as exc:
            self.reject_frame(conn_id, raw, exc)
            return step
        trade_only = conn_id in self.trade_conn_ids
        activity = self.activity
        if activity is not None and not trade_only:
            activity.frame(conn_id, now_ns / 1e9)
        for event in events:
            if isinstance(event, DepthDiff | DepthSnapshot):
                if trade_only:
                    self.stats.book_updates_on_trade_connections += 1
                    continue
                if isinstance(event, DepthDiff) and event.event_ms > 0:
                    self._event_latency(conn_id, event.event_ms, event.recv_ns)
                if activity is not None:
                    self._active(activity, event.symbol, conn_id, now_ns)
                if isinstance(event, DepthSnapshot) and self._awaiting is not None:
                    self._awaiting.answered(conn_id, event.key)
                book = self._book(event.key, now_ns)
                if book is not None:
                    out = (
                        book.on_diff(event, now_ns)
                        if isinstance(event, DepthDiff)
                        else book.on_snapshot(event, now_ns)
                    )
                    self._take(book, out, step, now_ns)
            elif isinstance(event, Trade):
                self._trade(event, step)
            elif isinstance(event, InstrumentPrecision):
                self._set_precision(event)
            elif isinstance(event, ConnectionSequence):
                if not self._connection_sequence(conn_id, event.seq, step, now_ns):
                    break  # a late message: its events are not used
            elif isinstance(event, VenueNotice):
                self._notice(conn_id, event, step)
        if self._catching_up and conn_id in self._catching_up:
            self._check_caught_up(conn_id, events, step)
        return step

    # --- catching up (make-before-break renewals) -------------------------------------------

    def add_trade_connection(self, conn_id: int) -> None:
        """Connection ``conn_id`` carries trades only (a renewed trade connection)."""
        self.trade_conn_ids.add(conn_id)

    def set_connection_symbols(self, conn_id: int, symbols: Collection[str]) -> None:
        """Connection ``conn_id`` carries only ``symbols`` (a slot's shard; a renewal's
        replacement carries its slot's); empty: every symbol. Told before it comes up."""
        if symbols:
            self._conn_keys[conn_id] = frozenset(symbol_key(self.venue.venue, s) for s in symbols)
        else:
            self._conn_keys.pop(conn_id, None)

    def forget_connection(self, conn_id: int) -> None:
        """Connection ``conn_id`` is closed for good (renewed, or a released standby):
        everything kept for it is forgotten, its symbols and its counters (per connection
        and per symbol and connection: their metric series end), so that what the pipeline
        holds does not grow with the renewals over the process's life."""
        self._conn_keys.pop(conn_id, None)
        self.trade_conn_ids.discard(conn_id)
        self.bad_frames_by_conn.pop(conn_id, None)
        self.event_latency_by_conn.pop(conn_id, None)
        self.faults_by_conn.pop(conn_id, None)
        self.unwatch_catch_up(conn_id)
        for key, book in self.books.items():
            counts = book.stats.connections.pop(conn_id, None)
            if counts is not None and counts.received:
                self._delivered.add(key)

    def watch_catch_up(self, conn_id: int) -> None:
        """Watch ``conn_id`` (a replacement connection) until it caught up: the step of the
        frame that completes it carries :class:`CaughtUp` once. On a sequenced venue its
        copies must reach the applied id each book had when the watch began (a book not
        built then has nothing to catch up with), so a connection that delivers every
        update, later than the others, catches up too."""
        self._catching_up[conn_id] = {}
        self._catch_up_targets[conn_id] = {
            key: book.applied_id for key, book in self.books.items() if book.has_book
        }

    def unwatch_catch_up(self, conn_id: int) -> None:
        self._catching_up.pop(conn_id, None)
        self._catch_up_targets.pop(conn_id, None)

    def _check_caught_up(self, conn_id: int, events: list[VenueEvent], step: Step) -> None:
        seen = self._catching_up[conn_id]
        if conn_id in self.trade_conn_ids:
            done = any(isinstance(event, Trade) for event in events)
        else:
            for event in events:
                if isinstance(event, DepthDiff | DepthSnapshot):
                    seen[event.key] = event.last_id
            targets = self._catch_up_targets.get(conn_id, {})
            done = all(
                self._book_caught_up(conn_id, book, seen.get(key, -1), targets.get(key))
                for key, book in self.books.items()
                if self._carries(conn_id, key)
            )
        if done:
            self.unwatch_catch_up(conn_id)
            step.actions.append(CaughtUp(conn_id))

    @staticmethod
    def _book_caught_up(
        conn_id: int, book: SymbolArbiter, seen_id: int, target_id: int | None
    ) -> bool:
        if isinstance(book, ReplicatedBook):
            replica = book.replicas.get(conn_id)
            return replica is not None and replica.valid
        return target_id is None or seen_id >= target_id

    def receive_connection(self, conn_id: int, up: bool, now_ns: int, reason: str = "") -> Step:
        """Connection ``conn_id`` came up or went down; ``reason``: why it ended (the
        venue's close reason), which may name symbols the venue refuses (Binance closes a
        connection whose URL names an unknown symbol). After :meth:`stop` (the connections
        closed by the stop): nothing."""
        step = Step([], [])
        if self.stopped:
            return step
        if up:
            self.sequences.reset(conn_id)
        else:
            self.sequences.forget(conn_id)
        awaiting = self._awaiting
        if awaiting is not None:
            awaiting.forget_connection(conn_id)
        if not up:
            self._rejected_on = {pair for pair in self._rejected_on if pair[0] != conn_id}
            if reason:
                self._rejections(conn_id, reason, step, resend=False)
        if conn_id in self._catching_up:
            self._catching_up[conn_id] = {}  # a watched connection starts its catch-up over
        if conn_id in self.trade_conn_ids:
            return step
        if up:
            self._up[conn_id] = None
            if awaiting is not None and self.venue.resubscribe_messages is not None:
                # Each carried symbol's first snapshot there answers its subscription; a
                # sequenced book built from REST snapshots needs none in band.
                for key, book in self.books.items():
                    if (
                        key not in self.rejected
                        and self._carries(conn_id, key)
                        and (not self.rest_snapshots or isinstance(book, ReplicatedBook))
                    ):
                        awaiting.subscribed(conn_id, key)
        else:
            self._up.pop(conn_id, None)
        if self.activity is not None:
            if up:
                symbols = [
                    key.partition(":")[2]
                    for key in self.books
                    if key not in self.rejected and self._carries(conn_id, key)
                ]
                self.activity.connection_up(conn_id, symbols, now_ns / 1e9)
            else:
                self.activity.connection_down(conn_id)
        for key, book in self.books.items():
            if self._carries(conn_id, key):
                self._take(book, book.on_connection(conn_id, up, now_ns), step, now_ns)
        return step

    def receive_sent(self, conn_id: int, symbols: Collection[str], now_ns: int) -> None:
        """The requests of ``symbols`` on ``conn_id`` left its queue now: its subscription
        (on connect, or sent again) or a symbol's :class:`Resubscribe` was written to the
        socket, or given up (the venue will not see it). Each symbol awaiting its snapshot
        there waits for it from now; a symbol answered already, or not awaited, is left
        alone."""
        awaiting = self._awaiting
        if awaiting is None or self.stopped:
            return
        venue = self.venue.venue
        for symbol in symbols:
            awaiting.written(conn_id, symbol_key(venue, symbol), now_ns)

    def receive_snapshot(
        self, snapshot: DepthSnapshot, now_ns: int, attempt: int | None = None
    ) -> Step:
        """A parsed REST snapshot, the answer to :class:`FetchSnapshot` ``attempt``: an
        answer to a superseded attempt is discarded (``stats.snapshots_superseded``).
        ``attempt`` None: not tagged (a capture's REST record), used as it comes."""
        step = Step([], [])
        if self.stopped:
            return step
        if attempt is not None and not self.snapshot_attempts.admit(snapshot.symbol, attempt):
            self.stats.snapshots_superseded += 1
            return step
        book = self.books.get(snapshot.key)
        if book is None and self._open and snapshot.venue == self.venue.venue:
            book = self._new_book(snapshot.key, now_ns)
        if book is not None:
            self._take(book, book.on_snapshot(snapshot, now_ns), step, now_ns)
        return step

    def receive_rest(self, symbol: str, body: bytes, recv_ns: int, now_ns: int) -> Step:
        """A REST snapshot body of ``symbol``, parsed here; a body the venue's parser
        rejects is a bad frame. Nothing happens for a venue without REST snapshots."""
        parse = self.venue.parse_snapshot
        if parse is None or self.stopped:
            return Step([], [])
        try:
            snapshot = parse(symbol, body, recv_ns, -1)
        except VenueContractError as exc:
            self.reject_frame(-1, body, exc)
            return Step([], [])
        return self.receive_snapshot(snapshot, now_ns)

    # --- audits (gateway.core.audit): counted and logged, never applied ------------------

    def receive_audit_snapshot(self, snapshot: DepthSnapshot, now_ns: int) -> Step:
        """A REST snapshot fetched to audit a book: compared with it, never applied."""
        book = self.books.get(snapshot.key)
        if isinstance(book, SequencedBook) and not self.stopped:
            book.on_audit_snapshot(snapshot, now_ns)
        return Step([], [])

    def auditable_symbols(self) -> list[str]:
        """Symbols whose books can be audited against a REST snapshot now."""
        if not self.rest_snapshots or self.stopped:
            return []
        return [
            key.partition(":")[2]
            for key, book in self.books.items()
            if isinstance(book, SequencedBook) and book.has_book
        ]

    def on_timer(self, now_ns: int) -> Step:
        """Fires the reorder-window deadlines that have passed (see :meth:`deadline_ns`),
        checks the channels' activity (where watched) every quarter of the shortest
        silence, then asks again the subscriptions and resubscribes unanswered too long."""
        step = Step([], [])
        if self.stopped:
            return step
        if self.activity is not None and now_ns >= self._activity_check_ns:
            self._activity_check_ns = now_ns + self._activity_every_ns
            for silence in self.activity.check(now_ns / 1e9):
                self._silent(silence, step, now_ns)
        if self._awaiting is not None:
            for unanswered in self._awaiting.due(now_ns):
                self._unanswered(unanswered, self._awaiting, step, now_ns)
        for key in list(self._waiting):
            book = self.books[key]
            deadline = book.deadline_ns()
            if deadline is None:
                self._waiting.discard(key)
            elif deadline <= now_ns:
                self._take(book, book.on_timer(now_ns), step, now_ns)
        return step

    def stop(self) -> Step:
        """The gateway stops (its own shutdown, not the venue's outage): every carried symbol
        is published ``stale`` with :data:`STOPPING_REASON`, one already ``stale`` (for
        another reason) too, so that every subscriber hears why; one INFO line for the
        venue says how many were not stale yet. From then on every input is ignored (the
        connections ended by the stop publish and log nothing) and every symbol's state is
        ``stale``. Idempotent: a second stop's step is empty (each symbol is stale with
        that reason already)."""
        step = Step([], [])
        if self.stopped:
            return step
        stale_before = sum(self.state(key) is SymbolState.STALE for key in self.books)
        step.publications.extend(
            StatusChange(key, SymbolState.STALE, STOPPING_REASON) for key in self.books
        )
        self.stopped = True
        self._waiting.clear()
        venue = self.venue.venue
        log.info(
            "%s: %d symbol%s now stale (%s), %d of them stale already",
            venue,
            len(self.books),
            "" if len(self.books) == 1 else "s",
            STOPPING_REASON,
            stale_before,
            extra={"venue": venue},
        )
        return step

    def reject_frame(self, conn_id: int, raw: bytes, exc: VenueContractError) -> None:
        """Count (and log, rate-limited per connection) a frame that cannot be used."""
        self.stats.bad_frames += 1
        count = self.bad_frames_by_conn[conn_id] = self.bad_frames_by_conn.get(conn_id, 0) + 1
        if count <= LOG_FIRST or count % LOG_EVERY == 0:
            log.warning(
                "conn %d: bad frame #%d from %s: %s; frame starts %r",
                conn_id,
                count,
                self.venue.venue,
                exc,
                raw[:120],
                extra={"venue": self.venue.venue, "connection": conn_id},
            )

    def _event_latency(self, conn_id: int, event_ms: int, recv_ns: int) -> None:
        latency = self.event_latency_by_conn.get(conn_id)
        if latency is None:
            latency = self.event_latency_by_conn[conn_id] = Histogram(EVENT_LATENCY_BOUNDS_S)
        latency.observe((recv_ns - event_ms * 1_000_000) / 1e9)

    # --- reading ----------------------------------------------------------------------------

    @property
    def timer_armed(self) -> bool:
        """True while some book may have a deadline, channels are watched, or a
        request awaits its snapshot: call :meth:`on_timer` now and then."""
        return not self.stopped and (
            bool(self._waiting)
            or self.activity is not None
            or (self._awaiting is not None and bool(self._awaiting))
        )

    def deadline_ns(self) -> int | None:
        """The earliest reorder-window deadline, or None."""
        deadlines = [d for key in self._waiting if (d := self.books[key].deadline_ns()) is not None]
        return min(deadlines, default=None)

    def book_state(self, key: str) -> BookState | None:
        """The symbol's consistent book, or None when unknown or not consistent."""
        book = self.books.get(key)
        if book is None or not book.has_book:
            return None
        return BookState(book.book, book.epoch, book.seq, book.applied_id, self.state(key))

    def state(self, key: str) -> SymbolState:
        """The state of a carried symbol: its arbiter's, or ``stale`` when the venue
        refused it or the pipeline is stopped."""
        stale = self.stopped or key in self.rejected
        return SymbolState.STALE if stale else self.books[key].state

    # --- internals --------------------------------------------------------------------------

    def _book(self, key: str, now_ns: int) -> SymbolArbiter | None:
        book = self.books.get(key)
        if book is None:
            if not self._open or key.partition(":")[0] != self.venue.venue:
                self.stats.unknown_symbols += 1
                return None
            book = self._new_book(key, now_ns)
        return book

    def _new_book(self, key: str, now_ns: int) -> SymbolArbiter:
        book = self.books[key] = self.venue.new_arbiter(key.partition(":")[2], self.limits)
        book.epoch = self.epoch_base
        if key not in self.trades:
            self.trades[key] = TradeDedup()
        if isinstance(book, ReplicatedBook):
            book.scores = self.conn_scores
        checksum = self._checksums.pop(key, None)
        if checksum is not None:
            book.checksum = checksum
        for conn_id in self._up:
            # Telling a book of a connection that is up publishes nothing.
            if self._carries(conn_id, key):
                book.on_connection(conn_id, True, now_ns)
        return book

    def _carries(self, conn_id: int, key: str) -> bool:
        keys = self._conn_keys.get(conn_id)
        return keys is None or key in keys

    def _take(
        self, book: SymbolArbiter, events: list[ArbiterEvent], step: Step, now_ns: int
    ) -> None:
        """Publications of ``book`` to the step; its commands become actions."""
        if book.deadline_ns() is not None:
            self._waiting.add(book.key)
        if book.key in self.rejected:
            # Told stale with the venue's refusal for good: the arbiter's changes are moot.
            events = [e for e in events if not isinstance(e, StatusChange)]
        publications = step.publications
        for event in events:
            if type(event) is BookDelta:
                publications.append(event)  # the common case
            elif isinstance(event, SnapshotWanted):
                self._snapshot_wanted(book.key.partition(":")[2], step, now_ns)
            elif isinstance(event, ResubscribeWanted):
                self.faults_by_conn[event.conn_id] = self.faults_by_conn.get(event.conn_id, 0) + 1
                self._resubscribe(event.conn_id, book.key.partition(":")[2], step, now_ns)
            elif isinstance(event, BookCrossed):
                self._crossed(event, now_ns)
            elif isinstance(event, ReconnectWanted):
                if event.fault:
                    faults = self.faults_by_conn.get(event.conn_id, 0)
                    self.faults_by_conn[event.conn_id] = faults + 1
                self._reconnect(event.conn_id, step, fault=event.fault)
            else:
                publications.append(event)
                if isinstance(event, BookReset) and self.rest_snapshots:
                    step.actions.append(BookRebuilt(book.key.partition(":")[2]))
                elif isinstance(event, StatusChange):
                    self._log_status(event)

    def _log_status(self, event: StatusChange) -> None:
        """One line per change of a symbol's state: a warning when it stops being live."""
        level = logging.INFO if event.state in _UNALARMING else logging.WARNING
        venue, _, symbol = event.key.partition(":")
        log.log(
            level,
            "%s: %s (%s)",
            event.key,
            event.state.value,
            event.reason,
            extra={"venue": venue, "symbol": symbol},
        )

    def _crossed(self, event: BookCrossed, now_ns: int) -> None:
        self.stats.crossed_books += 1
        where = "" if event.conn_id < 0 else f" (replica of conn {event.conn_id})"
        venue, _, symbol = event.key.partition(":")
        self.crossed_log.warning(
            event.key,
            now_ns / 1e9,
            "%s%s: %s; not published, rebuilding",
            event.key,
            where,
            event.reason,
            extra={"venue": venue, "symbol": symbol},
        )

    def _snapshot_wanted(self, symbol: str, step: Step, now_ns: int) -> None:
        if self.rest_snapshots:
            step.actions.append(FetchSnapshot(symbol, self.snapshot_attempts.start(symbol)))
        else:
            # No REST snapshot: every connection subscribes again for an in-band one.
            key = symbol_key(self.venue.venue, symbol)
            for conn_id in self._up:
                if self._carries(conn_id, key):
                    self._resubscribe(conn_id, symbol, step, now_ns)

    def _resubscribe(self, conn_id: int, symbol: str, step: Step, now_ns: int) -> None:
        if self.venue.resubscribe_messages is not None:
            self.stats.resubscribes += 1
            if self._awaiting is not None:
                self._awaiting.asked(conn_id, symbol_key(self.venue.venue, symbol))
            step.actions.append(Resubscribe(conn_id, symbol))

    def _unanswered(
        self, unanswered: Unanswered, awaiting: AwaitedSnapshots, step: Step, now_ns: int
    ) -> None:
        """No snapshot came on ``unanswered.conn_id`` since the symbol's last request
        (its subscription or a resubscribe) was written there, for its wait: asked again,
        unless the channel is found dead there (the silence's reports ask it, on their own
        clock), the symbol is refused, or its book is sequenced and built (a snapshot on
        any connection answers a sequenced book; the updates of this one are copies of the
        same ids)."""
        conn_id, key = unanswered.conn_id, unanswered.key
        symbol = key.partition(":")[2]
        book = self.books.get(key)
        built = isinstance(book, SequencedBook) and book.has_book
        if book is None or built or key in self.rejected:
            awaiting.answered(conn_id, key)
            return
        if self.activity is not None and self.activity.dead(symbol, conn_id):
            awaiting.postpone(conn_id, key, now_ns)
            return
        self.stats.unanswered_resubscribes += 1
        asked, again = (
            (f"resubscribe #{unanswered.asks}", " again")
            if unanswered.asks
            else ("its subscription", "")
        )
        self.unanswered_log.warning(
            key,
            now_ns / 1e9,
            "%s: no snapshot on conn %d %.3g s after %s there, while it is up; resubscribing%s",
            key,
            conn_id,
            unanswered.waited_s,
            asked,
            again,
            extra={"venue": self.venue.venue, "symbol": symbol, "connection": conn_id},
        )
        self._resubscribe(conn_id, symbol, step, now_ns)

    def _active(self, activity: ActivityMonitor, symbol: str, conn_id: int, now_ns: int) -> None:
        """A book message of ``symbol`` on ``conn_id``: the arbiter sees the connection as
        up again with it (its own update handling)."""
        if activity.update(symbol, conn_id, now_ns / 1e9):
            self.stats.revived_channels += 1
            log.info(
                "%s:%s: updates back on conn %d",
                self.venue.venue,
                symbol,
                conn_id,
                extra={"venue": self.venue.venue, "symbol": symbol, "connection": conn_id},
            )

    def _silent(self, silence: Silence, step: Step, now_ns: int) -> None:
        """``silence.symbol``'s channel died on a connection that still carries traffic:
        that connection counts as down for the symbol, and the symbol is resubscribed on it.
        A silence reported again (the resubscribe went unanswered) is resubscribed again."""
        assert self.activity is not None
        key = symbol_key(self.venue.venue, silence.symbol)
        book = self.books.get(key)
        if book is None:
            return
        usual = (
            "no usual rate yet"
            if silence.usual_s is None
            else f"usual every {silence.usual_s:.3g} s"
        )
        fields = {
            "venue": self.venue.venue,
            "symbol": silence.symbol,
            "connection": silence.conn_id,
        }
        if silence.reported:
            self.silence_log.warning(
                key,
                now_ns / 1e9,
                "%s: still no updates on conn %d after %.3g s (%s): resubscribe #%d unanswered; "
                "resubscribing again",
                key,
                silence.conn_id,
                silence.silent_s,
                usual,
                silence.reported,
                extra=fields,
            )
            self._resubscribe(silence.conn_id, silence.symbol, step, now_ns)
            return
        self.stats.silent_channels += 1
        self.silence_log.warning(
            key,
            now_ns / 1e9,
            "%s: no updates on conn %d for %.3g s (%s) while the connection carries "
            "other traffic; resubscribing there",
            key,
            silence.conn_id,
            silence.silent_s,
            usual,
            extra=fields,
        )
        events = book.on_connection(silence.conn_id, False, now_ns)
        if self.activity.dead_everywhere(silence.symbol):
            reason = self.activity.stale_reason(silence.symbol, now_ns / 1e9)
            events = [
                StatusChange(e.key, e.state, reason)
                if isinstance(e, StatusChange) and e.state is SymbolState.STALE
                else e
                for e in events
            ]
        self._take(book, events, step, now_ns)
        self._resubscribe(silence.conn_id, silence.symbol, step, now_ns)

    def _rejections(self, conn_id: int, detail: str, step: Step, *, resend: bool) -> None:
        """The venue's error (or close reason) ``detail`` on ``conn_id``: every carried
        symbol it names that never delivered anything is refused (one that did is known to
        the venue: its error is another, such as a duplicate subscription); the venue's
        other symbols go on without it."""
        if self._open:
            return
        silent = [
            key.partition(":")[2]
            for key, book in self.books.items()
            if not book.has_book
            and key not in self._delivered
            and not any(c.received for c in book.stats.connections.values())
        ]
        for symbol in named_symbols(detail, silent):
            if (conn_id, symbol) in self._rejected_on:
                continue
            self._rejected_on.add((conn_id, symbol))
            key = symbol_key(self.venue.venue, symbol)
            if key not in self.rejected:
                self._reject(key, symbol, detail, step)
            step.actions.append(SymbolRejected(conn_id, symbol, resend))

    def _reject(self, key: str, symbol: str, detail: str, step: Step) -> None:
        reason = f"rejected by the venue: {detail}"
        self.rejected[key] = reason
        self.stats.rejected_symbols += 1
        if self.activity is not None:
            self.activity.forget(symbol)
        log.warning(
            "%s: %s; the venue's other symbols go on without it",
            key,
            reason,
            extra={"venue": self.venue.venue, "symbol": symbol},
        )
        step.publications.append(StatusChange(key, SymbolState.STALE, reason))

    def _trade(self, trade: Trade, step: Step) -> None:
        dedup = self.trades.get(trade.key)
        if dedup is None and self._open:
            dedup = self.trades[trade.key] = TradeDedup()
        if dedup is not None:
            step.publications.extend(dedup.on_trade(trade))

    def _set_precision(self, event: InstrumentPrecision) -> None:
        make = self.venue.checksum_at_precision
        if make is None:
            return
        key = symbol_key(event.venue, event.symbol)
        book = self.books.get(key)
        if book is not None:
            book.checksum = make(event.price_precision, event.qty_precision)
        elif self._open:
            self._checksums[key] = make(event.price_precision, event.qty_precision)

    def _connection_sequence(self, conn_id: int, seq: int, step: Step, now_ns: int) -> bool:
        """Checks the message's connection-wide number; False: the message is late and
        ignored (applied after the ones behind it, an update or a snapshot would make a
        replica that is no book the venue had; the jump that the later ones made already
        resubscribed the connection's replicas)."""
        if self.sequences.late(conn_id, seq):
            self.stats.connection_late_messages += 1
            self.sequence_log.warning(
                ("late", conn_id),
                now_ns / 1e9,
                "conn %d: a message arrived late (sequence_num %d); ignored",
                conn_id,
                seq,
                extra={"venue": self.venue.venue, "connection": conn_id},
            )
            return False
        if not self.sequences.on_seq(conn_id, seq):
            return True
        # Every replica on this connection missed something: each is dropped and
        # resubscribed on this connection only, and so is every symbol still awaiting the
        # snapshot of its subscription or a resubscribe there (the lost message may be it).
        self.stats.connection_gaps += 1
        self.sequence_log.warning(
            ("lost", conn_id),
            now_ns / 1e9,
            "conn %d: messages lost (sequence jump); resubscribing",
            conn_id,
            extra={"venue": self.venue.venue, "connection": conn_id},
        )
        reason = "connection sequence jump"
        awaiting = frozenset() if self._awaiting is None else self._awaiting.awaiting(conn_id)
        for key, book in self.books.items():
            if key in self.rejected or not self._carries(conn_id, key):
                continue  # a refused symbol is subscribed no more
            events = (
                book.invalidate(conn_id, reason, now_ns) if isinstance(book, ReplicatedBook) else []
            )
            if key in awaiting and not any(
                isinstance(e, ResubscribeWanted) and e.conn_id == conn_id for e in events
            ):
                events.append(ResubscribeWanted(key, conn_id, f"{reason} awaiting its snapshot"))
            self._take(book, events, step, now_ns)
        return True

    def _notice(self, conn_id: int, notice: VenueNotice, step: Step) -> None:
        self.stats.notices += 1
        if notice.kind == "error":
            self._rejections(conn_id, notice.detail, step, resend=True)
            log.warning(
                "conn %d: venue error: %s",
                conn_id,
                notice.detail,
                extra={"venue": self.venue.venue, "connection": conn_id},
            )
        if notice.reconnect:
            self._reconnect(conn_id, step, renew=True)

    def _reconnect(
        self, conn_id: int, step: Step, *, renew: bool = False, fault: bool = True
    ) -> None:
        if not any(isinstance(a, Reconnect) and a.conn_id == conn_id for a in step.actions):
            step.actions.append(Reconnect(conn_id, renew, fault))
