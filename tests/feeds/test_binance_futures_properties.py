"""Property tests of Binance futures books (USD-M, COIN-M) through the parser and the
sequenced arbiter (hypothesis), against a model of the venue written from its rules
(exchange-protocols.md §2), not from the arbiter:

- the venue's update ids rise by varying steps (not contiguous); every update sets one
  level (absolute quantity, ``"0"`` deletes);
- a connection receives the updates in events, batched its own way: an event carries the
  first and last update id of its batch (``U``, ``u``) and ``pu``, the ``u`` of the event
  before it on that stream; the levels are the batch's last quantity of each level it
  changed;
- a connection that comes up starts at the venue's current update; a REST snapshot
  (``lastUpdateId``) is the venue's book at any update, older than what the connections
  delivered, inside an event's batch or ahead of them all.

2-3 connections deliver their events, each in order, interleaved arbitrarily; every
connection loses events (never its last), goes down and comes back; a snapshot the book
asks for is answered at any later point. Invariants: every delta published while ``live``
leaves the subscriber's book equal to the venue's at the delta's id, and ids only rise
within an epoch (no update applied twice); a resync is asked only when no connection that
is up can still deliver an event linking the book (the module's gap rule: the reorder window
never passes here); once the stream is over and the snapshot asked for is served, the book
is live and the venue's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import note
from hypothesis import settings
from hypothesis import strategies as st

from feeds import binance_coinm
from feeds import binance_usdm
from gateway.core.arbiter import ArbiterLimits
from gateway.core.book import L2Book
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import DepthDiff
from gateway.core.model import SnapshotWanted
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.sequenced import SequencedBook

from .streams import Draw

BID_PRICES = [f"{p}.0" for p in range(90, 100)]
ASK_PRICES = [f"{p}.0" for p in range(101, 111)]
QTYS = ["0", "0.5", "1.25", "3"]
#: Never passes while the stream runs: only what the connections deliver decides a gap.
WINDOW_NS = 10**15
#: Between two steps' receive times.
STEP_NS = 1_000_000
#: The timed runs: the default reorder window (and twice it to recognise a venue reset),
#: steps of up to 1.5 windows, the arbiter's timer called when due.
TIMED_WINDOW_NS = 100_000_000
#: Reconnects and REST answers per example (each served snapshot may be unusable).
MAX_RECONNECTS = 3
MAX_SNAPSHOTS = 6

Normal = tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]


@dataclass(frozen=True)
class Market:
    """How one futures market spells a symbol's frames."""

    feed: ModuleType
    symbol: str
    #: Fields COIN-M events carry besides USD-M's.
    extra: dict[str, str]

    def frame(
        self, first: int, last: int, prev: int, bids: list[list[str]], asks: list[list[str]]
    ) -> bytes:
        data: dict[str, object] = {
            "e": "depthUpdate",
            "E": 1770000000000,
            "T": 1770000000000,
            "s": self.symbol,
            **self.extra,
            "U": first,
            "u": last,
            "pu": prev,
            "b": bids,
            "a": asks,
        }
        stream = f"{self.symbol.lower()}@depth@100ms"
        return json.dumps({"stream": stream, "data": data}).encode()


MARKETS = {
    "usdm": Market(binance_usdm, "BTCUSDT", {}),
    "coinm": Market(binance_coinm, "BTCUSD_PERP", {"ps": "BTCUSD"}),
}


@dataclass(frozen=True)
class Venue:
    #: Update ids; ``ids[0]`` is the id of the book the stream starts from (no update).
    ids: list[int]
    #: The level update ``k`` (k >= 1) sets: (bid?, price, quantity).
    changes: list[tuple[bool, str, str]]
    #: The venue's book after update ``k``, as (bids, asks).
    books: list[tuple[dict[str, str], dict[str, str]]]

    def normal(self, k: int) -> Normal:
        bids, asks = self.books[k]
        return (
            tuple(sorted(((float(p), float(q)) for p, q in bids.items()), reverse=True)),
            tuple(sorted((float(p), float(q)) for p, q in asks.items())),
        )


@dataclass(frozen=True)
class Event:
    """One event of a connection: updates ``first..last`` (indices into the venue's)."""

    first: int
    last: int


change = st.tuples(st.booleans(), st.integers(0, 9), st.sampled_from(QTYS), st.integers(1, 5))


