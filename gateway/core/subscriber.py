"""One symbol's book as a gateway subscriber keeps it: a state machine. Pure.

Shared by :class:`gateway.io.client.GatewayClient` and ``mdgateway tap``
(:mod:`gateway.tools.tap`). They decode the gateway's messages and hand each snapshot,
delta and status of a symbol to its :class:`SubscribedBook`; it keeps the
:class:`~gateway.core.book.L2Book`, checks that every delta follows the previous message
(same ``epoch``, ``seq`` + 1) and answers with :class:`SubscriberAction` values: the
book is ready or updated, a delta was skipped, a gap or a bad level was found, a
``resync`` is to be asked for.

States (:class:`BookSyncState`):

* ``AWAITING_SNAPSHOT``: subscribed (or reconnected); the gateway sends a snapshot
  unasked. Deltas before it are skipped (``EARLY_DELTA``).
* ``LIVE``: the book is consistent at ``(epoch, seq)``.
* ``RESYNCING``: a delta did not follow or had a bad level; a resync was asked for and
  deltas are skipped (``IGNORED_DELTA``) until its snapshot.
* ``VOID``: a snapshot had a bad level; nothing is asked until a delta shows the stream
  goes on, which asks for a resync.
* ``DETACHED``: the connection was lost while the book was live and the client asks the
  gateway to recover it (``DETACHED`` event): the book is kept at its ``(epoch, seq)``
  until the gateway answers ``RECOVERED`` (the missed deltas follow: live again) or
  ``NOT_RECOVERED`` (discarded; a snapshot follows).

Each input is classified into a :class:`SubscriberEvent` (applying the levels to the book
is part of that: whether they are valid is known by applying them); the transition is
then looked up in :data:`TRANSITIONS`, ``(state, event) -> (new state, actions)``, and a
pair it does not hold raises :class:`SubscriberError`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final

from gateway.core.book import BadLevel
from gateway.core.book import L2Book
from gateway.core.model import Level


class BookSyncState(enum.Enum):
    AWAITING_SNAPSHOT = enum.auto()
    LIVE = enum.auto()
    RESYNCING = enum.auto()
    VOID = enum.auto()
    DETACHED = enum.auto()


class SubscriberEvent(enum.Enum):
    """``BAD_SNAPSHOT``: a snapshot with an invalid level (or, in strict mode, a side not
    best first). ``DELTA_FOLLOWS``: a delta at (epoch, seq + 1) of the live book, applied;
    ``DELTA_BAD_LEVEL``: the same with an invalid level; ``DELTA_DOES_NOT_FOLLOW``: any
    other delta (another epoch or seq, or no book to follow). ``DISCONNECTED``: the
    connection to the gateway was lost; a new one starts with a snapshot. ``DETACHED``: the
    same, but a live book is kept for recovery. ``RECOVERED`` / ``NOT_RECOVERED``: the
    gateway's answer to the recovery (``subscribed.recovered``)."""

    SNAPSHOT = enum.auto()
    BAD_SNAPSHOT = enum.auto()
    DELTA_FOLLOWS = enum.auto()
    DELTA_BAD_LEVEL = enum.auto()
    DELTA_DOES_NOT_FOLLOW = enum.auto()
    DISCONNECTED = enum.auto()
    DETACHED = enum.auto()
    RECOVERED = enum.auto()
    NOT_RECOVERED = enum.auto()


class SubscriberAction(enum.Enum):
    #: The book was loaded from a snapshot and is consistent.
    BOOK_READY = enum.auto()
    #: The delta was applied; the book is consistent at its seq.
    BOOK_UPDATED = enum.auto()
    #: A delta before the first snapshot: skipped (a snapshot is coming).
    EARLY_DELTA = enum.auto()
    #: A delta while the asked-for snapshot is awaited: skipped.
    IGNORED_DELTA = enum.auto()
    #: The delta did not follow the book (:attr:`SubscribedBook.problem` says how).
    GAP = enum.auto()
    #: A snapshot or delta had a bad level (:attr:`SubscribedBook.problem` says which).
    BAD_LEVEL = enum.auto()
    #: The book was cleared: no consistent book is held.
    DISCARD = enum.auto()
    #: Send the gateway a ``resync`` request for the symbol.
    ASK_RESYNC = enum.auto()
    #: The kept book is consistent again; the deltas it missed follow.
    BOOK_RECOVERED = enum.auto()


