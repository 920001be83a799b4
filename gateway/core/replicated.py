"""Unsequenced arbitration: one replica of the book per connection, the output following
a leader (docs/architecture.md, Arbitration).

Pure: input events and a clock value in, arbiter events out; no I/O, no event loop.

Two explicit state machines (tables in the style of h11's ``_state.py``, see
:mod:`gateway.core.transitions`):

- :data:`REPLICA_TRANSITIONS`: each connection's replica (:class:`ReplicaState`);
- :data:`OUTPUT_TRANSITIONS`: the published book (:class:`Output`), which also gives what
  subscribers are told (:class:`~gateway.core.model.SymbolState`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Final

from gateway.core.arbiter import ALL_DOWN_REASON
from gateway.core.arbiter import Checksum
from gateway.core.arbiter import crossed_reason
from gateway.core.arbiter import snapshot_retry
from gateway.core.arbiter import snapshot_retry_backoff
from gateway.core.audit import top_levels
from gateway.core.backoff import Backoff
from gateway.core.book import BadLevel
from gateway.core.book import L2Book
from gateway.core.lograte import LimitedLogger
from gateway.core.lograte import LogLimiter
from gateway.core.model import ArbiterEvent
from gateway.core.model import BookCrossed
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level
from gateway.core.model import ResubscribeWanted
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.model import log_fields
from gateway.core.stats import SymbolStats
from gateway.core.transitions import Table
from gateway.core.transitions import transition

log = logging.getLogger(__name__)


# --- the replica machine ------------------------------------------------------------------


class ReplicaState(enum.Enum):
    #: No usable copy: before this connection's first snapshot, or since it was found wrong
    #: (a resubscribe was asked for).
    AWAITING_SNAPSHOT = "awaiting snapshot"
    #: Built from a snapshot whose checksum matched, and every update since matched too.
    VALID = "valid"
    #: A snapshot built a crossed replica (a venue whose books never cross): the
    #: connection's resubscribe waits until the replica's retry deadline.
    RETRY_WAIT = "retry wait"


class ReplicaEvent(enum.Enum):
    #: A snapshot loaded and its checksum (where the venue sends one) matched.
    SNAPSHOT_MATCHED = "snapshot matched"
    #: Found wrong: a bad snapshot or update, a checksum mismatch, lost messages, an
    #: update that left it crossed (a venue whose books never cross).
    FAILED = "failed"
    #: A snapshot built a crossed replica (a venue whose books never cross).
    SNAPSHOT_CROSSED = "snapshot crossed"
    #: The replica's retry deadline passed.
    RETRY_DUE = "retry due"


class ReplicaAction(enum.Enum):
    #: Clear the replica, count the failure, publish a ResubscribeWanted for its connection.
    RESUBSCRIBE = "resubscribe"
    #: Clear the replica and set its retry deadline (a backoff of crossed snapshots in a row).
    START_RETRY_CLOCK = "start retry clock"
    #: Publish a ResubscribeWanted for the replica's connection.
    RETRY = "retry"


_RS, _RE = ReplicaState, ReplicaEvent

REPLICA_TRANSITIONS: Final[Table[ReplicaState, ReplicaEvent, ReplicaAction]] = {
    (_RS.AWAITING_SNAPSHOT, _RE.SNAPSHOT_MATCHED): (_RS.VALID, ()),
    (_RS.VALID, _RE.SNAPSHOT_MATCHED): (_RS.VALID, ()),
    (_RS.AWAITING_SNAPSHOT, _RE.FAILED): (_RS.AWAITING_SNAPSHOT, (ReplicaAction.RESUBSCRIBE,)),
    (_RS.VALID, _RE.FAILED): (_RS.AWAITING_SNAPSHOT, (ReplicaAction.RESUBSCRIBE,)),
    (_RS.AWAITING_SNAPSHOT, _RE.SNAPSHOT_CROSSED): (
        _RS.RETRY_WAIT,
        (ReplicaAction.START_RETRY_CLOCK,),
    ),
    (_RS.VALID, _RE.SNAPSHOT_CROSSED): (_RS.RETRY_WAIT, (ReplicaAction.START_RETRY_CLOCK,)),
    (_RS.RETRY_WAIT, _RE.SNAPSHOT_CROSSED): (_RS.RETRY_WAIT, ()),
    (_RS.RETRY_WAIT, _RE.SNAPSHOT_MATCHED): (_RS.VALID, ()),
    (_RS.RETRY_WAIT, _RE.FAILED): (_RS.RETRY_WAIT, ()),
    (_RS.RETRY_WAIT, _RE.RETRY_DUE): (_RS.AWAITING_SNAPSHOT, (ReplicaAction.RETRY,)),
}


@dataclass
class Replica:
    """One connection's copy of an unsequenced book."""

    book: L2Book = field(default_factory=L2Book)
    state: ReplicaState = ReplicaState.AWAITING_SNAPSHOT
    #: How far behind the first connection to reach the same book state, smoothed.
    lag_ewma_ns: float = 0.0
    #: Crossed snapshots in a row, and when the resubscribe is due (in RETRY_WAIT).
    snapshot_retry_backoff: Backoff = field(default_factory=snapshot_retry_backoff)
    retry_at_ns: int = 0
    #: The venue event time (ms) of the last update applied since its snapshot: the
    #: point the replica is at (0: its snapshot, which carries no event time).
    event_ms: int = 0
    #: When its snapshot was received (ms): the id of a book at the snapshot's point.
    snapshot_ms: int = -1
    #: Audit: since when every comparison at the same point found this replica apart from
    #: the others (-1: it agreed last time), and whether that episode was counted.
    apart_since_ns: int = -1
    apart_counted: bool = False

    @property
    def valid(self) -> bool:
        """True from a snapshot whose checksum matched until the replica is found wrong."""
        return self.state is ReplicaState.VALID


