"""Placing an unplaced connection of a sequenced book: does the book its subscription
answer shows (or its own book since, a replica) agree with the book at that id?

Pure: no I/O, no event loop, nothing changed but a replica this module is handed.
:class:`~gateway.core.sequenced.SequencedBook` asks, with the book as it stands
(:class:`AppliedBook`); each function answers with a :class:`PlacementResult`, and the
book moves the connection's placement (:mod:`gateway.core.connections`) and carries out
what follows (docs/architecture.md, Sequenced venues).

The comparison is the exact rule of :mod:`gateway.core.audit`: the book rewound to the
answer's id (:meth:`~gateway.core.audit.AppliedRing.rewound`), its top ``depth`` levels
against the answer's. An answer ahead of the book is compared once the book reaches its
id. One below it that cannot be compared (older than the applied updates kept, or inside
one's ids) is compared through a replica: its connection's own updates, in order and none
missing (the venue's link rule), applied onto it until it reaches an id the book kept, or
passes the book's id (then it is an answer ahead). An update missing from that stream, or
a level that is not one, means it can no longer be compared.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.core.arbiter import LinkRule
from gateway.core.audit import AppliedRing
from gateway.core.audit import RestComparison
from gateway.core.audit import RestVerdict
from gateway.core.audit import compare_answer
from gateway.core.audit import compare_book
from gateway.core.book import BadLevel
from gateway.core.book import L2Book
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot


@dataclass(slots=True)
class Replica:
    """An unplaced connection's own book: its subscription snapshot with the updates its
    connection delivered since applied in order, none missing."""

    book: L2Book
    #: The id its connection's stream is at.
    last_id: int

    def snapshot(self, diff: DepthDiff) -> DepthSnapshot:
        """Its book as an in-band snapshot at its id, ``diff`` the update that brought it
        there (its connection, receive time and checksum: the venue's of the book after it)."""
        bids, asks = tuple(self.book.bids()), tuple(self.book.asks())
        return DepthSnapshot(
            diff.venue,
            diff.symbol,
            self.last_id,
            bids,
            asks,
            diff.recv_ns,
            diff.conn_id,
            diff.checksum,
        )


@dataclass(frozen=True, slots=True)
class AppliedBook:
    """The book an answer is compared with: ``live`` at venue id ``applied_id``, ``ring``
    the updates it applied since it was built (with their before-images while an answer
    may come), ``depth`` the levels per side compared."""

    live: L2Book
    applied_id: int
    ring: AppliedRing
    depth: int


class PlacementVerdict(enum.Enum):
    """What the comparison says of an unplaced connection's answer or replica."""

    #: It agrees with the book at its id: its connection is in the book's sequence.
    AGREES = "agrees"
    #: It differs from the book at its id: it is of another sequence (``detail``: where).
    DIFFERS = "differs"
    #: Its id is past the book's: compared once the book reaches it.
    AHEAD = "ahead"
    #: An answer below the book that cannot be compared: ``replica``, a replica of it, is
    #: compared instead as its connection's stream reaches the ids the book kept.
    BELOW = "below"
    #: The book's levels at its id are not known (or there is no book): a replica is
    #: compared again at its next id (``detail``: why).
    NOT_COMPARABLE = "not comparable"
    #: It can no longer be compared (``detail``: why): its connection is to reconnect.
    UNUSABLE = "unusable"


@dataclass(frozen=True, slots=True)
class PlacementResult:
    verdict: PlacementVerdict
    #: Why, for the log (DIFFERS, NOT_COMPARABLE, UNUSABLE).
    detail: str = ""
    #: The replica to keep (BELOW only).
    replica: Replica | None = None


_AHEAD: PlacementResult = PlacementResult(PlacementVerdict.AHEAD)
_BY_REST_VERDICT = {
    RestVerdict.AGREES: PlacementVerdict.AGREES,
    RestVerdict.DRIFT: PlacementVerdict.DIFFERS,
    RestVerdict.NOT_COMPARABLE: PlacementVerdict.NOT_COMPARABLE,
}


def _exact(compared: RestComparison) -> PlacementResult:
    """The exact rule's outcome as a placement's: AGREES, DIFFERS or NOT_COMPARABLE."""
    return PlacementResult(_BY_REST_VERDICT[compared.verdict], compared.detail)


def place_answer(snap: DepthSnapshot, book: AppliedBook, max_levels: int | None) -> PlacementResult:
    """``snap`` answers its connection's subscription while the book is built: AHEAD when
    its id is past the book's; AGREES or DIFFERS by the exact rule at its id; where the
    book's levels there are not known, BELOW with a replica of it (capped at
    ``max_levels`` per side, as the book), or UNUSABLE when it has a bad level."""
    if snap.last_id > book.applied_id:
        return _AHEAD
    compared = compare_answer(snap, book.ring, book.live, book.depth)
    if compared.verdict is not RestVerdict.NOT_COMPARABLE:
        return _exact(compared)
    replica = L2Book(max_levels)
    try:
        replica.load(snap.bids, snap.asks)
    except BadLevel as exc:
        why = f"subscription snapshot at id {snap.last_id} unusable: {exc}"
        return PlacementResult(PlacementVerdict.UNUSABLE, why)
    return PlacementResult(PlacementVerdict.BELOW, replica=Replica(replica, snap.last_id))


def place_reached_answer(snap: DepthSnapshot, book: AppliedBook) -> PlacementResult:
    """``snap``, an answer that was ahead of the book, now at or below the book's id:
    AGREES, DIFFERS or NOT_COMPARABLE by the exact rule at its id."""
    return _exact(compare_answer(snap, book.ring, book.live, book.depth))


def follow_replica(
    replica: Replica, diff: DepthDiff, rule: LinkRule, book: AppliedBook | None
) -> PlacementResult:
    """``diff``, the next update of ``replica``'s connection, is applied onto it, and the
    replica compared with ``book`` (None: the book is not built). UNUSABLE when ``diff``
    does not continue the replica's stream by ``rule`` or has a bad level (the replica
    is then left at its id); otherwise NOT_COMPARABLE without a book, AHEAD when the
    replica passed the book's id, else the exact rule at its id: AGREES, DIFFERS, or
    NOT_COMPARABLE (the book did not keep that id)."""
    if not rule.continues(diff, replica.last_id):
        why = (
            f"its stream lost updates between id {replica.last_id} and id {diff.last_id}"
            " before its subscription snapshot was compared with the book"
        )
        return PlacementResult(PlacementVerdict.UNUSABLE, why)
    try:
        replica.book.apply(diff.bids, diff.asks)
    except BadLevel as exc:
        why = f"its update at id {diff.last_id} is unusable: {exc}"
        return PlacementResult(PlacementVerdict.UNUSABLE, why)
    replica.last_id = diff.last_id
    if book is None:
        return PlacementResult(PlacementVerdict.NOT_COMPARABLE, "the book is not built")
    if replica.last_id > book.applied_id:
        return _AHEAD
    return _exact(compare_book(replica.book, replica.last_id, book.ring, book.live, book.depth))
