"""Depth-N book streams: the delta that keeps a subscriber's N best levels per side exact.

Pure: no I/O. A subscriber of a book at ``depth`` N holds the N best levels per side. After
the full book changed at some prices, :func:`depth_delta` returns the absolute levels that
turn the subscriber's N-level book into the full book's new top N:

* changed levels that are inside the new top N (their new quantity);
* levels that entered the top N from below because better ones left (their quantity);
* levels that were inside the old top N and are not inside the new one, removed (a zero
  quantity): levels removed by the update and levels pushed below the N-th by new ones.

Nothing else: a change entirely outside the top N gives an empty delta. Where the old top N
ended is given as :data:`DepthBounds` (the rank key of the N-th level per side before the
update, from :func:`depth_bounds`), so the book before the update is not needed. The changed
prices may be a superset of those that really changed (the union of several updates'
levels): levels repeated are sent again, removals of absent levels are no-ops.
"""

from __future__ import annotations

from collections.abc import Iterable

from sortedcontainers import SortedDict

from gateway.core.book import L2Book
from gateway.core.model import Level

#: Per side (bids, asks): the rank key (:meth:`L2Book.ranked`) of the N-th best level, or
#: None when the side has fewer than N levels (every level is inside the top N).
DepthBounds = tuple[float | None, float | None]

#: A removal's quantity.
_ZERO = "0"


def depth_bounds(book: L2Book, depth: int) -> DepthBounds:
    """Where the top ``depth`` levels of each side of ``book`` end."""
    return _bound(book.ranked(bids=True), depth), _bound(book.ranked(bids=False), depth)


def depth_delta(
    book: L2Book,
    depth: int,
    changed_bids: Iterable[Level],
    changed_asks: Iterable[Level],
    bounds: DepthBounds,
) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
    """The depth-``depth`` delta of an update: ``book`` is the full book after it,
    ``changed_*`` the levels it set (at least every price whose quantity changed), and
    ``bounds`` the :func:`depth_bounds` of the book before it. Applied to the top
    ``depth`` levels of the book before the update, the result gives the top ``depth``
    levels of ``book``. Both sides empty: the update changed nothing inside the top N."""
    return (
        _side_delta(book.ranked(bids=True), depth, changed_bids, bounds[0], -1.0),
        _side_delta(book.ranked(bids=False), depth, changed_asks, bounds[1], 1.0),
    )


def _bound(levels: SortedDict, depth: int) -> float | None:
    if len(levels) < depth:
        return None
    key: float = levels.keys()[depth - 1]
    return key


def _side_delta(
    levels: SortedDict,
    depth: int,
    changed: Iterable[Level],
    old_bound: float | None,
    sign: float,
) -> tuple[Level, ...]:
    new_bound = _bound(levels, depth)
    out: dict[float, Level] = {}
    for level in changed:
        key = sign * float(level[0])
        if key in out:
            continue
        current: Level | None = levels.get(key)
        if current is not None and (new_bound is None or key <= new_bound):
            out[key] = current  # inside the new top N: its quantity now
        elif old_bound is None or key <= old_bound:
            out[key] = (level[0], _ZERO)  # maybe inside the old top N, not inside the new
    keys = levels.keys()
    if old_bound is not None:
        # Entered from below: inside the new top N, beyond the old N-th. Unchanged levels
        # there were outside the old top N, so the subscriber does not hold them.
        index = min(depth, len(keys)) - 1
        while index >= 0 and keys[index] > old_bound:
            key = keys[index]
            if key not in out:
                out[key] = levels[key]
            index -= 1
    if new_bound is not None:
        # Pushed out: beyond the new N-th, within the old top N (each one by a level that
        # entered, so this walks no further than the update's size).
        for index in range(depth, len(keys)):
            key = keys[index]
            if old_bound is not None and key > old_bound:
                break
            if key not in out:
                out[key] = (levels[key][0], _ZERO)
    return tuple(out.values())