# --- the output machine -------------------------------------------------------------------


class Output(enum.Enum):
    """The published book."""

    #: Nothing published yet.
    SYNCING = "syncing"
    #: Nothing published yet, and every connection is down.
    STALE_BEFORE_BOOK = "stale before book"
    #: The leader's replica is published.
    LIVE = "live"
    #: Published before; no valid replica now, a connection is up.
    RESYNCING = "resyncing"
    #: Published before; every connection is down.
    STALE = "stale"


class OutputEvent(enum.Enum):
    #: A valid replica became the leader, or stayed it (a fresh snapshot of the leader).
    ELECTED = "elected"
    #: The leader failed or went down and no valid replica is left; a connection is up.
    NO_VALID_REPLICA = "no valid replica"
    #: A replica's snapshot was crossed: it waits before resubscribing (said while no
    #: replica is published).
    REPLICA_WAITS = "replica waits"
    #: No connection is left.
    ALL_DOWN = "all down"


class OutputAction(enum.Enum):
    #: Copy the leader's replica into the published book and start a new epoch (BookReset).
    PUBLISH_RESET = "publish reset"
    #: Publish the difference from the published book to the leader's replica as a delta.
    PUBLISH_SWITCH = "publish switch"
    #: Tell subscribers the new state (StatusChange).
    ANNOUNCE = "announce"


_O, _OE, _OA = Output, OutputEvent, OutputAction

