"""Audits of a sequenced book: cross-connection agreement and REST versus live."""

from __future__ import annotations

import logging

import pytest
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from feeds.binance import BinanceSpotRule
from gateway.core.arbiter import ArbiterLimits
from gateway.core.audit import AgreementSample
from gateway.core.audit import AppliedRing
from gateway.core.audit import RestVerdict
from gateway.core.audit import compare_answer
from gateway.core.audit import compare_book
from gateway.core.audit import compare_rest
from gateway.core.book import BeforeImage
from gateway.core.book import L2Book
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level
from gateway.core.model import ReconnectWanted
from gateway.core.sequenced import SequencedBook
from tests.gateway.core.arbiter_streams import KEY
from tests.gateway.core.arbiter_streams import TrueStream
from tests.gateway.core.arbiter_streams import diff
from tests.gateway.core.arbiter_streams import make_stream
from tests.gateway.core.arbiter_streams import merged
from tests.gateway.core.arbiter_streams import snap

WINDOW_NS = 100_000_000


def synced(conns: tuple[int, ...], audit_every: int = 1) -> SequencedBook:
    arb = SequencedBook(
        KEY, BinanceSpotRule(), ArbiterLimits(reorder_window_ns=WINDOW_NS), audit_every=audit_every
    )
    for c in conns:
        arb.on_connection(c, True, 0)
    arb.on_snapshot(snap(100), 0)
    assert arb.has_book
    return arb


def disagreements(arb: SequencedBook) -> dict[int, int]:
    return {c: s.audit_disagreements for c, s in arb.stats.connections.items()}


# --- the ring -------------------------------------------------------------------------------


def test_tiling_finds_the_applied_run_that_covers_exactly_the_ids() -> None:
    ring = AppliedRing(8)
    for first in (101, 103, 106):
        ring.append(diff(first, first + 1 if first < 106 else 108))
    assert [d.first_id for d in ring.tiling(103, 108) or []] == [103, 106]
    assert [d.first_id for d in ring.tiling(106, 108) or []] == [106]
    assert ring.tiling(104, 108) is None  # starts inside an applied update
    assert ring.tiling(101, 105) is None  # no applied update ends at 105


def test_the_ring_is_bounded_and_says_when_it_no_longer_reaches_back() -> None:
    ring = AppliedRing(2)
    for first in (101, 102, 103):
        ring.append(diff(first, first))
    assert len(ring) == 2
    assert ring.after(101) is not None
    assert ring.after(100) is None  # update 101 was forgotten


# --- the book at an earlier id: the ring rewound ------------------------------------------------

#: The book at id 100 and the updates applied to it, each with the case it covers.
BASE_BIDS: tuple[Level, ...] = (("99", "1"), ("98", "1"))
BASE_ASKS: tuple[Level, ...] = (("101", "1"), ("102", "1"))
REWIND_UPDATES = [
    diff(101, 101, bids=[("99", "2")]),  # a level changed
    diff(102, 104, bids=[("97", "1"), ("97", "0")], asks=[("101", "0")]),  # a price twice; deleted
    diff(105, 105, asks=[("103", "3"), ("101", "1")]),  # a level added; a deleted one back
    diff(106, 106, bids=[("96", "0")]),  # deletes a price the book does not hold
]


def rewind_ring(
    size: int = 8, max_levels: int | None = None, updates: list[DepthDiff] = REWIND_UPDATES
) -> tuple[AppliedRing, L2Book, dict[int, object]]:
    """A book built at id 100 and fed ``updates`` with their before-images; the ring, the
    book and its levels after each id it was at."""
    book = L2Book(max_levels)
    book.load(BASE_BIDS, BASE_ASKS)
    ring = AppliedRing(size)
    ring.clear(100)
    states: dict[int, object] = {100: book.normalized()}
    for update in updates:
        before = BeforeImage()
        book.apply(update.bids, update.asks, before)
        ring.append(update, before)
        states[update.last_id] = book.normalized()
    return ring, book, states


