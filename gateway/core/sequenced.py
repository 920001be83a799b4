"""Sequence arbitration of redundant copies of one venue's book stream.

Pure: input events and a clock value in, arbiter events out; no I/O, no event loop.

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

Two explicit state machines (tables in the style of h11's ``_state.py``, see
:mod:`gateway.core.transitions`) say what each outcome does:

- :data:`SYNC_TRANSITIONS`: whether the book is built and whether updates wait for missing
  ids (:class:`Sync`);
- :data:`STATUS_TRANSITIONS`: what subscribers are told (:class:`~gateway.core.model.SymbolState`).

Link rules are venue rules (:class:`~gateway.core.arbiter.LinkRule`); the arbiter knows
none of them.
"""

from __future__ import annotations

import enum
import logging
from typing import Final

from sortedcontainers import SortedKeyList

from gateway.core.arbiter import (
    DEFAULT_MAX_PENDING,
    DEFAULT_REORDER_WINDOW_NS,
    Checksum,
    Link,
    LinkRule,
    SymbolStats,
)
from gateway.core.book import BadLevel, L2Book
from gateway.core.model import (
    ArbiterEvent,
    BookDelta,
    BookReset,
    DepthDiff,
    DepthSnapshot,
    SnapshotWanted,
    StatusChange,
    SymbolState,
)
from gateway.core.transitions import Table, transition

log = logging.getLogger(__name__)


# --- the sync machine ---------------------------------------------------------------------


class Sync(enum.Enum):
    """Whether the book is built, and whether buffered updates wait for missing ids."""

    #: No book, and no snapshot asked for yet.
    UNSYNCED = "unsynced"
    #: No book; a snapshot was asked for (initial sync, or a resync after a gap).
    AWAITING_SNAPSHOT = "awaiting snapshot"
    #: The book is consistent with the venue; nothing waits.
    SYNCED = "synced"
    #: The book is consistent; buffered updates wait for missing ids until the reorder
    #: window's deadline.
    HOLE = "hole"


class SyncEvent(enum.Enum):
    #: An update came while there is no book (it is buffered, or dropped as old).
    UPDATE_WITHOUT_BOOK = "update without book"
    #: A snapshot with a bad level: not loaded.
    SNAPSHOT_REFUSED = "snapshot refused"
    #: A loaded snapshot cannot be used: older than the stream, or its checksum fails.
    SNAPSHOT_UNUSABLE = "snapshot unusable"
    #: A buffered update failed its checksum on the freshly loaded snapshot.
    SNAPSHOT_BROKEN = "snapshot broken"
    #: A snapshot built the book and nothing waits.
    BOOK_BUILT = "book built"
    #: A snapshot built the book and buffered updates still wait for missing ids.
    BOOK_BUILT_WITH_HOLE = "book built with hole"
    #: An update from the future was buffered.
    HOLE_OPENED = "hole opened"
    #: Nothing waits any more (the hole filled, or a venue reset dropped the buffer).
    HOLE_CLOSED = "hole closed"
    #: Missing ids are lost: every connection passed them, the window passed, the buffer
    #: filled up, or a checksum failed.
    GAP = "gap"


class SyncAction(enum.Enum):
    #: Publish a SnapshotWanted.
    ASK_SNAPSHOT = "ask snapshot"
    #: Start a new epoch: publish a BookReset, then tell subscribers the book's status.
    PUBLISH_RESET = "publish reset"
    START_HOLE_CLOCK = "start hole clock"
    STOP_HOLE_CLOCK = "stop hole clock"
    #: Count the gap and the resync.
    COUNT_GAP = "count gap"
    #: Tell subscribers the book is resyncing (a :data:`StatusEvent.GAP`).
    ANNOUNCE_RESYNC = "announce resync"


_S, _E, _A = Sync, SyncEvent, SyncAction

