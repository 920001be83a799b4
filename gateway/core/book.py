"""The L2 order book: price levels on sorted dicts, venue strings kept for output.

Pure: no I/O. Each side is a ``SortedDict`` keyed by a float of the price (negated for bids,
so index 0 is the best level on both sides); the value is the venue's ``(price, qty)``
strings, which are what subscribers and checksums see. Float keys order and separate
decimal prices exactly as long as they have at most 15 significant digits, which every
supported venue's tick sizes respect.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

from sortedcontainers import SortedDict

from gateway.core.model import Level


class BadLevel(ValueError):
    """A level whose price or quantity is not a finite non-negative decimal."""


def _parse(level: Level) -> tuple[float, float]:
    try:
        price = float(level[0])
        qty = float(level[1])
    except (ValueError, TypeError, IndexError) as exc:
        raise BadLevel(f"unparseable level {level!r}") from exc
    if not (price > 0.0 and qty >= 0.0) or price == float("inf") or qty == float("inf"):
        raise BadLevel(f"level out of range {level!r}")
    return price, qty


class L2Book:
    """One symbol's book. Quantities are absolute; a zero quantity removes the level."""

    __slots__ = ("_asks", "_bids")

    def __init__(self) -> None:
        self._bids: SortedDict = SortedDict()
        self._asks: SortedDict = SortedDict()

    # --- mutation ---------------------------------------------------------------------

    def clear(self) -> None:
        self._bids.clear()
        self._asks.clear()

    def load(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Replace the whole book. Raises BadLevel (book unchanged) on a bad level."""
        new_bids = {}
        new_asks = {}
        for level in bids:
            price, qty = _parse(level)
            if qty > 0.0:
                new_bids[-price] = level
        for level in asks:
            price, qty = _parse(level)
            if qty > 0.0:
                new_asks[price] = level
        self._bids = SortedDict(new_bids)
        self._asks = SortedDict(new_asks)

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Apply absolute levels. Validates every level first, so a BadLevel leaves the
        book unchanged."""
        parsed_bids = [(_parse(level), level) for level in bids]
        parsed_asks = [(_parse(level), level) for level in asks]
        side = self._bids
        for (price, qty), level in parsed_bids:
            if qty > 0.0:
                side[-price] = level
            else:
                side.pop(-price, None)
        side = self._asks
        for (price, qty), level in parsed_asks:
            if qty > 0.0:
                side[price] = level
            else:
                side.pop(price, None)

    def copy_from(self, other: L2Book) -> None:
        """Make this book equal to ``other`` (levels are immutable tuples: shared)."""
        self._bids = other._bids.copy()
        self._asks = other._asks.copy()

    def truncate(self, depth: int) -> tuple[list[Level], list[Level]]:
        """Keep the best ``depth`` levels per side; returns the removed levels with a zero
        quantity, as a delta that performs the same truncation."""
        removed_bids = [(lv[0], "0") for lv in self._bids.values()[depth:]]
        removed_asks = [(lv[0], "0") for lv in self._asks.values()[depth:]]
        for side in (self._bids, self._asks):
            while len(side) > depth:
                side.popitem()
        return removed_bids, removed_asks

    def diff_to(self, other: L2Book) -> tuple[list[Level], list[Level]]:
        """Absolute levels that turn this book into ``other``: levels only here get a zero
        quantity, levels new or changed in ``other`` get its level."""
        return _side_diff(self._bids, other._bids), _side_diff(self._asks, other._asks)

    # --- reading ----------------------------------------------------------------------

    @property
    def bid_count(self) -> int:
        return len(self._bids)

    @property
    def ask_count(self) -> int:
        return len(self._asks)

    def ranked(self, *, bids: bool) -> SortedDict:
        """One side keyed by rank (the price as a float, negated for bids: smaller is
        better on both sides), values the venue's levels. Read-only for the caller, and
        valid only until the book next changes."""
        return self._bids if bids else self._asks

    def best_bid(self) -> Level | None:
        if not self._bids:
            return None
        level: Level = self._bids.peekitem(0)[1]
        return level

    def best_ask(self) -> Level | None:
        if not self._asks:
            return None
        level: Level = self._asks.peekitem(0)[1]
        return level

    def bids(self, depth: int | None = None) -> list[Level]:
        """Best first; all levels when ``depth`` is None."""
        values = self._bids.values()
        return list(values if depth is None else islice(values, depth))

    def asks(self, depth: int | None = None) -> list[Level]:
        """Best first; all levels when ``depth`` is None."""
        values = self._asks.values()
        return list(values if depth is None else islice(values, depth))

    def is_crossed(self) -> bool:
        """True when the best bid is at or above the best ask."""
        if not self._bids or not self._asks:
            return False
        best_bid_key: float = self._bids.peekitem(0)[0]
        best_ask_key: float = self._asks.peekitem(0)[0]
        return -best_bid_key >= best_ask_key

    def normalized(self) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]:
        """Both sides as numeric ``(price, qty)`` pairs, best first: equality of books."""
        return (
            tuple((-k, float(v[1])) for k, v in self._bids.items()),
            tuple((k, float(v[1])) for k, v in self._asks.items()),
        )


def _side_diff(mine: SortedDict, theirs: SortedDict) -> list[Level]:
    changes: list[Level] = [(lv[0], "0") for key, lv in mine.items() if key not in theirs]
    for key, level in theirs.items():
        current = mine.get(key)
        if current is None or current[1] != level[1]:
            changes.append(level)
    return changes