@pytest.mark.parametrize(
    ("size", "at_id", "known"),
    [
        (8, 106, True),  # the newest: the book itself
        (8, 105, True),
        (8, 104, True),  # the end of an update of several ids
        (8, 101, True),
        (8, 100, True),  # the base
        (8, 103, False),  # inside an update of several ids: the book was never there
        (8, 102, False),
        (8, 107, False),  # after the newest
        (8, 99, False),  # before the base
        (2, 104, True),  # the id before the oldest update kept (105)
        (2, 101, False),  # forgotten
        (2, 100, False),
    ],
)
def test_the_book_rewound_to_an_id_it_was_at_is_exactly_the_book_then(
    size: int, at_id: int, known: bool
) -> None:
    ring, book, states = rewind_ring(size)
    now = book.normalized()
    rewound = ring.rewound(book, at_id)
    if known:
        assert rewound is not None and rewound.normalized() == states[at_id]
    else:
        assert rewound is None
    assert book.normalized() == now, "the live book is left as it is"


def test_the_book_is_not_rewound_through_an_update_without_its_before_image() -> None:
    ring, book, _ = rewind_ring()
    ring.append(diff(107, 107, bids=[("99", "5")]))
    book.apply([("99", "5")], [])
    assert ring.rewound(book, 107) is book
    assert ring.rewound(book, 106) is None


def test_the_book_rewound_past_the_caps_pruning_holds_the_pruned_levels_again() -> None:
    updates = [
        diff(101, 101, bids=[("99.5", "1")]),  # prunes bid 98
        diff(102, 102, bids=[("99.7", "2"), ("98.5", "3")]),  # prunes 99 and its own 98.5
        diff(103, 103, asks=[("100.5", "1")], bids=[("99.5", "0")]),  # prunes ask 102
    ]
    ring, book, states = rewind_ring(max_levels=2, updates=updates)
    assert book.bid_count == 1 and book.ask_count == 2
    for at_id in (102, 101, 100):
        rewound = ring.rewound(book, at_id)
        assert rewound is not None and rewound.normalized() == states[at_id]


def test_an_answer_differing_where_a_later_update_overwrote_is_drift_by_the_exact_rule() -> None:
    """The REST rule replays the updates after the answer's id onto it, and a level a later
    update overwrote agrees whatever it was; the exact rule compares with the book
    rewound to the answer's id."""
    ring, book, _ = rewind_ring()
    # The book at 101 holds ask 101, which 102..104 deleted and 105 set again: an answer
    # at 101 without it is masked by the REST rule.
    masked = DepthSnapshot(
        "binance", "TEST", 101, (("99", "2"), ("98", "1")), (("102", "1"),), 0, 1
    )
    assert compare_rest(masked, ring, book).verdict is RestVerdict.AGREES
    exact = compare_answer(masked, ring, book)
    assert exact.verdict is RestVerdict.DRIFT
    assert exact.detail == "ask level 0: answer (102.0, 1.0) vs book (101.0, 1.0)"
    right = DepthSnapshot("binance", "TEST", 101, (("99", "2"), ("98", "1")), BASE_ASKS, 0, 1)
    assert compare_answer(right, ring, book).verdict is RestVerdict.AGREES
    inside = DepthSnapshot("binance", "TEST", 103, BASE_BIDS, BASE_ASKS, 0, 1)
    assert compare_answer(inside, ring, book).verdict is RestVerdict.NOT_COMPARABLE
    other = L2Book()
    other.load(BASE_BIDS, (("102", "1"),))
    assert compare_book(other, 101, ring, book).verdict is RestVerdict.DRIFT


# --- cross-connection agreement -------------------------------------------------------------


