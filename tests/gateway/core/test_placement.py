"""Placing an unplaced connection (gateway/core/placement.py): each function's verdicts,
against one book built at id 100 and moved to id 105 with its before-images kept.

How a SequencedBook acts on the verdicts is tested by its own behaviour
(test_unplaced_subscriptions, the venue property tests).
"""

from __future__ import annotations

import pytest

from feeds.binance import BinanceSpotRule
from gateway.core.audit import AppliedRing
from gateway.core.book import BeforeImage
from gateway.core.book import L2Book
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level
from gateway.core.placement import AppliedBook
from gateway.core.placement import PlacementVerdict
from gateway.core.placement import Replica
from gateway.core.placement import follow_replica
from gateway.core.placement import place_answer
from gateway.core.placement import place_reached_answer
from tests.gateway.core.arbiter_streams import diff

BIDS_100: tuple[Level, ...] = (("99", "1"), ("98", "1"))
ASKS_100: tuple[Level, ...] = (("101", "1"), ("102", "1"))
BIDS_101: tuple[Level, ...] = (("99", "2"), ("98", "1"))
ASKS_104: tuple[Level, ...] = (("102", "1"),)
BIDS_105: tuple[Level, ...] = (("99", "2"), ("98", "1"), ("97", "1"))
BAD: tuple[Level, ...] = (("x", "1"),)
#: The book's updates after id 100: its levels at 101, 104 and 105 are known, not inside
#: 102..104.
UPDATES = [
    diff(101, 101, bids=[("99", "2")]),
    diff(102, 104, asks=[("101", "0")]),
    diff(105, 105, bids=[("97", "1")]),
]
UNUSABLE_ANSWER = "subscription snapshot at id 103 unusable: unparseable level ('x', '1')"
LOST_UPDATES = (
    "its stream lost updates between id 101 and id 104 before its subscription snapshot was"
    " compared with the book"
)
UNUSABLE_UPDATE = "its update at id 104 is unusable: unparseable level ('x', '1')"
DIFFERS_AT_101 = "bid level 0: answer (99.0, 1.0) vs book (99.0, 2.0)"
DIFFERS_AT_104 = "ask level 0: answer (101.0, 1.0) vs book (102.0, 1.0)"
NOT_KEPT = "the book's levels at id 103 are not known"
#: The book's levels at the ids replicas start from.
BOOK_AT = {101: (BIDS_101, ASKS_100), 105: (BIDS_105, ASKS_104)}
_V = PlacementVerdict


def applied_book() -> AppliedBook:
    live = L2Book()
    live.load(BIDS_100, ASKS_100)
    ring = AppliedRing(8)
    ring.clear(100)
    for update in UPDATES:
        before = BeforeImage()
        live.apply(update.bids, update.asks, before)
        ring.append(update, before)
    return AppliedBook(live, 105, ring, depth=10)


def answer(last_id: int, bids: tuple[Level, ...], asks: tuple[Level, ...]) -> DepthSnapshot:
    return DepthSnapshot("binance", "TEST", last_id, bids, asks, 0, 1)


def replica_at(last_id: int, bids: tuple[Level, ...], asks: tuple[Level, ...]) -> Replica:
    book = L2Book()
    book.load(bids, asks)
    return Replica(book, last_id)


@pytest.mark.parametrize(
    ("snap", "verdict", "detail"),
    [
        (answer(106, BIDS_100, ASKS_100), _V.AHEAD, ""),
        (answer(101, BIDS_101, ASKS_100), _V.AGREES, ""),
        (answer(105, BIDS_105, ASKS_104), _V.AGREES, ""),  # the book itself
        (answer(101, BIDS_100, ASKS_100), _V.DIFFERS, DIFFERS_AT_101),
        (answer(103, BIDS_101, ASKS_100), _V.BELOW, ""),  # inside 102..104
        (answer(99, BIDS_100, ASKS_100), _V.BELOW, ""),  # before the ring
        (answer(103, BAD, ASKS_100), _V.UNUSABLE, UNUSABLE_ANSWER),
    ],
)
def test_an_answer_is_placed_by_the_book_at_its_id(
    snap: DepthSnapshot, verdict: PlacementVerdict, detail: str
) -> None:
    placed = place_answer(snap, applied_book(), max_levels=None)
    assert (placed.verdict, placed.detail) == (verdict, detail)
    if verdict is PlacementVerdict.BELOW:
        assert placed.replica is not None
        assert placed.replica.last_id == snap.last_id
        assert placed.replica.snapshot(diff(snap.last_id, snap.last_id, conn=1)) == snap
    else:
        assert placed.replica is None


def test_an_answer_below_the_book_keeps_a_replica_capped_as_the_book() -> None:
    placed = place_answer(answer(103, BIDS_101, ASKS_100), applied_book(), max_levels=2)
    assert placed.replica is not None
    assert placed.replica.book.max_levels == 2
    over = place_answer(answer(103, BIDS_105, ASKS_100), applied_book(), max_levels=2)
    assert over.verdict is PlacementVerdict.UNUSABLE
    assert over.detail == (
        "subscription snapshot at id 103 unusable: snapshot of 3 bid and 2 ask levels exceeds"
        " the cap of 2 per side"
    )


@pytest.mark.parametrize(
    ("snap", "verdict"),
    [
        (answer(101, BIDS_101, ASKS_100), _V.AGREES),
        (answer(104, BIDS_101, ASKS_104), _V.AGREES),
        (answer(104, BIDS_101, ASKS_100), _V.DIFFERS),
        (answer(103, BIDS_101, ASKS_100), _V.NOT_COMPARABLE),  # inside 102..104
        (answer(103, BAD, ASKS_100), _V.NOT_COMPARABLE),
    ],
)
def test_an_answer_the_book_reached_agrees_differs_or_cannot_be_compared(
    snap: DepthSnapshot, verdict: PlacementVerdict
) -> None:
    assert place_reached_answer(snap, applied_book()).verdict is verdict


@pytest.mark.parametrize(
    ("start_id", "update", "built", "verdict", "detail", "last_id"),
    [
        # From the book's levels at 101, continued to 104, an id the book kept.
        (101, diff(102, 104, asks=[("101", "0")]), True, _V.AGREES, "", 104),
        (101, diff(102, 104), True, _V.DIFFERS, DIFFERS_AT_104, 104),
        (101, diff(102, 103), True, _V.NOT_COMPARABLE, NOT_KEPT, 103),  # on to the next
        (101, diff(102, 104), False, _V.NOT_COMPARABLE, "the book is not built", 104),
        (105, diff(106, 106), True, _V.AHEAD, "", 106),
        # Unusable: the replica stays where it was.
        (101, diff(103, 104), True, _V.UNUSABLE, LOST_UPDATES, 101),
        (101, diff(102, 104, bids=BAD), True, _V.UNUSABLE, UNUSABLE_UPDATE, 101),
    ],
)
def test_a_replica_follows_its_stream_and_is_compared_where_the_book_kept_the_id(
    start_id: int,
    update: DepthDiff,
    built: bool,
    verdict: PlacementVerdict,
    detail: str,
    last_id: int,
) -> None:
    replica = replica_at(start_id, *BOOK_AT[start_id])
    placed = follow_replica(replica, update, BinanceSpotRule(), applied_book() if built else None)
    assert (placed.verdict, placed.detail, placed.replica) == (verdict, detail, None)
    assert replica.last_id == last_id
