"""book: the L2 book's write and read costs on the real diff levels, against plain dicts.

Every implementation starts from the capture's REST snapshot and applies the depth diffs
after it, in order, with the same level parsing and checks as ``gateway.core.book.L2Book``
(``float()`` of price and quantity, validated before anything changes). They differ only
in the container:

- ``L2Book``: ``SortedDict`` per side, float keys (negated for bids), the gateway's book;
- ``dict + max()/min() on read``: a plain dict per side, the best level found by a scan;
- ``dict + sorted() on read``: a plain dict per side, the keys sorted on every read;
- ``dict + best key kept on write``: a plain dict per side and its best key, updated as
  levels are set; a side is scanned again only after its best level was removed (a
  prototype, not in the gateway).

Figures: applying (per level and per diff), reading the best bid and ask (once each, on
the book as it stands after every diff), and the two together per diff (apply a diff,
then read the top of book: what a bbo channel costs), on the first diffs only for the
last figure because the sorted baseline is slow.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from bench.common import Timing
from bench.common import load_depth_data
from bench.common import measure
from gateway.core.book import L2Book  # the baselines parse levels as L2Book does
from gateway.core.book import _parse  # the baselines parse levels as L2Book does
from gateway.core.model import Level

TITLE = "book: L2Book (SortedDict, float keys) vs plain dict baselines, real diff levels"


def _set_levels(side: dict[float, Level], parsed: list[tuple[tuple[float, float], Level]]) -> None:
    """Each parsed level set on ``side`` (removed when its quantity is zero)."""
    for (price, qty), level in parsed:
        if qty > 0.0:
            side[price] = level
        else:
            side.pop(price, None)


class DictBook:
    """Baseline: a plain dict per side keyed by float price; ordering only on read."""

    __slots__ = ("_asks", "_bids")

    def __init__(self) -> None:
        self._bids: dict[float, Level] = {}
        self._asks: dict[float, Level] = {}

    def load(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        self._bids = {_parse(lv)[0]: lv for lv in bids if _parse(lv)[1] > 0.0}
        self._asks = {_parse(lv)[0]: lv for lv in asks if _parse(lv)[1] > 0.0}

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        parsed_bids = [(_parse(level), level) for level in bids]
        parsed_asks = [(_parse(level), level) for level in asks]
        _set_levels(self._bids, parsed_bids)
        _set_levels(self._asks, parsed_asks)

    def bids(self) -> list[Level]:
        """Best first, as ``L2Book.bids()``."""
        return [self._bids[price] for price in sorted(self._bids, reverse=True)]

    def asks(self) -> list[Level]:
        """Best first, as ``L2Book.asks()``."""
        return [self._asks[price] for price in sorted(self._asks)]


class ScanBook(DictBook):
    """Best levels by a linear scan (``max``/``min``) on read."""

    __slots__ = ()

    def best_bid(self) -> Level | None:
        return self._bids[max(self._bids)] if self._bids else None

    def best_ask(self) -> Level | None:
        return self._asks[min(self._asks)] if self._asks else None


class SortedOnReadBook(DictBook):
    """Best levels by sorting the keys on every read."""

    __slots__ = ()

    def best_bid(self) -> Level | None:
        return self._bids[sorted(self._bids)[-1]] if self._bids else None

    def best_ask(self) -> Level | None:
        return self._asks[sorted(self._asks)[0]] if self._asks else None


class CachedBestBook(DictBook):
    """A plain dict per side plus the best key of each side, kept on write; a side is
    scanned again only after its best level was removed."""

    __slots__ = ("_best_ask", "_best_bid")

    def __init__(self) -> None:
        super().__init__()
        self._best_bid: float | None = None
        self._best_ask: float | None = None

    def load(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        super().load(bids, asks)
        self._best_bid = max(self._bids) if self._bids else None
        self._best_ask = min(self._asks) if self._asks else None

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        parsed_bids = [(_parse(level), level) for level in bids]
        parsed_asks = [(_parse(level), level) for level in asks]
        side = self._bids
        best = self._best_bid
        for (price, qty), level in parsed_bids:
            if qty > 0.0:
                side[price] = level
                if best is not None and price > best:
                    best = price
            elif side.pop(price, None) is not None and price == best:
                best = None
        self._best_bid = best
        side = self._asks
        best = self._best_ask
        for (price, qty), level in parsed_asks:
            if qty > 0.0:
                side[price] = level
                if best is not None and price < best:
                    best = price
            elif side.pop(price, None) is not None and price == best:
                best = None
        self._best_ask = best

    def best_bid(self) -> Level | None:
        if self._best_bid is None and self._bids:
            self._best_bid = max(self._bids)
        return None if self._best_bid is None else self._bids[self._best_bid]

    def best_ask(self) -> Level | None:
        if self._best_ask is None and self._asks:
            self._best_ask = min(self._asks)
        return None if self._best_ask is None else self._asks[self._best_ask]


_IMPLEMENTATIONS: tuple[tuple[str, Callable[[], Any], int], ...] = (
    # name, factory, relative cost of one read (sizes the read loops)
    ("L2Book (SortedDict, float keys)", L2Book, 1),
    ("dict + max()/min() on read", ScanBook, 100),
    ("dict + sorted() on read", SortedOnReadBook, 1000),
    ("dict + best key kept on write", CachedBestBook, 1),
)

Changes = list[tuple[tuple[Level, ...], tuple[Level, ...]]]


def _with(fresh: Callable[[], Any], changes: Changes) -> tuple[Any, Changes]:
    """A timed run's state: a fresh book and what to apply to it."""
    return (fresh(), changes)