#: The sync machine. Unlisted pairs cannot happen (an update without a book always leaves
#: UNSYNCED, so UNSYNCED never holds buffered updates).
SYNC_TRANSITIONS: Final[Table[Sync, SyncEvent, SyncAction]] = {
    (_S.UNSYNCED, _E.UPDATE_WITHOUT_BOOK): (_S.AWAITING_SNAPSHOT, (_A.ASK_SNAPSHOT,)),
    (_S.AWAITING_SNAPSHOT, _E.UPDATE_WITHOUT_BOOK): (_S.AWAITING_SNAPSHOT, ()),
    (_S.UNSYNCED, _E.SNAPSHOT_REFUSED): (_S.UNSYNCED, ()),
    (_S.AWAITING_SNAPSHOT, _E.SNAPSHOT_REFUSED): (_S.AWAITING_SNAPSHOT, ()),
    (_S.UNSYNCED, _E.SNAPSHOT_UNUSABLE): (_S.AWAITING_SNAPSHOT, (_A.ASK_SNAPSHOT,)),
    (_S.AWAITING_SNAPSHOT, _E.SNAPSHOT_UNUSABLE): (_S.AWAITING_SNAPSHOT, (_A.ASK_SNAPSHOT,)),
    (_S.AWAITING_SNAPSHOT, _E.SNAPSHOT_BROKEN): (
        _S.AWAITING_SNAPSHOT,
        (_A.COUNT_GAP, _A.ASK_SNAPSHOT),
    ),
    (_S.UNSYNCED, _E.BOOK_BUILT): (_S.SYNCED, (_A.PUBLISH_RESET,)),
    (_S.AWAITING_SNAPSHOT, _E.BOOK_BUILT): (_S.SYNCED, (_A.PUBLISH_RESET,)),
    (_S.AWAITING_SNAPSHOT, _E.BOOK_BUILT_WITH_HOLE): (
        _S.HOLE,
        (_A.PUBLISH_RESET, _A.START_HOLE_CLOCK),
    ),
    (_S.SYNCED, _E.HOLE_OPENED): (_S.HOLE, (_A.START_HOLE_CLOCK,)),
    (_S.HOLE, _E.HOLE_CLOSED): (_S.SYNCED, (_A.STOP_HOLE_CLOCK,)),
    (_S.SYNCED, _E.GAP): (
        _S.AWAITING_SNAPSHOT,
        (_A.COUNT_GAP, _A.ANNOUNCE_RESYNC, _A.ASK_SNAPSHOT),
    ),
    (_S.HOLE, _E.GAP): (
        _S.AWAITING_SNAPSHOT,
        (_A.STOP_HOLE_CLOCK, _A.COUNT_GAP, _A.ANNOUNCE_RESYNC, _A.ASK_SNAPSHOT),
    ),
}

#: States in which the book is built.
_WITH_BOOK: Final = frozenset({Sync.SYNCED, Sync.HOLE})


# --- the status machine -------------------------------------------------------------------


class StatusEvent(enum.Enum):
    #: The last connection carrying the symbol went down.
    ALL_DOWN = "all down"
    #: A gap was declared (:data:`SyncAction.ANNOUNCE_RESYNC`).
    GAP = "gap"
    #: A new epoch was published while a connection is up.
    RESET_WITH_CONNECTION = "reset with connection"
    #: A new epoch was published while every connection is down.
    RESET_WITHOUT_CONNECTION = "reset without connection"
    #: An update was applied while stale, with a connection up again.
    UPSTREAM_BACK = "upstream back"


class StatusAction(enum.Enum):
    #: Publish a StatusChange with the new state.
    ANNOUNCE = "announce"


_St, _SE = SymbolState, StatusEvent
_ANNOUNCE: Final = (StatusAction.ANNOUNCE,)