def test_a_copy_agrees_with_the_applied_updates_that_changed_its_levels() -> None:
    ring = AppliedRing(8)
    ring.append(diff(101, 102, bids=[("99", "1")], asks=[("101", "2")]))
    ring.append(diff(103, 105, bids=[("99", "3"), ("98", "1")]))
    ring.append(diff(106, 108, bids=[("98", "4")], asks=[("101", "5")]))
    # Batched differently: at id 105 the bid 99 is 3 and the ask 101 is 2.
    assert ring.agrees(diff(102, 105, bids=[("99", "3.0")], asks=[("101", "2")])) is True
    assert ring.agrees(diff(104, 105, bids=[("99", "2")])) is False
    # The update across id 107 changed bid 98 after it too: its quantity at 107 is unknown.
    assert ring.agrees(diff(106, 107, bids=[("98", "7")])) is True
    # No applied update in 107..108 changed bid 99.
    assert ring.agrees(diff(107, 108, bids=[("99", "3")])) is False
    assert ring.agrees(diff(107, 108, bids=[("98", "4")], asks=[("101", "5")])) is True
    assert ring.agrees(diff(101, 102, bids=[("99", "x")])) is False
    assert ring.agrees(diff(100, 101, bids=[("99", "1")])) is None  # before the ring


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=40, max_size=40), st.data())
def test_a_true_copy_never_disagrees_however_it_is_batched(
    sizes: list[int], data: st.DataObject
) -> None:
    stream = make_stream(data.draw(streams), initial_id=100)
    ring = AppliedRing()
    start = 0
    for size in sizes:  # the applied updates, batched one way
        end = min(start + size, len(stream.diffs)) - 1
        if end < start:
            break
        ring.append(merged(stream, start, end, 0, 0))
        start = end + 1
    first = data.draw(st.integers(0, len(stream.diffs) - 1))
    last = data.draw(st.integers(first, len(stream.diffs) - 1))
    copy = merged(stream, first, last, 1, 0)  # a copy, batched any way
    assert ring.agrees(copy) is True


def test_a_copy_with_other_levels_for_the_same_ids_is_blamed_by_the_majority() -> None:
    arb = synced((0, 1, 2))
    good = diff(101, 101, conn=0, bids=[("100", "2")])
    arb.on_diff(good, 1)
    arb.on_diff(diff(101, 101, conn=1, bids=[("100.0", "2.00")]), 2)  # same numbers
    events = arb.on_diff(diff(101, 101, conn=2, bids=[("100", "3")]), 3)
    # The book is never touched; the contradicted connection is reset.
    reason = "conn 2's copy of update 101 contradicts the others'"
    assert events == [ReconnectWanted(KEY, 2, reason)]
    assert disagreements(arb) == {0: 0, 1: 0, 2: 1}
    assert arb.stats.audit_disagreements == 1
    assert arb.book.bids() == [("100", "2")]


def test_a_wrong_applied_copy_is_blamed_when_the_others_agree_with_each_other() -> None:
    arb = synced((0, 1, 2))
    arb.on_diff(diff(101, 101, conn=0, bids=[("100", "9")]), 1)
    arb.on_diff(diff(101, 101, conn=1, bids=[("100", "2")]), 2)
    events = arb.on_diff(diff(101, 101, conn=2, bids=[("100", "2")]), 3)
    assert disagreements(arb) == {0: 1, 1: 0, 2: 0}
    (wanted,) = events
    assert isinstance(wanted, ReconnectWanted) and wanted.conn_id == 0


def test_with_two_connections_a_disagreement_blames_both() -> None:
    arb = synced((0, 1))
    arb.on_diff(diff(101, 101, conn=0, bids=[("100", "2")]), 1)
    events = arb.on_diff(diff(101, 101, conn=1, bids=[("100", "3")]), 2)
    assert disagreements(arb) == {0: 1, 1: 1}
    assert events == [], "no majority: no connection is reset"