def _pair(book: Any, reads: int) -> tuple[Any, int]:
    return (book, reads)


def _apply_all(state: tuple[Any, Changes]) -> None:
    book, changes = state
    apply = book.apply
    for bids, asks in changes:
        apply(bids, asks)


def _read_top(state: tuple[Any, int]) -> None:
    book, reads = state
    best_bid = book.best_bid
    best_ask = book.best_ask
    for _ in range(reads):
        best_bid()
        best_ask()


def _apply_and_read(state: tuple[Any, Changes]) -> None:
    book, changes = state
    apply = book.apply
    best_bid = book.best_bid
    best_ask = book.best_ask
    for bids, asks in changes:
        apply(bids, asks)
        best_bid()
        best_ask()


def run(quick: bool) -> list[dict[str, object]]:
    data = load_depth_data(limit=150 if quick else None)
    repeats = 2 if quick else 5
    snapshot = data.snapshot
    changes: Changes = [(d.bids, d.asks) for d in data.applicable]
    levels = sum(len(b) + len(a) for b, a in changes)
    with_reads = changes[: 50 if quick else 500]
    read_budget = 2_000 if quick else 50_000

    rows: list[dict[str, object]] = []
    reference: tuple[tuple[Any, ...], tuple[list[Level], list[Level]]] | None = None
    apply_l2: Timing | None = None
    for name, factory, read_cost in _IMPLEMENTATIONS:

        def fresh(factory: Callable[[], Any] = factory) -> Any:
            book = factory()
            book.load(snapshot.bids, snapshot.asks)
            return book

        apply_t = measure(_apply_all, functools.partial(_with, fresh, changes), repeats=repeats)
        final = fresh()
        _apply_all((final, changes))
        top = (final.best_bid(), final.best_ask())
        sides = (final.bids(), final.asks())
        if reference is None:
            reference = (top, sides)
        elif (top, sides) != reference:
            raise RuntimeError(f"{name}: the final book differs from L2Book's (top {top})")
        reads = max(20, read_budget // read_cost)
        read_t = measure(_read_top, functools.partial(_pair, final, reads), repeats=repeats)
        both_t = measure(
            _apply_and_read, functools.partial(_with, fresh, with_reads), repeats=repeats
        )
        if apply_l2 is None:
            apply_l2 = apply_t
        rows.append(
            {
                "implementation": name,
                "levels applied": levels,
                "apply µs/level": apply_t.per_op_us(levels),
                "apply levels/s": apply_t.ops_per_s(levels),
                "apply µs/diff": apply_t.per_op_us(len(changes)),
                "best_bid()+best_ask() µs": read_t.per_op_us(reads),
                "top-of-book reads/s": read_t.ops_per_s(reads),
                f"apply+read µs/diff (first {len(with_reads)})": both_t.per_op_us(len(with_reads)),
                "apply speed vs L2Book": apply_l2.median_ns / apply_t.median_ns,
                "book levels at end (bid/ask)": f"{len(sides[0])}/{len(sides[1])}",
                "spread % (apply)": apply_t.spread_pct,
            }
        )
    rows.append(
        {
            "table": "data",
            "source": data.source,
            "diffs": len(changes),
            "levels": levels,
            "snapshot levels (bid/ask)": f"{len(snapshot.bids)}/{len(snapshot.asks)}",
        }
    )
    return rows