@st.composite
def venues(draw: st.DrawFn) -> Venue:
    bids = {p: "1" for p in draw(st.sets(st.sampled_from(BID_PRICES), min_size=1))}
    asks = {p: "2" for p in draw(st.sets(st.sampled_from(ASK_PRICES), min_size=1))}
    ids = [draw(st.integers(1000, 1100))]
    changes: list[tuple[bool, str, str]] = [(True, "", "")]
    books = [(dict(bids), dict(asks))]
    for is_bid, index, qty, step in draw(st.lists(change, min_size=2, max_size=40)):
        price = (BID_PRICES if is_bid else ASK_PRICES)[index]
        side = bids if is_bid else asks
        if qty == "0":
            side.pop(price, None)
        else:
            side[price] = qty
        ids.append(ids[-1] + step)
        changes.append((is_bid, price, qty))
        books.append((dict(bids), dict(asks)))
    return Venue(ids, changes, books)


def batching(draw: Draw, venue: Venue) -> list[Event]:
    """A connection's events: the venue's updates but the last cut into batches its own
    way (the last is the stream's tail, delivered on every connection at the end)."""
    events: list[Event] = []
    first = 1
    last = len(venue.ids) - 2
    for k in range(1, last + 1):
        if k == last or draw(st.integers(0, 2)) == 0:
            events.append(Event(first, k))
            first = k + 1
    return events


def frame(market: Market, venue: Venue, event: Event) -> bytes:
    levels: dict[tuple[bool, str], str] = {}
    for k in range(event.first, event.last + 1):
        is_bid, price, qty = venue.changes[k]
        levels[is_bid, price] = qty  # the batch's last quantity of each level
    bids = [[p, q] for (is_bid, p), q in levels.items() if is_bid]
    asks = [[p, q] for (is_bid, p), q in levels.items() if not is_bid]
    ids = venue.ids
    return market.frame(ids[event.first], ids[event.last], ids[event.first - 1], bids, asks)


def rest_body(venue: Venue, k: int) -> bytes:
    bids, asks = venue.books[k]
    return json.dumps(
        {
            "lastUpdateId": venue.ids[k],
            "E": 1770000000000,
            "T": 1770000000000,
            "bids": [[p, q] for p, q in bids.items()],
            "asks": [[p, q] for p, q in asks.items()],
        }
    ).encode()


class Subscriber:
    """A subscriber's copy of the published book, checked against the venue at every
    delta published while live."""

    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self.truth = {venue.ids[k]: k for k in range(len(venue.ids))}
        self.book = L2Book()
        self.state = SymbolState.SYNCING
        self.epoch = 0
        self.venue_id = -1

    def take(self, arb: SequencedBook, out: list[object]) -> None:
        reset = False
        for event in out:
            if isinstance(event, StatusChange):
                self.state = event.state
            elif isinstance(event, BookReset):
                assert event.epoch > self.epoch
                reset = True
                self.epoch, self.venue_id = event.epoch, event.venue_id
            elif isinstance(event, BookDelta):
                assert not reset, "a delta after a reset in one call"
                assert event.epoch == self.epoch
                assert event.venue_id > self.venue_id, "an update applied twice"
                self.venue_id = event.venue_id
                self.book.apply(event.bids, event.asks)
                if self.state is SymbolState.LIVE:
                    k = self.truth.get(event.venue_id)
                    assert k is not None, f"live at id {event.venue_id}, not the venue's"
                    assert self.book.normalized() == self.venue.normal(k), "live, not the venue's"
        if reset:
            # The book as it stands after the call that returned the reset.
            self.book.copy_from(arb.book)
        if self.state is SymbolState.LIVE:
            k = self.truth.get(arb.applied_id)
            assert k is not None and arb.book.normalized() == self.venue.normal(k)
            assert self.book.normalized() == arb.book.normalized()


