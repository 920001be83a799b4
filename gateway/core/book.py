"""The L2 order book: price levels on sorted dicts, venue strings kept for output.

Pure: no I/O. Each side is a ``SortedDict`` keyed by a float of the price (negated for bids,
so index 0 is the best level on both sides); the value is the venue's ``(price, qty)``
strings, which are what subscribers and checksums see. Float keys order and separate
decimal prices exactly as long as they have at most 15 significant digits, which every
supported venue's tick sizes respect.

A book may be capped at ``max_levels`` per side (docs/architecture.md, Bounded buffers):

- a message that alone carries more levels on one side than the cap (a snapshot with more
  distinct levels, an update with more entries) is the venue breaking its contract: it is
  refused with :class:`TooManyLevels` (a :class:`BadLevel`) and the book is unchanged;
- when updates leave a side above the cap, the levels farthest from the touch are pruned
  until it holds ``max_levels``; :meth:`L2Book.apply` returns them as a delta (quantity
  ``"0"``) so that copies of the book pruned the same way. Pruning never touches the best
  ``max_levels`` levels: levels better than the best pruned price stay exact, so a top-N
  (a checksum's, a subscriber's depth) stays right while the book holds N levels better
  than it. Beyond that price the book knows only what updates told it since, as it knows
  nothing beyond a venue snapshot's depth.

An update applied with a :class:`BeforeImage` can be undone (:meth:`L2Book.undo`): the
image holds what each of its levels replaced and what the cap pruned after it, so a book
with its latest updates undone, newest first, is exactly the book it was before them (the
audits' view of the book at an earlier id, :mod:`gateway.core.audit`).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
from itertools import islice

from sortedcontainers import SortedDict

from gateway.core.model import Level


class BadLevel(ValueError):
    """A level whose price or quantity is not a finite non-negative decimal."""


class TooManyLevels(BadLevel):
    """A message carrying more levels on one side than the book's cap."""


def _parse(level: Level) -> tuple[float, float]:
    try:
        price = float(level[0])
        qty = float(level[1])
    except (ValueError, TypeError, IndexError) as exc:
        raise BadLevel(f"unparseable level {level!r}") from exc
    if not (price > 0.0 and qty >= 0.0) or price == float("inf") or qty == float("inf"):
        raise BadLevel(f"level out of range {level!r}")
    return price, qty


#: What :meth:`L2Book.apply` pruned: removed bids and asks, each with a zero quantity.
Pruned = tuple[list[Level], list[Level]]


class BeforeImage:
    """What one :meth:`L2Book.apply` replaced, for :meth:`L2Book.undo`: ``levels``, for
    each of its entries, bids then asks in order, the level at its price just before it
    (None: none); ``pruned``, the levels the cap then removed, as they were (None: none).

    It references levels the book held (shared, never copied): about 8 bytes per entry
    and the replaced levels kept alive."""

    __slots__ = ("levels", "pruned")

    def __init__(self) -> None:
        self.levels: list[Level | None] = []
        self.pruned: Pruned | None = None