#: Unlisted pairs cannot happen: only a leader fails or goes down into NO_VALID_REPLICA,
#: and there is a leader exactly in LIVE.
OUTPUT_TRANSITIONS: Final[Table[Output, OutputEvent, OutputAction]] = {
    (_O.SYNCING, _OE.ELECTED): (_O.LIVE, (_OA.PUBLISH_RESET, _OA.ANNOUNCE)),
    (_O.STALE_BEFORE_BOOK, _OE.ELECTED): (_O.LIVE, (_OA.PUBLISH_RESET, _OA.ANNOUNCE)),
    (_O.LIVE, _OE.ELECTED): (_O.LIVE, (_OA.PUBLISH_SWITCH,)),
    (_O.RESYNCING, _OE.ELECTED): (_O.LIVE, (_OA.PUBLISH_SWITCH, _OA.ANNOUNCE)),
    (_O.STALE, _OE.ELECTED): (_O.LIVE, (_OA.PUBLISH_SWITCH, _OA.ANNOUNCE)),
    (_O.LIVE, _OE.NO_VALID_REPLICA): (_O.RESYNCING, (_OA.ANNOUNCE,)),
    (_O.SYNCING, _OE.ALL_DOWN): (_O.STALE_BEFORE_BOOK, (_OA.ANNOUNCE,)),
    (_O.LIVE, _OE.ALL_DOWN): (_O.STALE, (_OA.ANNOUNCE,)),
    (_O.RESYNCING, _OE.ALL_DOWN): (_O.STALE, (_OA.ANNOUNCE,)),
    (_O.STALE_BEFORE_BOOK, _OE.ALL_DOWN): (_O.STALE_BEFORE_BOOK, ()),
    (_O.STALE, _OE.ALL_DOWN): (_O.STALE, ()),
    (_O.SYNCING, _OE.REPLICA_WAITS): (_O.SYNCING, (_OA.ANNOUNCE,)),
    (_O.RESYNCING, _OE.REPLICA_WAITS): (_O.RESYNCING, (_OA.ANNOUNCE,)),
    (_O.LIVE, _OE.REPLICA_WAITS): (_O.LIVE, ()),
    (_O.STALE_BEFORE_BOOK, _OE.REPLICA_WAITS): (_O.STALE_BEFORE_BOOK, ()),
    (_O.STALE, _OE.REPLICA_WAITS): (_O.STALE, ()),
}

#: What subscribers are told in each output state.
PUBLISHED_STATE: Final[dict[Output, SymbolState]] = {
    Output.SYNCING: SymbolState.SYNCING,
    Output.STALE_BEFORE_BOOK: SymbolState.STALE,
    Output.LIVE: SymbolState.LIVE,
    Output.RESYNCING: SymbolState.RESYNCING,
    Output.STALE: SymbolState.STALE,
}


