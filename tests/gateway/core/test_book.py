"""L2Book: levels in and out, ordering, the venue's strings kept, bad levels refused, views;
and a property test against a plain dict model."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.book import BadLevel
from gateway.core.book import BeforeImage
from gateway.core.book import L2Book
from gateway.core.book import TooManyLevels
from gateway.core.model import Level


def book_of(bids: list[Level], asks: list[Level]) -> L2Book:
    book = L2Book()
    book.load(bids, asks)
    return book


def test_an_empty_book() -> None:
    book = L2Book()
    assert (book.bid_count, book.ask_count) == (0, 0)
    assert book.best_bid() is None and book.best_ask() is None
    assert book.bids() == [] and book.asks() == [] and not book.is_crossed()
    assert book.normalized() == ((), ())


def test_sides_are_sorted_best_first_whatever_the_input_order() -> None:
    book = book_of(
        [("99.5", "1"), ("100", "2"), ("98", "3")], [("102", "1"), ("101.25", "2"), ("103", "1")]
    )
    assert book.bids() == [("100", "2"), ("99.5", "1"), ("98", "3")]
    assert book.asks() == [("101.25", "2"), ("102", "1"), ("103", "1")]
    assert book.best_bid() == ("100", "2") and book.best_ask() == ("101.25", "2")
    # Numeric order, not string order: "9" sorts below "10".
    numeric = book_of([("9", "1"), ("10", "1")], [("11", "1"), ("100", "1")])
    assert numeric.bids()[0] == ("10", "1") and numeric.asks()[0] == ("11", "1")


def test_the_venue_strings_are_kept_exactly() -> None:
    book = book_of([("100.10", "1.500")], [("100.2000", "0.10")])
    assert book.bids() == [("100.10", "1.500")]
    assert book.asks() == [("100.2000", "0.10")]
    # A level at the same price spelt differently replaces the level and its spelling.
    book.apply([("100.1", "2")], [])
    assert book.bids() == [("100.1", "2")]


def test_apply_sets_absolute_quantities_and_zero_removes() -> None:
    book = book_of([("100", "1"), ("99", "1")], [("101", "1")])
    book.apply([("100", "5"), ("98", "2")], [("101", "0"), ("102", "3")])
    assert book.bids() == [("100", "5"), ("99", "1"), ("98", "2")]
    assert book.asks() == [("102", "3")]
    # Removing a level that is not there, in any zero spelling, changes nothing.
    book.apply([("97", "0.000")], [("105", "0")])
    assert (book.bid_count, book.ask_count) == (3, 1)


def test_load_replaces_the_whole_book_and_drops_zero_levels() -> None:
    book = book_of([("100", "1")], [("101", "1")])
    book.load([("90", "1"), ("89", "0")], [])
    assert book.bids() == [("90", "1")] and book.asks() == []


@pytest.mark.parametrize(
    "level",
    [
        ("x", "1"),
        ("100", "y"),
        ("", "1"),
        ("0", "1"),
        ("-1", "1"),
        ("100", "-0.5"),
        ("inf", "1"),
        ("100", "inf"),
        ("nan", "1"),
        ("100", "nan"),
        ("100",),
        (None, "1"),
    ],
)
def test_bad_levels_are_refused_and_leave_the_book_unchanged(level: Level) -> None:
    book = book_of([("100", "1")], [("101", "1")])
    before = book.normalized()
    with pytest.raises(BadLevel):
        book.apply([("99", "1"), level], [])
    with pytest.raises(BadLevel):
        book.apply([], [("102", "1"), level])
    with pytest.raises(BadLevel):
        book.load([("50", "1")], [level])
    assert book.normalized() == before
    assert issubclass(BadLevel, ValueError)


def test_top_n_views() -> None:
    book = book_of([(str(100 - i), "1") for i in range(5)], [(str(101 + i), "1") for i in range(5)])
    assert book.bids(2) == [("100", "1"), ("99", "1")]
    assert book.asks(3) == [("101", "1"), ("102", "1"), ("103", "1")]
    assert book.bids(0) == [] and len(book.asks(50)) == 5 and len(book.bids()) == 5


def test_crossed_means_best_bid_at_or_above_best_ask() -> None:
    assert not book_of([("100", "1")], [("101", "1")]).is_crossed()
    assert book_of([("101", "1")], [("101", "1")]).is_crossed()
    assert book_of([("102", "1")], [("101", "1")]).is_crossed()
    assert not book_of([("102", "1")], []).is_crossed()
    # crossing() names the levels that cross, or None.
    assert book_of([("101.0", "1")], [("101", "2")]).crossing() == (("101.0", "1"), ("101", "2"))
    assert book_of([("100", "1")], [("101", "1")]).crossing() is None


def test_truncate_keeps_the_best_and_returns_the_removal_as_a_delta() -> None:
    book = book_of([(str(100 - i), "1") for i in range(4)], [(str(101 + i), "2") for i in range(3)])
    full = book_of(book.bids(), book.asks())
    removed_bids, removed_asks = book.truncate(2)
    assert book.bids() == [("100", "1"), ("99", "1")] and book.asks() == [
        ("101", "2"),
        ("102", "2"),
    ]
    assert removed_bids == [("98", "0"), ("97", "0")] and removed_asks == [("103", "0")]
    full.apply(removed_bids, removed_asks)
    assert full.normalized() == book.normalized()
    assert book.truncate(5) == ([], [])


def test_diff_to_turns_one_book_into_the_other() -> None:
    mine = book_of([("100", "1"), ("99", "1")], [("101", "1"), ("102", "1")])
    theirs = book_of([("100", "2"), ("98", "1")], [("101", "1")])
    bids, asks = mine.diff_to(theirs)
    assert sorted(bids) == sorted([("99", "0"), ("100", "2"), ("98", "1")])
    assert asks == [("102", "0")]
    mine.apply(bids, asks)
    assert mine.normalized() == theirs.normalized()
    assert mine.diff_to(theirs) == ([], [])


def test_copy_from_is_independent_of_the_source() -> None:
    source = book_of([("100", "1")], [("101", "1")])
    copy = L2Book()
    copy.copy_from(source)
    source.apply([("100", "0")], [("101", "5")])
    assert copy.bids() == [("100", "1")] and copy.asks() == [("101", "1")]


def test_clear_empties_both_sides() -> None:
    book = book_of([("100", "1")], [("101", "1")])
    book.clear()
    assert book.normalized() == ((), ())


# --- property: the book equals a dict model after any updates ---------------------------

prices = st.integers(min_value=1, max_value=60).map(lambda n: f"{n / 4:.2f}")
qtys = st.sampled_from(["0", "0.0", "1", "2.50", "0.001", "7"])
levels = st.lists(st.tuples(prices, qtys), max_size=6)
#: A snapshot lists each price once.
snapshot_side = st.lists(st.tuples(prices, qtys), max_size=8, unique_by=lambda level: level[0])
updates = st.lists(st.tuples(levels, levels), max_size=25)


def model_apply(side: dict[Decimal, Level], new: list[Level]) -> None:
    for price, qty in new:
        if Decimal(qty) == 0:
            side.pop(Decimal(price), None)
        else:
            side[Decimal(price)] = (price, qty)


@given(snapshot=st.tuples(snapshot_side, snapshot_side), steps=updates, depth=st.integers(0, 8))
def test_the_book_equals_a_dict_model(
    snapshot: tuple[list[Level], list[Level]],
    steps: list[tuple[list[Level], list[Level]]],
    depth: int,
) -> None:
    bids: dict[Decimal, Level] = {}
    asks: dict[Decimal, Level] = {}
    model_apply(bids, snapshot[0])
    model_apply(asks, snapshot[1])
    book = book_of(*snapshot)
    for new_bids, new_asks in steps:
        book.apply(new_bids, new_asks)
        model_apply(bids, new_bids)
        model_apply(asks, new_asks)
    want_bids = [bids[p] for p in sorted(bids, reverse=True)]
    want_asks = [asks[p] for p in sorted(asks)]
    assert book.bids() == want_bids and book.asks() == want_asks
    assert (book.bid_count, book.ask_count) == (len(bids), len(asks))
    assert book.bids(depth) == want_bids[:depth] and book.asks(depth) == want_asks[:depth]
    assert book.best_bid() == (want_bids[0] if want_bids else None)
    assert book.best_ask() == (want_asks[0] if want_asks else None)
    crossed = bool(bids and asks) and max(bids) >= min(asks)
    assert book.is_crossed() == crossed
    # diff_to from an empty book rebuilds it exactly.
    rebuilt = L2Book()
    rebuilt.apply(*rebuilt.diff_to(book))
    assert rebuilt.bids() == want_bids and rebuilt.asks() == want_asks


# --- duplicates in a snapshot, and the cap of levels per side -------------------------------


def test_load_takes_duplicate_prices_in_order_the_last_wins() -> None:
    book = book_of([("100", "1"), ("100", "0")], [("101", "0"), ("101", "2"), ("101.0", "3")])
    assert book.bids() == [] and book.asks() == [("101.0", "3")]
    # As the same levels applied as an update would leave them.
    applied = L2Book()
    applied.apply([("100", "1"), ("100", "0")], [("101", "0"), ("101", "2"), ("101.0", "3")])
    assert applied.normalized() == book.normalized()


def test_a_snapshot_or_an_update_deeper_than_the_cap_is_refused_whole() -> None:
    book = L2Book(max_levels=2)
    book.load([("100", "1"), ("99", "1")], [("101", "1")])
    with pytest.raises(TooManyLevels, match="3 bid and 0 ask levels exceeds the cap of 2"):
        book.load([("100", "1"), ("99", "1"), ("98", "1")], [])
    with pytest.raises(TooManyLevels):
        book.apply([], [("102", "0"), ("103", "0"), ("104", "0")])
    assert book.bids() == [("100", "1"), ("99", "1")] and book.asks() == [("101", "1")]
    # Zero quantities and duplicates are not levels of a snapshot.
    book.load([("100", "1"), ("99", "1"), ("98", "0"), ("99", "2")], [])
    assert book.bids() == [("100", "1"), ("99", "2")]
    with pytest.raises(ValueError):
        L2Book(max_levels=0)


def test_levels_beyond_the_cap_are_pruned_farthest_first_and_returned_as_a_delta() -> None:
    book = L2Book(max_levels=2)
    book.load([("100", "1"), ("99", "1")], [("101", "1")])
    assert book.apply([], [("102", "1")]) is None
    pruned = book.apply([("101", "1"), ("98", "1")], [("100.5", "1")])
    assert pruned == ([("99", "0"), ("98", "0")], [("102", "0")])
    assert book.bids() == [("101", "1"), ("100", "1")]
    assert book.asks() == [("100.5", "1"), ("101", "1")]


caps = st.integers(min_value=1, max_value=6)


def exact_part(side: list[Level], boundary: float | None, bids: bool) -> list[Level]:
    """The levels of ``side`` strictly better than ``boundary`` (all when None)."""
    if boundary is None:
        return side
    return [lv for lv in side if (float(lv[0]) > boundary if bids else float(lv[0]) < boundary)]


def best_missing(reference: list[Level], capped: list[Level], bids: bool) -> float | None:
    """The best price the reference holds and the capped book does not (a pruned one)."""
    have = {float(lv[0]) for lv in capped}
    missing = [float(lv[0]) for lv in reference if float(lv[0]) not in have]
    if not missing:
        return None
    return max(missing) if bids else min(missing)


def closer(a: float | None, b: float | None, bids: bool) -> float | None:
    if a is None or b is None:
        return b if a is None else a
    return max(a, b) if bids else min(a, b)


@given(
    snapshot=st.tuples(snapshot_side, snapshot_side),
    steps=updates,
    cap=caps,
    depth=st.integers(1, 6),
)
def test_a_capped_book_never_exceeds_the_cap_and_its_top_n_is_exact_where_kept(
    snapshot: tuple[list[Level], list[Level]],
    steps: list[tuple[list[Level], list[Level]]],
    cap: int,
    depth: int,
) -> None:
    """Against an uncapped reference fed the same messages: the capped book holds at most
    ``cap`` levels a side; levels better than the best price it ever pruned are exactly the
    reference's, so its top-N equals the reference's whenever the reference's top N are
    all better than that price (always, while the reference never exceeded the cap)."""
    reference = L2Book()
    capped = L2Book(max_levels=cap)
    try:
        capped.load(*snapshot)
    except TooManyLevels:
        return  # refused whole: nothing to compare
    reference.load(*snapshot)
    boundary: list[float | None] = [None, None]  # best pruned bid, best pruned ask
    ever_over = False
    for new_bids, new_asks in steps:
        try:
            pruned = capped.apply(new_bids, new_asks)
        except TooManyLevels:
            assert len(new_bids) > cap or len(new_asks) > cap
            continue
        reference.apply(new_bids, new_asks)
        ever_over |= reference.bid_count > cap or reference.ask_count > cap
        assert capped.bid_count <= cap and capped.ask_count <= cap
        assert (pruned is None) or (pruned[0] or pruned[1])
        for i, (ref, got, bids) in enumerate(
            ((reference.bids(), capped.bids(), True), (reference.asks(), capped.asks(), False))
        ):
            boundary[i] = closer(boundary[i], best_missing(ref, got, bids), bids)
            assert exact_part(got, boundary[i], bids) == exact_part(ref, boundary[i], bids)
            kept = exact_part(ref, boundary[i], bids)
            if len(kept) >= depth or len(kept) == len(ref):
                top = (capped.bids if bids else capped.asks)(depth)
                assert top == ref[:depth]
    if not ever_over:
        assert capped.normalized() == reference.normalized()


@given(
    snapshot=st.tuples(snapshot_side, snapshot_side),
    steps=updates,
    cap=st.one_of(st.none(), caps),
)
def test_updates_undone_newest_first_give_back_every_earlier_book(
    snapshot: tuple[list[Level], list[Level]],
    steps: list[tuple[list[Level], list[Level]]],
    cap: int | None,
) -> None:
    """Each update applied with a before-image, then undone newest first: the book is, after
    each undo, exactly (the venue's strings included) the book before that update, pruned
    levels back in place; prices repeated within an update included."""
    book = L2Book(cap)
    try:
        book.load(*snapshot)
    except TooManyLevels:
        return
    done: list[tuple[list[Level], list[Level], BeforeImage, list[Level], list[Level]]] = []
    for bids, asks in steps:
        held = book.bids(), book.asks()
        before = BeforeImage()
        try:
            book.apply(bids, asks, before)
        except TooManyLevels:
            assert before.levels == [] and (book.bids(), book.asks()) == held
            continue
        done.append((bids, asks, before, *held))
    for bids, asks, before, held_bids, held_asks in reversed(done):
        book.undo(bids, asks, before)
        assert (book.bids(), book.asks()) == (held_bids, held_asks)
