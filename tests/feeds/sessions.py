"""Books rebuilt from the events of a recorded session, for the adapters' recording tests."""

from __future__ import annotations

from collections import Counter
from collections import defaultdict

from gateway.core.book import L2Book
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Side
from gateway.core.model import Trade


def aggressor_where(book: L2Book, trade: Trade) -> str:
    """Where a trade printed against the book: at/through the ask, the bid, or inside."""
    ask, bid = book.best_ask(), book.best_bid()
    assert ask is not None and bid is not None
    price = float(trade.price)
    if price >= float(ask[0]):
        return "ask"
    if price <= float(bid[0]):
        return "bid"
    return "inside"


class SessionBooks:
    """One L2Book per symbol. ``counts`` counts book events as ``"<type> <symbol>"`` and
    trades as ``"Trade"``; ``trades`` counts trades by (side, :func:`aggressor_where`) on
    books that have bids."""

    def __init__(self) -> None:
        self.books: defaultdict[str, L2Book] = defaultdict(L2Book)
        self.counts: Counter[str] = Counter()
        self.trades: Counter[tuple[Side, str]] = Counter()

    def on_book(self, event: DepthSnapshot | DepthDiff) -> L2Book:
        """Loads a snapshot or applies a diff; returns the symbol's book."""
        self.counts[f"{type(event).__name__} {event.symbol}"] += 1
        book = self.books[event.symbol]
        if isinstance(event, DepthSnapshot):
            book.load(event.bids, event.asks)
        else:
            book.apply(event.bids, event.asks)
        return book

    def on_trade(self, trade: Trade) -> None:
        self.counts["Trade"] += 1
        book = self.books[trade.symbol]
        if book.bid_count:
            self.trades[trade.side, aggressor_where(book, trade)] += 1