class ReplicatedBook:
    """Arbiter, book and published sequence of one symbol of an unsequenced venue (Kraken
    v2, Coinbase): the venue shares no ids across connections (docs/architecture.md, Arbitration).

    - Each connection builds its own replica from its snapshot and updates. A replica is
      valid from a snapshot until its checksum fails, its connection loses a message
      (:meth:`invalidate`) or goes down, or (unless ``may_cross``) an update leaves it
      crossed; a failed replica asks for a resubscribe of that connection
      (:class:`ResubscribeWanted`), never a repair.
    - Unless ``may_cross``, a snapshot that builds a crossed replica is not used: that
      connection resubscribes only after a wait that doubles with each crossed snapshot in
      a row (:data:`ReplicaState.RETRY_WAIT`), so no crossed replica is ever published.
    - The published book follows one leader replica: the leader's updates are published as
      they are (with the levels that truncation to ``depth`` removed).
    - When the leader fails, the valid replica with the best connection score (``scores``),
      of equal scores the one with the lowest lag, becomes leader and the
      switch is published as one ordinary delta, from the published book to that replica;
      a replica whose checksum failed is never chosen.
    - With a checksum, lag is measured by which connection reaches each book state first;
      a follower faster than the leader by more than ``switch_margin_ns`` takes over.

    ``venue_id`` of published messages is the venue's event time in ms (there are no ids)
    of the update the book is at; after a snapshot, or a switch to a replica at its
    snapshot, when that snapshot was received. A switch to a replica behind the old leader
    serves that replica's point: the id may go back (ordering uses ``seq``).
    ``max_levels`` caps every book's levels per side (:class:`~gateway.core.book.L2Book`).

    Audit, without a checksum (Coinbase; a checksum already verifies every replica): every
    ``audit_check_ns`` (0: never), the valid replicas at the leader's point (the same last
    event time) compare their top ``audit_depth`` levels. A replica apart from the
    majority (with no majority among every valid replica, each one apart; a tie among
    some of them settles nothing) at every such comparison for
    ``audit_window_ns`` is counted once per episode (``audit_disagreements``) and logged;
    never acted on.
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
        max_levels: int | None = None,
        may_cross: bool = False,
        audit_check_ns: int = 1_000_000_000,
        audit_window_ns: int = 5_000_000_000,
        audit_depth: int = 10,
    ) -> None:
        if depth is not None and depth < 1:
            raise ValueError("depth must be >= 1")
        self.key = key
        self._log_fields = log_fields(key)
        self.checksum = checksum
        self.depth = depth
        self.switch_margin_ns = switch_margin_ns
        self.lag_alpha = lag_alpha
        self.max_tracked_states = max_tracked_states
        self.max_levels = max_levels
        #: The venue's own books may cross: a crossed replica is published and counted only.
        self.may_cross = may_cross
        self.book = L2Book(max_levels)
        #: The output machine's state.
        self.output = Output.SYNCING
        #: What subscribers were told: PUBLISHED_STATE of the output.
        self.state = SymbolState.SYNCING
        self.epoch = 0
        self.seq = 0
        self.applied_id = -1
        self.stats = SymbolStats()
        self.replicas: dict[int, Replica] = {}
        #: The connection whose replica is published; set exactly in Output.LIVE.
        self.leader: int | None = None
        #: Connection scores (gateway.core.score), the best valid replica's leading a
        #: failover; set by the owner, read here only. Equal scores: the lowest lag.
        self.scores: Mapping[int, float] = {}
        #: checksum of a book state -> (first connection to reach it, when).
        self._first_seen: dict[int, tuple[int, int]] = {}
        self.audit_check_ns = audit_check_ns
        self.audit_window_ns = audit_window_ns
        self.audit_depth = audit_depth
        self._audit_at_ns = 0
        self._limited_log = LimitedLogger(log, LogLimiter(burst=1, window_s=60.0))
        #: Replica failure lines, limited per connection.
        self._failure_log = LimitedLogger(log)

    @property
    def has_book(self) -> bool:
        """True once a book was published: it is served, even while resyncing or stale."""
        return self.output not in (Output.SYNCING, Output.STALE_BEFORE_BOOK)

    @property
    def pending(self) -> int:
        return 0

    # --- inputs -------------------------------------------------------------------------

    def on_connection(self, conn_id: int, up: bool, now_ns: int) -> list[ArbiterEvent]:
        out: list[ArbiterEvent] = []
        if up:
            self.replicas[conn_id] = self._new_replica()
            return out
        self.replicas.pop(conn_id, None)
        if conn_id == self.leader:
            self._elect("leader connection down", out)
        elif not self.replicas:
            self._output(OutputEvent.ALL_DOWN, ALL_DOWN_REASON, out)
        return out

    def on_snapshot(self, snap: DepthSnapshot, now_ns: int) -> list[ArbiterEvent]:
        out: list[ArbiterEvent] = []
        replica = self.replicas.get(snap.conn_id)
        if replica is None:
            replica = self.replicas[snap.conn_id] = self._new_replica()
        try:
            replica.book.load(snap.bids, snap.asks)
        except BadLevel as exc:
            self._refuse(snap.conn_id, replica, f"bad snapshot: {exc}", out, now_ns)
            return out
        self.stats.snapshots += 1
        if self.depth is not None:
            replica.book.truncate(self.depth)
        if not self._verify(replica, snap.checksum):
            self._fail(snap.conn_id, replica, "snapshot checksum mismatch", out, now_ns)
            return out
        if not self.may_cross and replica.book.is_crossed():
            self._snapshot_crossed(snap.conn_id, replica, now_ns, out)
            return out
        replica.snapshot_retry_backoff.reset()
        replica.apart_since_ns, replica.apart_counted = -1, False
        replica.event_ms, replica.snapshot_ms = 0, snap.recv_ns // 1_000_000
        replica.state, _ = transition(
            "replica", REPLICA_TRANSITIONS, replica.state, ReplicaEvent.SNAPSHOT_MATCHED
        )
        if self.leader is None or self.leader == snap.conn_id:
            self._elect("snapshot", out, prefer=snap.conn_id, venue_ms=snap.recv_ns // 1_000_000)
        return out

    def on_diff(self, diff: DepthDiff, now_ns: int) -> list[ArbiterEvent]:
        out: list[ArbiterEvent] = []
        conn = self.stats.conn(diff.conn_id)
        conn.received += 1
        replica = self.replicas.get(diff.conn_id)
        if replica is None or replica.state is not ReplicaState.VALID:
            return out  # nothing to apply to until this connection's next snapshot
        try:
            pruned = replica.book.apply(diff.bids, diff.asks)
        except BadLevel as exc:
            self._refuse(diff.conn_id, replica, f"bad update: {exc}", out, now_ns)
            return out
        removed_bids: list[Level] = []
        removed_asks: list[Level] = []
        if pruned is not None:
            removed_bids, removed_asks = pruned
            if diff.conn_id == self.leader:
                self.stats.levels_pruned += len(removed_bids) + len(removed_asks)
        if self.depth is not None:
            truncated = replica.book.truncate(self.depth)
            removed_bids += truncated[0]
            removed_asks += truncated[1]
        if not self._verify(replica, diff.checksum):
            self._fail(diff.conn_id, replica, "checksum mismatch", out, now_ns)
            return out
        if not self.may_cross and replica.book.is_crossed():
            reason = crossed_reason(replica.book) or "crossed book"
            self.stats.crossed += 1
            self.stats.crossed_faults += 1
            out.append(BookCrossed(self.key, diff.conn_id, reason))
            self._fail(diff.conn_id, replica, reason, out, now_ns)
            return out
        replica.event_ms = diff.event_ms
        if diff.checksum is not None:
            self._measure_lag(diff.conn_id, replica, diff.checksum, now_ns)
        elif self.audit_check_ns and now_ns >= self._audit_at_ns and self._audit_replicas(now_ns):
            self._audit_at_ns = now_ns + self.audit_check_ns
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

    def invalidate(self, conn_id: int, reason: str, now_ns: int) -> list[ArbiterEvent]:
        """``conn_id`` lost messages (a connection-wide sequence jump): its replica is wrong.

        A replica awaiting its snapshot fails too (its connection resubscribes): the
        messages lost may be that snapshot, which then never comes. A replica in its wait
        after a crossed snapshot resubscribes when the wait ends, as before."""
        out: list[ArbiterEvent] = []
        replica = self.replicas.get(conn_id)
        if replica is not None:
            self._fail(conn_id, replica, reason, out, now_ns)
        return out

    def on_timer(self, now_ns: int) -> list[ArbiterEvent]:
        """Resubscribes the replicas whose wait after a crossed snapshot passed."""
        out: list[ArbiterEvent] = []
        for conn_id, replica in self.replicas.items():
            if replica.state is ReplicaState.RETRY_WAIT and replica.retry_at_ns <= now_ns:
                self._replica(conn_id, replica, ReplicaEvent.RETRY_DUE, "retry", out, now_ns)
        return out

    def deadline_ns(self) -> int | None:
        """The earliest retry deadline of a replica waiting after a crossed snapshot."""
        return min(
            (r.retry_at_ns for r in self.replicas.values() if r.state is ReplicaState.RETRY_WAIT),
            default=None,
        )

    # --- the machines -------------------------------------------------------------------

    def _refuse(
        self, conn_id: int, replica: Replica, reason: str, out: list[ArbiterEvent], now_ns: int
    ) -> None:
        """A message whose levels the replica's book refused (BadLevel): a bad update, and
        the replica fails."""
        self.stats.bad_updates += 1
        self._fail(conn_id, replica, reason, out, now_ns)

    def _fail(
        self, conn_id: int, replica: Replica, reason: str, out: list[ArbiterEvent], now_ns: int
    ) -> None:
        """Moves the replica machine on FAILED and carries out its actions."""
        self._replica(conn_id, replica, ReplicaEvent.FAILED, reason, out, now_ns)
        if conn_id == self.leader:
            self._elect(f"leader failed: {reason}", out)

    def _snapshot_crossed(
        self, conn_id: int, replica: Replica, now_ns: int, out: list[ArbiterEvent]
    ) -> None:
        """A snapshot built a crossed replica: not used; its connection waits to resubscribe."""
        reason = crossed_reason(replica.book) or "crossed book"
        self.stats.crossed += 1
        self.stats.crossed_faults += 1
        self.stats.snapshots_unused += 1
        out.append(BookCrossed(self.key, conn_id, reason))
        replica.book.clear()
        replica.state, actions = transition(
            "replica", REPLICA_TRANSITIONS, replica.state, ReplicaEvent.SNAPSHOT_CROSSED
        )
        wait = ""
        for _ in actions:  # the one action: start the retry clock
            delay_ns, wait = snapshot_retry(replica.snapshot_retry_backoff)
            replica.retry_at_ns = now_ns + delay_ns
        if conn_id == self.leader:
            self._elect(f"leader failed: {reason}", out)
        if wait:
            # Said to subscribers while no replica is published (the output's table).
            self._output(OutputEvent.REPLICA_WAITS, f"conn {conn_id}: {reason}; {wait}", out)

    def _replica(
        self,
        conn_id: int,
        replica: Replica,
        event: ReplicaEvent,
        reason: str,
        out: list[ArbiterEvent],
        now_ns: int,
    ) -> None:
        """Moves ``replica``'s machine on ``event`` (not SNAPSHOT_CROSSED, which
        :meth:`_snapshot_crossed` handles) and carries out its actions; the failure's line
        is limited per connection (a connection failing again and again, its messages lost
        or out of order, writes a few a minute)."""
        replica.state, actions = transition("replica", REPLICA_TRANSITIONS, replica.state, event)
        for action in actions:
            if action is ReplicaAction.RESUBSCRIBE:
                replica.book.clear()
                self.stats.replica_failures += 1
                self.stats.resyncs += 1
                self._failure_log.warning(
                    ("failed", conn_id),
                    now_ns / 1e9,
                    "%s: replica of conn %d failed (%s); resubscribing",
                    self.key,
                    conn_id,
                    reason,
                    extra=self._log_fields,
                )
                out.append(ResubscribeWanted(self.key, conn_id, reason))
            elif action is ReplicaAction.RETRY:
                out.append(ResubscribeWanted(self.key, conn_id, "retry after a crossed snapshot"))

    def _elect(
        self, reason: str, out: list[ArbiterEvent], prefer: int | None = None, venue_ms: int = -1
    ) -> None:
        """Make the best valid replica the leader and publish the switch."""
        valid = [(conn_id, r) for conn_id, r in self.replicas.items() if r.valid]
        if not valid:
            self.leader = None
            if not self.replicas:
                self._output(OutputEvent.ALL_DOWN, ALL_DOWN_REASON, out)
            else:
                self._output(OutputEvent.NO_VALID_REPLICA, "no valid replica", out)
            return
        chosen = (
            prefer
            if prefer in dict(valid)
            else max(valid, key=lambda cr: (self.scores.get(cr[0], 0.0), -cr[1].lag_ewma_ns))[0]
        )
        previous, self.leader = self.leader, chosen
        if previous is not None and previous != chosen:
            self.stats.failovers += 1
            log.info(
                "%s: output moves from conn %d to %d (%s)",
                self.key,
                previous,
                chosen,
                reason,
                extra=self._log_fields,
            )
        self._output(OutputEvent.ELECTED, reason, out, venue_ms=venue_ms)

    def _output(
        self, event: OutputEvent, reason: str, out: list[ArbiterEvent], venue_ms: int = -1
    ) -> None:
        """Moves the output machine on ``event`` and carries out its actions."""
        self.output, actions = transition("output", OUTPUT_TRANSITIONS, self.output, event)
        self.state = PUBLISHED_STATE[self.output]
        for action in actions:
            if action is OutputAction.PUBLISH_RESET:
                assert self.leader is not None
                self.book.copy_from(self.replicas[self.leader].book)
                self.epoch += 1
                self.seq = 0
                self.applied_id = venue_ms
                out.append(BookReset(self.key, self.epoch, self.seq, self.applied_id, 0))
            elif action is OutputAction.PUBLISH_SWITCH:
                assert self.leader is not None
                leader = self.replicas[self.leader]
                bids, asks = self.book.diff_to(leader.book)
                if bids or asks:
                    # The id is where the new leader is, which may be behind the old one.
                    at_ms = leader.event_ms if leader.event_ms > 0 else leader.snapshot_ms
                    self._publish(tuple(bids), tuple(asks), at_ms, 0, out, venue_event=False)
            elif action is OutputAction.ANNOUNCE:
                out.append(StatusChange(self.key, self.state, reason))

    # --- internals ----------------------------------------------------------------------

    def _new_replica(self) -> Replica:
        return Replica(L2Book(self.max_levels))

    def _verify(self, replica: Replica, expected: int | None) -> bool:
        if expected is None or self.checksum is None:
            return True
        if self.checksum(replica.book) == expected:
            self.stats.checksum_ok += 1
            return True
        self.stats.checksum_failed += 1
        return False

    def _publish(
        self,
        bids: tuple[Level, ...],
        asks: tuple[Level, ...],
        venue_ms: int,
        recv_ns: int,
        out: list[ArbiterEvent],
        *,
        venue_event: bool = True,
    ) -> None:
        """Publishes a delta; ``venue_ms`` (> 0) becomes the book's id, and the delta's
        event time where it is a venue update's (``venue_event``), not a switch's."""
        self.book.apply(bids, asks)
        self.seq += 1
        self.stats.updates += 1
        if venue_ms > 0:
            self.applied_id = venue_ms
        if self.book.is_crossed():
            self.stats.crossed += 1
        event_ms = venue_ms if venue_ms > 0 and venue_event else None
        out.append(
            BookDelta(
                self.key, self.epoch, self.seq, self.applied_id, bids, asks, recv_ns, event_ms
            )
        )

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

    def _audit_replicas(self, now_ns: int) -> bool:
        """Compares the top levels of the valid replicas at the leader's point; False when
        they are not at one point (the comparison stays due)."""
        leader = self.replicas.get(self.leader) if self.leader is not None else None
        if leader is None or not leader.valid or leader.event_ms <= 0:
            return False
        at_point = [
            conn_id
            for conn_id, replica in self.replicas.items()
            if replica.valid and replica.event_ms == leader.event_ms
        ]
        if len(at_point) < 2:
            return False
        tops = {c: top_levels(self.replicas[c].book, self.audit_depth) for c in at_point}
        groups: list[list[int]] = []
        for conn_id, top in tops.items():
            for members in groups:
                if tops[members[0]] == top:
                    members.append(conn_id)
                    break
            else:
                groups.append([conn_id])
        sizes = sorted((len(members) for members in groups), reverse=True)
        majority = groups[[len(m) for m in groups].index(sizes[0])]
        together = set(majority) if len(sizes) == 1 or sizes[0] > sizes[1] else set()
        if not together and len(tops) < sum(r.valid for r in self.replicas.values()):
            return False  # a tie, with replicas not at this point that could settle it
        for conn_id in tops:
            replica = self.replicas[conn_id]
            if conn_id in together:
                replica.apart_since_ns, replica.apart_counted = -1, False
            elif replica.apart_since_ns < 0:
                replica.apart_since_ns = now_ns
            elif now_ns - replica.apart_since_ns >= self.audit_window_ns and not (
                replica.apart_counted
            ):
                replica.apart_counted = True
                self.stats.audit_disagreements += 1
                self.stats.conn(conn_id).audit_disagreements += 1
                self._limited_log.warning(
                    ("apart", conn_id),
                    now_ns / 1e9,
                    "%s: audit: replica of conn %d apart from the others' top %d levels for %.1f s",
                    self.key,
                    conn_id,
                    self.audit_depth,
                    (now_ns - replica.apart_since_ns) / 1e9,
                    extra=self._log_fields,
                )
        return True

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
