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
  so a snapshot older than the stream is just another certain gap;
- on a venue whose books never cross (``may_cross`` False), an update that leaves the book
  crossed is not published: the book is rebuilt from a snapshot as after a gap, once; a
  snapshot that builds a crossed book is not used either, and the next one is asked only
  after a wait that doubles with each crossed snapshot in a row (:class:`Sync` RETRY_WAIT).

Ids are checked for plausibility before they are trusted (``max_id_jump``, by default the
link rule's :attr:`~gateway.core.arbiter.LinkRule.max_id_jump`):

- an update that links but jumps the applied id by more than ``max_id_jump`` is *held*,
  not applied. Identical copies (same ids, same levels) from more than half of the
  connections that are up and trusted, two at least, confirm it and it is applied (a
  replacement opened to the same endpoint may carry the same faulty copy: one other copy
  is not enough). It is contradicted, discarded and blamed on its connection (counted,
  logged at most once a minute, a :class:`~gateway.core.model.ReconnectWanted` given for
  it, and the connection distrusted until it goes down: it confirms and vouches for
  nothing) when a later update of its own connection has lower ids (that connection's
  stream went back on it), or when another copy ends inside its ids: the book applied its
  first ids from other copies that end before its last id, or another trusted
  connection's latest update ends there (the venue's updates cover disjoint ids). Held
  when the reorder window passes with no other connection to contradict it, or with one
  connection up (nothing can confirm), it is a gap: the book resyncs. An update that
  links plausibly costs one comparison more;
- an update buffered from the future beyond ``max_id_jump`` is contradicted by its own
  connection the same way, and a snapshot (a resync) forgets it, as it forgets every
  buffered update at or below the snapshot's id: one far-future id causes at most one
  resync;
- when the reorder window passes on such implausible copies (held or buffered) of a
  connection, while another trusted connection at the book's id delivered since the oldest
  of them came without confirming them, they are contradicted by it (the venue's stream
  as it carries it went on without them): discarded and blamed as above, no resync. So a
  connection whose every copy is bogus for a while costs that connection, not the book,
  while another keeps the book consistent;
- an in-band snapshot jumping the book's id by more than ``max_id_jump`` while another
  trusted connection is at the book's id is not used and blamed the same way;
- a venue reset is recognised when, after the book moved past its snapshot, every
  connection that is up delivers only ids below the book's, with none catching up, for
  ``reset_window_ns`` (the venue restarted its ids; or the book's id came from a bogus
  copy): subscribers are told ``resyncing`` ("venue reset"), the old sequence is forgotten
  and the book is rebuilt from a fresh snapshot. While the book resyncs the same evidence
  is gathered; a snapshot below the book's id while every connection is below it too is a
  venue reset (and builds the book) only once a stale update showed it for the window.
  Until then it is not used and a newer one asked (lagging connections and a REST server
  answering from behind look the same). A connection is catching up (lagging the one
  that moved the book, which may have gone down) while each copy it delivers is past
  its previous one and agrees with the updates the book applied for those ids (the copy
  rule of :mod:`gateway.core.audit`); each such copy starts the window again. Once one of
  its copies disagrees, it is not catching up until some connection is past the book's id
  again. A copy older than the applied updates kept (``audit_ring``) shows nothing; one
  older than the book's snapshot is catching up while its connection, below that snapshot
  (or silent) when the book was built, delivers rising ids below it, and no connection's
  ids went back since (a stream lagging a REST snapshot ahead of it);
- after a reset the venue declares (a Bybit snapshot with ``u == 1``, an OKX update whose
  ids go back), a connection that had delivered ids and has not yet delivered its copy of
  it is behind: what it delivers at or above its latest id is of the old sequence, dropped
  as stale (neither buffered, a jump, nor counted as ids past a hole). A connection up but
  silent until the reset cannot tell which sequence its first message is of (its
  subscription may have been answered before the reset): it is behind at no known id,
  everything it delivers dropped until it delivers a reset, and a
  :class:`~gateway.core.model.ReconnectWanted` is given for it (a subscription made once
  the book saw the reset is answered in the new sequence). A reset older by the venue's
  time (``venue_time_ms``) than the one the book follows is a late copy of an older
  reset: not followed, its connection behind the book's reset. On a venue whose ids go
  down on a connection only at a reset snapshot (Bybit), a connection in sequence or behind
  a reset whose update is below its own previous id with no reset snapshot between lost one
  (behind a reset: the one it lags, or a later one): its stream is of no known sequence,
  behind until it reconnects (a :class:`~gateway.core.model.ReconnectWanted`, no fault;
  going back again is no copy of a reset), or, with no other connection in the book's
  sequence or behind its reset (whose copy of the reset brings it there), a venue reset
  recognised (the book resyncs);
- a subscription may be answered after a reset no connection delivered yet, and its snapshot
  need not say so. While another connection follows the book, the snapshot that answers a
  subscription does not move the book: its connection is *unplaced* (nothing it delivers
  used) until the snapshot is compared with the book at its id (now, or when the book
  reaches it), the book rewound to that id (:mod:`gateway.core.placement`, by the exact rule
  of :mod:`gateway.core.audit`). One below the book that cannot be compared (older than the
  applied updates kept, or inside one's ids) is compared through a replica: its connection's
  own updates, in order and none missing, applied onto it until it reaches an id the book
  kept; an update missing from that stream reopens the connection (no fault). Agreeing
  places it; differing at or below the book's id is a venue reset it leads (the book follows
  it, every other connection is reopened: how many resets they lag is unknown); differing
  ahead reopens it (agreeing ahead, the updates its connection delivered past it are
  buffered). No single copy equal to an applied update places a connection (an update of
  another sequence may equal it). Not placed within ``reset_window_ns``, the book resyncs.
  After a book built from an in-band snapshot the other connections are unplaced until they
  answer.

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
from collections.abc import Collection
from collections.abc import Hashable
from typing import Final

from sortedcontainers import SortedKeyList

from gateway.core.arbiter import ALL_DOWN_REASON
from gateway.core.arbiter import DEFAULT_ARBITER_LIMITS
from gateway.core.arbiter import ArbiterLimits
from gateway.core.arbiter import Checksum
from gateway.core.arbiter import Link
from gateway.core.arbiter import LinkRule
from gateway.core.arbiter import crossed_reason
from gateway.core.arbiter import snapshot_retry
from gateway.core.arbiter import snapshot_retry_backoff
from gateway.core.audit import DEFAULT_AUDIT_DEPTH
from gateway.core.audit import DEFAULT_RING_SIZE
from gateway.core.audit import DEFAULT_SAMPLE_EVERY
from gateway.core.audit import AgreementSample
from gateway.core.audit import AppliedRing
from gateway.core.audit import RestVerdict
from gateway.core.audit import compare_rest
from gateway.core.book import BadLevel
from gateway.core.book import BeforeImage
from gateway.core.book import L2Book
from gateway.core.connections import ConnAction
from gateway.core.connections import Connections
from gateway.core.connections import Placement
from gateway.core.connections import PlacementEvent
from gateway.core.lograte import LimitedLogger
from gateway.core.lograte import LogLimiter
from gateway.core.model import ArbiterEvent
from gateway.core.model import BookCrossed
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import ReconnectWanted
from gateway.core.model import SnapshotWanted
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.model import log_fields
from gateway.core.placement import AppliedBook
from gateway.core.placement import PlacementVerdict
from gateway.core.placement import follow_replica
from gateway.core.placement import place_answer
from gateway.core.placement import place_reached_answer
from gateway.core.stats import SymbolStats
from gateway.core.transitions import Table
from gateway.core.transitions import transition

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
    #: No book; a snapshot was not used (crossed, refused): the next is asked at the retry
    #: deadline.
    RETRY_WAIT = "retry wait"


class SyncEvent(enum.Enum):
    #: An update came while there is no book (it is buffered, or dropped as old).
    UPDATE_WITHOUT_BOOK = "update without book"
    #: A snapshot with a bad level: not loaded.
    SNAPSHOT_REFUSED = "snapshot refused"
    #: A loaded snapshot cannot be used: older than the stream, below the book's id with no
    #: venue reset shown, or its checksum fails.
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
    #: filled up, or a checksum failed; or a held update was not confirmed.
    GAP = "gap"
    #: An update or a newer snapshot left the book crossed (a venue whose books never cross).
    CROSSED = "crossed"
    #: A snapshot, with the updates buffered after it, built a crossed book on a venue
    #: whose books never cross: not used.
    SNAPSHOT_CROSSED = "snapshot crossed"
    #: The retry deadline after a crossed snapshot passed.
    RETRY_DUE = "retry due"
    #: An update whose ids jump beyond ``max_id_jump`` was held for confirmation.
    UPDATE_HELD = "update held"
    #: The venue restarted its ids: every connection stayed below the book's id for the
    #: reset window, shown by a stale update, or by a snapshot below the book's id then.
    VENUE_RESET = "venue reset"


class SyncAction(enum.Enum):
    #: Publish a SnapshotWanted.
    ASK_SNAPSHOT = "ask snapshot"
    #: Start a new epoch: publish a BookReset, then tell subscribers the book's status.
    PUBLISH_RESET = "publish reset"
    START_HOLE_CLOCK = "start hole clock"
    STOP_HOLE_CLOCK = "stop hole clock"
    #: Count the gap and the resync.
    COUNT_GAP = "count gap"
    #: Count the resync (its cause is counted and logged where it is found).
    COUNT_RESYNC = "count resync"
    #: Tell subscribers the book is resyncing (a :data:`StatusEvent.GAP`).
    ANNOUNCE_RESYNC = "announce resync"
    #: Set the deadline of the next snapshot request (a backoff of crossed snapshots in a
    #: row) and tell subscribers why the book waits.
    START_RETRY_CLOCK = "start retry clock"
    STOP_RETRY_CLOCK = "stop retry clock"
    #: Count the venue reset (and log it, rate-limited).
    COUNT_VENUE_RESET = "count venue reset"
    #: Forget the old sequence: no applied id, no buffered or held update.
    FORGET_SEQUENCE = "forget sequence"
    #: Tell subscribers the book is resyncing because of a venue reset.
    ANNOUNCE_VENUE_RESET = "announce venue reset"


_S, _E, _A = Sync, SyncEvent, SyncAction