def test_differently_batched_copies_are_compared_over_the_ids_they_share() -> None:
    arb = synced((0, 1), audit_every=2)
    arb.on_diff(diff(101, 101, conn=0, bids=[("100", "2")]), 1)
    arb.on_diff(diff(102, 103, conn=0, bids=[("100", "4")], asks=[("101", "5")]), 2)
    # One copy covering both applied updates: the later level wins, and they agree.
    arb.on_diff(diff(101, 103, conn=1, bids=[("100", "4")], asks=[("101", "5")]), 3)
    assert arb.stats.audit_disagreements == 0
    arb.on_diff(diff(104, 104, conn=0, asks=[("101", "1")]), 4)
    arb.on_diff(diff(105, 106, conn=0, asks=[("101", "2")]), 5)
    arb.on_diff(diff(101, 106, conn=1, asks=[("101", "7")]), 6)  # tiles, and disagrees
    assert disagreements(arb) == {0: 1, 1: 1}
    arb.on_diff(diff(107, 107, conn=0, asks=[("101", "1")]), 7)
    arb.on_diff(diff(108, 109, conn=0, asks=[("101", "2")]), 8)
    arb.on_diff(diff(106, 109, conn=1, asks=[("101", "8")]), 9)  # starts mid-update: skipped
    assert arb.stats.audit_disagreements == 1


def test_unsampled_updates_are_not_compared() -> None:
    arb = synced((0, 1), audit_every=0)
    arb.on_diff(diff(101, 101, conn=0, bids=[("100", "2")]), 1)
    arb.on_diff(diff(101, 101, conn=1, bids=[("100", "3")]), 2)
    assert arb.stats.audit_disagreements == 0


def test_blame_rule_when_every_copy_differs() -> None:
    sample = AgreementSample(101, {0})
    applied = [diff(101, 101, conn=0, bids=[("100", "1")])]
    assert not sample.add(diff(101, 101, conn=1, bids=[("100", "2")]), applied)
    assert not sample.add(diff(101, 101, conn=2, bids=[("100", "3")]), applied)
    assert sample.blamed() == {0, 1, 2}


# --- REST versus live -----------------------------------------------------------------------


def test_a_rest_snapshot_ahead_of_the_book_is_compared_once_the_book_reaches_it() -> None:
    arb = synced((0,), audit_every=0)
    arb.on_audit_snapshot(snap(102, bids=[("100", "3")]), 1)
    assert (arb.stats.audit_rest_ok, arb.stats.audit_rest_drift) == (0, 0)
    arb.on_diff(diff(101, 101, bids=[("100", "2")]), 2)
    assert (arb.stats.audit_rest_ok, arb.stats.audit_rest_drift) == (0, 0)
    arb.on_diff(diff(102, 103, bids=[("100", "3")], asks=[("101", "4")]), 3)
    assert (arb.stats.audit_rest_ok, arb.stats.audit_rest_drift) == (1, 0)
    assert arb.book.asks() == [("101", "4")]  # the audit snapshot was never applied


def test_a_rest_snapshot_that_disagrees_is_drift_and_leaves_the_book() -> None:
    arb = synced((0,), audit_every=0)
    arb.on_diff(diff(101, 101, bids=[("100", "2")]), 1)
    assert arb.on_audit_snapshot(snap(101, bids=[("100", "5")]), 2) == []
    assert arb.stats.audit_rest_drift == 1
    assert arb.book.bids() == [("100", "2")]


def test_a_rest_snapshot_older_than_the_ring_is_skipped() -> None:
    arb = synced((0,), audit_every=0)
    arb.on_audit_snapshot(snap(50), 1)
    assert (arb.stats.audit_rest_skipped, arb.stats.audit_rest_drift) == (1, 0)


def rest_at(stream: TrueStream, k: int) -> DepthSnapshot:
    s = stream.snapshot(k)
    return DepthSnapshot("binance", "TEST", s.last_id, s.bids, s.asks, 0, -1)


