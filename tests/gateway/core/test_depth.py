"""Depth-N deltas: examples, and a property test against the full book's top N."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.book import L2Book
from gateway.core.depth import depth_bounds
from gateway.core.depth import depth_delta
from gateway.core.model import Level


def book_of(bids: list[Level], asks: list[Level]) -> L2Book:
    book = L2Book()
    book.load(bids, asks)
    return book


def top(book: L2Book, depth: int) -> L2Book:
    return book_of(book.bids(depth), book.asks(depth))


def step(
    full: L2Book, depth: int, bids: list[Level], asks: list[Level]
) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
    bounds = depth_bounds(full, depth)
    full.apply(bids, asks)
    return depth_delta(full, depth, bids, asks, bounds)


def test_a_change_inside_the_top_n_is_sent_as_is() -> None:
    full = book_of([("100", "1"), ("99", "1"), ("98", "1")], [("101", "1"), ("102", "1")])
    assert step(full, 2, [("99", "5")], []) == ((("99", "5"),), ())


def test_a_change_outside_the_top_n_gives_an_empty_delta() -> None:
    full = book_of([("100", "1"), ("99", "1"), ("98", "1")], [("101", "1"), ("102", "1")])
    assert step(full, 2, [("98", "7"), ("90", "1"), ("97", "0")], []) == ((), ())


def test_a_removal_inside_brings_the_next_level_in() -> None:
    full = book_of([("100", "1"), ("99", "1"), ("98", "3")], [("101", "1"), ("102", "1")])
    bids, asks = step(full, 2, [("100", "0")], [])
    assert sorted(bids) == [("100", "0"), ("98", "3")] and asks == ()


def test_a_new_best_level_pushes_the_nth_out() -> None:
    full = book_of([("100", "1")], [("101", "1"), ("102", "2"), ("103", "3")])
    bids, asks = step(full, 2, [], [("100.5", "4")])
    assert bids == () and sorted(asks) == [("100.5", "4"), ("102", "0")]


def test_a_side_shorter_than_n_takes_every_new_level() -> None:
    full = book_of([("100", "1")], [])
    assert step(full, 3, [("90", "2")], [("101", "1")]) == ((("90", "2"),), (("101", "1"),))


prices = st.integers(1, 40).map(str)
quantities = st.sampled_from(["0", "0.0", "1", "2.5", "3"])
levels = st.lists(st.tuples(prices, quantities), max_size=12)
updates = st.lists(st.tuples(levels, levels), min_size=1, max_size=6)


@given(
    st.lists(st.tuples(prices, quantities), max_size=30),
    st.lists(st.tuples(prices, quantities), max_size=30),
    st.integers(1, 8),
    st.lists(updates, min_size=1, max_size=8),
)
def test_depth_deltas_keep_the_depth_book_equal_to_the_full_books_top_n(
    bids: list[Level], asks: list[Level], depth: int, steps: list[list[tuple[list[Level], ...]]]
) -> None:
    """Each step is one or more updates published together: its depth delta is computed
    once from the union of their levels and the bounds before the first."""
    full = book_of(bids, asks)
    mine = top(full, depth)
    for updates_of_step in steps:
        bounds = depth_bounds(full, depth)
        before = top(full, depth).normalized()
        changed_bids: list[Level] = []
        changed_asks: list[Level] = []
        for update_bids, update_asks in updates_of_step:
            full.apply(update_bids, update_asks)
            changed_bids += update_bids
            changed_asks += update_asks
        delta_bids, delta_asks = depth_delta(full, depth, changed_bids, changed_asks, bounds)
        mine.apply(delta_bids, delta_asks)
        after = top(full, depth).normalized()
        assert mine.normalized() == after
        assert (mine.bid_count, mine.ask_count) == (
            min(depth, full.bid_count),
            min(depth, full.ask_count),
        )
        # A step whose levels all lie beyond the N-th level, before and after, sends nothing.
        after_bounds = depth_bounds(full, depth)
        if _beyond(changed_bids, -1.0, bounds[0], after_bounds[0]) and _beyond(
            changed_asks, 1.0, bounds[1], after_bounds[1]
        ):
            assert (delta_bids, delta_asks) == ((), ())
        # Every level sent is, or was, inside the top N.
        inside = {float(p) for side in before + after for p, _ in side}
        assert all(
            float(price) in inside or float(qty) == 0 for price, qty in delta_bids + delta_asks
        )


def _beyond(levels: list[Level], sign: float, *bounds: float | None) -> bool:
    return all(
        bound is not None and sign * float(price) > bound for price, _ in levels for bound in bounds
    )
