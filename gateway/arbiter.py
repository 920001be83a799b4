"""Sequence arbitration of redundant copies of one venue's book stream (DESIGN §2).

Pure: input events and a clock value in, gateway events out; no I/O, no event loop.

One :class:`SequencedBook` per symbol owns the arbitration state, the published
:class:`~gateway.book.L2Book` and the gateway's ``(epoch, seq)``:

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
from dataclasses import dataclass, field
from typing import Final, Protocol

from sortedcontainers import SortedKeyList

from gateway.book import BadLevel, L2Book
from gateway.model import (
    BookDelta,
    BookReset,
    DepthDiff,
    DepthSnapshot,
    GatewayEvent,
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
    connections: dict[int, ConnectionStats] = field(default_factory=dict)

    def conn(self, conn_id: int) -> ConnectionStats:
        stats = self.connections.get(conn_id)
        if stats is None:
            stats = self.connections[conn_id] = ConnectionStats()
        return stats


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
    ) -> None:
        if reorder_window_ns < 0 or max_pending < 1:
            raise ValueError("reorder_window_ns must be >= 0 and max_pending >= 1")
        self.key = key
        self.rule = rule
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
        #: Highest last_id seen per connection that is up.
        self._conn_high: dict[int, int] = {}
        #: The venue id of the snapshot the current epoch was built from.
        self._snapshot_id = -1

    # --- inputs -------------------------------------------------------------------------

    def on_connection(self, conn_id: int, up: bool, now_ns: int) -> list[GatewayEvent]:
        """A connection carrying this symbol came up or went down."""
        out: list[GatewayEvent] = []
        if up:
            self._conn_high.setdefault(conn_id, -1)
            return out
        self._conn_high.pop(conn_id, None)
        if not self._conn_high and self.state is not SymbolState.STALE:
            self.state = SymbolState.STALE
            out.append(StatusChange(self.key, SymbolState.STALE, "every upstream connection down"))
        self._check_hole(now_ns, out)
        return out

    def on_diff(self, diff: DepthDiff, now_ns: int) -> list[GatewayEvent]:
        out: list[GatewayEvent] = []
        conn = self.stats.conn(diff.conn_id)
        conn.received += 1
        high = self._conn_high.get(diff.conn_id, -1)
        if diff.last_id > high:
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

    def on_snapshot(self, snap: DepthSnapshot, now_ns: int) -> list[GatewayEvent]:
        """A venue snapshot. Used while the book is not built (initial sync or resync);
        otherwise counted and ignored."""
        out: list[GatewayEvent] = []
        if self._has_book:
            self.stats.snapshots_unused += 1
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
        self._has_book = True
        self._hole_since_ns = None
        self._drain_after_snapshot()
        if self._pending and self._gap_is_certain():
            # The snapshot is older than every connection's stream: a newer one is needed.
            self.stats.snapshots_unused += 1
            self._has_book = False
            self.book.clear()
            self._want_snapshot("snapshot older than the stream", out)
            return out
        self._snapshot_wanted = False
        self.epoch += 1
        self.seq = 0
        if self.book.is_crossed():
            self.stats.crossed += 1
        out.append(BookReset(self.key, self.epoch, self.seq, self.applied_id, snap.recv_ns))
        self._publish_state("snapshot applied", out)
        if self._pending:
            self._hole_since_ns = now_ns
        return out

    def on_timer(self, now_ns: int) -> list[GatewayEvent]:
        """Call at or after :meth:`deadline_ns`; declares a gap when the window passed."""
        out: list[GatewayEvent] = []
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

    def _apply(self, diff: DepthDiff, out: list[GatewayEvent]) -> bool:
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
        if self.state is SymbolState.STALE and self._conn_high:
            self._publish_state("upstream back", out)
        return True

    def _buffer(self, diff: DepthDiff, out: list[GatewayEvent]) -> None:
        if len(self._pending) >= self.max_pending:
            if self._has_book:
                # The hole outlived a full buffer: no connection is going to fill it.
                self._declare_gap("reorder buffer full", out)
            if len(self._pending) >= self.max_pending:
                self._pending.pop(0)
                self.stats.pending_dropped += 1
        self._pending.add(diff)

    def _drain(self, out: list[GatewayEvent]) -> None:
        """Apply buffered updates that now link; drop the ones now stale."""
        pending = self._pending
        while pending:
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
        discard: list[GatewayEvent] = []
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

    def _check_hole(self, now_ns: int, out: list[GatewayEvent]) -> None:
        if not self._has_book or not self._pending:
            self._hole_since_ns = None
            return
        if self._hole_since_ns is None:
            self._hole_since_ns = now_ns
        if self._gap_is_certain():
            self._declare_gap("ids missing on every connection", out)
        elif now_ns - self._hole_since_ns >= self.reorder_window_ns:
            self._declare_gap("reorder window passed with ids missing", out)

    def _declare_gap(self, reason: str, out: list[GatewayEvent]) -> None:
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

    def _want_snapshot(self, reason: str, out: list[GatewayEvent]) -> None:
        self._snapshot_wanted = True
        out.append(SnapshotWanted(self.key, reason))

    def _publish_state(self, reason: str, out: list[GatewayEvent]) -> None:
        """After a book change: live when a connection is up, else stale."""
        state = SymbolState.LIVE if self._conn_high else SymbolState.STALE
        if state is not self.state:
            self.state = state
            if state is SymbolState.STALE:
                reason = "every upstream connection down"
            out.append(StatusChange(self.key, state, reason))


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