Transition = tuple[BookSyncState, tuple[SubscriberAction, ...]]

_AWAITING = BookSyncState.AWAITING_SNAPSHOT
_LIVE = BookSyncState.LIVE
_RESYNCING = BookSyncState.RESYNCING
_VOID = BookSyncState.VOID
_DETACHED = BookSyncState.DETACHED
_E = SubscriberEvent
_A = SubscriberAction

#: In every state: a snapshot loads the book, a bad one voids it, and a lost connection
#: leaves nothing but the wait for the next connection's snapshot.
_IN_EVERY_STATE: Final[dict[SubscriberEvent, Transition]] = {
    _E.SNAPSHOT: (_LIVE, (_A.BOOK_READY,)),
    _E.BAD_SNAPSHOT: (_VOID, (_A.BAD_LEVEL, _A.DISCARD)),
    _E.DISCONNECTED: (_AWAITING, (_A.DISCARD,)),
}

#: ``(state, event) -> (new state, actions in order)``.
TRANSITIONS: Final[dict[tuple[BookSyncState, SubscriberEvent], Transition]] = {
    **{(state, event): t for state in BookSyncState for event, t in _IN_EVERY_STATE.items()},
    # Deltas: only a live book can be followed.
    (_AWAITING, _E.DELTA_DOES_NOT_FOLLOW): (_AWAITING, (_A.EARLY_DELTA,)),
    (_LIVE, _E.DELTA_FOLLOWS): (_LIVE, (_A.BOOK_UPDATED,)),
    (_LIVE, _E.DELTA_BAD_LEVEL): (_RESYNCING, (_A.BAD_LEVEL, _A.DISCARD, _A.ASK_RESYNC)),
    (_LIVE, _E.DELTA_DOES_NOT_FOLLOW): (_RESYNCING, (_A.GAP, _A.DISCARD, _A.ASK_RESYNC)),
    (_RESYNCING, _E.DELTA_DOES_NOT_FOLLOW): (_RESYNCING, (_A.IGNORED_DELTA,)),
    (_VOID, _E.DELTA_DOES_NOT_FOLLOW): (_RESYNCING, (_A.GAP, _A.ASK_RESYNC)),
    # Recovery: only a live book is kept; the gateway's answer decides.
    (_AWAITING, _E.DETACHED): (_AWAITING, (_A.DISCARD,)),
    (_LIVE, _E.DETACHED): (_DETACHED, ()),
    (_RESYNCING, _E.DETACHED): (_AWAITING, (_A.DISCARD,)),
    (_VOID, _E.DETACHED): (_AWAITING, (_A.DISCARD,)),
    (_DETACHED, _E.DETACHED): (_DETACHED, ()),
    (_DETACHED, _E.RECOVERED): (_LIVE, (_A.BOOK_RECOVERED,)),
    (_DETACHED, _E.NOT_RECOVERED): (_AWAITING, (_A.DISCARD,)),
    (_DETACHED, _E.DELTA_DOES_NOT_FOLLOW): (_DETACHED, (_A.EARLY_DELTA,)),
}


class SubscriberError(Exception):
    """An event the state does not accept: a bug in the caller."""