class L2Book:
    """One symbol's book. Quantities are absolute; a zero quantity removes the level.

    ``max_levels``: the cap of levels per side (None: uncapped), see the module docstring.
    """

    __slots__ = ("_asks", "_bids", "max_levels")

    def __init__(self, max_levels: int | None = None) -> None:
        if max_levels is not None and max_levels < 1:
            raise ValueError("max_levels must be >= 1")
        self.max_levels = max_levels
        self._bids: SortedDict = SortedDict()
        self._asks: SortedDict = SortedDict()

    # --- mutation ---------------------------------------------------------------------

    def clear(self) -> None:
        self._bids.clear()
        self._asks.clear()

    def load(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Replace the whole book. Levels are taken in order as an update would take
        them: of several entries at one price the last wins (a zero quantity removes an
        earlier one). Raises BadLevel on a bad level and TooManyLevels when a side has
        more levels than the cap; the book is then unchanged."""
        new_bids: dict[float, Level] = {}
        new_asks: dict[float, Level] = {}
        for level in bids:
            price, qty = _parse(level)
            if qty > 0.0:
                new_bids[-price] = level
            else:
                new_bids.pop(-price, None)
        for level in asks:
            price, qty = _parse(level)
            if qty > 0.0:
                new_asks[price] = level
            else:
                new_asks.pop(price, None)
        cap = self.max_levels
        if cap is not None and (len(new_bids) > cap or len(new_asks) > cap):
            raise TooManyLevels(
                f"snapshot of {len(new_bids)} bid and {len(new_asks)} ask levels "
                f"exceeds the cap of {cap} per side"
            )
        self._bids = SortedDict(new_bids)
        self._asks = SortedDict(new_asks)

    def apply(
        self, bids: Iterable[Level], asks: Iterable[Level], before: BeforeImage | None = None
    ) -> Pruned | None:
        """Apply absolute levels. Validates every level first, so a BadLevel (or a
        TooManyLevels: more entries on a side than the cap) leaves the book unchanged.
        Returns the levels pruned to keep the cap, or None when none were. ``before``, an
        empty image, receives what the update replaced (unchanged when it raises)."""
        parsed_bids = [(_parse(level), level) for level in bids]
        parsed_asks = [(_parse(level), level) for level in asks]
        cap = self.max_levels
        if cap is not None and (len(parsed_bids) > cap or len(parsed_asks) > cap):
            raise TooManyLevels(
                f"update of {len(parsed_bids)} bid and {len(parsed_asks)} ask levels "
                f"exceeds the cap of {cap} per side"
            )
        record = None if before is None else before.levels.append
        side = self._bids
        for (price, qty), level in parsed_bids:
            if record is not None:
                record(side.get(-price))
            if qty > 0.0:
                side[-price] = level
            else:
                side.pop(-price, None)
        side = self._asks
        for (price, qty), level in parsed_asks:
            if record is not None:
                record(side.get(price))
            if qty > 0.0:
                side[price] = level
            else:
                side.pop(price, None)
        if cap is None or (len(self._bids) <= cap and len(self._asks) <= cap):
            return None
        cut = _cut(self._bids, cap), _cut(self._asks, cap)
        if before is not None:
            before.pruned = cut
        return _zeroed(cut[0]), _zeroed(cut[1])

    def undo(self, bids: Sequence[Level], asks: Sequence[Level], before: BeforeImage) -> None:
        """Undoes the :meth:`apply` of ``bids`` and ``asks`` that filled ``before``: the
        book must be as that apply left it (later applies undone first, newest first). The
        cap is not enforced: the book is as it was, pruned levels back in place."""
        if before.pruned is not None:
            for level in before.pruned[0]:
                self._bids[-float(level[0])] = level
            for level in before.pruned[1]:
                self._asks[float(level[0])] = level
        replaced = before.levels
        # Newest first within the update too: an entry repeating a price found the earlier one.
        for level, prev in zip(reversed(asks), reversed(replaced[len(bids) :]), strict=True):
            _restore(self._asks, float(level[0]), prev)
        for level, prev in zip(reversed(bids), reversed(replaced[: len(bids)]), strict=True):
            _restore(self._bids, -float(level[0]), prev)

    def copy_from(self, other: L2Book) -> None:
        """Make this book equal to ``other`` (levels are immutable tuples: shared)."""
        self._bids = other._bids.copy()
        self._asks = other._asks.copy()

    def truncate(self, depth: int) -> Pruned:
        """Keep the best ``depth`` levels per side; returns the removed levels with a zero
        quantity, as a delta that performs the same truncation."""
        return _zeroed(_cut(self._bids, depth)), _zeroed(_cut(self._asks, depth))

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

    def crossing(self) -> tuple[Level, Level] | None:
        """The best bid and best ask when the book is crossed, else None."""
        if self.is_crossed():
            return self._bids.peekitem(0)[1], self._asks.peekitem(0)[1]
        return None

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


def _cut(side: SortedDict, depth: int) -> list[Level]:
    """Removes the levels of ``side`` beyond the best ``depth``; returns them, best first."""
    removed: list[Level] = []
    while len(side) > depth:
        removed.append(side.popitem()[1])
    removed.reverse()
    return removed


def _zeroed(levels: list[Level]) -> list[Level]:
    """``levels`` with a zero quantity: their removal as a delta."""
    return [(level[0], "0") for level in levels]


def _restore(side: SortedDict, key: float, level: Level | None) -> None:
    if level is None:
        side.pop(key, None)
    else:
        side[key] = level


def _side_diff(mine: SortedDict, theirs: SortedDict) -> list[Level]:
    changes: list[Level] = [(lv[0], "0") for key, lv in mine.items() if key not in theirs]
    for key, level in theirs.items():
        current = mine.get(key)
        if current is None or current[1] != level[1]:
            changes.append(level)
    return changes