@pytest.mark.parametrize(
    ("market_name", "timed"), [("coinm", False), ("usdm", False), ("usdm", True)]
)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_live_futures_book_is_the_venues(
    market_name: str, timed: bool, data: st.DataObject
) -> None:
    """Untimed, the reorder window never passes while the stream runs; timed, steps take up
    to 1.5 windows and the window decides gaps too (a resync may then be asked while a slow
    connection could still deliver the ids, by design: only the live book is checked)."""
    market = MARKETS[market_name]
    window_ns = TIMED_WINDOW_NS if timed else WINDOW_NS
    venue = data.draw(venues())
    n_conns = data.draw(st.integers(2, 3))
    events = [batching(data.draw, venue) for _ in range(n_conns)]
    # The index of each connection's next event; its subscription starts at any event.
    cursor = [data.draw(st.integers(0, len(e) - 1)) for e in events]
    up = [True] * n_conns
    key = f"{market.feed.VENUE}:{market.symbol}"
    arb = SequencedBook(key, binance_usdm.BinanceFuturesRule(), ArbiterLimits(window_ns))
    subscriber = Subscriber(venue)
    #: The venue's latest update any connection or snapshot showed.
    venue_at = 0
    reconnects = snapshots = 0
    now_ns = 0

    def run(out: list[object]) -> None:
        subscriber.take(arb, out)
        for wanted in (e for e in out if isinstance(e, SnapshotWanted)):
            if arb.applied_id < 0 or timed:
                continue  # the initial sync, or the window passed
            # Certain gap: no connection that is up can still link the book.
            for c in range(n_conns):
                if not up[c]:
                    continue
                for ev in events[c][cursor[c] :]:
                    linked = venue.ids[ev.first - 1] == arb.applied_id or (
                        venue.ids[ev.first] <= arb.applied_id < venue.ids[ev.last]
                    )
                    assert not linked, f"{wanted.reason}: conn {c} can still deliver {ev}"

    def serve(k: int) -> None:
        nonlocal venue_at
        venue_at = max(venue_at, k)
        note(f"REST snapshot at #{k} (id {venue.ids[k]})")
        snap = market.feed.parse_snapshot(market.symbol, rest_body(venue, k), now_ns)
        run(list(arb.on_snapshot(snap, now_ns)))

    for c in range(n_conns):
        run(list(arb.on_connection(c, True, now_ns)))
    while True:
        if timed:
            now_ns += data.draw(st.integers(0, 3)) * TIMED_WINDOW_NS // 2
            deadline_ns = arb.deadline_ns()
            if deadline_ns is not None and now_ns >= deadline_ns:
                run(list(arb.on_timer(now_ns)))
        now_ns += STEP_NS
        choices: list[tuple[str, int]] = [
            ("deliver", c) for c in range(n_conns) if up[c] and cursor[c] < len(events[c])
        ]
        choices += [("up", c) for c in range(n_conns) if not up[c]]
        if reconnects < MAX_RECONNECTS:
            choices += [("down", c) for c in range(n_conns) if up[c]]
        if arb.snapshot_wanted and snapshots < MAX_SNAPSHOTS:
            choices.append(("snapshot", -1))
        if not choices:
            break
        what, c = data.draw(st.sampled_from(choices))
        if what == "deliver":
            ev = events[c][cursor[c]]
            cursor[c] += 1
            its_last = cursor[c] == len(events[c])
            if not its_last and data.draw(st.integers(0, 4)) == 0:
                note(f"conn {c} loses {ev}")
                continue
            venue_at = max(venue_at, ev.last)
            note(f"conn {c}: {ev}")
            for diff in market.feed.parse(frame(market, venue, ev), now_ns, c):
                assert isinstance(diff, DepthDiff)
                run(list(arb.on_diff(diff, now_ns)))
        elif what == "down":
            reconnects += 1
            up[c] = False
            note(f"conn {c} down")
            run(list(arb.on_connection(c, False, now_ns)))
        elif what == "up":
            # A new subscription starts at the venue's current update, or later.
            skip = data.draw(st.integers(0, 2))
            cursor[c] = next(
                (i for i, ev in enumerate(events[c]) if ev.first > venue_at + skip),
                len(events[c]),
            )
            up[c] = True
            note(f"conn {c} up at event {cursor[c]}")
            run(list(arb.on_connection(c, True, now_ns)))
        else:
            snapshots += 1
            serve(data.draw(st.integers(0, len(venue.ids) - 2)))  # not the tail yet
    # The stream's tail reaches every connection (all up again); then the stream is over:
    # the reorder window passes, the snapshot asked for is served.
    last = len(venue.ids) - 1
    for c in range(n_conns):
        now_ns += STEP_NS
        for diff in market.feed.parse(frame(market, venue, Event(last, last)), now_ns, c):
            assert isinstance(diff, DepthDiff)
            run(list(arb.on_diff(diff, now_ns)))
    now_ns += 2 * window_ns
    run(list(arb.on_timer(now_ns)))
    if arb.snapshot_wanted:
        serve(last)
    assert arb.state is SymbolState.LIVE
    # Binance never restarts its ids: connections behind the book are lagging.
    assert arb.stats.venue_resets == 0
    assert arb.applied_id == venue.ids[last]
    assert arb.book.normalized() == venue.normal(last)
    assert arb.pending == 0


