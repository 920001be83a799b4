"""What both arbitration modes share: link rules, the arbiter interface (its counters:
:class:`gateway.core.stats.SymbolStats`), connection-wide sequence checks and trade dedup
(docs/architecture.md, Arbitration).

Pure: no I/O, no event loop. The modes themselves: :mod:`gateway.core.sequenced` (venues
whose update ids are shared by every connection) and :mod:`gateway.core.replicated` (venues
whose connections share no ids). Link rules are venue rules (:class:`LinkRule`); the
arbiters know none of them.
"""

from __future__ import annotations

import enum
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from typing import Protocol

from gateway.core.backoff import Backoff
from gateway.core.book import L2Book
from gateway.core.model import ArbiterEvent
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import GatewayEvent
from gateway.core.model import SymbolState
from gateway.core.model import Trade
from gateway.core.model import TradeOut
from gateway.core.stats import SymbolStats

#: Default time a future update may wait for the missing ids from another connection.
DEFAULT_REORDER_WINDOW_NS: Final = 100_000_000
#: Default bound of the buffer of updates that cannot be applied yet.
DEFAULT_MAX_PENDING: Final = 4096
#: A snapshot that is not used (it builds a crossed book, or the book refuses it) is
#: followed by a wait before the next is asked: it starts here and doubles with each
#: unused snapshot in a row, up to the maximum.
SNAPSHOT_RETRY_INITIAL_S: Final = 1.0
SNAPSHOT_RETRY_MAX_S: Final = 60.0
#: Why subscribers are told ``stale`` when no connection carrying the symbol is up.
ALL_DOWN_REASON: Final = "every upstream connection down"
#: The range of a trade id the trade dedup stores in its ring (an ``array("q")``).
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ArbiterLimits:
    """The bounds of a symbol's arbiter, as a venue configures them (``venues[]``); the
    pipeline hands them whole to every book it makes. Raises ValueError when out of range."""

    #: How long a future update may wait for the missing ids from another connection.
    reorder_window_ns: int = DEFAULT_REORDER_WINDOW_NS
    #: Bound of the buffer of updates that cannot be applied yet (and of held updates).
    max_pending: int = DEFAULT_MAX_PENDING
    #: Cap of each book's levels per side. None: the venue's default cap where its adapter
    #: makes the arbiter (``VenueAdapter.new_arbiter``); an arbiter given None keeps all
    #: (:class:`~gateway.core.book.L2Book` checks it).
    max_levels: int | None = None
    #: The sequenced books' plausibility bound (:attr:`LinkRule.max_id_jump`); None: the
    #: link rule's own.
    max_id_jump: int | None = None

    def __post_init__(self) -> None:
        if self.reorder_window_ns < 0 or self.max_pending < 1:
            raise ValueError("reorder_window_ns must be >= 0, max_pending >= 1")
        if self.max_id_jump is not None and self.max_id_jump < 1:
            raise ValueError("max_id_jump must be >= 1")