#: The status machine. Unlisted pairs cannot happen: a book is built only in LIVE and
#: STALE, and only a built book has gaps and applies updates; LIVE has a built book.
STATUS_TRANSITIONS: Final[Table[SymbolState, StatusEvent, StatusAction]] = {
    (_St.SYNCING, _SE.ALL_DOWN): (_St.STALE, _ANNOUNCE),
    (_St.LIVE, _SE.ALL_DOWN): (_St.STALE, _ANNOUNCE),
    (_St.RESYNCING, _SE.ALL_DOWN): (_St.STALE, _ANNOUNCE),
    (_St.STALE, _SE.ALL_DOWN): (_St.STALE, ()),
    (_St.LIVE, _SE.GAP): (_St.RESYNCING, _ANNOUNCE),
    (_St.STALE, _SE.GAP): (_St.RESYNCING, _ANNOUNCE),
    (_St.SYNCING, _SE.RESET_WITH_CONNECTION): (_St.LIVE, _ANNOUNCE),
    (_St.RESYNCING, _SE.RESET_WITH_CONNECTION): (_St.LIVE, _ANNOUNCE),
    (_St.STALE, _SE.RESET_WITH_CONNECTION): (_St.LIVE, _ANNOUNCE),
    (_St.SYNCING, _SE.RESET_WITHOUT_CONNECTION): (_St.STALE, _ANNOUNCE),
    (_St.RESYNCING, _SE.RESET_WITHOUT_CONNECTION): (_St.STALE, _ANNOUNCE),
    (_St.STALE, _SE.RESET_WITHOUT_CONNECTION): (_St.STALE, ()),
    (_St.STALE, _SE.UPSTREAM_BACK): (_St.LIVE, _ANNOUNCE),
}

_ALL_DOWN: Final = "every upstream connection down"


class _Applied(enum.Enum):
    APPLIED = "applied"
    #: A bad level: the update was not applied, the book is unchanged.
    REJECTED = "rejected"
    #: Applied, and then the venue's checksum failed: the book no longer matches.
    BROKEN = "broken"


def _first_id(diff: DepthDiff) -> int:
    return diff.first_id


