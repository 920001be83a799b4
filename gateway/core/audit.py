"""Audits of a sequenced book that never change it: copies of one update from different
connections must carry the same levels, and a REST snapshot must agree with the live book
at the snapshot's id (docs/architecture.md, Audits).

Pure: no I/O, no event loop. :class:`~gateway.core.sequenced.SequencedBook` keeps an
:class:`AppliedRing` of the updates it applied since its last snapshot and an
:class:`AgreementSample` now and then; this module says what agrees.

The agreement rule. Copies of an update are compared by the ids they cover, never as whole
events: a duplicate covering ids ``f..l`` is compared with the applied updates that tile
exactly ``f..l`` (the first starts at ``f``, the last ends at ``l``, contiguous in the
ring), their levels merged in order (levels are absolute: the later one wins). A copy
batched so that no run of applied updates tiles its ids (Binance USD-M connections may
batch the same ids differently) is not compared. Levels are compared as numbers, so
``"1.50"`` and ``"1.5"`` agree.

The copy rule (:meth:`AppliedRing.agrees`), however a copy is batched: a copy covering ids
``f..l`` changed levels that the applied updates covering those ids changed too (each
venue update is in one of them), to the quantities they had at id ``l``. So each of its
levels must be changed by an applied update ending or crossing into ``f..l``, and the
newest one ending in ``f..l`` that changed it must say the same quantity, unless an applied
update across ``l`` changed it too (its quantity at ``l`` is then unknown). It is decided
only when the ring reaches back to ``f``.
:class:`~gateway.core.sequenced.SequencedBook` uses it to tell a connection lagging behind
the book (its copies agree) from one whose ids restarted.

The REST rule. A REST snapshot at id ``S`` is compared with the live book when the book's
applied id is at or past ``S``: the applied updates after ``S`` are replayed onto a copy of
the snapshot and the top ``depth`` levels of each side compared with the live book's. The
first update replayed must link to ``S`` (it starts at or before ``S + 1``, or its
``prev_id`` is ``S``); when the ring no longer reaches back to ``S`` (or the book was
rebuilt after ``S``) the snapshot is not comparable and is counted as skipped. ``depth``
must be well below the snapshot's depth: levels beyond the snapshot's depth that move
into the top would otherwise differ. For an audit a difference that a later update
overwrote is rightly not seen: the book is right now.

The exact rule, to place a subscription answer (:func:`compare_answer`) or an unplaced
connection's own book (:func:`compare_book`) at id ``S`` in the book's sequence (see
:mod:`gateway.core.placement`): the live book is rewound to ``S``
(:meth:`AppliedRing.rewound`: the updates after ``S`` undone, newest first, by the
before-images kept with them) and its top ``depth`` levels compared with the answer's.
Replaying the updates onto the answer instead would hide every level where the answer
differs from the book at ``S`` that a later update overwrote, and an answer of another
sequence would be taken for the book's. The book's levels at ``S`` are known only where the
book was at ``S`` since the oldest update kept: the id before that update (the base id,
until the ring forgets one) or the last id of an update kept; not inside an update
covering several ids (part of it may be after ``S``), before the ring, or before an update
kept without a before-image (applied while no answer could come). Rewinding restores the
levels the cap pruned too, so the rewound book is the book as it was held at ``S``, whose
top ``depth`` is exact by the same contract as the live book's (:mod:`gateway.core.book`).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Final

from gateway.core.book import BadLevel
from gateway.core.book import BeforeImage
from gateway.core.book import L2Book
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level

#: Applied updates kept per book for the audits (a reference each).
DEFAULT_RING_SIZE: Final = 1024
#: Every this many applied updates, the next duplicates of the update are compared.
DEFAULT_SAMPLE_EVERY: Final = 64
#: Levels per side compared against a REST snapshot.
DEFAULT_AUDIT_DEPTH: Final = 10
#: Ring entries looked at, from the newest, to tile one duplicate's ids.
MAX_TILE_SCAN: Final = 64

#: Merged levels of one side: price -> quantity, as numbers.
Side = dict[float, float]


def merged(
    levels_per_update: Iterable[tuple[Sequence[Level], Sequence[Level]]],
) -> tuple[Side, Side] | None:
    """The levels of updates applied in order, merged (the later one wins); None when a
    level is not a number (such a copy agrees with nothing)."""
    bids: Side = {}
    asks: Side = {}
    try:
        for update_bids, update_asks in levels_per_update:
            for price, qty in update_bids:
                bids[float(price)] = float(qty)
            for price, qty in update_asks:
                asks[float(price)] = float(qty)
    except (TypeError, ValueError):
        return None
    return bids, asks


class AppliedRing:
    """The updates a book applied since it was last built (at id ``base_id``, -1: not
    built), newest last, at most ``size`` (the oldest is forgotten), each with its
    before-image (:class:`~gateway.core.book.BeforeImage`) where the book recorded one
    (:class:`~gateway.core.sequenced.SequencedBook` does only while a connection's
    subscription answer may need placing: recorded on every update, they cost a verify of
    Binance spot BTCUSDT's records about 8% more time). The ring keeps each update alive,
    its levels and their strings included, and the levels each one replaced (the book
    keeps only the levels still in it): a full ring costs ``size`` updates, about 1.6 MB
    for 1024 updates of the simulated Binance venue, 9.0 MB for Binance spot BTCUSDT's
    (47 levels an update, tracemalloc), 9% more with before-images (9.8 MB: the levels an
    update replaced are mostly kept anyway, by the update that set them)."""

    def __init__(self, size: int = DEFAULT_RING_SIZE) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self._updates: deque[DepthDiff] = deque(maxlen=size)
        self._befores: deque[BeforeImage | None] = deque(maxlen=size)
        self.base_id = -1
        #: The id the book was at before the oldest update kept: ``base_id`` until one is
        #: forgotten, then the last id of the newest one forgotten.
        self._start_id = -1

    def append(self, diff: DepthDiff, before: BeforeImage | None = None) -> None:
        """``diff`` was applied to the book; ``before``: what it replaced there (None:
        not recorded, the book cannot be rewound through it)."""
        if len(self._updates) == self._updates.maxlen:
            self._start_id = self._updates[0].last_id
        self._updates.append(diff)
        self._befores.append(before)

    def clear(self, base_id: int = -1) -> None:
        """The book was built again, at ``base_id``."""
        self._updates.clear()
        self._befores.clear()
        self.base_id = self._start_id = base_id

    def __len__(self) -> int:
        return len(self._updates)

    def __iter__(self) -> Iterator[DepthDiff]:
        return iter(self._updates)

    def tiling(self, first_id: int, last_id: int) -> list[DepthDiff] | None:
        """The applied updates that cover exactly ``first_id..last_id``, oldest first;
        None when no contiguous run does (within :data:`MAX_TILE_SCAN` of the newest)."""
        run: list[DepthDiff] = []
        for index, diff in enumerate(reversed(self._updates)):
            if index >= MAX_TILE_SCAN:
                return None
            if not run:
                if diff.last_id == last_id:
                    run.append(diff)
                elif diff.last_id < last_id:
                    return None
                else:
                    continue
            else:
                run.append(diff)
            if run[-1].first_id == first_id:
                run.reverse()
                return run
            if run[-1].first_id < first_id:
                return None
        return None

    def agrees(self, diff: DepthDiff) -> bool | None:
        """Whether ``diff``, a copy of ids the book applied, agrees with the applied updates
        (the copy rule, in the module docstring); None when the ring does not reach back
        to its first id."""
        updates = self._updates
        first_id, last_id = diff.first_id, diff.last_id
        if not updates or updates[0].first_id > first_id:
            return None
        mine = merged([(diff.bids, diff.asks)])
        if mine is None:
            return False
        # Per side, the copy's levels no applied update in its ids changed yet.
        unseen = (dict(mine[0]), dict(mine[1]))
        for update in reversed(updates):
            if update.last_id < first_id or not (unseen[0] or unseen[1]):
                break
            if update.first_id > last_id:
                continue  # after the copy
            theirs = merged([(update.bids, update.asks)])
            if theirs is None:
                return False
            # An update across the copy's last id may have changed a level after it too.
            across = update.last_id > last_id
            for side, levels in zip(unseen, theirs, strict=True):
                for price, qty in levels.items():
                    expected = side.pop(price, None)
                    if expected is not None and not across and qty != expected:
                        return False
        return not (unseen[0] or unseen[1])

    def after(self, snapshot_id: int) -> list[DepthDiff] | None:
        """The applied updates to replay onto a snapshot at ``snapshot_id``, oldest first;
        None when the ring does not reach back to it (the first one after it does not link
        to it)."""
        replay = [diff for diff in self._updates if diff.last_id > snapshot_id]
        if replay:
            first = replay[0]
            if first.first_id > snapshot_id + 1 and first.prev_id != snapshot_id:
                return None
        elif snapshot_id != (self._updates[-1].last_id if self._updates else self.base_id):
            return None
        return replay

    def rewound(self, live: L2Book, at_id: int) -> L2Book | None:
        """The book at ``at_id``: ``live``, the book these updates were applied to (as the
        newest left it), with the updates after ``at_id`` undone, newest first, on a copy
        (``live`` itself when none is after it: read only). None when the book's levels at
        ``at_id`` are not known from here: the book was not at ``at_id`` since the oldest
        update kept (``at_id`` inside an update's ids, after the newest, before the oldest
        kept), or an update to undo has no before-image."""
        undo: list[tuple[DepthDiff, BeforeImage]] = []
        for diff, before in zip(reversed(self._updates), reversed(self._befores), strict=True):
            if diff.last_id <= at_id:
                if diff.last_id != at_id:
                    return None
                break
            if before is None:
                return None
            undo.append((diff, before))
        else:
            if at_id != self._start_id or at_id < 0:
                return None
        if not undo:
            return live
        book = L2Book()
        book.copy_from(live)
        for diff, before in undo:
            book.undo(diff.bids, diff.asks, before)
        return book


@dataclass
class AgreementSample:
    """The copies of one applied update (ending at ``last_id``) seen so far.

    ``applied``: the merged levels that were applied for each compared id range, and the
    connections whose copies were applied. ``copies``: each other connection's levels.
    """

    last_id: int
    applied_conns: set[int]
    #: Per duplicate's connection: its merged levels (None: not numbers), and whether they
    #: equal the applied ones.
    copies: dict[int, tuple[tuple[Side, Side] | None, bool]] = field(default_factory=dict)

    def add(self, diff: DepthDiff, applied: Sequence[DepthDiff]) -> bool:
        """Compares ``diff`` with the applied updates that tile its ids; True when equal."""
        self.applied_conns.update(d.conn_id for d in applied)
        mine = merged([(diff.bids, diff.asks)])
        theirs = merged((d.bids, d.asks) for d in applied)
        agrees = mine is not None and mine == theirs
        self.copies[diff.conn_id] = (mine, agrees)
        return agrees

    def blamed(self) -> frozenset[int]:
        """The connections whose copies disagree with the majority of copies, the applied
        one counted once. With no majority (two connections, one each) both sides are
        blamed: nothing says which copy is right."""
        disagreeing = [conn for conn, (_, agrees) in self.copies.items() if not agrees]
        if not disagreeing:
            return frozenset()
        agreeing = frozenset(c for c, (_, ok) in self.copies.items() if ok)
        # The disagreeing copies grouped by their levels; the applied group is the applied
        # copy and the copies equal to it.
        groups: list[tuple[tuple[Side, Side] | None, list[int]]] = []
        for conn in disagreeing:
            levels = self.copies[conn][0]
            for group_levels, members in groups:
                if levels is not None and levels == group_levels:
                    members.append(conn)
                    break
            else:
                groups.append((levels, [conn]))
        applied_size = 1 + len(agreeing)
        largest = max(len(members) for _, members in groups)
        if applied_size > largest:
            return frozenset(disagreeing)
        if largest > applied_size and sum(len(m) == largest for _, m in groups) == 1:
            majority = next(set(m) for _, m in groups if len(m) == largest)
            return frozenset(self.applied_conns) | agreeing | frozenset(disagreeing) - majority
        return frozenset(self.applied_conns) | agreeing | frozenset(disagreeing)


class RestVerdict(enum.Enum):
    """The outcome of comparing a REST snapshot with the live book."""

    AGREES = "agrees"
    DRIFT = "drift"
    #: The ring does not reach back to the snapshot's id (the exact rule: the book's levels
    #: at that id are not known), or the snapshot has a bad level.
    NOT_COMPARABLE = "not comparable"


@dataclass(frozen=True)
class RestComparison:
    verdict: RestVerdict
    #: What differs, for the log (empty unless DRIFT or NOT_COMPARABLE).
    detail: str = ""


def top_levels(
    book: L2Book, depth: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """The top ``depth`` levels of each side as numbers."""
    return (
        [(float(p), float(q)) for p, q in book.bids(depth)],
        [(float(p), float(q)) for p, q in book.asks(depth)],
    )


def compare_rest(
    snapshot: DepthSnapshot, ring: AppliedRing, live: L2Book, depth: int = DEFAULT_AUDIT_DEPTH
) -> RestComparison:
    """Compares the REST ``snapshot`` with the ``live`` book, whose applied updates since
    it was built are ``ring`` and whose applied id is at or past the snapshot's: the
    updates after the snapshot's id replayed onto it must give the live top ``depth``."""
    return _compared(
        snapshot.last_id, lambda copy: copy.load(snapshot.bids, snapshot.asks), ring, live, depth
    )


def compare_answer(
    snapshot: DepthSnapshot, ring: AppliedRing, live: L2Book, depth: int = DEFAULT_AUDIT_DEPTH
) -> RestComparison:
    """Compares ``snapshot`` with the book at its id by the exact rule (module docstring):
    ``live``, whose applied updates since it was built are ``ring`` and whose applied id
    is at or past the snapshot's, rewound to it. NOT_COMPARABLE when the book's levels at
    that id are not known (:meth:`AppliedRing.rewound`) or the snapshot has a bad level."""
    return _compared_at(
        snapshot.last_id, lambda copy: copy.load(snapshot.bids, snapshot.asks), ring, live, depth
    )


def compare_book(
    book: L2Book, book_id: int, ring: AppliedRing, live: L2Book, depth: int = DEFAULT_AUDIT_DEPTH
) -> RestComparison:
    """Compares ``book``, a book at id ``book_id`` (left unchanged), with ``live`` by the
    exact rule, as :func:`compare_answer` a snapshot at that id."""
    return _compared_at(book_id, lambda copy: copy.copy_from(book), ring, live, depth)


def _compared(
    at_id: int, fill: Callable[[L2Book], None], ring: AppliedRing, live: L2Book, depth: int
) -> RestComparison:
    """The REST rule: a book at ``at_id`` (``fill`` makes it) with the applied updates
    after ``at_id`` replayed onto it, its top ``depth`` against ``live``'s."""
    replay = ring.after(at_id)
    if replay is None:
        return RestComparison(RestVerdict.NOT_COMPARABLE, f"ring does not reach back to id {at_id}")
    copy = L2Book()
    try:
        fill(copy)
        for diff in replay:
            copy.apply(diff.bids, diff.asks)
    except BadLevel as exc:
        return RestComparison(RestVerdict.NOT_COMPARABLE, str(exc))
    return _top_compared(copy, live, depth, ("REST", "live"))


def _compared_at(
    at_id: int, fill: Callable[[L2Book], None], ring: AppliedRing, live: L2Book, depth: int
) -> RestComparison:
    """The exact rule: a book at ``at_id`` (``fill`` makes it), its top ``depth`` against
    that of ``live`` rewound to ``at_id``."""
    rewound = ring.rewound(live, at_id)
    if rewound is None:
        why = f"the book's levels at id {at_id} are not known"
        return RestComparison(RestVerdict.NOT_COMPARABLE, why)
    copy = L2Book()
    try:
        fill(copy)
    except BadLevel as exc:
        return RestComparison(RestVerdict.NOT_COMPARABLE, str(exc))
    return _top_compared(copy, rewound, depth, ("answer", "book"))


def _top_compared(
    theirs: L2Book, ours: L2Book, depth: int, names: tuple[str, str]
) -> RestComparison:
    """``theirs`` against ``ours``, top ``depth`` levels per side as numbers; ``names``
    say which is which in the detail."""
    their_bids, their_asks = top_levels(theirs, depth)
    our_bids, our_asks = top_levels(ours, depth)
    for side, got, have in (("bid", their_bids, our_bids), ("ask", their_asks, our_asks)):
        if got != have:
            at = next(
                (i for i, (a, b) in enumerate(zip(got, have, strict=False)) if a != b),
                min(len(got), len(have)),
            )
            their = got[at] if at < len(got) else None
            our = have[at] if at < len(have) else None
            return RestComparison(
                RestVerdict.DRIFT, f"{side} level {at}: {names[0]} {their} vs {names[1]} {our}"
            )
    return RestComparison(RestVerdict.AGREES)