#: The bounds of an arbiter by default.
DEFAULT_ARBITER_LIMITS: Final = ArbiterLimits()


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
    #: The largest jump ``last_id - applied_id`` one update may plausibly make: beyond it,
    #: the update is held until another connection confirms it (see
    #: :mod:`gateway.core.sequenced`). Sized far above the venue's busiest symbol.
    max_id_jump: int
    #: A connection's ids go down only at a reset snapshot (Bybit ``u == 1``): an update
    #: below its connection's previous one, no reset snapshot between, shows that stream
    #: restarted in no known sequence. False where a reset comes as an update (OKX) or
    #: where resets are recognised, not declared.
    ids_fall_only_at_reset_snapshot: bool

    def classify(self, diff: DepthDiff, applied_id: int) -> Link: ...

    def continues(self, diff: DepthDiff, last_id: int) -> bool:
        """True when ``diff`` comes right after id ``last_id`` in one connection's stream
        (its snapshot's or its previous update's): no update of the venue between them.
        Changes nothing (a rule's state is the book's, not a connection's)."""
        ...

    def past_reset(self) -> frozenset[int]:
        """The connections that already delivered their copy of the venue reset the book
        is applying (the rule saw it before the reset applied): they lag no reset. Empty
        for a rule that keeps no state (:class:`StatelessRule`)."""
        ...

    def on_snapshot(self, snap: DepthSnapshot) -> None:
        """The book was rebuilt from ``snap``; a rule that keeps state (OKX) forgets what
        the snapshot made history. Nothing for a :class:`StatelessRule`."""
        ...

    def observe(self, diff: DepthDiff) -> None:
        """``diff`` is dropped unclassified (its connection lags a venue reset); a rule that
        keeps state (OKX) notes a copy of a reset among it, so that its connection is
        known past that reset when it applies (:meth:`past_reset`). Nothing for a
        :class:`StatelessRule`."""
        ...


class StatelessRule:
    """The base of a link rule that keeps no state between updates: no connection is known
    past a reset before it applies, and a snapshot changes nothing of the rule."""

    #: Unless the venue says so: its ids may go down unannounced (recognised by the book).
    ids_fall_only_at_reset_snapshot: bool = False

    def past_reset(self) -> frozenset[int]:
        return frozenset()

    def on_snapshot(self, snap: DepthSnapshot) -> None:
        return None

    def observe(self, diff: DepthDiff) -> None:
        return None


def crossed_reason(book: L2Book) -> str | None:
    """``crossed book (bid X >= ask Y)`` with the venue's prices, or None when ``book``
    is not crossed."""
    crossing = book.crossing()
    if crossing is None:
        return None
    return f"crossed book (bid {crossing[0][0]} >= ask {crossing[1][0]})"


def snapshot_retry(backoff: Backoff) -> tuple[int, str]:
    """The wait in ns before the next snapshot after one more unused snapshot in a row
    (counted on ``backoff``), and the words for it."""
    delay_s = backoff.ceiling_s()
    backoff.failures += 1
    return int(delay_s * 1e9), f"snapshot not used; next snapshot in {delay_s:g} s"


def snapshot_retry_backoff() -> Backoff:
    """The backoff of snapshots that keep being unused (crossed, refused): no jitter (its
    ceiling is the wait), from :data:`SNAPSHOT_RETRY_INITIAL_S` to :data:`SNAPSHOT_RETRY_MAX_S`."""
    return Backoff(SNAPSHOT_RETRY_INITIAL_S, SNAPSHOT_RETRY_MAX_S)


#: A venue's checksum of a book (OKX top 25, Kraken top 10).
Checksum = Callable[[L2Book], int]


class SymbolArbiter(Protocol):
    """What the service, the fan-out and verify use of a symbol's arbiter, whatever the
    venue's mode (:class:`~gateway.core.sequenced.SequencedBook` or
    :class:`~gateway.core.replicated.ReplicatedBook`)."""

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


class ConnectionSequenceChecker:
    """Connection-wide message counters (Coinbase ``sequence_num``): a jump means that
    connection lost messages. Pure; one instance per venue.

    The venue numbers a connection's messages from 0: on a connection :meth:`reset` when
    it came up, a first message above 0 is a jump (what was lost may be a snapshot). A
    connection never reset (joined mid-way) takes its first number as it comes. A message
    at or below the last number is late (:meth:`late`): the venue's docs say it "can be
    ignored or represent a message that has arrived out of order"."""

    def __init__(self) -> None:
        self._last: dict[int, int] = {}
        self.gaps = 0

    def reset(self, conn_id: int) -> None:
        """A new connection starts its own counter, at 0."""
        self._last[conn_id] = -1

    def forget(self, conn_id: int) -> None:
        """The connection ended."""
        self._last.pop(conn_id, None)

    def late(self, conn_id: int, seq: int) -> bool:
        """True when ``seq`` is not above the last number of ``conn_id``: a duplicate, or a
        message that arrived after the one behind it (whose jump was already seen)."""
        last = self._last.get(conn_id)
        return last is not None and seq <= last

    def on_seq(self, conn_id: int, seq: int) -> bool:
        """True when messages were lost on ``conn_id`` before this one."""
        last = self._last.get(conn_id)
        self._last[conn_id] = seq if last is None else max(last, seq)
        if last is not None and seq > last + 1:
            self.gaps += 1
            return True
        return False