@pytest.mark.parametrize("market_name", ["usdm", "coinm"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_connections_lagging_the_fastest_after_it_drops_never_resync(
    market_name: str, data: st.DataObject
) -> None:
    """The timed run's lag case: connection 0 is ahead of the others when it goes down; the
    others, batching their own way, then deliver copies of what the book applied for as
    long as it takes (steps of up to 1.5 reorder windows), and catch up: no resync, and the
    book stays live and the venue's."""
    market = MARKETS[market_name]
    venue = data.draw(venues())
    n_conns = data.draw(st.integers(2, 3))
    events = [batching(data.draw, venue) for _ in range(n_conns)]
    key = f"{market.feed.VENUE}:{market.symbol}"
    arb = SequencedBook(key, binance_usdm.BinanceFuturesRule(), ArbiterLimits(TIMED_WINDOW_NS))
    subscriber = Subscriber(venue)
    now_ns = 0

    def deliver(c: int, ev: Event) -> None:
        note(f"conn {c}: {ev} at {now_ns // 1_000_000} ms")
        for diff in market.feed.parse(frame(market, venue, ev), now_ns, c):
            assert isinstance(diff, DepthDiff)
            out: list[object] = list(arb.on_diff(diff, now_ns))
            subscriber.take(arb, out)
            assert not any(isinstance(e, SnapshotWanted | StatusChange) for e in out), out

    for c in range(n_conns):
        subscriber.take(arb, list(arb.on_connection(c, True, now_ns)))
    snap = market.feed.parse_snapshot(market.symbol, rest_body(venue, 0), now_ns)
    subscriber.take(arb, list(arb.on_snapshot(snap, now_ns)))
    assert subscriber.state is SymbolState.LIVE
    # Connection 0 delivers up to its event ``ahead``; each other connection up to an
    # event that ends at or before it.
    ahead = data.draw(st.integers(0, len(events[0]) - 1))
    upto = events[0][ahead].last
    cursor = [ahead + 1] + [
        data.draw(st.integers(0, sum(ev.last <= upto for ev in events[c])))
        for c in range(1, n_conns)
    ]
    for c in range(n_conns):
        for ev in events[c][: cursor[c]]:
            now_ns += STEP_NS
            deliver(c, ev)
    subscriber.take(arb, list(arb.on_connection(0, False, now_ns)))
    note(f"conn 0 down at {now_ns // 1_000_000} ms, book at #{upto}")
    while True:
        waiting = [c for c in range(1, n_conns) if cursor[c] < len(events[c])]
        if not waiting:
            break
        now_ns += data.draw(st.integers(0, 3)) * TIMED_WINDOW_NS // 2
        deadline_ns = arb.deadline_ns()
        if deadline_ns is not None and now_ns >= deadline_ns:
            timed_out: list[object] = list(arb.on_timer(now_ns))
            subscriber.take(arb, timed_out)
            assert not timed_out, timed_out
        c = data.draw(st.sampled_from(waiting))
        cursor[c] += 1
        deliver(c, events[c][cursor[c] - 1])
    last = len(venue.ids) - 2
    assert subscriber.state is SymbolState.LIVE and arb.applied_id == venue.ids[last]
    assert arb.book.normalized() == venue.normal(last)
    assert (arb.stats.venue_resets, arb.stats.resyncs, arb.stats.gaps) == (0, 0, 0)


def shrunk_venue() -> tuple[Venue, SequencedBook]:
    """The shrunk examples' venue: ids 1000-1030, the book at 1000 with its one ask, which
    every update deletes again; and a USD-M book with the timed runs' window."""
    ids = list(range(1000, 1031))
    books = [({"90.0": "1"}, {"101.0": "2"})] + [({"90.0": "1"}, {})] * 30
    venue = Venue(ids, [(True, "", "")] + [(False, "101.0", "0")] * 30, books)
    rule = binance_usdm.BinanceFuturesRule()
    return venue, SequencedBook("binance-usdm:BTCUSDT", rule, ArbiterLimits(TIMED_WINDOW_NS))


def test_a_rest_snapshot_older_than_the_book_while_connections_lag_is_not_a_venue_reset() -> None:
    """The shrunk example: the book is built at #2 from a REST snapshot, a gap sends it
    resyncing while connection 0's latest update is #1 (it lags); the REST answer is #0,
    older than the book (a REST server answering from behind). Every connection is below
    the book's id, but nothing showed it for the reset window: not a venue reset; the
    snapshot is not used and a newer one is asked for."""
    market = MARKETS["usdm"]
    venue, arb = shrunk_venue()
    subscriber = Subscriber(venue)
    now_ns = 0

    def run(out: list[object]) -> list[object]:
        subscriber.take(arb, out)
        return out

    def deliver(c: int, ev: Event) -> None:
        for diff in market.feed.parse(frame(market, venue, ev), now_ns, c):
            assert isinstance(diff, DepthDiff)
            run(list(arb.on_diff(diff, now_ns)))

    def status() -> SymbolState:
        return subscriber.state

    def serve(k: int) -> list[object]:
        snap = market.feed.parse_snapshot(market.symbol, rest_body(venue, k), now_ns)
        return run(list(arb.on_snapshot(snap, now_ns)))

    for c in range(3):
        run(list(arb.on_connection(c, True, now_ns)))
    deliver(2, Event(13, 29))
    for c in (1, 2):
        run(list(arb.on_connection(c, False, now_ns)))
    deliver(0, Event(1, 1))
    serve(2)
    assert status() is SymbolState.LIVE and arb.applied_id == 1002
    now_ns += 2 * TIMED_WINDOW_NS
    run(list(arb.on_timer(now_ns)))
    assert status() is SymbolState.RESYNCING and arb.snapshot_wanted
    run(list(arb.on_connection(1, True, now_ns)))

    out = serve(0)
    assert out == [SnapshotWanted(arb.key, "snapshot older than the book")]
    assert arb.stats.venue_resets == 0 and arb.snapshot_wanted
    assert status() is SymbolState.RESYNCING and not arb.has_book
    serve(29)
    assert status() is SymbolState.LIVE and arb.applied_id == 1029
    assert arb.book.normalized() == venue.normal(29)
    assert arb.stats.venue_resets == 0 and arb.pending == 0


def test_a_connection_lagging_a_rest_snapshot_the_book_moved_past_is_not_a_venue_reset() -> None:
    """The shrunk example: connection 2's event up to #29 waits while the book syncs, and it
    goes down; the REST snapshot is #28, so the book is built and moved past it to #29 by
    that event. Connection 0, up but silent until then, delivers #9, #11, then #12-#29,
    with more than the reset window between #9 and #11: below the snapshot, no applied
    update to compare them with, but rising in its own stream: it lags the snapshot, no
    venue reset."""
    market = MARKETS["usdm"]
    venue, arb = shrunk_venue()
    subscriber = Subscriber(venue)
    now_ns = 0

    def status() -> SymbolState:
        return subscriber.state

    def deliver(c: int, ev: Event) -> None:
        for diff in market.feed.parse(frame(market, venue, ev), now_ns, c):
            assert isinstance(diff, DepthDiff)
            subscriber.take(arb, list(arb.on_diff(diff, now_ns)))

    for c in range(3):
        subscriber.take(arb, list(arb.on_connection(c, True, now_ns)))
    deliver(2, Event(13, 29))
    for c in (1, 2):
        subscriber.take(arb, list(arb.on_connection(c, False, now_ns)))
    subscriber.take(arb, list(arb.on_connection(1, True, now_ns)))
    snap = market.feed.parse_snapshot(market.symbol, rest_body(venue, 28), now_ns)
    subscriber.take(arb, list(arb.on_snapshot(snap, now_ns)))
    assert status() is SymbolState.LIVE and arb.applied_id == 1029
    # #11 comes more than the reset window after #9.
    for ev, after_ns in ((Event(9, 9), STEP_NS), (Event(11, 11), 5 * TIMED_WINDOW_NS // 2)):
        now_ns += after_ns
        deliver(0, ev)
        assert arb.deadline_ns() is None  # nothing waits: no timer to call
    assert after_ns > arb.reset_window_ns
    assert status() is SymbolState.LIVE and arb.stats.venue_resets == 0
    now_ns += STEP_NS
    deliver(0, Event(12, 29))
    assert status() is SymbolState.LIVE and arb.stats.venue_resets == 0
    deliver(0, Event(30, 30))
    assert status() is SymbolState.LIVE and arb.applied_id == 1030
    assert arb.book.normalized() == venue.normal(30)
    assert (arb.stats.venue_resets, arb.stats.resyncs) == (0, 0)
