"""Builders of true diff streams and redundant copies of them, and a driver that checks
a book against them, for arbiter tests."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field

from gateway.core.book import L2Book
from gateway.core.model import ArbiterEvent
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level
from gateway.core.model import SnapshotWanted
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.sequenced import SequencedBook

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


def diff(
    first: int,
    last: int,
    conn: int = 0,
    bids: Iterable[Level] = (),
    asks: Iterable[Level] = (),
    prev: int = -1,
    *,
    symbol: str = SYMBOL,
) -> DepthDiff:
    """Update ids ``first..last`` of ``symbol`` from connection ``conn`` (``prev``: the
    previous update's last id, -1 where the venue sends none)."""
    return DepthDiff(VENUE, symbol, first, last, prev, tuple(bids), tuple(asks), 0, 0, conn)


def snap(
    last_id: int,
    bids: Iterable[Level] = (("100", "1"),),
    asks: Iterable[Level] = (("101", "1"),),
    *,
    symbol: str = SYMBOL,
) -> DepthSnapshot:
    """A REST snapshot of ``symbol`` at update id ``last_id``."""
    return DepthSnapshot(VENUE, symbol, last_id, tuple(bids), tuple(asks), 0, -1)


def make_stream(levels: list[tuple[int, bool, int, int]], initial_id: int = 1000) -> TrueStream:
    """Deterministic stream from a flat list of (ids_in_batch, is_bid, price_idx, qty_idx)
    choices: each entry is one diff with one level change and ``ids_in_batch`` ids; the
    initial book is at ``initial_id``."""
    initial = (
        tuple((p, "1") for p in BID_PRICES[::2]),
        tuple((p, "1") for p in ASK_PRICES[::2]),
    )
    book = L2Book()
    book.load(*initial)
    books: list[object] = [book.normalized()]
    diffs: list[tuple[int, int, tuple[Level, ...], tuple[Level, ...]]] = []
    next_id = initial_id + 1
    for n_ids, is_bid, price_idx, qty_idx in levels:
        level = ((BID_PRICES if is_bid else ASK_PRICES)[price_idx], QTYS[qty_idx])
        bids = (level,) if is_bid else ()
        asks = () if is_bid else (level,)
        first, last = next_id, next_id + n_ids - 1
        next_id = last + 1
        diffs.append((first, last, bids, asks))
        book.apply(bids, asks)
        books.append(book.normalized())
    return TrueStream(initial_id, initial, diffs, books)


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


def choices(n: int, shift: int = 0) -> list[tuple[int, bool, int, int]]:
    """``n`` deterministic diff choices for :func:`make_stream`."""
    return [
        (1 + (i + shift) % 3, (i + shift) % 2 == 0, (i * 3 + shift) % 10, (i * 7 + shift) % 5)
        for i in range(n)
    ]


@dataclass
class Run:
    """Drives a SequencedBook as the service does, and checks it after every input: while
    its status is live, its book is the venue's true book at its applied id.

    ``truth(arb)``: the stream the book follows; ``snapshot(now_ns)``: the venue's REST
    snapshot at that time. A wanted snapshot is fetched ``lag_ns`` after it is asked for;
    the reorder deadlines fire on time.
    """

    arb: SequencedBook
    truth: Callable[[SequencedBook], TrueStream]
    snapshot: Callable[[int], DepthSnapshot]
    lag_ns: int = 0
    #: (time, event) of everything the book returned.
    published: list[tuple[int, ArbiterEvent]] = field(default_factory=list)
    fetches: int = 0
    live_checks: int = 0
    _fetch_at: int | None = None

    def diff(self, diff: DepthDiff, now_ns: int) -> None:
        self.until(now_ns)
        self._take(self.arb.on_diff(diff, now_ns), now_ns)

    def connection(self, conn_id: int, up: bool, now_ns: int) -> None:
        self.until(now_ns)
        self._take(self.arb.on_connection(conn_id, up, now_ns), now_ns)

    def until(self, now_ns: int) -> None:
        """Fires the deadlines and fetches due by ``now_ns``, in time order; fails when they
        keep coming (a resync loop)."""
        for _ in range(1000):
            deadline = self.arb.deadline_ns()
            due = [t for t in (deadline, self._fetch_at) if t is not None and t <= now_ns]
            if not due:
                return
            at = min(due)
            if at == self._fetch_at:
                self._fetch_at = None
                if self.arb.snapshot_wanted:
                    self.fetches += 1
                    self._take(self.arb.on_snapshot(self.snapshot(at), at), at)
            else:
                self._take(self.arb.on_timer(at), at)
        raise AssertionError(f"still resyncing after 1000 deadlines and fetches: {self.arb.stats}")

    def statuses(self) -> list[tuple[int, SymbolState, str]]:
        return [(t, e.state, e.reason) for t, e in self.published if isinstance(e, StatusChange)]

    def _take(self, events: list[ArbiterEvent], now_ns: int) -> None:
        self.published.extend((now_ns, event) for event in events)
        if self._fetch_at is None and any(isinstance(e, SnapshotWanted) for e in events):
            self._fetch_at = now_ns + self.lag_ns
        arb = self.arb
        if arb.state is SymbolState.LIVE and arb.has_book:
            truth = self.truth(arb)
            assert arb.book.normalized() == truth.book_at_id(arb.applied_id), "live but wrong"
            self.live_checks += 1


def crc(book: L2Book) -> int:
    """A stand-in checksum for replicated books: the CRC32 of the book's normalized levels."""
    return zlib.crc32(repr(book.normalized()).encode())