#: The sync machine. Unlisted pairs cannot happen (an update without a book always leaves
#: UNSYNCED, so UNSYNCED never holds buffered updates).
SYNC_TRANSITIONS: Final[Table[Sync, SyncEvent, SyncAction]] = {
    (_S.UNSYNCED, _E.UPDATE_WITHOUT_BOOK): (_S.AWAITING_SNAPSHOT, (_A.ASK_SNAPSHOT,)),
    (_S.AWAITING_SNAPSHOT, _E.UPDATE_WITHOUT_BOOK): (_S.AWAITING_SNAPSHOT, ()),
    # A refused snapshot (bad levels, too many) waits like a crossed one: asking again at
    # once would ask a venue that keeps sending it as fast as it answers.
    (_S.UNSYNCED, _E.SNAPSHOT_REFUSED): (_S.RETRY_WAIT, (_A.START_RETRY_CLOCK,)),
    (_S.AWAITING_SNAPSHOT, _E.SNAPSHOT_REFUSED): (_S.RETRY_WAIT, (_A.START_RETRY_CLOCK,)),
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
    (_S.SYNCED, _E.CROSSED): (
        _S.AWAITING_SNAPSHOT,
        (_A.COUNT_RESYNC, _A.ANNOUNCE_RESYNC, _A.ASK_SNAPSHOT),
    ),
    (_S.HOLE, _E.CROSSED): (
        _S.AWAITING_SNAPSHOT,
        (_A.STOP_HOLE_CLOCK, _A.COUNT_RESYNC, _A.ANNOUNCE_RESYNC, _A.ASK_SNAPSHOT),
    ),
    # A crossed snapshot: wait, then ask again; a snapshot that comes meanwhile is used.
    (_S.UNSYNCED, _E.SNAPSHOT_CROSSED): (_S.RETRY_WAIT, (_A.START_RETRY_CLOCK,)),
    (_S.AWAITING_SNAPSHOT, _E.SNAPSHOT_CROSSED): (_S.RETRY_WAIT, (_A.START_RETRY_CLOCK,)),
    (_S.RETRY_WAIT, _E.SNAPSHOT_CROSSED): (_S.RETRY_WAIT, ()),
    (_S.RETRY_WAIT, _E.RETRY_DUE): (_S.AWAITING_SNAPSHOT, (_A.ASK_SNAPSHOT,)),
    (_S.RETRY_WAIT, _E.UPDATE_WITHOUT_BOOK): (_S.RETRY_WAIT, ()),
    (_S.RETRY_WAIT, _E.SNAPSHOT_REFUSED): (_S.RETRY_WAIT, ()),
    (_S.RETRY_WAIT, _E.SNAPSHOT_UNUSABLE): (_S.RETRY_WAIT, ()),
    (_S.RETRY_WAIT, _E.SNAPSHOT_BROKEN): (_S.RETRY_WAIT, (_A.COUNT_GAP,)),
    (_S.RETRY_WAIT, _E.BOOK_BUILT): (_S.SYNCED, (_A.STOP_RETRY_CLOCK, _A.PUBLISH_RESET)),
    (_S.RETRY_WAIT, _E.BOOK_BUILT_WITH_HOLE): (
        _S.HOLE,
        (_A.STOP_RETRY_CLOCK, _A.PUBLISH_RESET, _A.START_HOLE_CLOCK),
    ),
    (_S.SYNCED, _E.UPDATE_HELD): (_S.HOLE, (_A.START_HOLE_CLOCK,)),
    (_S.HOLE, _E.UPDATE_HELD): (_S.HOLE, ()),
    (_S.SYNCED, _E.VENUE_RESET): (
        _S.AWAITING_SNAPSHOT,
        (
            _A.COUNT_VENUE_RESET,
            _A.COUNT_RESYNC,
            _A.FORGET_SEQUENCE,
            _A.ANNOUNCE_VENUE_RESET,
            _A.ASK_SNAPSHOT,
        ),
    ),
    (_S.HOLE, _E.VENUE_RESET): (
        _S.AWAITING_SNAPSHOT,
        (
            _A.STOP_HOLE_CLOCK,
            _A.COUNT_VENUE_RESET,
            _A.COUNT_RESYNC,
            _A.FORGET_SEQUENCE,
            _A.ANNOUNCE_VENUE_RESET,
            _A.ASK_SNAPSHOT,
        ),
    ),
    # A snapshot below the book's id while every connection is below it too: the resync
    # under way continues with that snapshot, in the new sequence.
    (_S.AWAITING_SNAPSHOT, _E.VENUE_RESET): (
        _S.AWAITING_SNAPSHOT,
        (_A.COUNT_VENUE_RESET, _A.FORGET_SEQUENCE, _A.ANNOUNCE_VENUE_RESET),
    ),
}

#: States in which the book is built.
_WITH_BOOK: Final = frozenset({Sync.SYNCED, Sync.HOLE})


# --- the status machine -------------------------------------------------------------------


