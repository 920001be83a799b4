"""Sequence arbitration of redundant copies of one venue's book stream (DESIGN §2).

Pure: input events and a clock value in, gateway events out; no I/O, no event loop.

One :class:`SequencedBook` per symbol owns the arbitration state, the published
:class:`~gateway.core.book.L2Book` and the gateway's ``(epoch, seq)``:

- the first copy of every update wins, from whichever connection delivers it first;
  later copies are duplicates, dropped and counted per connection;
- an update from the future (ids missing before it) waits in a bounded buffer;
- a gap is declared only when the missing ids can no longer arrive: every connection that
  is up has already delivered ids past the hole (each connection's stream is in order), or
  the reorder window passed; then subscribers are told ``resyncing`` and a snapshot is
  wanted, once;
- a snapshot loads the book, sets the applied id, and drains the buffer by the same rule,
  so a snapshot older than the stream is just another certain gap.

Link rules are venue rules (:class:`LinkRule`); the arbiter knows none of them.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from sortedcontainers import SortedKeyList

from gateway.core.book import BadLevel, L2Book
from gateway.core.model import (
    ArbiterEvent,
    BookDelta,
    BookReset,
    DepthDiff,
    DepthSnapshot,
    GatewayEvent,
    Level,
    ResubscribeWanted,
    SnapshotWanted,
    StatusChange,
    SymbolState,
    Trade,
    TradeOut,
)

log = logging.getLogger(__name__)

#: Default time a future update may wait for the missing ids from another connection.
DEFAULT_REORDER_WINDOW_NS: Final = 100_000_000
#: Default bound of the buffer of updates that cannot be applied yet.
DEFAULT_MAX_PENDING: Final = 4096


class Link(enum.Enum):
    """How an update relates to the book at the applied id."""

    #: Every id it covers is already applied: a duplicate or an old update.
    STALE = "stale"
    #: It continues the book: apply it.
    LINKS = "links"
    #: Ids are missing between the book and this update.
    FUTURE = "future"


class LinkRule(Protocol):
    """A venue's rule for ordering its updates (exchange-protocols.md)."""

    name: str

    def classify(self, diff: DepthDiff, applied_id: int) -> Link: ...


class BinanceSpotRule:
    """``u <= L`` is stale; ``U <= L + 1 <= u`` links; ``U > L + 1`` leaves a hole.

    Levels are absolute, so an update overlapping applied ids is applied whole; this also
    covers connections that batch the same ids into different events.
    """

    name = "binance-spot"

    def classify(self, diff: DepthDiff, applied_id: int) -> Link:
        if diff.last_id <= applied_id:
            return Link.STALE
        if diff.first_id <= applied_id + 1:
            return Link.LINKS
        return Link.FUTURE


class BinanceFuturesRule:
    """USD-M: ``u <= L`` is stale; ``pu == L`` or a range covering ``L`` links.

    Futures ids are not contiguous, so the spot rule would see holes that are not there.
    """

    name = "binance-usdm"

    def classify(self, diff: DepthDiff, applied_id: int) -> Link:
        if diff.last_id <= applied_id:
            return Link.STALE
        if diff.prev_id == applied_id or diff.first_id <= applied_id:
            return Link.LINKS
        return Link.FUTURE


@dataclass
class ConnectionStats:
    """Per connection, for one symbol."""

    received: int = 0
    #: Updates from this connection that were the first copy and were applied.
    first_wins: int = 0
    duplicates: int = 0


@dataclass
class SymbolStats:
    updates: int = 0
    duplicates: int = 0
    #: Updates older than the snapshot the book was built from.
    stale: int = 0
    gaps: int = 0
    resyncs: int = 0
    crossed: int = 0
    snapshots: int = 0
    #: Snapshots that could not be used: older than the stream, or not wanted.
    snapshots_unused: int = 0
    #: Buffered updates discarded because the buffer was full while waiting for a snapshot.
    pending_dropped: int = 0
    bad_updates: int = 0
    checksum_ok: int = 0
    checksum_failed: int = 0
    #: In-band snapshots newer than the book, published as a delta (a sequence jump).
    jumps: int = 0
    #: Venue-declared sequence resets (Bybit ``u == 1``).
    venue_resets: int = 0
    #: Unsequenced mode: the output moved to another connection's replica.
    failovers: int = 0
    #: Unsequenced mode: replicas found wrong (checksum, lost message) and resubscribed.
    replica_failures: int = 0
    connections: dict[int, ConnectionStats] = field(default_factory=dict)

    def conn(self, conn_id: int) -> ConnectionStats:
        stats = self.connections.get(conn_id)
        if stats is None:
            stats = self.connections[conn_id] = ConnectionStats()
        return stats