class SubscribedBook:
    """One symbol's book and its position in the gateway's stream (the gateway's status
    of the symbol is the session's, :mod:`gateway.wire.client_session`).

    ``epoch``, ``seq`` and ``venue_id`` are those of the last snapshot or delta applied
    to the book. With ``strict_snapshot_order`` a snapshot side not strictly best first is
    a bad level.
    """

    __slots__ = (
        "book",
        "epoch",
        "problem",
        "seq",
        "state",
        "strict_snapshot_order",
        "venue_id",
    )

    def __init__(self, *, strict_snapshot_order: bool = False) -> None:
        self.state = BookSyncState.AWAITING_SNAPSHOT
        self.book = L2Book()
        self.epoch = 0
        self.seq = 0
        self.venue_id = -1
        #: What the last GAP or BAD_LEVEL was, for logs and status reasons.
        self.problem = ""
        self.strict_snapshot_order = strict_snapshot_order

    @property
    def synced(self) -> bool:
        """True while the book is consistent (state LIVE)."""
        return self.state is _LIVE

    # --- inputs -------------------------------------------------------------------------------

    def on_snapshot(
        self, epoch: int, seq: int, venue_id: int, bids: Sequence[Level], asks: Sequence[Level]
    ) -> tuple[SubscriberAction, ...]:
        try:
            if self.strict_snapshot_order:
                check_order(bids, bids=True)
                check_order(asks, bids=False)
            self.book.load(bids, asks)
        except BadLevel as exc:
            self.problem = f"bad level in snapshot: {exc}"
            return self.handle(_E.BAD_SNAPSHOT)
        actions = self.handle(_E.SNAPSHOT)
        self.epoch, self.seq, self.venue_id = epoch, seq, venue_id
        return actions

    def on_delta(
        self, epoch: int, seq: int, venue_id: int, bids: Sequence[Level], asks: Sequence[Level]
    ) -> tuple[SubscriberAction, ...]:
        if self.state is not _LIVE:
            actions = self.handle(_E.DELTA_DOES_NOT_FOLLOW)
            if _A.ASK_RESYNC in actions:  # after a void snapshot: the stream goes on
                self.problem = "delta without a consistent book"
                return actions
            return actions
        if epoch != self.epoch or seq != self.seq + 1:
            self.problem = (
                f"sequence gap: expected epoch {self.epoch} seq {self.seq + 1}, "
                f"got epoch {epoch} seq {seq}"
            )
            return self.handle(_E.DELTA_DOES_NOT_FOLLOW)
        try:
            self.book.apply(bids, asks)
        except BadLevel as exc:
            self.problem = f"bad level in delta: {exc}"
            return self.handle(_E.DELTA_BAD_LEVEL)
        self.seq, self.venue_id = seq, venue_id
        return self.handle(_E.DELTA_FOLLOWS)

    def on_disconnected(self, *, keep: bool = False) -> tuple[SubscriberAction, ...]:
        """The connection was lost; with ``keep`` a live book is kept for recovery."""
        return self.handle(_E.DETACHED if keep else _E.DISCONNECTED)

    def on_recovery(self, recovered: bool) -> tuple[SubscriberAction, ...]:
        """The gateway's answer to the recovery of a ``DETACHED`` book."""
        return self.handle(_E.RECOVERED if recovered else _E.NOT_RECOVERED)

    def handle(self, event: SubscriberEvent) -> tuple[SubscriberAction, ...]:
        """Apply one classified event: the transition of :data:`TRANSITIONS`, the book
        cleared on DISCARD, its actions returned. Raises :class:`SubscriberError` for a
        pair the table does not hold."""
        transition = TRANSITIONS.get((self.state, event))
        if transition is None:
            raise SubscriberError(f"{event.name} is not accepted in state {self.state.name}")
        self.state, actions = transition
        if _A.DISCARD in actions:
            self.book.clear()
        return actions


def check_order(levels: Sequence[Level], *, bids: bool) -> None:
    """Raises BadLevel unless ``levels`` are strictly best first (prices parse)."""
    previous: float | None = None
    for level in levels:
        try:
            price = float(level[0])
        except (ValueError, TypeError, IndexError) as exc:
            raise BadLevel(f"unparseable level {level!r}") from exc
        if previous is not None and (price >= previous if bids else price <= previous):
            raise BadLevel(f"level {level!r} out of order")
        previous = price