class StatusEvent(enum.Enum):
    #: The last connection carrying the symbol went down.
    ALL_DOWN = "all down"
    #: A gap was declared or the book found crossed (:data:`SyncAction.ANNOUNCE_RESYNC`).
    GAP = "gap"
    #: A new epoch was published while a connection is up.
    RESET_WITH_CONNECTION = "reset with connection"
    #: A new epoch was published while every connection is down.
    RESET_WITHOUT_CONNECTION = "reset without connection"
    #: An update was applied while stale, with a connection up again.
    UPSTREAM_BACK = "upstream back"
    #: A snapshot was not used (:data:`SyncEvent.SNAPSHOT_CROSSED` or
    #: :data:`SyncEvent.SNAPSHOT_REFUSED`): the book waits before asking the next.
    SNAPSHOT_NOT_USED = "snapshot not used"
    #: A venue reset was recognised (:data:`SyncAction.ANNOUNCE_VENUE_RESET`).
    VENUE_RESET = "venue reset"


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
    # The same state, announced with why the book waits; stale says more.
    (_St.SYNCING, _SE.SNAPSHOT_NOT_USED): (_St.SYNCING, _ANNOUNCE),
    (_St.RESYNCING, _SE.SNAPSHOT_NOT_USED): (_St.RESYNCING, _ANNOUNCE),
    (_St.STALE, _SE.SNAPSHOT_NOT_USED): (_St.STALE, ()),
    (_St.LIVE, _SE.VENUE_RESET): (_St.RESYNCING, _ANNOUNCE),
    (_St.STALE, _SE.VENUE_RESET): (_St.RESYNCING, _ANNOUNCE),
    # Recognised from a snapshot during a resync: the reason changes.
    (_St.RESYNCING, _SE.VENUE_RESET): (_St.RESYNCING, _ANNOUNCE),
}


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

    ``limits`` (:class:`~gateway.core.arbiter.ArbiterLimits`): its ``max_id_jump`` is the
    plausibility bound (None: the rule's ``max_id_jump``). ``reset_window_ns``: how long every
    connection may stay below the book's id, none catching up, before it is a venue reset
    (None: twice the reorder window). Held updates are bounded by ``max_pending`` too (the
    oldest is dropped, counted in ``pending_dropped``).

    Contract of the published stream: a :class:`BookReset` starts epoch ``epoch`` at
    ``seq``, with the book as it stands right after the call that returned it; each
    :class:`BookDelta` then has ``seq`` one above the previous message of the epoch.
    Unless ``may_cross``, no published book is crossed.

    ``limits.max_levels`` caps the book's levels per side (:class:`~gateway.core.book.L2Book`).

    Audits (:mod:`gateway.core.audit`), counted and logged, never changing the book: every
    ``audit_every``-th applied update (0: never), the duplicates of it that arrive are
    compared with what was applied (a connection a majority contradicts is reset:
    :class:`ReconnectWanted`); :meth:`on_audit_snapshot` compares a REST snapshot with
    the book at the snapshot's id (the top ``audit_depth`` levels), from the last
    ``audit_ring`` applied updates.
    """

    def __init__(
        self,
        key: str,
        rule: LinkRule,
        limits: ArbiterLimits = DEFAULT_ARBITER_LIMITS,
        *,
        checksum: Checksum | None = None,
        may_cross: bool = False,
        reset_window_ns: int | None = None,
        audit_every: int = DEFAULT_SAMPLE_EVERY,
        audit_depth: int = DEFAULT_AUDIT_DEPTH,
        audit_ring: int = DEFAULT_RING_SIZE,
    ) -> None:
        if reset_window_ns is None:
            reset_window_ns = 2 * limits.reorder_window_ns
        if reset_window_ns < 0:
            raise ValueError("reset_window_ns must be >= 0")
        self.key = key
        self._log_fields = log_fields(key)
        self.rule = rule
        self.checksum = checksum
        self.limits = limits
        #: The venue's own books may cross: a crossed book is published and counted only.
        self.may_cross = may_cross
        #: The plausibility bound: the limits', else the rule's own.
        self.max_id_jump: int = (
            rule.max_id_jump if limits.max_id_jump is None else limits.max_id_jump
        )
        self.reset_window_ns = reset_window_ns
        self.book = L2Book(limits.max_levels)
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
        #: The latest venue time (ms) of a snapshot the book was built from, a reset or not
        #: (None: none gave one): a reset older than it is one the book's state is past.
        self._built_venue_time_ms: int | None = None
        #: Each connection's placement and trust machines (:mod:`gateway.core.connections`).
        #: Behind a reset, its stream is in order, so what it delivers above its lag's id is
        #: of the older sequence (:meth:`_before_reset`); unplaced (its subscription answered
        #: while the book was built, not known to be in the book's sequence:
        #: :meth:`_leads_reset`), nothing it delivers is used.
        self.conns = Connections()
        #: ``(prev_id, last_id)`` of the update that applied the latest venue reset, while
        #: no later one applied (None: the latest was a snapshot): a connection delivering
        #: a copy of it crossed every reset before it (:meth:`_before_reset`).
        self._reset_ids: tuple[int, int] | None = None
        #: Connections up that have delivered nothing since: the next snapshot of one
        #: answers its subscription, of a sequence no other connection may have reached.
        self._fresh: set[int] = set()
        #: Unused snapshots in a row, and when the next snapshot is asked (in RETRY_WAIT).
        self._snapshot_backoff = snapshot_retry_backoff()
        self._retry_at_ns = 0
        #: Updates that link but whose ids jump beyond max_id_jump, in arrival order.
        self._held: list[DepthDiff] = []
        #: Per connection that is up, when (``now_ns``) it last delivered an update; per
        #: connection with implausible copies waiting (held, or buffered beyond
        #: max_id_jump), when the oldest of them came (:meth:`_drop_unconfirmed`).
        self._heard_ns: dict[int, int] = {}
        self._suspect_since_ns: dict[int, int] = {}
        #: Since when every connection is below the book's id (-1: they are not) with none
        #: catching up, and when to look again (while they are not, the look is not made on
        #: every duplicate).
        self._behind_since_ns = -1
        self._behind_check_ns = 0
        #: While every connection is below the book's id: per connection, the last id of
        #: its latest copy that agreed with the applied updates, and the connections one
        #: of whose copies disagreed (not catching up: their ids restarted, or the book's
        #: came from a bogus copy).
        self._behind_copies: dict[int, int] = {}
        self._behind_unlike: set[int] = set()
        #: The book's id when they were all found below it.
        self._behind_at_id = -1
        #: Connections up below the snapshot the book was built from when it was built
        #: (silent ones too), while their ids rise below it (:meth:`_below_snapshot_diff`).
        self._below_snapshot: set[int] = set()
        #: How long they had been below it when the latest stale update was looked at.
        self._behind_shown_ns = -1
        self._limited_log = LimitedLogger(log, LogLimiter(burst=1, window_s=60.0))
        #: The updates applied since the book was last built, for the audits.
        self.applied_ring = AppliedRing(audit_ring)
        self.audit_every = audit_every
        self.audit_depth = audit_depth
        #: Applied updates since the last sample; the sample (its last id, -1: none).
        self._since_sample = 0
        self._sample: AgreementSample | None = None
        self._sample_id = -1
        #: A REST snapshot ahead of the book, compared once the book reaches its id.
        self._rest_audit: DepthSnapshot | None = None

    # --- inputs -------------------------------------------------------------------------

    def on_connection(self, conn_id: int, up: bool, now_ns: int) -> list[ArbiterEvent]:
        """A connection carrying this symbol came up or went down."""
        out: list[ArbiterEvent] = []
        if up:
            self._conn_high.setdefault(conn_id, -1)
            self._fresh.add(conn_id)
            return out
        self._conn_high.pop(conn_id, None)
        self._heard_ns.pop(conn_id, None)
        self.conns.down(conn_id)
        self._fresh.discard(conn_id)
        # Its copies say nothing of the stream it will deliver once it is up again.
        self._behind_copies.pop(conn_id, None)
        self._behind_unlike.discard(conn_id)
        self._below_snapshot.discard(conn_id)
        behind = self.conns.behind
        if behind and behind.keys() >= self._conn_high.keys():
            # No connection up delivered the reset: the others are heard again as they
            # come (their ids lead to a gap or a reset, not to a frozen book). A silent
            # one's may be of either sequence: it stays behind until it reconnects.
            for other in list(behind):
                self.conns.move(other, PlacementEvent.NOBODY_CROSSED)
        if not self._conn_high:
            self._status(StatusEvent.ALL_DOWN, ALL_DOWN_REASON, out)
        self._check_hole(now_ns, out)
        return out

    def on_diff(self, diff: DepthDiff, now_ns: int) -> list[ArbiterEvent]:
        out: list[ArbiterEvent] = []
        conn = self.stats.conn(diff.conn_id)
        conn.received += 1
        self._fresh.discard(diff.conn_id)
        if self._went_back(diff, out, now_ns):
            self.stats.stale += 1  # of no known sequence
            return out
        if self.conns.behind and self._before_reset(diff.conn_id, diff.last_id, diff.prev_id):
            self.stats.stale += 1  # an update of the sequence before a venue reset
            self.rule.observe(diff)  # or a reset ahead of the book, after those it lost
            return out
        if self._below_snapshot:
            self._below_snapshot_diff(diff)
        self._conn_high[diff.conn_id] = diff.last_id
        if self.conns.is_unplaced(diff.conn_id):
            self._unplaced_diff(diff, out, now_ns)
            return out
        self._heard_ns[diff.conn_id] = now_ns

        if self.sync not in _WITH_BOOK:
            if diff.last_id <= self.applied_id:
                self._drop(diff)
                # Evidence for a snapshot below the book's id (:meth:`_reset_shown`).
                if now_ns >= self._behind_check_ns or self._behind_since_ns >= 0:
                    self._behind_for_ns(diff, now_ns)
            else:
                self._not_behind()  # a connection past the book's id
                self._buffer(diff, out)
            self._sync(SyncEvent.UPDATE_WITHOUT_BOOK, out, reason="initial sync")
            return out

        link = self.rule.classify(diff, self.applied_id)
        if link is Link.STALE:
            self._drop(diff)
            if diff.last_id == self._sample_id:
                self._audit_copy(diff, now_ns, out)
            if now_ns >= self._behind_check_ns or self._behind_since_ns >= 0:
                self._check_behind(diff, now_ns, out)
        elif link is Link.LINKS:
            plausible = diff.last_id - self.applied_id <= self.max_id_jump
            if (plausible or self._confirmed(diff, out, now_ns)) and self._apply(
                diff, out, now_ns
            ) is _Applied.APPLIED:
                conn.first_wins += 1
                self._drain(out, now_ns)
        else:
            self._buffer(diff, out)
            if diff.first_id - self.applied_id > self.max_id_jump:
                self._suspect_since_ns.setdefault(diff.conn_id, now_ns)
        self._check_hole(now_ns, out, diff.conn_id)
        return out

    def on_snapshot(self, snap: DepthSnapshot, now_ns: int) -> list[ArbiterEvent]:
        """A venue snapshot.

        While the book is not built (initial sync or resync) any snapshot builds it, after
        forgetting whatever buffered or held update it makes obsolete; one below the book's
        id while every connection is below it too is a venue reset once a stale update
        showed them so for the reset window (:meth:`_reset_shown`), and is not used before.
        While it is built: a venue reset (``snap.reset``) replaces it; an in-band snapshot
        newer than the book replaces it as well (the venue jumped ahead of every
        connection); both are published as one ordinary delta, so subscribers keep their
        seq. Older in-band
        snapshots, late copies of a reset, a reset older by the venue's time than the one
        the book follows (:meth:`_older_reset`) and REST snapshots are counted and ignored. A
        snapshot answering a subscription while another connection follows the book is
        placed first (:meth:`_leads_reset`).
        """
        out: list[ArbiterEvent] = []
        answer = snap.conn_id in self._fresh
        self._fresh.discard(snap.conn_id)
        # Behind a reset, its copy of the book's reset brings it into the book's sequence
        # (:meth:`_stale_snapshot`); otherwise any reset before the book's state is refused.
        than_ms = self._built_venue_time_ms
        if snap.conn_id in self.conns.behind:
            than_ms = self._reset_time_ms()
            if self._stale_snapshot(snap, now_ns):
                self.stats.snapshots_unused += 1
                return out
        if self._older_reset(snap, now_ns, than_ms):
            self.stats.snapshots_unused += 1
            if self.conns.placement(snap.conn_id) is Placement.IN_SEQUENCE:
                # Its stream is in order: the book's reset is still to come on it.
                self.conns.move(snap.conn_id, PlacementEvent.RESET_ELSEWHERE, high=snap.last_id)
            return out
        # A reset from a connection heard from since it came up or since the latest reset
        # is a new one, whatever its levels: its stream is in order.
        maybe_copy = self._conn_high.get(snap.conn_id, -1) < 0
        if snap.conn_id in self._conn_high:
            # In band: that connection's stream is at the snapshot's id.
            self._conn_high[snap.conn_id] = snap.last_id
        if self.sync in _WITH_BOOK:
            self._snapshot_while_live(snap, out, now_ns, maybe_copy=maybe_copy, answer=answer)
            return out
        try:
            self.book.load(snap.bids, snap.asks)
        except BadLevel as exc:
            self.stats.bad_updates += 1
            self.stats.snapshots_unused += 1
            log.warning("%s: snapshot rejected: %s", self.key, exc, extra=self._log_fields)
            reason = str(exc)
            self._sync(SyncEvent.SNAPSHOT_REFUSED, out, reason=reason, now_ns=now_ns)
            return out
        top = self._top_connection_id()
        if 0 <= snap.last_id < self.applied_id and -1 < top < self.applied_id:
            # Every connection below the book's id too: a venue reset, or lagging
            # connections and a REST server answering from behind. Only the live rule's
            # evidence tells them apart; until it is shown, the snapshot is not used (built
            # from it, the buffered updates of the book's sequence would follow it).
            behind_ns = self._reset_shown()
            if behind_ns < 0 or self.sync is Sync.RETRY_WAIT:
                self.stats.snapshots_unused += 1
                self.book.clear()
                unusable = "snapshot older than the book"
                self._sync(SyncEvent.SNAPSHOT_UNUSABLE, out, reason=unusable)
                return out
            reason = (
                f"venue reset: snapshot id {snap.last_id} and every connection below the"
                f" book's id {self.applied_id} for {behind_ns // 1_000_000} ms (up to id {top})"
            )
            self._sync(SyncEvent.VENUE_RESET, out, reason=reason, now_ns=now_ns)
        self._forget(self._held)  # made obsolete by the snapshot
        self.conns.move(snap.conn_id, PlacementEvent.BUILT_BOOK)  # the book's sequence is its own
        rebuild = snap.conn_id >= 0 and self.epoch > 0
        if rebuild:
            # In band, a resync: every connection was asked to subscribe again. Until it
            # answers, what it delivers is of its stream before, of no known sequence.
            for other, high in self._conn_high.items():
                if other != snap.conn_id and high >= 0:
                    self.conns.move(other, PlacementEvent.RESUBSCRIBED, now_ns)
        self._rebuilt(now_ns, snap.last_id)
        self.stats.snapshots += 1
        self.applied_id = self._snapshot_id = snap.last_id
        self._not_behind()
        # Streams up behind the snapshot (a REST answer ahead of them, maybe of their first
        # message): in order, each goes on to it in the same sequence until its ids go back.
        self._below_snapshot = {c for c, high in self._conn_high.items() if high < snap.last_id}
        self._loaded(snap)
        if rebuild:
            # Updates buffered past it came before it on its own connection (of an older
            # stream), or from connections not answered yet: of no known sequence. So did
            # a reset from past it (OKX ``prevSeqId`` above it): waiting for ids the
            # snapshot's stream never delivers, it would open a hole at every rebuild.
            ahead = [d for d in self._pending if max(d.prev_id, d.last_id) > snap.last_id]
            for diff in ahead:
                self._pending.remove(diff)
            self.stats.obsolete += len(ahead)
        if not self._drain_after_snapshot(out, now_ns):
            reason = "checksum mismatch after the snapshot"
            self._sync(SyncEvent.SNAPSHOT_BROKEN, out, reason=reason)
            return out
        self._forget_far_ahead()
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
        if not self.may_cross and self._built_crossed(now_ns, out):
            return out
        if snap.reset:
            self._last_reset = snap
            self._reset_ids = None
        waiting = self._pending or self._held
        event = SyncEvent.BOOK_BUILT_WITH_HOLE if waiting else SyncEvent.BOOK_BUILT
        self._sync(event, out, reason="snapshot applied", now_ns=now_ns, recv_ns=snap.recv_ns)
        return out

    def on_timer(self, now_ns: int) -> list[ArbiterEvent]:
        """Call at or after :meth:`deadline_ns`; declares a gap when the window passed, asks
        a snapshot when the wait after a crossed one passed, resyncs (or reopens a
        connection) when an unplaced subscription is not placed within the reset window."""
        out: list[ArbiterEvent] = []
        if self.sync is Sync.RETRY_WAIT:
            if now_ns >= self._retry_at_ns:
                self._sync(SyncEvent.RETRY_DUE, out, reason="retry after a crossed snapshot")
            return out
        if self.conns.unplaced and self.sync in _WITH_BOOK:
            self._check_unplaced(now_ns, out)
        self._check_hole(now_ns, out)
        return out

    def deadline_ns(self) -> int | None:
        """When :meth:`on_timer` must be called next, or None."""
        if self.sync is Sync.RETRY_WAIT:
            return self._retry_at_ns
        deadlines = []
        if self.sync is Sync.HOLE:
            deadlines.append(self._hole_since_ns + self.limits.reorder_window_ns)
        if self.conns.unplaced and self.sync in _WITH_BOOK:
            unplaced = self._unplaced_deadline_ns()
            if unplaced is not None:
                deadlines.append(unplaced)
        return min(deadlines, default=None)

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
                self._snapshot_backoff.reset()
                self.epoch += 1
                self.seq = 0
                if self.book.is_crossed():
                    self.stats.crossed += 1
                out.append(BookReset(self.key, self.epoch, self.seq, self.applied_id, recv_ns))
                if self._conn_high:
                    self._status(StatusEvent.RESET_WITH_CONNECTION, reason, out)
                else:
                    self._status(StatusEvent.RESET_WITHOUT_CONNECTION, ALL_DOWN_REASON, out)
            elif action is SyncAction.START_HOLE_CLOCK:
                self._hole_since_ns = now_ns
            elif action is SyncAction.STOP_HOLE_CLOCK:
                self._hole_since_ns = 0
            elif action is SyncAction.COUNT_GAP:
                self.stats.gaps += 1
                self.stats.resyncs += 1
                log.warning(
                    "%s: lost at id %d: %s; resyncing from a snapshot",
                    self.key,
                    self.applied_id,
                    reason,
                    extra=self._log_fields,
                )
            elif action is SyncAction.COUNT_RESYNC:
                self.stats.resyncs += 1
            elif action is SyncAction.ANNOUNCE_RESYNC:
                self._status(StatusEvent.GAP, reason, out)
            elif action is SyncAction.START_RETRY_CLOCK:
                delay_ns, wait = snapshot_retry(self._snapshot_backoff)
                self._retry_at_ns = now_ns + delay_ns
                self._status(StatusEvent.SNAPSHOT_NOT_USED, f"{reason}; {wait}", out)
            elif action is SyncAction.STOP_RETRY_CLOCK:
                self._retry_at_ns = 0
            elif action is SyncAction.COUNT_VENUE_RESET:
                self.stats.venue_resets += 1
                self._warn("venue reset", now_ns, "%s; resyncing from a snapshot", reason)
            elif action is SyncAction.FORGET_SEQUENCE:
                self._rebuilt(now_ns)
                self.applied_id = self._snapshot_id = -1
                self._below_snapshot.clear()
                self._forget(self._pending)
                self._forget(self._held)
                self._not_behind()
            elif action is SyncAction.ANNOUNCE_VENUE_RESET:
                self._status(StatusEvent.VENUE_RESET, reason, out)

    def _status(self, event: StatusEvent, reason: str, out: list[ArbiterEvent]) -> None:
        """Moves the status machine on ``event`` and carries out its actions."""
        self.state, actions = transition("status", STATUS_TRANSITIONS, self.state, event)
        if actions:  # the one action: announce
            out.append(StatusChange(self.key, self.state, reason))

    # --- internals ----------------------------------------------------------------------

    def _snapshot_while_live(
        self,
        snap: DepthSnapshot,
        out: list[ArbiterEvent],
        now_ns: int,
        *,
        maybe_copy: bool,
        answer: bool,
    ) -> None:
        """``maybe_copy``: a reset may be a late copy of the last one (its connection was not
        heard from since the last reset or since it came up). ``answer``: the first message
        of its connection since it came up (its subscription's answer)."""
        last_reset = self._last_reset
        if snap.reset:
            if (
                maybe_copy
                and last_reset is not None
                and last_reset.last_id == snap.last_id
                and last_reset.bids == snap.bids
                and last_reset.asks == snap.asks
            ):
                self.stats.snapshots_unused += 1  # a late copy of the reset just applied
                return
            if not self.conns.answered(snap.conn_id):
                # Of its stream before it subscribed again: maybe of the sequence before the
                # book's (its answer places it).
                self.stats.snapshots_unused += 1
                return
            self.stats.venue_resets += 1
            self._pending.clear()
            self._forget(self._held)
            if self.sync is Sync.HOLE:
                self._sync(SyncEvent.HOLE_CLOSED, out)
            self._last_reset = snap
            if (answer or self.conns.is_unplaced(snap.conn_id)) and self._others_placed(
                snap.conn_id
            ):
                # From a connection in no known sequence (a subscription answered after a
                # reset, maybe after more than one no connection delivered).
                reason = f"sequence unknown after a venue reset answering conn {snap.conn_id}"
                self._all_others_unknown(snap.conn_id, reason, out)
            else:
                self._left_behind(snap.conn_id, out, now_ns)
            self.conns.move(snap.conn_id, PlacementEvent.LEADS_RESET)
            self._sequence_restarted(snap.conn_id)
        elif (
            snap.conn_id >= 0
            and snap.last_id - self.applied_id > self.max_id_jump
            and (at_book := self._at_book(snap.conn_id)) is not None
        ):
            # Another connection is at the book's id: a venue that jumped this far would
            # have carried it there too. Its copy of the snapshot's ids is wrong, whether it
            # answers a subscription or not.
            self.stats.snapshots_unused += 1
            reason = (
                f"implausible ids from conn {snap.conn_id}: snapshot at id {snap.last_id},"
                f" {snap.last_id - self.applied_id} past the book's id {self.applied_id}"
                f" where conn {at_book} is"
            )
            self._blame(snap.conn_id, [], reason, now_ns, out)
            return
        elif (
            snap.conn_id >= 0
            and (answer or self.conns.is_unplaced(snap.conn_id))
            and self._others_placed(snap.conn_id)
        ):
            if not self._leads_reset(snap, out, now_ns):
                return
        elif snap.conn_id < 0 or snap.last_id <= self.applied_id:
            self.stats.snapshots_unused += 1
            return
        else:
            self.stats.jumps += 1
        self._replace_book(snap, out, now_ns)

    def _replace_book(self, snap: DepthSnapshot, out: list[ArbiterEvent], now_ns: int) -> None:
        """The built book is replaced by in-band ``snap`` (a reset, a jump ahead, a
        sequence an unplaced connection leads into), published as one ordinary delta."""
        fresh = L2Book(self.limits.max_levels)
        try:
            fresh.load(snap.bids, snap.asks)
        except BadLevel as exc:
            self.stats.bad_updates += 1
            log.warning("%s: snapshot rejected: %s", self.key, exc, extra=self._log_fields)
            return
        if not self.may_cross and fresh.is_crossed():
            self.stats.crossed += 1
            self._crossed_fault(fresh, out)
            return
        bids, asks = self.book.diff_to(fresh)
        self.book = fresh
        self._rebuilt(now_ns, snap.last_id)
        self.stats.snapshots += 1
        self.applied_id = self._snapshot_id = snap.last_id
        self._below_snapshot.clear()  # in band: the streams below it are of no known sequence
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
        self._drain(out, now_ns)
        self._check_hole(snap.recv_ns, out)

    def _left_behind(
        self, conn_id: int, out: list[ArbiterEvent], now_ns: int, past: Collection[int] = ()
    ) -> None:
        """``conn_id`` delivered a venue reset first (a snapshot that declares it, or an
        update whose ids go back: OKX ``seqId < prevSeqId``): every other connection lags
        one reset more until it delivers its own copy. One silent until now (up, nothing
        delivered since it came up) may have been answered in either sequence: nothing it
        delivers is trusted, and it is asked to reconnect. The connections in ``past``
        already delivered their copy (the rule saw it before the reset applied): their
        streams are in order, so they lag no reset, and their latest ids are of the new
        sequence: one behind an earlier reset (its id forgotten when that reset applied)
        is heard again at its lag's id."""
        for other, high in list(self._conn_high.items()):
            if other == conn_id:
                continue
            if other in past:
                event = PlacementEvent.RESET_ELSEWHERE_PAST
                lag = self.conns.behind.get(other)
                if lag is not None and self.conns.placement(other) is Placement.BEHIND_RESET:
                    self._conn_high[other] = max(high, lag.high)
            else:
                event = (
                    PlacementEvent.RESET_ELSEWHERE
                    if high >= 0
                    else PlacementEvent.RESET_ELSEWHERE_UNHEARD
                )
            reason = f"silent until a venue reset on conn {conn_id}: sequence unknown"
            if ConnAction.ASK_RECONNECT in self._move(other, event, out, reason, high=high):
                # Unheard of, or heard in no known sequence (its subscription answer was
                # never placed in the book's): it may be in either.
                self._warn(("silent at reset", other), now_ns, "conn %d %s", other, reason)

    def _before_reset(self, conn_id: int, last_id: int, prev_id: int | None = None) -> bool:
        """True when ``last_id`` from ``conn_id`` is of a sequence before the venue reset
        the book follows: the connection lags a reset and the id continues its older
        sequence. An id below the connection's latest means its stream started again: it
        crossed one reset; its copy of the update that applied the latest reset (``prev_id``
        and ``last_id`` those of it), or a reset from the book's id (``last_id <
        prev_id == applied_id``: the next one), every one."""
        lagging = self.conns.behind.get(conn_id)
        if lagging is None:
            return False
        if not self.conns.silent(conn_id) and (
            (prev_id, last_id) == self._reset_ids
            or (prev_id == self.applied_id and last_id < prev_id)
        ):
            # Its stream is in order: past the latest reset, it is past any it lost; so it
            # is with a reset from the book's id (OKX), the next one, that it delivers first.
            self.conns.move(conn_id, PlacementEvent.CROSSED_RESETS)
            return False
        if last_id >= lagging.high:  # at its latest: a keepalive, a repeated snapshot
            lagging.high = last_id
            return True
        return self.conns.crossed_reset(conn_id, last_id)

    def _went_back(self, diff: DepthDiff, out: list[ArbiterEvent], now_ns: int) -> bool:
        """True when ``diff``, from a connection in the book's sequence or behind a reset,
        has ids below its connection's previous update or snapshot (behind a reset: below
        its latest id in the older sequence), on a venue whose ids go down only at a reset
        snapshot (:attr:`~gateway.core.arbiter.LinkRule.ids_fall_only_at_reset_snapshot`)
        and none came between: its stream restarted after a reset snapshot it lost (behind a
        reset: the one it lags, or a later one no connection delivered yet), so nothing it
        delivers is of a known sequence. With another connection in the book's sequence, or
        behind a reset the book follows (its copy of it brings it into the book's sequence),
        it is behind until it reconnects (a :class:`ReconnectWanted`, no fault); alone, it
        is a venue reset recognised: the book's sequence is forgotten and a snapshot asked
        (one behind a reset is reopened too: its lag says nothing of its stream now).
        Logged at most once a minute per connection. One already of no known sequence
        (silent at a reset, behind until it reconnects) stays so: going back is no copy of
        a reset."""
        if not self.rule.ids_fall_only_at_reset_snapshot:
            return False  # before any lookup: this runs on every update of every venue
        conn_id = diff.conn_id
        lag = self.conns.behind.get(conn_id)
        high = self._conn_high.get(conn_id, -1) if lag is None else lag.high
        if not 0 <= diff.last_id < high:
            return False
        placement = self.conns.placement(conn_id)
        if lag is None and placement is not Placement.IN_SEQUENCE:
            return False  # unplaced: nothing it delivers is used
        if lag is not None and self.conns.silent(conn_id):
            # Asked to reconnect, in no known sequence: still none (no copy of a reset).
            lag.high = diff.last_id
            return True
        reason = (
            f"conn {conn_id} went back from id {high} to {diff.last_id} without a reset"
            " snapshot: its stream restarted, sequence unknown"
        )
        self._warn(("went back", conn_id), now_ns, "%s", reason)
        self._conn_high[conn_id] = diff.last_id  # where its restarted stream is
        alone = not self._others_placed(conn_id) and not self._others_behind_reset(conn_id)
        reopened = not alone or placement is Placement.BEHIND_RESET
        if reopened:
            self._move(conn_id, PlacementEvent.IDS_WENT_BACK, out, reason)
        if alone and self.sync in _WITH_BOOK:
            # Its stream restarted in a sequence no other connection shows: as a venue
            # reset recognised, the book's sequence is forgotten.
            self._sync(SyncEvent.VENUE_RESET, out, reason=f"venue reset: {reason}", now_ns=now_ns)
            return True
        return reopened  # or, in sequence, the book waits for a snapshot already

    def _stale_snapshot(self, snap: DepthSnapshot, now_ns: int) -> bool:
        """True when in-band ``snap`` comes from a connection still before a venue reset
        the book follows: a copy of an older reset, or a snapshot of an older sequence.
        Its copy of the latest reset is not stale; the connection has then crossed. A reset
        older than the book's by the venue's time (:meth:`_older_reset`) may be one it
        lags, but never the book's own: it still lags that one."""
        lag = self.conns.behind.get(snap.conn_id)
        if lag is None:
            return False
        if self.conns.placement(snap.conn_id) is Placement.BEHIND_UNTIL_RECONNECT:
            return True
        if snap.reset and self._older_reset(snap, now_ns, self._reset_time_ms()):
            lag.resets = max(lag.resets - 1, 1)
            lag.high = snap.last_id
            return True
        if snap.reset:
            return self.conns.crossed_reset(snap.conn_id, snap.last_id)
        return self._before_reset(snap.conn_id, snap.last_id)

    def _reset_time_ms(self) -> int | None:
        """The venue's time of the reset the book follows, None when unknown."""
        return None if self._last_reset is None else self._last_reset.venue_time_ms

    def _older_reset(self, snap: DepthSnapshot, now_ns: int, than_ms: int | None) -> bool:
        """True when ``snap`` is a reset older, by the venue's time, than ``than_ms``: the
        latest snapshot the book was built from (the reset it follows, a jump ahead, a
        resync's, a subscription answer it followed), or for a connection behind a reset
        the reset the book follows (its copy of that one is not older, however late); a
        reset the book's state is past (its connection lost the newer one's copy, or
        delivers late); logged, rate-limited. The ids of two resets (Bybit ``u == 1``) say
        nothing of their order; the venue's time does. Either time unknown, or equal:
        False."""
        if (
            not snap.reset
            or than_ms is None
            or snap.venue_time_ms is None
            or snap.venue_time_ms >= than_ms
        ):
            return False
        self._warn(
            ("older reset", snap.conn_id),
            now_ns,
            "conn %d delivered a venue reset of %d ms, older than the book's of %d ms:"
            " not followed; the connection is behind the book's reset",
            snap.conn_id,
            snap.venue_time_ms,
            than_ms,
        )
        return True

    def _others_placed(self, conn_id: int) -> bool:
        """True when a connection other than ``conn_id`` is up, has delivered in the book's
        sequence, and lags no reset: one the book can follow while ``conn_id`` is placed."""
        return any(
            other != conn_id and high >= 0 and self.conns.placement(other) is Placement.IN_SEQUENCE
            for other, high in self._conn_high.items()
        )

    def _others_behind_reset(self, conn_id: int) -> bool:
        """True when a connection other than ``conn_id`` is behind a reset the book follows,
        at a known id of the older sequence: its stream is in order, so its copy of that
        reset brings it into the book's sequence."""
        return any(
            other != conn_id and self.conns.placement(other) is Placement.BEHIND_RESET
            for other in self.conns.behind
        )

    def _applied_book(self) -> AppliedBook:
        """The book as it stands, for placing an unplaced connection
        (:mod:`gateway.core.placement`)."""
        return AppliedBook(self.book, self.applied_id, self.applied_ring, self.audit_depth)

    def _leads_reset(self, snap: DepthSnapshot, out: list[ArbiterEvent], now_ns: int) -> bool:
        """``snap`` answers a subscription of its connection while the book is built and
        other connections follow it; it declares no reset. A subscription is answered where
        the venue is, so the snapshot is of the book's sequence or of one after a reset no
        connection has delivered yet. True when it leads the book into that reset: its book
        differs from the book at its id (:func:`~gateway.core.placement.place_answer`), so
        it is of another sequence; the book is rebuilt from it and every other connection,
        lagging an unknown number of resets, is dropped and asked to reconnect. Otherwise it
        is not used and its connection stays unplaced, nothing it delivers used: its book
        agrees (its connection is placed in the book's sequence); it is ahead of the book,
        and is compared when the book reaches its id (:meth:`_reached_subscriptions`); or it
        is below the book and cannot be compared (older than the applied updates kept, or
        inside one's ids): its connection's own updates are then applied onto a replica of
        it, compared instead once its stream reaches an id the book kept
        (:meth:`_unplaced_diff`). A copy equal to an applied update never places a
        connection (an update of another sequence may equal the book's at its ids)."""
        conn_id = snap.conn_id
        self.stats.snapshots_unused += 1
        placement = place_answer(snap, self._applied_book(), self.limits.max_levels)
        verdict = placement.verdict
        if verdict is PlacementVerdict.AHEAD:
            self.conns.move(conn_id, PlacementEvent.ANSWERED_AHEAD, now_ns, snap=snap)
            return False
        if verdict is PlacementVerdict.AGREES:
            self.conns.move(conn_id, PlacementEvent.AGREES)
            return False
        if verdict is PlacementVerdict.BELOW:
            kept = placement.replica
            self.conns.move(conn_id, PlacementEvent.ANSWERED_BELOW, now_ns, snap=snap, replica=kept)
            return False
        if verdict is PlacementVerdict.UNUSABLE:
            self._reopen_unplaced(conn_id, placement.detail, out, now_ns)
            return False
        self.stats.snapshots_unused -= 1
        reason = (
            f"venue reset: conn {conn_id}'s subscription snapshot at id {snap.last_id}"
            f" differs from the book at that id ({placement.detail})"
        )
        self._follow_unplaced(conn_id, reason, out, now_ns)
        return True

    def _follow_unplaced(
        self, conn_id: int, reason: str, out: list[ArbiterEvent], now_ns: int
    ) -> None:
        """The book follows unplaced ``conn_id`` into the reset it leads (``reason``), to be
        rebuilt from its book: what waits is of the old sequence, and every other
        connection lags an unknown number of resets."""
        self.stats.venue_resets += 1
        self._warn("venue reset", now_ns, "%s; following it", reason)
        self._pending.clear()
        self._forget(self._held)
        if self.sync is Sync.HOLE:
            self._sync(SyncEvent.HOLE_CLOSED, out)
        self._last_reset = None
        self.conns.move(conn_id, PlacementEvent.LEADS_RESET)
        why = f"sequence unknown after a venue reset led by conn {conn_id}"
        self._all_others_unknown(conn_id, why, out)
        self._sequence_restarted(conn_id)

    def _all_others_unknown(self, conn_id: int, reason: str, out: list[ArbiterEvent]) -> None:
        """The book follows ``conn_id`` into a sequence that it answered a subscription in:
        how many resets the other connections lag is unknown, so nothing they deliver is
        used until they reconnect (answered in the book's sequence, or a newer one)."""
        for other in self._conn_high:
            if other != conn_id:
                self._move(other, PlacementEvent.LED_ELSEWHERE, out, reason)

    def _unplaced_diff(self, diff: DepthDiff, out: list[ArbiterEvent], now_ns: int) -> None:
        """``diff`` from an unplaced connection: not used by the book. Where the connection
        keeps a replica (:meth:`_leads_reset`), ``diff`` continues it or breaks its chain:
        an update missing between them means its book can no longer be compared, so the
        connection is asked to reconnect (no fault: a fresh answer is where the venue is).
        Continued to an id at or below the book's that the book kept, the replica is
        compared with the book there (:func:`~gateway.core.placement.follow_replica`), with
        an answer's verdicts: agreeing places the connection; differing leads the book into
        the reset it is of (its book is followed, the other connections reopened). Past the
        book's id, it is compared when the book reaches it, as an answer ahead of the book.
        Without a replica, an update past a snapshot ahead of the book is kept, for the book
        to take once that snapshot is placed (:meth:`_reached_subscriptions`)."""
        self.stats.stale += 1
        conn_id = diff.conn_id
        unplaced = self.conns.unplaced[conn_id]
        replica = unplaced.replica
        if replica is None:
            snap = unplaced.snap
            if snap is not None and diff.last_id > snap.last_id > self.applied_id:
                if len(unplaced.ahead) >= self.limits.max_pending:
                    del unplaced.ahead[0]
                unplaced.ahead.append(diff)
            return
        book = self._applied_book() if self.sync in _WITH_BOOK else None
        placement = follow_replica(replica, diff, self.rule, book)
        verdict = placement.verdict
        if verdict is PlacementVerdict.UNUSABLE:
            self._reopen_unplaced(conn_id, placement.detail, out, now_ns)
            return
        if verdict is PlacementVerdict.NOT_COMPARABLE:
            return  # no book, or the book did not keep that id: on to the next
        if verdict is PlacementVerdict.AHEAD:
            self.conns.move(conn_id, PlacementEvent.PASSED_BOOK, snap=replica.snapshot(diff))
            return
        if verdict is PlacementVerdict.AGREES:
            self.conns.move(conn_id, PlacementEvent.AGREES)
            return
        reason = (
            f"venue reset: conn {conn_id}'s stream from its subscription snapshot differs at"
            f" id {replica.last_id} from the book at that id ({placement.detail})"
        )
        self._follow_unplaced(conn_id, reason, out, now_ns)
        self._replace_book(replica.snapshot(diff), out, now_ns)

    def _reopen_unplaced(
        self, conn_id: int, reason: str, out: list[ArbiterEvent], now_ns: int
    ) -> None:
        """Nothing more is awaited of unplaced ``conn_id``: it is asked to reconnect (no
        fault), its answer and replica forgotten; until it goes down nothing it delivers
        places it."""
        self._warn(("unplaced", conn_id), now_ns, "conn %d %s", conn_id, reason)
        self._move(conn_id, PlacementEvent.COMPARE_FAILED, out, reason, now_ns=now_ns)

    def _move(
        self,
        conn_id: int,
        event: PlacementEvent,
        out: list[ArbiterEvent],
        reason: str,
        *,
        now_ns: int = 0,
        high: int = -1,
    ) -> tuple[ConnAction, ...]:
        """Moves ``conn_id``'s placement on ``event``; asks it to reconnect (no fault, for
        ``reason``) when the table says so. Returns the actions."""
        actions = self.conns.move(conn_id, event, now_ns, high=high)
        if ConnAction.ASK_RECONNECT in actions:
            out.append(ReconnectWanted(self.key, conn_id, reason, fault=False))
        return actions

    def _reached_subscriptions(self, before_id: int, out: list[ArbiterEvent], now_ns: int) -> None:
        """The book moved from ``before_id`` to its applied id: the subscription snapshots
        of unplaced connections it passed are compared with it. One that agrees places its
        connection, and the updates it delivered past the snapshot are buffered (applied
        as they link); one that differs is of another sequence, which the book cannot follow
        from it (its connection's updates since are not used): the connection is asked to
        reconnect."""
        applied = self.applied_id
        for conn_id, unplaced in list(self.conns.unplaced.items()):
            snap = unplaced.snap
            if self.conns.placement(conn_id) is not Placement.TO_COMPARE or snap is None:
                continue  # a replica is compared as its own stream reaches the book's ids
            if not before_id < snap.last_id <= applied:
                continue
            verdict = place_reached_answer(snap, self._applied_book()).verdict
            if verdict is PlacementVerdict.AGREES:
                self.conns.move(conn_id, PlacementEvent.AGREES)
                for diff in unplaced.ahead:
                    if diff.last_id > applied:
                        self._buffer(diff, out)
                continue
            if verdict is PlacementVerdict.DIFFERS:
                why = "differs from the book at that id: of another sequence"
            else:
                why = "cannot be compared with the book at that id"
            reason = f"subscription snapshot at id {snap.last_id} {why}"
            self._reopen_unplaced(conn_id, reason, out, now_ns)

    def _unplaced_deadline_ns(self) -> int | None:
        """When the earliest unplaced connection that waits is overdue."""
        since_ns = self.conns.earliest_wait_ns()
        return None if since_ns is None else since_ns + self.reset_window_ns

    def _check_unplaced(self, now_ns: int, out: list[ArbiterEvent]) -> None:
        """Unplaced connections past the reset window. One that has not answered since it
        was asked to subscribe again is reopened. A subscription snapshot the book has not
        reached (or could not compare): which sequence the book is in cannot be told from
        what the connections delivered, so the book is rebuilt from a snapshot (every
        connection subscribes again, awaited anew)."""
        gap_reason = ""
        unanswered = "no answer to its subscription within the reset window"
        for conn_id, unplaced in self.conns.unplaced.items():
            waited_ns = now_ns - unplaced.since_ns
            if not self.conns.waits(conn_id) or waited_ns < self.reset_window_ns:
                continue
            snap = unplaced.snap
            actions = self._move(
                conn_id, PlacementEvent.WINDOW_PASSED, out, unanswered, now_ns=now_ns
            )
            if ConnAction.RESYNC not in actions or snap is None:
                continue
            gap_reason = gap_reason or (
                f"conn {conn_id}'s subscription snapshot at id {snap.last_id} not placed in"
                f" the book's sequence (book at id {self.applied_id}) within the reset window"
            )
        if gap_reason:
            self._sync(SyncEvent.GAP, out, reason=gap_reason)

    def _sequence_restarted(self, conn_id: int, past: Collection[int] = ()) -> None:
        """The venue's ids started again lower: what other connections delivered says
        nothing about the new sequence until they deliver in it. Those in ``past``
        delivered their copy of the reset before it applied (their streams are in order):
        their latest ids are of the new sequence, so they stay heard in it (a next reset
        finds them behind it, not silent)."""
        self._reset_ids = None
        for other in self._conn_high:
            if other != conn_id and other not in past:
                self._conn_high[other] = -1

    def _loaded(self, snap: DepthSnapshot) -> None:
        """The book was rebuilt from ``snap``: tell the rule (one that keeps state: OKX), and
        keep the venue's time of its state (the venue's time goes only forward)."""
        self.rule.on_snapshot(snap)
        if snap.venue_time_ms is not None and (
            self._built_venue_time_ms is None or snap.venue_time_ms > self._built_venue_time_ms
        ):
            self._built_venue_time_ms = snap.venue_time_ms

    def _checksum_matches(self, expected: int) -> bool:
        if self.checksum is None:
            return True
        if self.checksum(self.book) == expected:
            self.stats.checksum_ok += 1
            return True
        self.stats.checksum_failed += 1
        log.warning(
            "%s: checksum mismatch at id %d", self.key, self.applied_id, extra=self._log_fields
        )
        return False

    def _apply(
        self, diff: DepthDiff, out: list[ArbiterEvent], now_ns: int, *, building: bool = False
    ) -> _Applied:
        """Applies ``diff`` and publishes it. While ``building`` (draining the buffer onto a
        fresh snapshot) a failed checksum is returned, not declared as a gap."""
        # What it replaced gives the book at an earlier id, to place an answer (audit.py):
        # recorded only while one may come (a connection fresh or unplaced), since one of
        # the book's sequence is at or past the book's id when its connection came up.
        replaced = BeforeImage() if self._fresh or self.conns.unplaced else None
        try:
            pruned = self.book.apply(diff.bids, diff.asks, replaced)
        except BadLevel as exc:
            # Adapters validate levels, so this is a copy the venue mangled; another
            # connection's copy, or the resync that the hole leads to, repairs it.
            self.stats.bad_updates += 1
            log.warning(
                "%s: update %d..%d rejected: %s",
                self.key,
                diff.first_id,
                diff.last_id,
                exc,
                extra=self._log_fields,
            )
            return _Applied.REJECTED
        restarted = diff.last_id < self.applied_id
        if restarted:
            past = self.rule.past_reset()
            self._left_behind(diff.conn_id, out, now_ns, past)
            self._sequence_restarted(diff.conn_id, past)
            self._reset_ids = (diff.prev_id, diff.last_id)
        before = self.applied_id
        self.applied_id = diff.last_id
        self.seq += 1
        self.stats.updates += 1
        self.applied_ring.append(diff, replaced)
        if restarted:
            # The applied updates of the older sequence say nothing of the new one's ids.
            self._rebuilt(now_ns, diff.last_id)
        elif self.conns.unplaced:
            self._reached_subscriptions(before, out, now_ns)
        if self.audit_every:
            self._since_sample += 1
            if self._since_sample >= self.audit_every and not building:
                self._start_sample(diff, now_ns)
        if self._rest_audit is not None and diff.last_id >= self._rest_audit.last_id:
            self._finish_rest_audit(self._rest_audit, now_ns)
        if self.book.is_crossed():
            self.stats.crossed += 1
            if not (self.may_cross or building):
                # Never published: the build is checked whole (_built_crossed).
                self._crossed_fault(self.book, out)
                return _Applied.BROKEN
        bids, asks = diff.bids, diff.asks
        if pruned is not None:
            # Subscribers' books drop what the cap pruned here.
            self.stats.levels_pruned += len(pruned[0]) + len(pruned[1])
            bids, asks = bids + tuple(pruned[0]), asks + tuple(pruned[1])
        out.append(
            BookDelta(
                self.key,
                self.epoch,
                self.seq,
                diff.last_id,
                bids,
                asks,
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

    def _crossed_fault(self, book: L2Book, out: list[ArbiterEvent]) -> None:
        """``book``, to be published, is crossed on a venue whose books never cross: it is
        not published; the book is rebuilt from a snapshot, as after a gap."""
        reason = crossed_reason(book) or "crossed book"
        self.stats.crossed_faults += 1
        out.append(BookCrossed(self.key, -1, reason))
        self._sync(SyncEvent.CROSSED, out, reason=reason)

    def _built_crossed(self, now_ns: int, out: list[ArbiterEvent]) -> bool:
        """True when the book a snapshot just built is crossed (a venue whose books never
        cross): it is cleared, not published, and the next snapshot waits."""
        reason = crossed_reason(self.book)
        if reason is None:
            return False
        self.book.clear()
        self.stats.crossed += 1
        self.stats.crossed_faults += 1
        self.stats.snapshots_unused += 1
        out.append(BookCrossed(self.key, -1, reason))
        self._sync(SyncEvent.SNAPSHOT_CROSSED, out, reason=reason, now_ns=now_ns)
        return True

    def _buffer(self, diff: DepthDiff, out: list[ArbiterEvent]) -> None:
        if len(self._pending) >= self.limits.max_pending:
            if self.sync in _WITH_BOOK:
                # The hole outlived a full buffer: no connection is going to fill it.
                self._sync(SyncEvent.GAP, out, reason=self._gap_reason("reorder buffer full"))
            if len(self._pending) >= self.limits.max_pending:
                self._pending.pop(0)
                self.stats.pending_dropped += 1
        self._pending.add(diff)

    def _drain(self, out: list[ArbiterEvent], now_ns: int, *, building: bool = False) -> bool:
        """Apply buffered updates that now link (holding the implausible ones); drop the
        ones now stale. Returns False when an update broke the book (its checksum failed)."""
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
            if diff.last_id - self.applied_id > self.max_id_jump and not self._confirmed(
                diff, out, now_ns, building=building
            ):
                continue
            applied = self._apply(diff, out, now_ns, building=building)
            if applied is _Applied.APPLIED:
                self.stats.conn(diff.conn_id).first_wins += 1
            elif applied is _Applied.BROKEN:
                return False
        if self.sync is Sync.HOLE and not pending and not self._held:
            self._sync(SyncEvent.HOLE_CLOSED, out)
        return True

    def _drain_after_snapshot(self, out: list[ArbiterEvent], now_ns: int) -> bool:
        """Apply buffered updates to the freshly loaded book without publishing them: the
        BookReset that follows publishes the book as it stands after them. False when one
        of them broke the book. Connections to reopen (a reset among them) are in ``out``."""
        discard: list[ArbiterEvent] = []
        seq = self.seq
        intact = self._drain(discard, now_ns, building=True)
        self.seq = seq
        out.extend(e for e in discard if isinstance(e, ReconnectWanted))
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

    def _gap_reason(self, why: str) -> str:
        """``gap A-B: why``, A..B the ids missing before the first buffered update."""
        first = self.applied_id + 1
        last = self._pending[0].first_id - 1 if self._pending else first - 1
        if last > first:
            span = f"{first}-{last}"
        else:
            span = str(first) if last == first else f"after id {self.applied_id}"
        return f"gap {span}: {why}"

    def _check_hole(self, now_ns: int, out: list[ArbiterEvent], conn_id: int = -1) -> None:
        """Opens, closes or declares the hole; ``conn_id``: the connection that just
        delivered, whose held updates its own stream may have contradicted."""
        if self.sync is Sync.SYNCED:
            if not self._pending:
                return  # the common case
            self._sync(SyncEvent.HOLE_OPENED, out, now_ns=now_ns)
        elif self.sync is not Sync.HOLE:
            return
        if self._held:
            # Held updates the book has since passed (other copies moved it) are obsolete.
            applied = self.applied_id
            passed = [d for d in self._held if d.last_id <= applied]
            for diff in passed:
                self._held.remove(diff)
            self.stats.obsolete += len(passed)
        if conn_id >= 0:
            self._forget_contradicted(conn_id, now_ns, out)
        if self._held:
            self._forget_overlapped(now_ns, out)
        if self._suspect_since_ns:
            self._prune_suspects()
        if not self._pending and not self._held:
            self._sync(SyncEvent.HOLE_CLOSED, out)
            return
        if self._held and len(self._conn_high) < 2:
            held = self._held[0]
            reason = (
                f"implausible ids from conn {held.conn_id}: {held.first_id}-{held.last_id}"
                " with no other connection to confirm them"
            )
            self._sync(SyncEvent.GAP, out, reason=reason)
        elif self._pending and self._gap_is_certain():
            self._sync(
                SyncEvent.GAP, out, reason=self._gap_reason("ids missing on every connection")
            )
        elif now_ns - self._hole_since_ns >= (window_ns := self.limits.reorder_window_ns):
            if self._suspect_since_ns and self._drop_unconfirmed(now_ns, out):
                if not self._pending and not self._held:
                    self._sync(SyncEvent.HOLE_CLOSED, out)
                    return
                oldest_ns = min(self._suspect_since_ns.values(), default=now_ns)
                if not self._plausible_pending() and now_ns - oldest_ns < window_ns:
                    # Only younger implausible copies wait: each gets its window.
                    self._hole_since_ns = oldest_ns
                    return
            if self._pending:
                reason = self._gap_reason("reorder window passed with ids missing")
            else:
                held = self._held[0]
                reason = (
                    f"implausible ids from conn {held.conn_id}: {held.first_id}-{held.last_id}"
                    " not confirmed within the reorder window"
                )
            self._sync(SyncEvent.GAP, out, reason=reason)

    # --- plausibility -------------------------------------------------------------------

    def _confirmed(
        self, diff: DepthDiff, out: list[ArbiterEvent], now_ns: int, *, building: bool = False
    ) -> bool:
        """``diff`` links but jumps beyond max_id_jump. True when it and the identical copies
        held (same ids, same levels) come from more than half of the trusted connections
        that are up, two at least (apply it, the copies forgotten); otherwise it is held.
        A majority, not one other copy: a connection opened to the same endpoint (a
        replacement, a second connection) may carry the same faulty copies."""
        same = [
            held
            for held in self._held
            if held.first_id == diff.first_id
            and held.last_id == diff.last_id
            and held.bids == diff.bids
            and held.asks == diff.asks
        ]
        if same and self._majority({diff.conn_id, *(held.conn_id for held in same)}):
            for held in same:
                self._held.remove(held)
            self.stats.confirmed += 1
            return True
        self.stats.implausible += 1
        self.stats.conn(diff.conn_id).implausible += 1
        if len(self._held) >= self.limits.max_pending:
            self._held.pop(0)
            self.stats.pending_dropped += 1
        self._held.append(diff)
        self._suspect_since_ns.setdefault(diff.conn_id, now_ns)
        self._warn(
            ("implausible", diff.conn_id),
            now_ns,
            "update %d-%d from conn %d jumps %d ids past id %d (max_id_jump %d): held",
            diff.first_id,
            diff.last_id,
            diff.conn_id,
            diff.last_id - self.applied_id,
            self.applied_id,
            self.max_id_jump,
        )
        if not building:
            self._sync(SyncEvent.UPDATE_HELD, out, now_ns=now_ns)
        return False

    def _trusted(self, conn_id: int) -> bool:
        """Whether ``conn_id``'s ids may confirm or contradict another's copy: not asked to
        reconnect for a contradicted copy, and placed in the book's sequence."""
        return self.conns.trusted(conn_id)

    def _majority(self, conn_ids: set[int]) -> bool:
        """True when ``conn_ids`` hold two and more than half of the connections that are
        up and trusted (:meth:`_trusted`)."""
        trusted = [c for c in self._conn_high if self._trusted(c)]
        votes = sum(1 for c in trusted if c in conn_ids)
        return votes >= 2 and 2 * votes > len(trusted)

    def _forget_contradicted(self, conn_id: int, now_ns: int, out: list[ArbiterEvent]) -> None:
        """Discards the held and far-ahead buffered updates of ``conn_id`` that its own
        stream, in order, has since gone below: copies the other connections never
        confirmed. The connection is counted and asked to reconnect."""
        high = self._conn_high.get(conn_id, -1)
        contradicted = [d for d in self._held if d.conn_id == conn_id and d.last_id > high]
        for diff in contradicted:
            self._held.remove(diff)
        pending = self._pending
        index = len(pending) - 1
        while index >= 0:
            diff = pending[index]
            if diff.first_id - self.applied_id <= self.max_id_jump:
                break  # sorted by first id: the rest is plausible
            if diff.conn_id == conn_id and diff.last_id > high:
                del pending[index]
                contradicted.append(diff)
            index -= 1
        if not contradicted:
            return
        first = contradicted[0]
        reason = (
            f"implausible ids from conn {conn_id}: {first.first_id}-{first.last_id},"
            f" contradicted by its own later id {high}"
        )
        self._blame(conn_id, contradicted, reason, now_ns, out)

    def _forget_overlapped(self, now_ns: int, out: list[ArbiterEvent]) -> None:
        """Discards the held updates another copy ended inside of: the book applied their
        first ids from other copies ending before their last id, or another trusted
        connection's latest update ends there. The venue's updates cover disjoint ids, so
        those copies contradict them. Their connections are blamed."""
        applied = self.applied_id
        moved = applied > self._snapshot_id
        highs = [(c, high) for c, high in self._conn_high.items() if self._trusted(c)]
        overlapped: dict[int, tuple[list[DepthDiff], int]] = {}
        for diff in self._held:
            if moved and diff.first_id <= applied:
                at = applied
            else:
                inside = (
                    h for c, h in highs if c != diff.conn_id and diff.first_id <= h < diff.last_id
                )
                found = next(inside, None)
                if found is None:
                    continue
                at = found
            overlapped.setdefault(diff.conn_id, ([], at))[0].append(diff)
        for conn_id, (copies, at) in overlapped.items():
            for diff in copies:
                self._held.remove(diff)
            first = copies[0]
            reason = (
                f"implausible ids from conn {conn_id}: {first.first_id}-{first.last_id},"
                f" contradicted by another copy ending at id {at}"
            )
            self._blame(conn_id, copies, reason, now_ns, out)

    def _far_ahead(self) -> list[DepthDiff]:
        """The buffered updates starting more than max_id_jump past the book's id."""
        pending = self._pending
        limit = self.applied_id + self.max_id_jump
        index = len(pending)
        while index > 0 and pending[index - 1].first_id > limit:
            index -= 1
        return list(pending[index:])

    def _plausible_pending(self) -> bool:
        """True when a buffered update starts within max_id_jump of the book's id."""
        pending = self._pending
        return bool(pending) and pending[0].first_id - self.applied_id <= self.max_id_jump

    def _prune_suspects(self) -> None:
        """Forgets the connections none of whose implausible copies waits any more."""
        waiting = {d.conn_id for d in self._held}
        waiting.update(d.conn_id for d in self._far_ahead())
        for conn_id in [c for c in self._suspect_since_ns if c not in waiting]:
            del self._suspect_since_ns[conn_id]

    def _at_book(self, conn_id: int) -> int | None:
        """Another connection that is up, at or past the book's id, with no implausible
        copy waiting; None when there is none."""
        applied = self.applied_id
        suspects = self._suspect_since_ns
        return next(
            (
                other
                for other, high in self._conn_high.items()
                if high >= applied
                and other != conn_id
                and other not in suspects
                and self._trusted(other)
            ),
            None,
        )

    def _drop_unconfirmed(self, now_ns: int, out: list[ArbiterEvent]) -> bool:
        """The reorder window passed on implausible copies: those of a connection whose
        oldest waited the window while another connection, at the book's id, delivered
        since it came and did not confirm it are dropped, and that connection is blamed
        (the venue's stream as the others carry it went on without them). True when some
        were dropped."""
        self._prune_suspects()
        window_ns = self.limits.reorder_window_ns
        applied = self.applied_id
        dropped = False
        for conn_id, since_ns in list(self._suspect_since_ns.items()):
            if now_ns - since_ns < window_ns:
                continue
            witness = next(
                (
                    other
                    for other, high in self._conn_high.items()
                    if other != conn_id
                    and other not in self._suspect_since_ns
                    and self._trusted(other)
                    and high >= applied
                    and self._heard_ns.get(other, -1) > since_ns
                ),
                None,
            )
            if witness is None:
                continue
            copies = [d for d in self._held if d.conn_id == conn_id]
            for diff in copies:
                self._held.remove(diff)
            for diff in self._far_ahead():
                if diff.conn_id == conn_id:
                    self._pending.remove(diff)
                    copies.append(diff)
            del self._suspect_since_ns[conn_id]
            first = copies[0]
            reason = (
                f"implausible ids from conn {conn_id}: {first.first_id}-{first.last_id},"
                f" not confirmed within the reorder window by conn {witness},"
                f" at the book's id {applied}"
            )
            self._blame(conn_id, copies, reason, now_ns, out)
            dropped = True
        return dropped

    def _blame(
        self,
        conn_id: int,
        copies: list[DepthDiff],
        reason: str,
        now_ns: int,
        out: list[ArbiterEvent],
    ) -> None:
        """``copies`` of ``conn_id`` (or its snapshot) were contradicted and are dropped:
        counted against it, logged (rate-limited), and it is reopened while it is up."""
        self.stats.obsolete += len(copies)
        self.stats.conn(conn_id).disagreements += 1
        self._warn(("disagrees", conn_id), now_ns, "%s; reconnecting it", reason)
        if conn_id in self._conn_high and ConnAction.ASK_RECONNECT in self.conns.blame(conn_id):
            out.append(ReconnectWanted(self.key, conn_id, reason))

    def _forget_far_ahead(self) -> None:
        """After a snapshot: buffered updates that cannot link to it and start more than
        max_id_jump past it are forgotten (a resync must not leave them to cause another)."""
        pending = self._pending
        limit = self.applied_id + self.max_id_jump
        while pending and pending[-1].first_id > limit:
            pending.pop()
            self.stats.obsolete += 1

    def _forget(self, updates: SortedKeyList | list[DepthDiff]) -> None:
        self.stats.obsolete += len(updates)
        updates.clear()

    def _top_connection_id(self) -> int:
        """The highest latest id of the connections that are up; -1 when none delivered."""
        return max(self._conn_high.values(), default=-1)

    def _check_behind(self, diff: DepthDiff, now_ns: int, out: list[ArbiterEvent]) -> None:
        """Stale ``diff`` arrived: is every connection below the book's id, with none
        catching up, for longer than reset_window_ns, after the book had moved past its
        snapshot? Then the venue reset its ids (or the book's id came from a bogus copy):
        rebuild. Looked at on every stale update while they are below it."""
        applied = self.applied_id
        top = self._top_connection_id()
        behind_ns = self._behind_for_ns(diff, now_ns)
        if behind_ns < self.reset_window_ns:
            return
        reason = (
            f"venue reset: every connection below the book's id {applied}"
            f" for {behind_ns // 1_000_000} ms (up to id {top})"
        )
        self._sync(SyncEvent.VENUE_RESET, out, reason=reason, now_ns=now_ns)

    def _behind_for_ns(self, diff: DepthDiff, now_ns: int) -> int:
        """Stale ``diff`` arrived: how long every connection has been below the book's id
        with none catching up, after the book had moved past its snapshot (-1: they are
        not). Kept for :meth:`_reset_shown` while the book is not built."""
        applied = self.applied_id
        top = self._top_connection_id()
        if applied <= self._snapshot_id or not -1 < top < applied:
            self._not_behind()
            # Not looked at again for a quarter window: recognised within 1.25 windows.
            self._behind_check_ns = now_ns + self.reset_window_ns // 4
            return -1
        if self._behind_since_ns < 0 or self._behind_at_id != applied:
            # Below it from now (the book moved since they were last: one was past it).
            self._not_behind()
            self._behind_since_ns = now_ns
            self._behind_at_id = applied
        if self._catching_up(diff):
            # Lag, not a reset: the window starts again from this copy.
            self._behind_since_ns = now_ns
        self._behind_shown_ns = now_ns - self._behind_since_ns
        return self._behind_shown_ns

    def _reset_shown(self) -> int:
        """How long every connection had been below the book's id, none catching up, when
        the latest stale update showed it, if for the reset window at least (the live
        rule's evidence of a venue reset); -1 otherwise."""
        if self._behind_since_ns < 0 or self._behind_at_id != self.applied_id:
            return -1
        return self._behind_shown_ns if self._behind_shown_ns >= self.reset_window_ns else -1

    def _catching_up(self, diff: DepthDiff) -> bool:
        """True when stale ``diff`` shows its connection catching up with the book: a copy
        of applied updates past its connection's previous one, agreeing with them
        (:meth:`AppliedRing.agrees <gateway.core.audit.AppliedRing.agrees>`). A connection
        one of whose copies disagrees is not catching up while they are all below the book."""
        conn_id = diff.conn_id
        if conn_id in self._behind_unlike:
            return False
        if diff.last_id <= self._snapshot_id:
            # No applied update to compare it with: see _below_snapshot_diff.
            return conn_id in self._below_snapshot
        if diff.last_id <= self._behind_copies.get(conn_id, -1):
            return False
        agrees = self.applied_ring.agrees(diff)
        if agrees is None:
            return False
        if not agrees:
            self._behind_unlike.add(conn_id)
            return False
        self._behind_copies[conn_id] = diff.last_id
        return True

    def _below_snapshot_diff(self, diff: DepthDiff) -> None:
        """Keeps :attr:`_below_snapshot` as ``diff`` arrives (before its connection's latest
        id is set). A connection below the snapshot the book was built from (or silent)
        when it was built, whose ids only rise below it since, is a stream lagging a REST
        snapshot ahead of it: catching up while it goes on so. Once it reaches the snapshot
        the applied updates decide. Ids that go back on any connection (its stream
        restarted: each is in order) end it for every connection."""
        latest = self._conn_high.get(diff.conn_id, -1)
        if latest >= 0 and diff.first_id <= latest:
            self._below_snapshot.clear()
        elif diff.last_id > self._snapshot_id:
            self._below_snapshot.discard(diff.conn_id)

    def _not_behind(self) -> None:
        """Some connection is at or past the book's id, or the book was rebuilt."""
        self._behind_since_ns = -1
        self._behind_shown_ns = -1
        self._behind_copies.clear()
        self._behind_unlike.clear()

    # --- audits (counted and logged only) ---------------------------------------------------

    def on_audit_snapshot(self, snap: DepthSnapshot, now_ns: int) -> list[ArbiterEvent]:
        """A REST snapshot fetched to audit the book, never applied: compared with the book
        at the snapshot's id, now or once the book reaches it (a later audit snapshot
        replaces one still waiting). Returns no event: an audit never changes the book."""
        if self.sync not in _WITH_BOOK:
            self.stats.audit_rest_skipped += 1
        elif snap.last_id > self.applied_id:
            if self._rest_audit is not None:
                self.stats.audit_rest_skipped += 1
            self._rest_audit = snap
        else:
            self._finish_rest_audit(snap, now_ns)
        return []

    def _finish_rest_audit(self, snap: DepthSnapshot, now_ns: int) -> None:
        self._rest_audit = None
        result = compare_rest(snap, self.applied_ring, self.book, self.audit_depth)
        if result.verdict is RestVerdict.AGREES:
            self.stats.audit_rest_ok += 1
        elif result.verdict is RestVerdict.NOT_COMPARABLE:
            self.stats.audit_rest_skipped += 1
        else:
            self.stats.audit_rest_drift += 1
            self._warn(
                "rest drift",
                now_ns,
                "audit: REST snapshot at id %d disagrees with the live book at id %d: %s",
                snap.last_id,
                self.applied_id,
                result.detail,
            )

    def _start_sample(self, diff: DepthDiff, now_ns: int) -> None:
        """The duplicates of ``diff`` (just applied) will be compared with it."""
        self._finish_sample(now_ns)
        self._since_sample = 0
        self._sample = AgreementSample(diff.last_id, {diff.conn_id})
        self._sample_id = diff.last_id

    def _audit_copy(self, diff: DepthDiff, now_ns: int, out: list[ArbiterEvent]) -> None:
        """A duplicate ending at the sampled id: compared with the applied updates that
        tile its ids (none: batched differently, not compared)."""
        sample = self._sample
        if sample is None or diff.conn_id in sample.applied_conns or diff.conn_id in sample.copies:
            return
        applied = self.applied_ring.tiling(diff.first_id, diff.last_id)
        if applied is None:
            return
        sample.add(diff, applied)
        others = len(self._conn_high.keys() - sample.applied_conns)
        if len(sample.copies) >= others:
            self._finish_sample(now_ns, out)

    def _finish_sample(self, now_ns: int, out: list[ArbiterEvent] | None = None) -> None:
        """Counts and logs the connections the sample blames; with ``out``, those a
        majority of the others contradicts are reset (their connection reopened)."""
        sample = self._sample
        self._sample = None
        self._sample_id = -1
        if sample is None:
            return
        blamed = sample.blamed()
        if not blamed:
            return
        self.stats.audit_disagreements += 1
        for conn_id in blamed:
            self.stats.conn(conn_id).audit_disagreements += 1
        self._warn(
            ("audit disagreement", blamed),
            now_ns,
            "audit: copies of update ending at id %d disagree; blamed conn(s) %s",
            sample.last_id,
            ", ".join(str(c) for c in sorted(blamed)),
        )
        if out is None or blamed >= sample.applied_conns | sample.copies.keys():
            return  # no majority: nothing says which copy is right
        for conn_id in sorted(blamed):
            reason = f"conn {conn_id}'s copy of update {sample.last_id} contradicts the others'"
            out.append(ReconnectWanted(self.key, conn_id, reason))

    def _rebuilt(self, now_ns: int, base_id: int = -1) -> None:
        """The book is rebuilt at ``base_id`` (-1: its sequence forgotten): the applied
        updates no longer lead to it."""
        self._finish_sample(now_ns)
        self.applied_ring.clear(base_id)
        if base_id < 0 and self._rest_audit is not None:
            # A venue reset: the waiting audit snapshot's id is of the old sequence.
            self._rest_audit = None
            self.stats.audit_rest_skipped += 1
        self._since_sample = 0

    def _warn(self, cause: Hashable, now_ns: int, message: str, *args: object) -> None:
        """A warning of this book, at most one line per ``cause`` a minute."""
        self._limited_log.warning(
            cause, now_ns / 1e9, "%s: " + message, self.key, *args, extra=self._log_fields
        )