#: A venue's checksum of a book (OKX top 25, Kraken top 10).
Checksum = Callable[[L2Book], int]


class SymbolArbiter(Protocol):
    """What the service, the fan-out and verify use of a symbol's arbiter, whatever the
    venue's mode (sequenced: :class:`SequencedBook`; unsequenced: :class:`ReplicatedBook`)."""

    key: str
    book: L2Book
    state: SymbolState
    epoch: int
    seq: int
    applied_id: int
    stats: SymbolStats
    #: The venue checksum verified on updates that carry one; replaceable (precisions).
    checksum: Checksum | None

    @property
    def has_book(self) -> bool: ...

    @property
    def pending(self) -> int:
        """Updates waiting for missing ids (always 0 in the unsequenced mode)."""
        ...

    def on_connection(self, conn_id: int, up: bool, now_ns: int) -> list[ArbiterEvent]: ...

    def on_diff(self, diff: DepthDiff, now_ns: int) -> list[ArbiterEvent]: ...

    def on_snapshot(self, snap: DepthSnapshot, now_ns: int) -> list[ArbiterEvent]: ...

    def on_timer(self, now_ns: int) -> list[ArbiterEvent]: ...

    def deadline_ns(self) -> int | None: ...


class SequencedBook:
    """Arbiter, book and published sequence of one symbol of a sequenced venue.

    Every ``on_*`` method returns the gateway events to publish, in order. ``now_ns`` is a
    monotonic clock reading supplied by the caller.

    Contract of the published stream: a :class:`BookReset` starts epoch ``epoch`` at
    ``seq``, with the book as it stands right after the call that returned it; each
    :class:`BookDelta` then has ``seq`` one above the previous message of the epoch.
    """

    def __init__(
        self,
        key: str,
        rule: LinkRule,
        *,
        reorder_window_ns: int = DEFAULT_REORDER_WINDOW_NS,
        max_pending: int = DEFAULT_MAX_PENDING,
        checksum: Checksum | None = None,
    ) -> None:
        if reorder_window_ns < 0 or max_pending < 1:
            raise ValueError("reorder_window_ns must be >= 0 and max_pending >= 1")
        self.key = key
        self.rule = rule
        self.checksum = checksum
        self.reorder_window_ns = reorder_window_ns
        self.max_pending = max_pending
        self.book = L2Book()
        self.state = SymbolState.SYNCING
        self.epoch = 0
        self.seq = 0
        #: The venue's last update id the book reflects; -1 before the first snapshot.
        self.applied_id = -1
        self.stats = SymbolStats()
        self._has_book = False
        self._snapshot_wanted = False
        self._pending: SortedKeyList = SortedKeyList(key=_first_id)
        self._hole_since_ns: int | None = None
        #: Latest last_id seen per connection that is up (each connection's stream is in
        #: order); -1 for a connection not heard from since it came up or the venue reset.
        self._conn_high: dict[int, int] = {}
        #: The venue id of the snapshot the current epoch was built from.
        self._snapshot_id = -1
        #: The last venue reset snapshot, to recognise its late copies from other connections.
        self._last_reset: DepthSnapshot | None = None

    # --- inputs -------------------------------------------------------------------------

    def on_connection(self, conn_id: int, up: bool, now_ns: int) -> list[ArbiterEvent]:
        """A connection carrying this symbol came up or went down."""
        out: list[ArbiterEvent] = []
        if up:
            self._conn_high.setdefault(conn_id, -1)
            return out
        self._conn_high.pop(conn_id, None)
        if not self._conn_high and self.state is not SymbolState.STALE:
            self.state = SymbolState.STALE
            out.append(StatusChange(self.key, SymbolState.STALE, "every upstream connection down"))
        self._check_hole(now_ns, out)
        return out

    def on_diff(self, diff: DepthDiff, now_ns: int) -> list[ArbiterEvent]:
        out: list[ArbiterEvent] = []
        conn = self.stats.conn(diff.conn_id)
        conn.received += 1
        self._conn_high[diff.conn_id] = diff.last_id

        if not self._has_book:
            if diff.last_id <= self.applied_id:
                self._drop(diff)
            else:
                self._buffer(diff, out)
            if not self._snapshot_wanted:
                self._want_snapshot("initial sync", out)
            return out

        link = self.rule.classify(diff, self.applied_id)
        if link is Link.STALE:
            self._drop(diff)
        elif link is Link.LINKS:
            if self._apply(diff, out):
                conn.first_wins += 1
                self._drain(out)
        else:
            self._buffer(diff, out)
        self._check_hole(now_ns, out)
        return out

    def on_snapshot(self, snap: DepthSnapshot, now_ns: int) -> list[ArbiterEvent]:
        """A venue snapshot.

        While the book is not built (initial sync or resync) any snapshot builds it. While
        it is built: a venue reset (``snap.reset``) replaces it; an in-band snapshot newer
        than the book replaces it as well (the venue jumped ahead of every connection); both
        are published as one ordinary delta, so subscribers keep their seq. Older in-band
        snapshots, late copies of a reset and REST snapshots are counted and ignored.
        """
        out: list[ArbiterEvent] = []
        if self._has_book:
            self._snapshot_while_live(snap, out)
            return out
        try:
            self.book.load(snap.bids, snap.asks)
        except BadLevel as exc:
            self.stats.bad_updates += 1
            self.stats.snapshots_unused += 1
            log.warning("%s: snapshot rejected: %s", self.key, exc)
            return out
        self.stats.snapshots += 1
        self.applied_id = self._snapshot_id = snap.last_id
        self._loaded(snap)
        self._has_book = True
        self._hole_since_ns = None
        self._drain_after_snapshot()
        if not self._has_book:
            # A buffered update failed its checksum on the fresh book.
            self._want_snapshot("checksum mismatch after the snapshot", out)
            return out
        if self._pending and self._gap_is_certain():
            # The snapshot is older than every connection's stream: a newer one is needed.
            self.stats.snapshots_unused += 1
            self._has_book = False
            self.book.clear()
            self._want_snapshot("snapshot older than the stream", out)
            return out
        if snap.checksum is not None and not self._checksum_matches(snap.checksum):
            self._has_book = False
            self.book.clear()
            self._want_snapshot("snapshot checksum mismatch", out)
            return out
        self._snapshot_wanted = False
        if snap.reset:
            self._last_reset = snap
        self.epoch += 1
        self.seq = 0
        if self.book.is_crossed():
            self.stats.crossed += 1
        out.append(BookReset(self.key, self.epoch, self.seq, self.applied_id, snap.recv_ns))
        self._publish_state("snapshot applied", out)
        if self._pending:
            self._hole_since_ns = now_ns
        return out

    def on_timer(self, now_ns: int) -> list[ArbiterEvent]:
        """Call at or after :meth:`deadline_ns`; declares a gap when the window passed."""
        out: list[ArbiterEvent] = []
        self._check_hole(now_ns, out)
        return out

    def deadline_ns(self) -> int | None:
        """When :meth:`on_timer` must be called next, or None."""
        if self._hole_since_ns is None or not self._has_book:
            return None
        return self._hole_since_ns + self.reorder_window_ns

    @property
    def has_book(self) -> bool:
        """True while the published book is consistent with the venue."""
        return self._has_book

    @property
    def snapshot_wanted(self) -> bool:
        return self._snapshot_wanted

    @property
    def pending(self) -> int:
        return len(self._pending)

    # --- internals ----------------------------------------------------------------------

    def _snapshot_while_live(self, snap: DepthSnapshot, out: list[ArbiterEvent]) -> None:
        last_reset = self._last_reset
        if snap.reset:
            if (
                last_reset is not None
                and last_reset.last_id == snap.last_id
                and last_reset.bids == snap.bids
                and last_reset.asks == snap.asks
            ):
                self.stats.snapshots_unused += 1  # a late copy of the reset just applied
                return
            self.stats.venue_resets += 1
            self._pending.clear()
            self._hole_since_ns = None
            self._last_reset = snap
            self._sequence_restarted(snap.conn_id)
        elif snap.conn_id < 0 or snap.last_id <= self.applied_id:
            self.stats.snapshots_unused += 1
            return
        else:
            self.stats.jumps += 1
        fresh = L2Book()
        try:
            fresh.load(snap.bids, snap.asks)
        except BadLevel as exc:
            self.stats.bad_updates += 1
            log.warning("%s: snapshot rejected: %s", self.key, exc)
            return
        bids, asks = self.book.diff_to(fresh)
        self.book = fresh
        self.stats.snapshots += 1
        self.applied_id = self._snapshot_id = snap.last_id
        self._loaded(snap)
        self.seq += 1
        out.append(
            BookDelta(
                self.key, self.epoch, self.seq, snap.last_id, tuple(bids), tuple(asks), snap.recv_ns
            )
        )
        if snap.checksum is not None and not self._checksum_matches(snap.checksum):
            self._declare_gap("snapshot checksum mismatch", out)
            return
        self._drain(out)
        self._check_hole(snap.recv_ns, out)

    def _sequence_restarted(self, conn_id: int) -> None:
        """The venue's ids started again lower: what other connections delivered says
        nothing about the new sequence until they deliver in it."""
        for other in self._conn_high:
            if other != conn_id:
                self._conn_high[other] = -1

    def _loaded(self, snap: DepthSnapshot) -> None:
        """Tell a rule that keeps state (OKX) that the book was rebuilt from ``snap``."""
        hook = getattr(self.rule, "on_snapshot", None)
        if hook is not None:
            hook(snap)

    def _checksum_matches(self, expected: int) -> bool:
        if self.checksum is None:
            return True
        if self.checksum(self.book) == expected:
            self.stats.checksum_ok += 1
            return True
        self.stats.checksum_failed += 1
        log.warning("%s: checksum mismatch at id %d", self.key, self.applied_id)
        return False

    def _apply(self, diff: DepthDiff, out: list[ArbiterEvent]) -> bool:
        try:
            self.book.apply(diff.bids, diff.asks)
        except BadLevel as exc:
            # Adapters validate levels, so this is a copy the venue mangled; another
            # connection's copy, or the resync that the hole leads to, repairs it.
            self.stats.bad_updates += 1
            log.warning(
                "%s: update %d..%d rejected: %s", self.key, diff.first_id, diff.last_id, exc
            )
            return False
        if diff.last_id < self.applied_id:
            self._sequence_restarted(diff.conn_id)
        self.applied_id = diff.last_id
        self.seq += 1
        self.stats.updates += 1
        if self.book.is_crossed():
            self.stats.crossed += 1
        out.append(
            BookDelta(
                self.key, self.epoch, self.seq, diff.last_id, diff.bids, diff.asks, diff.recv_ns
            )
        )
        if diff.checksum is not None and not self._checksum_matches(diff.checksum):
            # The book no longer matches the venue's: rebuild it from a snapshot.
            self._declare_gap("checksum mismatch", out)
            return False
        if self.state is SymbolState.STALE and self._conn_high:
            self._publish_state("upstream back", out)
        return True

    def _buffer(self, diff: DepthDiff, out: list[ArbiterEvent]) -> None:
        if len(self._pending) >= self.max_pending:
            if self._has_book:
                # The hole outlived a full buffer: no connection is going to fill it.
                self._declare_gap("reorder buffer full", out)
            if len(self._pending) >= self.max_pending:
                self._pending.pop(0)
                self.stats.pending_dropped += 1
        self._pending.add(diff)

    def _drain(self, out: list[ArbiterEvent]) -> None:
        """Apply buffered updates that now link; drop the ones now stale."""
        pending = self._pending
        while pending and self._has_book:
            diff: DepthDiff = pending[0]
            link = self.rule.classify(diff, self.applied_id)
            if link is Link.FUTURE:
                break
            pending.pop(0)
            if link is Link.STALE:
                self._drop(diff)
            elif self._apply(diff, out):
                self.stats.conn(diff.conn_id).first_wins += 1
        if not pending:
            self._hole_since_ns = None

    def _drain_after_snapshot(self) -> None:
        """Apply buffered updates to the freshly loaded book without publishing them: the
        BookReset that follows publishes the book as it stands after them."""
        discard: list[ArbiterEvent] = []
        seq, state = self.seq, self.state
        self._drain(discard)
        self.seq, self.state = seq, state

    def _drop(self, diff: DepthDiff) -> None:
        if diff.last_id <= self._snapshot_id:
            self.stats.stale += 1
        else:
            self.stats.conn(diff.conn_id).duplicates += 1
            self.stats.duplicates += 1

    def _gap_is_certain(self) -> bool:
        """True when no connection that is up can still deliver the missing ids."""
        if not self._conn_high:
            return False
        applied = self.applied_id
        return all(high > applied for high in self._conn_high.values())

    def _check_hole(self, now_ns: int, out: list[ArbiterEvent]) -> None:
        if not self._has_book or not self._pending:
            self._hole_since_ns = None
            return
        if self._hole_since_ns is None:
            self._hole_since_ns = now_ns
        if self._gap_is_certain():
            self._declare_gap("ids missing on every connection", out)
        elif now_ns - self._hole_since_ns >= self.reorder_window_ns:
            self._declare_gap("reorder window passed with ids missing", out)

    def _declare_gap(self, reason: str, out: list[ArbiterEvent]) -> None:
        self.stats.gaps += 1
        self.stats.resyncs += 1
        log.warning(
            "%s: gap after id %d (%s); resyncing from a snapshot", self.key, self.applied_id, reason
        )
        self._has_book = False
        self._hole_since_ns = None
        self.state = SymbolState.RESYNCING
        out.append(StatusChange(self.key, SymbolState.RESYNCING, reason))
        self._want_snapshot(reason, out)

    def _want_snapshot(self, reason: str, out: list[ArbiterEvent]) -> None:
        self._snapshot_wanted = True
        out.append(SnapshotWanted(self.key, reason))

    def _publish_state(self, reason: str, out: list[ArbiterEvent]) -> None:
        """After a book change: live when a connection is up, else stale."""
        state = SymbolState.LIVE if self._conn_high else SymbolState.STALE
        if state is not self.state:
            self.state = state
            if state is SymbolState.STALE:
                reason = "every upstream connection down"
            out.append(StatusChange(self.key, state, reason))