class SequencedBook:
    """Arbiter, book and published sequence of one symbol of a sequenced venue.

    Every ``on_*`` method returns the arbiter events to publish or act on, in order.
    ``now_ns`` is a monotonic clock reading supplied by the caller.

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
        #: The sync machine's state.
        self.sync = Sync.UNSYNCED
        #: The status machine's state: what subscribers were told.
        self.state = SymbolState.SYNCING
        self.epoch = 0
        self.seq = 0
        #: The venue's last update id the book reflects; -1 before the first snapshot.
        self.applied_id = -1
        self.stats = SymbolStats()
        self._pending: SortedKeyList = SortedKeyList(key=_first_id)
        #: When the current hole opened (meaningful in Sync.HOLE only).
        self._hole_since_ns = 0
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
        if not self._conn_high:
            self._status(StatusEvent.ALL_DOWN, _ALL_DOWN, out)
        self._check_hole(now_ns, out)
        return out

    def on_diff(self, diff: DepthDiff, now_ns: int) -> list[ArbiterEvent]:
        out: list[ArbiterEvent] = []
        conn = self.stats.conn(diff.conn_id)
        conn.received += 1
        self._conn_high[diff.conn_id] = diff.last_id

        if self.sync not in _WITH_BOOK:
            if diff.last_id <= self.applied_id:
                self._drop(diff)
            else:
                self._buffer(diff, out)
            self._sync(SyncEvent.UPDATE_WITHOUT_BOOK, out, reason="initial sync")
            return out

        link = self.rule.classify(diff, self.applied_id)
        if link is Link.STALE:
            self._drop(diff)
        elif link is Link.LINKS:
            if self._apply(diff, out) is _Applied.APPLIED:
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
        if self.sync in _WITH_BOOK:
            self._snapshot_while_live(snap, out)
            return out
        try:
            self.book.load(snap.bids, snap.asks)
        except BadLevel as exc:
            self.stats.bad_updates += 1
            self.stats.snapshots_unused += 1
            log.warning("%s: snapshot rejected: %s", self.key, exc)
            self._sync(SyncEvent.SNAPSHOT_REFUSED, out)
            return out
        self.stats.snapshots += 1
        self.applied_id = self._snapshot_id = snap.last_id
        self._loaded(snap)
        if not self._drain_after_snapshot():
            reason = "checksum mismatch after the snapshot"
            self._sync(SyncEvent.SNAPSHOT_BROKEN, out, reason=reason)
            return out
        if self._pending and self._gap_is_certain():
            # The snapshot is older than every connection's stream: a newer one is needed.
            self.stats.snapshots_unused += 1
            self.book.clear()
            self._sync(SyncEvent.SNAPSHOT_UNUSABLE, out, reason="snapshot older than the stream")
            return out
        if snap.checksum is not None and not self._checksum_matches(snap.checksum):
            self.book.clear()
            self._sync(SyncEvent.SNAPSHOT_UNUSABLE, out, reason="snapshot checksum mismatch")
            return out
        if snap.reset:
            self._last_reset = snap
        event = SyncEvent.BOOK_BUILT_WITH_HOLE if self._pending else SyncEvent.BOOK_BUILT
        self._sync(event, out, reason="snapshot applied", now_ns=now_ns, recv_ns=snap.recv_ns)
        return out

    def on_timer(self, now_ns: int) -> list[ArbiterEvent]:
        """Call at or after :meth:`deadline_ns`; declares a gap when the window passed."""
        out: list[ArbiterEvent] = []
        self._check_hole(now_ns, out)
        return out

    def deadline_ns(self) -> int | None:
        """When :meth:`on_timer` must be called next, or None."""
        if self.sync is not Sync.HOLE:
            return None
        return self._hole_since_ns + self.reorder_window_ns

    @property
    def has_book(self) -> bool:
        """True while the published book is consistent with the venue."""
        return self.sync in _WITH_BOOK

    @property
    def snapshot_wanted(self) -> bool:
        return self.sync is Sync.AWAITING_SNAPSHOT

    @property
    def pending(self) -> int:
        return len(self._pending)

    # --- the machines -------------------------------------------------------------------

    def _sync(
        self,
        event: SyncEvent,
        out: list[ArbiterEvent],
        *,
        reason: str = "",
        now_ns: int = 0,
        recv_ns: int = 0,
    ) -> None:
        """Moves the sync machine on ``event`` and carries out its actions."""
        self.sync, actions = transition("sync", SYNC_TRANSITIONS, self.sync, event)
        for action in actions:
            if action is SyncAction.ASK_SNAPSHOT:
                out.append(SnapshotWanted(self.key, reason))
            elif action is SyncAction.PUBLISH_RESET:
                self.epoch += 1
                self.seq = 0
                if self.book.is_crossed():
                    self.stats.crossed += 1
                out.append(BookReset(self.key, self.epoch, self.seq, self.applied_id, recv_ns))
                if self._conn_high:
                    self._status(StatusEvent.RESET_WITH_CONNECTION, reason, out)
                else:
                    self._status(StatusEvent.RESET_WITHOUT_CONNECTION, _ALL_DOWN, out)
            elif action is SyncAction.START_HOLE_CLOCK:
                self._hole_since_ns = now_ns
            elif action is SyncAction.STOP_HOLE_CLOCK:
                self._hole_since_ns = 0
            elif action is SyncAction.COUNT_GAP:
                self.stats.gaps += 1
                self.stats.resyncs += 1
                log.warning(
                    "%s: gap after id %d (%s); resyncing from a snapshot",
                    self.key,
                    self.applied_id,
                    reason,
                )
            elif action is SyncAction.ANNOUNCE_RESYNC:
                self._status(StatusEvent.GAP, reason, out)

    def _status(self, event: StatusEvent, reason: str, out: list[ArbiterEvent]) -> None:
        """Moves the status machine on ``event`` and carries out its actions."""
        self.state, actions = transition("status", STATUS_TRANSITIONS, self.state, event)
        if actions:  # the one action: announce
            out.append(StatusChange(self.key, self.state, reason))

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
            if self.sync is Sync.HOLE:
                self._sync(SyncEvent.HOLE_CLOSED, out)
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
            self._sync(SyncEvent.GAP, out, reason="snapshot checksum mismatch")
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

    def _apply(
        self, diff: DepthDiff, out: list[ArbiterEvent], *, building: bool = False
    ) -> _Applied:
        """Applies ``diff`` and publishes it. While ``building`` (draining the buffer onto a
        fresh snapshot) a failed checksum is returned, not declared as a gap."""
        try:
            self.book.apply(diff.bids, diff.asks)
        except BadLevel as exc:
            # Adapters validate levels, so this is a copy the venue mangled; another
            # connection's copy, or the resync that the hole leads to, repairs it.
            self.stats.bad_updates += 1
            log.warning(
                "%s: update %d..%d rejected: %s", self.key, diff.first_id, diff.last_id, exc
            )
            return _Applied.REJECTED
        if diff.last_id < self.applied_id:
            self._sequence_restarted(diff.conn_id)
        self.applied_id = diff.last_id
        self.seq += 1
        self.stats.updates += 1
        if self.book.is_crossed():
            self.stats.crossed += 1
        out.append(
            BookDelta(
                self.key,
                self.epoch,
                self.seq,
                diff.last_id,
                diff.bids,
                diff.asks,
                diff.recv_ns,
                diff.event_ms if diff.event_ms > 0 else None,
            )
        )
        if diff.checksum is not None and not self._checksum_matches(diff.checksum):
            if not building:
                # The book no longer matches the venue's: rebuild it from a snapshot.
                self._sync(SyncEvent.GAP, out, reason="checksum mismatch")
            return _Applied.BROKEN
        if not building and self.state is SymbolState.STALE and self._conn_high:
            self._status(StatusEvent.UPSTREAM_BACK, "upstream back", out)
        return _Applied.APPLIED

    def _buffer(self, diff: DepthDiff, out: list[ArbiterEvent]) -> None:
        if len(self._pending) >= self.max_pending:
            if self.sync in _WITH_BOOK:
                # The hole outlived a full buffer: no connection is going to fill it.
                self._sync(SyncEvent.GAP, out, reason="reorder buffer full")
            if len(self._pending) >= self.max_pending:
                self._pending.pop(0)
                self.stats.pending_dropped += 1
        self._pending.add(diff)

    def _drain(self, out: list[ArbiterEvent], *, building: bool = False) -> bool:
        """Apply buffered updates that now link; drop the ones now stale. Returns False
        when an update broke the book (its checksum failed)."""
        pending = self._pending
        while pending and (building or self.sync in _WITH_BOOK):
            diff: DepthDiff = pending[0]
            link = self.rule.classify(diff, self.applied_id)
            if link is Link.FUTURE:
                break
            pending.pop(0)
            if link is Link.STALE:
                self._drop(diff)
                continue
            applied = self._apply(diff, out, building=building)
            if applied is _Applied.APPLIED:
                self.stats.conn(diff.conn_id).first_wins += 1
            elif applied is _Applied.BROKEN:
                return False
        if not pending and self.sync is Sync.HOLE:
            self._sync(SyncEvent.HOLE_CLOSED, out)
        return True

    def _drain_after_snapshot(self) -> bool:
        """Apply buffered updates to the freshly loaded book without publishing them: the
        BookReset that follows publishes the book as it stands after them. False when one
        of them broke the book."""
        discard: list[ArbiterEvent] = []
        seq = self.seq
        intact = self._drain(discard, building=True)
        self.seq = seq
        return intact

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
        if self.sync not in _WITH_BOOK:
            return
        if not self._pending:
            if self.sync is Sync.HOLE:
                self._sync(SyncEvent.HOLE_CLOSED, out)
            return
        if self.sync is Sync.SYNCED:
            self._sync(SyncEvent.HOLE_OPENED, out, now_ns=now_ns)
        if self._gap_is_certain():
            self._sync(SyncEvent.GAP, out, reason="ids missing on every connection")
        elif now_ns - self._hole_since_ns >= self.reorder_window_ns:
            self._sync(SyncEvent.GAP, out, reason="reorder window passed with ids missing")