class TradeDedup:
    """First copy of each trade wins across connections, by the venue's trade id.

    Remembers the ids of the last ``capacity`` trades it took; a copy arriving after that
    many newer trades were taken is treated as new (a bounded memory, and far beyond any
    connection's lag). Exact for any ids in any arrival order; compact for ids that
    increase per symbol (most venues'), which it sees trade by trade: nothing is declared.

    The last ``capacity`` trades taken sit in a ring in the order they were taken. A trade
    whose id is above every id taken so far (the usual case) is stored there as it is, so
    the ring's ids, read from its oldest slot, never decrease and are searched by bisection.
    Any other trade taken (a late first copy, ids that do not increase) keeps the ring
    sorted with a placeholder slot, a copy of the newest id flagged as not an id, and is
    remembered in a set with its own queue, in the order taken.
    """

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        #: Ids taken, by slot: the ring's next slot is its oldest once it is full.
        self._ring = array("q", bytes(8 * capacity))
        #: 1 where the slot holds the id taken there, 0 where it is a placeholder.
        self._real = bytearray(capacity)
        self._next = 0
        self._full = False
        #: The highest id stored as it is; none yet: the lowest int64, which is never stored
        #: as it is (an id must be above ``_top`` to be), so a placeholder copying it is
        #: never mistaken for an id.
        self._top = _INT64_MIN
        #: Ids taken out of order, still remembered (each has a placeholder slot).
        self._late: set[int] = set()
        self._late_order: deque[int] = deque()
        self.duplicates = 0
        self.accepted = 0

    def on_trade(self, trade: Trade) -> list[GatewayEvent]:
        trade_id = trade.trade_id
        if self._top < trade_id <= _INT64_MAX:
            self._take(trade_id, True)
        elif self._seen(trade_id):
            self.duplicates += 1
            return []
        else:
            self._take(trade_id, False)
        self.accepted += 1
        return [TradeOut(trade)]

    def remembered(self) -> int:
        """How many ids are remembered: ``min(accepted, capacity)``."""
        return self.capacity if self._full else self._next

    def _seen(self, trade_id: int) -> bool:
        """True when ``trade_id`` is among the ids remembered."""
        if self._late and trade_id in self._late:
            return True
        ring, end = self._ring, self._next
        if self._full and trade_id <= ring[-1]:
            # The older run, from the oldest slot to the ring's end (all of it when the
            # oldest slot is the first), holds it if anything does.
            lo, end = end, self.capacity
        else:
            lo = 0
        i = bisect_left(ring, trade_id, lo, end)
        # An id's first slot is the one taken as it is: the copies after it are placeholders.
        return i < end and ring[i] == trade_id and self._real[i] == 1

    def _take(self, trade_id: int, in_order: bool) -> None:
        slot = self._next
        if self._full and not self._real[slot]:
            # The oldest slot is the placeholder of the oldest late id: it is forgotten now.
            self._late.discard(self._late_order.popleft())
        if in_order:
            self._ring[slot] = self._top = trade_id
            self._real[slot] = 1
        else:
            self._ring[slot] = self._top
            self._real[slot] = 0
            self._late.add(trade_id)
            self._late_order.append(trade_id)
        slot += 1
        if slot == self.capacity:
            slot = 0
            self._full = True
        self._next = slot
