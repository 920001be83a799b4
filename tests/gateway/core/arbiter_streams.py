"""Builders of true diff streams and redundant copies of them, for arbiter tests."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.book import L2Book
from gateway.core.model import DepthDiff, DepthSnapshot, Level

VENUE = "binance"
SYMBOL = "TEST"
KEY = f"{VENUE}:{SYMBOL}"
BID_PRICES = [f"{p}.00" for p in range(90, 100)]
ASK_PRICES = [f"{p}.00" for p in range(101, 111)]
QTYS = ["0", "0.5", "1.25", "3", "10"]


@dataclass(frozen=True)
class TrueStream:
    """A clean venue stream: ``diffs[i]`` covers ids ``ranges[i]``; ``books[i]`` is the
    normalized book after ``diffs[0..i-1]`` (``books[0]`` is the initial book)."""

    initial_id: int
    initial: tuple[tuple[Level, ...], tuple[Level, ...]]
    diffs: list[tuple[int, int, tuple[Level, ...], tuple[Level, ...]]]
    books: list[object]

    def id_after(self, n_applied: int) -> int:
        return self.initial_id if n_applied == 0 else self.diffs[n_applied - 1][1]

    def book_at_id(self, venue_id: int) -> object:
        for i in range(len(self.diffs) + 1):
            if self.id_after(i) == venue_id:
                return self.books[i]
        raise KeyError(venue_id)

    def snapshot(self, n_applied: int, recv_ns: int = 0) -> DepthSnapshot:
        book = L2Book()
        book.load(*self.initial)
        for _, _, bids, asks in self.diffs[:n_applied]:
            book.apply(bids, asks)
        return DepthSnapshot(
            VENUE,
            SYMBOL,
            self.id_after(n_applied),
            tuple(book.bids()),
            tuple(book.asks()),
            recv_ns,
            -1,
        )


def make_stream(levels: list[tuple[int, bool, int, int]]) -> TrueStream:
    """Deterministic stream from a flat list of (ids_in_batch, is_bid, price_idx, qty_idx)
    choices: each entry is one diff with one level change and ``ids_in_batch`` ids."""
    initial = (
        tuple((p, "1") for p in BID_PRICES[::2]),
        tuple((p, "1") for p in ASK_PRICES[::2]),
    )
    book = L2Book()
    book.load(*initial)
    books: list[object] = [book.normalized()]
    diffs = []
    next_id = 1001
    for n_ids, is_bid, price_idx, qty_idx in levels:
        level = ((BID_PRICES if is_bid else ASK_PRICES)[price_idx], QTYS[qty_idx])
        bids = (level,) if is_bid else ()
        asks = () if is_bid else (level,)
        first, last = next_id, next_id + n_ids - 1
        next_id = last + 1
        diffs.append((first, last, bids, asks))
        book.apply(bids, asks)
        books.append(book.normalized())
    return TrueStream(1000, initial, diffs, books)


def merged(stream: TrueStream, start: int, end: int, conn_id: int, recv_ns: int) -> DepthDiff:
    """Diffs ``start..end`` (inclusive indices) as one event, later levels overriding."""
    bids: dict[str, Level] = {}
    asks: dict[str, Level] = {}
    for _, _, b, a in stream.diffs[start : end + 1]:
        bids.update((lv[0], lv) for lv in b)
        asks.update((lv[0], lv) for lv in a)
    return DepthDiff(
        VENUE,
        SYMBOL,
        stream.diffs[start][0],
        stream.diffs[end][1],
        -1,
        tuple(bids.values()),
        tuple(asks.values()),
        0,
        recv_ns,
        conn_id,
    )