@dataclass
class Replica:
    """One connection's copy of an unsequenced book."""

    book: L2Book = field(default_factory=L2Book)
    #: True from a snapshot whose checksum matched until the replica is found wrong.
    valid: bool = False
    #: How far behind the first connection to reach the same book state, smoothed.
    lag_ewma_ns: float = 0.0


class ReplicatedBook:
    """Arbiter, book and published sequence of one symbol of an unsequenced venue (Kraken
    v2, Coinbase): the venue shares no ids across connections (DESIGN §2).

    - Each connection builds its own replica from its snapshot and updates. A replica is
      valid from a snapshot until its checksum fails, its connection loses a message
      (:meth:`invalidate`) or goes down; a failed replica asks for a resubscribe of that
      connection (:class:`ResubscribeWanted`), never a repair.
    - The published book follows one leader replica: the leader's updates are published as
      they are (with the levels that truncation to ``depth`` removed).
    - When the leader fails, the valid replica with the lowest lag becomes leader and the
      switch is published as one ordinary delta, from the published book to that replica;
      a replica whose checksum failed is never chosen.
    - With a checksum, lag is measured by which connection reaches each book state first;
      a follower faster than the leader by more than ``switch_margin_ns`` takes over.

    ``venue_id`` of published messages is the venue's event time in ms (there are no ids).
    """

    def __init__(
        self,
        key: str,
        *,
        checksum: Checksum | None = None,
        depth: int | None = None,
        switch_margin_ns: int = 5_000_000,
        lag_alpha: float = 0.05,
        max_tracked_states: int = 1024,
    ) -> None:
        if depth is not None and depth < 1:
            raise ValueError("depth must be >= 1")
        self.key = key
        self.checksum = checksum
        self.depth = depth
        self.switch_margin_ns = switch_margin_ns
        self.lag_alpha = lag_alpha
        self.max_tracked_states = max_tracked_states
        self.book = L2Book()
        self.state = SymbolState.SYNCING
        self.epoch = 0
        self.seq = 0
        self.applied_id = -1
        self.stats = SymbolStats()
        self.replicas: dict[int, Replica] = {}
        self.leader: int | None = None
        self._has_book = False
        #: checksum of a book state -> (first connection to reach it, when).
        self._first_seen: dict[int, tuple[int, int]] = {}

    @property
    def has_book(self) -> bool:
        return self._has_book

    @property
    def pending(self) -> int:
        return 0

    # --- inputs -------------------------------------------------------------------------

    def on_connection(self, conn_id: int, up: bool, now_ns: int) -> list[ArbiterEvent]:
        out: list[ArbiterEvent] = []
        if up:
            self.replicas[conn_id] = Replica()
            return out
        self.replicas.pop(conn_id, None)
        if conn_id == self.leader:
            self._elect("leader connection down", out)
        elif not self.replicas and self.state is not SymbolState.STALE:
            self._set_state(SymbolState.STALE, "every upstream connection down", out)
        return out

    def on_snapshot(self, snap: DepthSnapshot, now_ns: int) -> list[ArbiterEvent]:
        out: list[ArbiterEvent] = []
        replica = self.replicas.setdefault(snap.conn_id, Replica())
        try:
            replica.book.load(snap.bids, snap.asks)
        except BadLevel as exc:
            self.stats.bad_updates += 1
            self._fail(snap.conn_id, replica, f"bad snapshot: {exc}", out)
            return out
        self.stats.snapshots += 1
        if self.depth is not None:
            replica.book.truncate(self.depth)
        if not self._verify(replica, snap.checksum):
            self._fail(snap.conn_id, replica, "snapshot checksum mismatch", out)
            return out
        replica.valid = True
        if self.leader is None or self.leader == snap.conn_id:
            self._elect("snapshot", out, prefer=snap.conn_id, venue_ms=snap.recv_ns // 1_000_000)
        return out

    def on_diff(self, diff: DepthDiff, now_ns: int) -> list[ArbiterEvent]:
        out: list[ArbiterEvent] = []
        conn = self.stats.conn(diff.conn_id)
        conn.received += 1
        replica = self.replicas.get(diff.conn_id)
        if replica is None or not replica.valid:
            return out  # nothing to apply to until this connection's next snapshot
        try:
            replica.book.apply(diff.bids, diff.asks)
        except BadLevel as exc:
            self.stats.bad_updates += 1
            self._fail(diff.conn_id, replica, f"bad update: {exc}", out)
            return out
        removed_bids: list[Level] = []
        removed_asks: list[Level] = []
        if self.depth is not None:
            removed_bids, removed_asks = replica.book.truncate(self.depth)
        if not self._verify(replica, diff.checksum):
            self._fail(diff.conn_id, replica, "checksum mismatch", out)
            return out
        if diff.checksum is not None:
            self._measure_lag(diff.conn_id, replica, diff.checksum, now_ns)
        if diff.conn_id != self.leader:
            conn.duplicates += 1
            self.stats.duplicates += 1
            self._maybe_switch(out)
            return out
        conn.first_wins += 1
        bids = diff.bids + tuple(removed_bids) if removed_bids else diff.bids
        asks = diff.asks + tuple(removed_asks) if removed_asks else diff.asks
        self._publish(bids, asks, diff.event_ms, diff.recv_ns, out)
        return out

    def invalidate(self, conn_id: int, reason: str) -> list[ArbiterEvent]:
        """``conn_id`` lost messages (a connection-wide sequence jump): its replica is wrong."""
        out: list[ArbiterEvent] = []
        replica = self.replicas.get(conn_id)
        if replica is not None and replica.valid:
            self._fail(conn_id, replica, reason, out)
        return out

    def on_timer(self, now_ns: int) -> list[ArbiterEvent]:
        return []

    def deadline_ns(self) -> int | None:
        return None

    # --- internals ----------------------------------------------------------------------

    def _verify(self, replica: Replica, expected: int | None) -> bool:
        if expected is None or self.checksum is None:
            return True
        if self.checksum(replica.book) == expected:
            self.stats.checksum_ok += 1
            return True
        self.stats.checksum_failed += 1
        return False

    def _fail(self, conn_id: int, replica: Replica, reason: str, out: list[ArbiterEvent]) -> None:
        replica.valid = False
        replica.book.clear()
        self.stats.replica_failures += 1
        self.stats.resyncs += 1
        log.warning("%s: replica of conn %d failed (%s); resubscribing", self.key, conn_id, reason)
        out.append(ResubscribeWanted(self.key, conn_id, reason))
        if conn_id == self.leader:
            self._elect(f"leader failed: {reason}", out)

    def _elect(
        self, reason: str, out: list[ArbiterEvent], prefer: int | None = None, venue_ms: int = -1
    ) -> None:
        """Make the best valid replica the leader and publish the switch."""
        valid = [(conn_id, r) for conn_id, r in self.replicas.items() if r.valid]
        if not valid:
            self.leader = None
            if not self.replicas:
                self._set_state(SymbolState.STALE, "every upstream connection down", out)
            elif self._has_book:
                self._set_state(SymbolState.RESYNCING, "no valid replica", out)
            return
        chosen = (
            prefer if prefer in dict(valid) else min(valid, key=lambda cr: cr[1].lag_ewma_ns)[0]
        )
        previous, self.leader = self.leader, chosen
        replica = self.replicas[chosen]
        if not self._has_book:
            self.book.copy_from(replica.book)
            self._has_book = True
            self.epoch += 1
            self.seq = 0
            self.applied_id = venue_ms
            out.append(BookReset(self.key, self.epoch, self.seq, self.applied_id, 0))
        else:
            if previous is not None and previous != chosen:
                self.stats.failovers += 1
                log.info(
                    "%s: output moves from conn %d to %d (%s)", self.key, previous, chosen, reason
                )
            bids, asks = self.book.diff_to(replica.book)
            if bids or asks:
                self._publish(tuple(bids), tuple(asks), venue_ms, 0, out)
        self._set_state(SymbolState.LIVE, reason, out)

    def _publish(
        self,
        bids: tuple[Level, ...],
        asks: tuple[Level, ...],
        venue_ms: int,
        recv_ns: int,
        out: list[ArbiterEvent],
    ) -> None:
        self.book.apply(bids, asks)
        self.seq += 1
        self.stats.updates += 1
        if venue_ms > 0:
            self.applied_id = venue_ms
        if self.book.is_crossed():
            self.stats.crossed += 1
        out.append(BookDelta(self.key, self.epoch, self.seq, self.applied_id, bids, asks, recv_ns))

    def _measure_lag(self, conn_id: int, replica: Replica, checksum: int, now_ns: int) -> None:
        first = self._first_seen.get(checksum)
        if first is None:
            if len(self._first_seen) >= self.max_tracked_states:
                del self._first_seen[next(iter(self._first_seen))]
            self._first_seen[checksum] = (conn_id, now_ns)
            sample = 0.0
        elif first[0] == conn_id:
            return
        else:
            sample = float(now_ns - first[1])
        replica.lag_ewma_ns += self.lag_alpha * (sample - replica.lag_ewma_ns)

    def _maybe_switch(self, out: list[ArbiterEvent]) -> None:
        """Hand the output to a follower that is consistently faster than the leader."""
        if self.leader is None or self.checksum is None or self.leader not in self.replicas:
            return
        leader = self.replicas[self.leader]
        best_id, best = min(
            ((c, r) for c, r in self.replicas.items() if r.valid), key=lambda cr: cr[1].lag_ewma_ns
        )
        if best_id == self.leader or leader.lag_ewma_ns - best.lag_ewma_ns <= self.switch_margin_ns:
            return
        # The follower is ahead: the switch publishes the difference, like a failover.
        self._elect(f"conn {best_id} is faster", out, prefer=best_id)

    def _set_state(self, state: SymbolState, reason: str, out: list[ArbiterEvent]) -> None:
        if state is not self.state:
            self.state = state
            out.append(StatusChange(self.key, state, reason))


class ConnectionSequenceChecker:
    """Connection-wide message counters (Coinbase ``sequence_num``): a jump means that
    connection lost messages. Pure; one instance per venue."""

    def __init__(self) -> None:
        self._last: dict[int, int] = {}
        self.gaps = 0

    def reset(self, conn_id: int) -> None:
        """A new connection starts its own counter."""
        self._last.pop(conn_id, None)

    def on_seq(self, conn_id: int, seq: int) -> bool:
        """True when messages were lost on ``conn_id`` before this one."""
        last = self._last.get(conn_id)
        self._last[conn_id] = seq if last is None else max(last, seq)
        if last is not None and seq > last + 1:
            self.gaps += 1
            return True
        return False


def _first_id(diff: DepthDiff) -> int:
    return diff.first_id


class TradeDedup:
    """First copy of each trade wins across connections, by the venue's trade id.

    Remembers the last ``capacity`` ids; a copy arriving after that many newer trades is
    treated as new (a bounded memory, and far beyond any connection's lag).
    """

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._seen: set[int] = set()
        self._order: deque[int] = deque()
        self.duplicates = 0
        self.accepted = 0

    def on_trade(self, trade: Trade) -> list[GatewayEvent]:
        if trade.trade_id in self._seen:
            self.duplicates += 1
            return []
        self._seen.add(trade.trade_id)
        self._order.append(trade.trade_id)
        if len(self._order) > self.capacity:
            self._seen.discard(self._order.popleft())
        self.accepted += 1
        return [TradeOut(trade)]