def replayed(stream: TrueStream, batches: list[list[int]]) -> SequencedBook:
    """A book fed the true stream by one connection per list of ``batches``, each cutting
    the stream into batches of its own sizes; copies arrive in the order their batches end."""
    arb = SequencedBook(
        KEY, BinanceSpotRule(), ArbiterLimits(reorder_window_ns=WINDOW_NS), audit_every=1
    )
    copies: list[tuple[int, int, int, int]] = []  # (end, conn, start, end)
    for conn, sizes in enumerate(batches):
        arb.on_connection(conn, True, 0)
        start = 0
        for size in sizes:
            end = min(start + size, len(stream.diffs)) - 1
            if end < start:
                break
            copies.append((end, conn, start, end))
            start = end + 1
        assert start == len(stream.diffs), "the batches cover the stream"
    arb.on_snapshot(rest_at(stream, 0), 0)
    for now, (_, conn, start, end) in enumerate(sorted(copies), start=1):
        arb.on_diff(merged(stream, start, end, conn, now), now)
    return arb


streams = st.lists(
    st.tuples(st.integers(1, 3), st.booleans(), st.integers(0, 9), st.integers(0, 4)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(
    streams,
    st.lists(st.lists(st.integers(1, 4), min_size=40, max_size=40), min_size=2, max_size=3),
    st.data(),
)
def test_a_correct_stream_never_reports_disagreement_or_drift(
    levels: list[tuple[int, bool, int, int]], batches: list[list[int]], data: st.DataObject
) -> None:
    """Connections batching the same ids differently (Binance USD-M) never disagree."""
    stream = make_stream(levels, initial_id=100)
    arb = replayed(stream, batches)
    assert arb.applied_id == stream.id_after(len(stream.diffs))
    k = data.draw(st.integers(0, len(stream.diffs)))
    arb.on_audit_snapshot(rest_at(stream, k), 10**6)
    assert arb.stats.audit_disagreements == 0
    assert (arb.stats.audit_rest_ok, arb.stats.audit_rest_drift) == (1, 0)


@settings(max_examples=60, deadline=None)
@given(streams, st.data())
def test_an_injected_wrong_level_is_always_drift(
    levels: list[tuple[int, bool, int, int]], data: st.DataObject
) -> None:
    stream = make_stream(levels, initial_id=100)
    arb = replayed(stream, [[1] * len(stream.diffs)])
    k = data.draw(st.integers(0, len(stream.diffs)))
    true = rest_at(stream, k)
    # A wrong quantity at a level the updates after the snapshot never touch, in the top.
    touched = {lv[0] for _, _, b, a in stream.diffs[k:] for lv in b + a}
    final = L2Book()
    final.load(true.bids, true.asks)
    for _, _, b, a in stream.diffs[k:]:
        final.apply(b, a)
    candidates = [lv for lv in final.bids(10) + final.asks(10) if lv[0] not in touched]
    assume(candidates)
    price, qty = data.draw(st.sampled_from(candidates))
    wrong = str(float(qty) + 1)
    bids = tuple((p, wrong if p == price else q) for p, q in true.bids)
    asks = tuple((p, wrong if p == price else q) for p, q in true.asks)
    bad = DepthSnapshot("binance", "TEST", true.last_id, bids, asks, 0, -1)
    assert compare_rest(bad, arb.applied_ring, arb.book).verdict is RestVerdict.DRIFT
    arb.on_audit_snapshot(bad, 10**6)
    assert arb.stats.audit_rest_drift == 1


def test_the_arbiters_log_lines_name_venue_and_symbol_as_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    arb = synced((0, 1))
    with caplog.at_level(logging.WARNING, logger="gateway.core.sequenced"):
        arb.on_diff(diff(101, 101, conn=0, bids=[("100", "2")]), 1)
        arb.on_diff(diff(101, 101, conn=1, bids=[("100", "3")]), 2)
    (record,) = caplog.records
    venue, _, symbol = KEY.partition(":")
    assert (record.venue, record.symbol) == (venue, symbol)  # type: ignore[attr-defined]
