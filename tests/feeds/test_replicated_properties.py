"""Property tests of the unsequenced venues (Kraken v2 ``book``, Coinbase Advanced Trade
``level2``) through their real adapters and the venue pipeline (hypothesis), against a model
of each venue written from its rules (exchange-protocols.md §3, §5), not from the arbiter:

- Kraken: a subscription starts with a ``snapshot`` of the top ``depth`` levels; an
  ``update`` carries the levels of that top that changed (a level that left the book with
  quantity 0, a level that entered the top from below with its quantity) and no deletion
  for a level pushed out of the top; every message's ``checksum`` is the CRC32 of the top
  10 asks then bids of the top after it. The venue's book is deeper than the subscription.
- Coinbase: a subscription starts with a ``snapshot`` event; an ``update`` carries the
  changed levels, ``"0"`` deleting; every message on a connection (heartbeats, acks, book
  messages of every product) carries the connection's ``sequence_num``, counting up from 0
  on each new connection: a jump is a lost message, whatever product it was of.

Either venue may set a price twice in one message (the last wins); Kraken's updates may
carry a level below the subscribed depth.

2-3 connections carry two symbols each and deliver the venue's messages in order,
interleaved arbitrarily; a connection may lose a message (Kraken: an update, whose loss
only the next checksum shows), deliver one after the message behind it (Coinbase, whose
docs allow it), deliver a corrupted level (Kraken: the checksum is of the
true book; Coinbase: a bid that crosses the book, the only wrong level it can tell), go
down and come back, stop one symbol's channel on one connection (until that symbol is
resubscribed there: the pipeline watches every channel's activity), and answers a
resubscribe with a fresh snapshot after a delay; the clock is injected. Invariants after
every step: a book served ``live`` is the venue's book at one of its messages (to the depth
both are defined at: Kraken's subscribed top), and at the update whose event time is its id
where it is one; every replica the arbiter calls valid is the venue's book at one of its
messages. Once the faults stop and every connection catches up, every book is live and the
venue's latest, on a replica of every connection. The venue's book never empties a side, so
a corrupted Coinbase bid always crosses it.
"""

from __future__ import annotations

import datetime
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import note
from hypothesis import settings
from hypothesis import strategies as st

from feeds import coinbase
from feeds import kraken
from gateway.core.activity import ActivityLimits
from gateway.core.book import L2Book
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import SymbolState
from gateway.core.pipeline import Resubscribe
from gateway.core.pipeline import Step
from gateway.core.pipeline import VenuePipeline
from gateway.core.replicated import ReplicatedBook
from gateway.wire.venues import ADAPTERS

SYMBOLS = {kraken.VENUE: ["BTC/USD", "ETH/USD"], coinbase.VENUE: ["BTC-USD", "ETH-USD"]}
#: 20 levels a side: deeper than Kraken's subscribed 10.
BID_PRICES = [f"{p}.5" for p in range(100, 120)]
ASK_PRICES = [f"{p}.5" for p in range(121, 141)]
SIZES = ["0.00100000", "7.00000000", "12.50000000"]
ZERO = "0.00000000"
#: Never a true size: a corrupted copy of a level.
CORRUPT = "3.00000000"
#: Above every ask: a corrupted level that crosses the book.
CROSSING_BID = "150.5"
STEP_NS = 1_000_000
#: A channel silent for 2 ms to 3 ms (of 1 ms steps) on a connection with other traffic.
ACTIVITY = ActivityLimits(factor=4.0, min_silence_s=0.002, max_silence_s=0.003)
BASE_MS = 1_790_000_000_000

Normal = tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]
Levels = list[tuple[str, str]]


def _best_first(side: dict[str, str], bids: bool) -> Levels:
    return sorted(side.items(), key=lambda level: float(level[0]), reverse=bids)


def _normal(bids: Levels, asks: Levels) -> Normal:
    return (
        tuple(sorted(((float(p), float(q)) for p, q in bids), reverse=True)),
        tuple(sorted((float(p), float(q)) for p, q in asks)),
    )


def _kraken_checksum(bids: Levels, asks: Levels) -> int:
    """§5: the top 10 asks then the top 10 bids, ``price + qty`` without the dot and the
    leading zeros, unsigned CRC32."""
    text = "".join(
        p.replace(".", "").lstrip("0") + q.replace(".", "").lstrip("0")
        for p, q in asks[:10] + bids[:10]
    )
    return zlib.crc32(text.encode())


@dataclass
class Message:
    """One message as the venue sends it on a connection."""

    symbol: str
    kind: str  # "snapshot", "update", "heartbeat", "ack"
    bids: Levels = field(default_factory=list)
    asks: Levels = field(default_factory=list)
    checksum: int = 0
    event_ms: int = 0
    #: Coinbase: the connection's sequence_num.
    seq: int = 0


@dataclass
class Symbol:
    """The venue's book of one symbol and every state its subscribers could be shown."""

    bids: dict[str, str]
    asks: dict[str, str]
    #: The top (Kraken) or whole (Coinbase) book after each message, in order.
    states: list[Normal] = field(default_factory=list)
    #: The event time (ms) of each update -> the index of the state after it.
    at_ms: dict[int, int] = field(default_factory=dict)


class Venue:
    """The venue's books and what it sends. ``depth``: Kraken's subscribed depth, None for
    Coinbase (the whole book)."""

    def __init__(self, venue: str, books: dict[str, tuple[dict[str, str], dict[str, str]]]):
        self.venue = venue
        self.depth = kraken.DEFAULT_DEPTH if venue == kraken.VENUE else None
        self.symbols = {s: Symbol(b, a) for s, (b, a) in books.items()}
        for s in self.symbols:
            self.symbols[s].states.append(_normal(*self.view(s)))
        self.ms = BASE_MS

    def view(self, symbol: str) -> tuple[Levels, Levels]:
        book = self.symbols[symbol]
        bids, asks = _best_first(book.bids, True), _best_first(book.asks, False)
        if self.depth is None:
            return bids, asks
        return bids[: self.depth], asks[: self.depth]

    def snapshot(self, symbol: str) -> Message:
        bids, asks = self.view(symbol)
        return Message(symbol, "snapshot", bids, asks, _kraken_checksum(bids, asks))

    def change(
        self, symbol: str, changes: list[tuple[bool, int, int]], noise: bool = False
    ) -> Message | None:
        """Applies ``changes`` (bid?, price index, size index: len(SIZES) deletes); the
        message that tells them, None when the subscribed view did not change. With
        ``noise``, what the venue may also send: an earlier entry for a price the message
        sets (the last wins), and a level below the subscribed depth (truncated away)."""
        book = self.symbols[symbol]
        before = self.view(symbol)
        for is_bid, index, size in changes:
            side, price = (
                (book.bids, BID_PRICES[index]) if is_bid else (book.asks, ASK_PRICES[index])
            )
            if size == len(SIZES):
                if len(side) > 1 or price not in side:
                    # A side never empties: a corrupted bid (Coinbase) always crosses.
                    side.pop(price, None)
            else:
                side[price] = SIZES[size]
        after = self.view(symbol)
        sent: list[Levels] = []
        for old, new, full in zip(before, after, (book.bids, book.asks), strict=True):
            old_map = dict(old)
            levels = [(p, ZERO) for p, _ in old if p not in full]
            levels += [(p, q) for p, q in new if old_map.get(p) != q]
            if noise and levels:
                levels.insert(0, (levels[-1][0], SIZES[0]))
            below = _best_first(full, full is book.bids)[len(new) :]
            if noise and self.depth is not None and below:
                levels.append(below[0])
            sent.append(levels)
        if not sent[0] and not sent[1]:
            return None
        self.ms += 1
        book.at_ms[self.ms] = len(book.states)
        book.states.append(_normal(*after))
        return Message(
            symbol, "update", sent[0], sent[1], _kraken_checksum(*after), event_ms=self.ms
        )


def _iso(ms: int) -> str:
    seconds, milli = divmod(ms, 1000)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{milli:03d}000Z"


def _kraken_frame(m: Message) -> bytes:
    if m.kind in ("heartbeat", "ack"):
        return b'{"channel":"heartbeat"}'

    def levels(side: Levels) -> str:
        # JSON numbers in the venue's fixed point: the raw text, never a float.
        return ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in side)

    stamp = f',"timestamp":"{_iso(m.event_ms)}"' if m.kind == "update" else ""
    return (
        f'{{"channel":"book","type":"{m.kind}","data":[{{"symbol":"{m.symbol}",'
        f'"bids":[{levels(m.bids)}],"asks":[{levels(m.asks)}],"checksum":{m.checksum}{stamp}}}]}}'
    ).encode()


def _coinbase_frame(m: Message) -> bytes:
    stamp = _iso(m.event_ms or BASE_MS)
    if m.kind == "heartbeat":
        envelope: dict[str, object] = {
            "channel": "heartbeats",
            "events": [{"current_time": stamp, "heartbeat_counter": m.seq}],
        }
    elif m.kind == "ack":
        envelope = {
            "channel": "subscriptions",
            "events": [{"subscriptions": {"level2": [m.symbol]}}],
        }
    else:
        updates = [
            {"side": side, "event_time": stamp, "price_level": p, "new_quantity": q}
            for side, levels in (("bid", m.bids), ("offer", m.asks))
            for p, q in levels
        ]
        envelope = {
            "channel": "l2_data",
            "events": [{"type": m.kind, "product_id": m.symbol, "updates": updates}],
        }
    envelope |= {"timestamp": stamp, "sequence_num": m.seq}
    return json.dumps(envelope).encode()


FRAMES: dict[str, Callable[[Message], bytes]] = {
    kraken.VENUE: _kraken_frame,
    coinbase.VENUE: _coinbase_frame,
}


@dataclass
class Conn:
    up: bool = False
    queue: list[Message] = field(default_factory=list)
    #: Resubscribes asked of the venue and not yet answered.
    resubscribes: list[str] = field(default_factory=list)
    #: Symbols whose channel the venue stopped on this connection until resubscribed.
    muted: set[str] = field(default_factory=set)
    next_seq: int = 0

    def send(self, message: Message) -> None:
        message.seq = self.next_seq
        self.next_seq += 1
        self.queue.append(message)


@st.composite
def books(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, str]]:
    n = len(BID_PRICES)
    bids = {BID_PRICES[i]: SIZES[1] for i in draw(st.sets(st.integers(0, n - 1), min_size=1))}
    asks = {ASK_PRICES[i]: SIZES[1] for i in draw(st.sets(st.integers(0, n - 1), min_size=1))}
    return bids, asks


change = st.tuples(st.booleans(), st.integers(0, len(BID_PRICES) - 1), st.integers(0, len(SIZES)))
ACTIONS = [
    "venue",
    "venue",
    "deliver",
    "deliver",
    "deliver",
    "lose",
    "reorder",
    "corrupt",
    "down",
    "up",
    "answer",
    "mute",
]


class Harness:
    def __init__(self, venue_id: str, venue: Venue, n_conns: int) -> None:
        self.venue_id = venue_id
        self.venue = venue
        self.frame = FRAMES[venue_id]
        self.pipeline = VenuePipeline(ADAPTERS[venue_id], SYMBOLS[venue_id], activity=ACTIVITY)
        self.conns = [Conn() for _ in range(n_conns)]
        self.subs = {s: L2Book() for s in SYMBOLS[venue_id]}
        self.now_ns = 0
        #: Whether the venue numbers every message of a connection (Coinbase).
        self.sequenced = venue_id == coinbase.VENUE

    def book(self, symbol: str) -> ReplicatedBook:
        book = self.pipeline.books[f"{self.venue_id}:{symbol}"]
        assert isinstance(book, ReplicatedBook)
        return book

    def take(self, step: Step) -> None:
        for event in step.publications:
            if isinstance(event, BookReset):
                symbol = event.key.partition(":")[2]
                self.subs[symbol].copy_from(self.book(symbol).book)
            elif isinstance(event, BookDelta):
                self.subs[event.key.partition(":")[2]].apply(event.bids, event.asks)
        for action in step.actions:
            if isinstance(action, Resubscribe):
                self.conns[action.conn_id].resubscribes.append(action.symbol)

    def tick(self, ns: int = STEP_NS) -> int:
        """Moves the clock on by ``ns``, firing the deadlines that passed."""
        self.now_ns += ns
        if self.pipeline.timer_armed:
            self.take(self.pipeline.on_timer(self.now_ns))
        return self.now_ns

    def connect(self, c: int) -> None:
        conn = self.conns[c]
        conn.up, conn.queue, conn.resubscribes, conn.next_seq = True, [], [], 0
        conn.muted.clear()
        self.take(self.pipeline.receive_connection(c, True, self.tick()))
        for symbol in SYMBOLS[self.venue_id]:
            conn.send(Message(symbol, "ack"))
            conn.send(self.venue.snapshot(symbol))

    def disconnect(self, c: int) -> None:
        conn = self.conns[c]
        conn.up, conn.queue, conn.resubscribes = False, [], []
        self.take(self.pipeline.receive_connection(c, False, self.tick()))

    def publish(self, message: Message) -> None:
        for conn in self.conns:
            if conn.up and message.symbol not in conn.muted:
                conn.send(Message(**vars(message)))

    def answer(self, c: int) -> None:
        """The venue answers the oldest resubscribe: an ack, then a fresh snapshot."""
        conn = self.conns[c]
        symbol = conn.resubscribes.pop(0)
        conn.muted.discard(symbol)
        conn.send(Message(symbol, "ack"))
        conn.send(self.venue.snapshot(symbol))

    def deliver(self, c: int, ns: int = STEP_NS) -> None:
        message = self.conns[c].queue.pop(0)
        now = self.tick(ns)
        note(f"conn {c}: {message.kind} {message.symbol} seq {message.seq}")
        self.take(self.pipeline.receive_frame(c, self.frame(message), now, now))

    def check(self) -> None:
        for symbol, sub in self.subs.items():
            book = self.book(symbol)
            states = self.venue.symbols[symbol].states
            if book.state is SymbolState.LIVE:
                assert sub.normalized() == book.book.normalized()
                assert sub.normalized() in states, f"{symbol}: live but not the venue's book"
                at = self.venue.symbols[symbol].at_ms.get(book.applied_id)
                if at is not None:
                    # The id served is the venue's event time of the update the book is at.
                    assert sub.normalized() == states[at], f"{symbol}: not the book at its id"
            for conn_id, replica in book.replicas.items():
                if replica.valid:
                    assert replica.book.normalized() in states, (
                        f"{symbol}: replica of conn {conn_id} valid but not the venue's book"
                    )


def run(venue_id: str, data: st.DataObject) -> None:
    venue = Venue(venue_id, {s: data.draw(books()) for s in SYMBOLS[venue_id]})
    n_conns = data.draw(st.integers(2, 3))
    h = Harness(venue_id, venue, n_conns)
    for c in range(n_conns):
        h.connect(c)
    for _ in range(data.draw(st.integers(0, 80))):
        action = data.draw(st.sampled_from(ACTIONS))
        c = data.draw(st.integers(0, n_conns - 1))
        conn = h.conns[c]
        if action == "venue":
            symbol = data.draw(st.sampled_from(SYMBOLS[venue_id]))
            changes = data.draw(st.lists(change, min_size=1, max_size=4))
            message = venue.change(symbol, changes, data.draw(st.booleans()))
            if message is not None:
                note(f"venue: {symbol} update -> state {len(venue.symbols[symbol].states) - 1}")
                h.publish(message)
        elif action == "deliver" and conn.queue:
            h.deliver(c)
        elif action == "reorder" and len(conn.queue) > 1 and h.sequenced:
            # The venue's docs allow it: a message that arrives after the one behind it.
            note(f"conn {c}: seq {conn.queue[1].seq} before {conn.queue[0].seq}")
            conn.queue[0], conn.queue[1] = conn.queue[1], conn.queue[0]
        elif action == "lose" and conn.queue:
            # Any message in transit. Without a connection sequence (Kraken) only an
            # update's loss shows: the next update's checksum.
            at = data.draw(st.integers(0, len(conn.queue) - 1))
            if h.sequenced or conn.queue[at].kind == "update":
                lost = conn.queue.pop(at)
                note(f"conn {c}: lost {lost.kind} {lost.symbol} seq {lost.seq}")
        elif action == "corrupt" and conn.queue and h.sequenced:
            # Without a checksum only a crossed book shows a wrong level: a bid above
            # every ask (the snapshot is not used and retried after a wait; the update
            # fails its replica).
            head = conn.queue[0]
            if head.kind in ("snapshot", "update"):
                note(f"conn {c}: crossed {head.kind} {head.symbol}")
                head.bids = [*head.bids, (CROSSING_BID, SIZES[0])]
        elif action == "corrupt" and conn.queue:
            head = conn.queue[0]
            side = head.bids if head.bids else head.asks
            if side:
                note(f"conn {c}: corrupted {head.kind} {head.symbol}")
                side[0] = (side[0][0], CORRUPT)
        elif action == "down" and conn.up and sum(k.up for k in h.conns) > 1:
            note(f"conn {c}: down")
            h.disconnect(c)
        elif action == "up" and not conn.up:
            note(f"conn {c}: up")
            h.connect(c)
        elif action == "answer" and conn.resubscribes:
            note(f"conn {c}: resubscribe answered")
            h.answer(c)
        elif action == "mute" and conn.up:
            symbol = data.draw(st.sampled_from(SYMBOLS[venue_id]))
            note(f"conn {c}: {symbol} muted until resubscribed")
            conn.muted.add(symbol)
        h.check()

    # The faults stop: every connection delivers everything, with a heartbeat behind it
    # (Coinbase sends one a second) and an update of each symbol (what shows a lost
    # update on Kraken), and every resubscribe is answered. First every symbol updates
    # every round, 0.1 ms apart on the clock, until every stopped channel was found silent
    # and resubscribed; then the clock passes every wait after a crossed snapshot (drained
    # at one instant, so that no channel looks silent behind the others' traffic).
    def round_(ns: int) -> None:
        for symbol in SYMBOLS[venue_id]:
            best_ask = venue.symbols[symbol].asks.get(ASK_PRICES[0])
            size = 0 if best_ask != SIZES[0] else 1
            message = venue.change(symbol, [(False, 0, size)])
            assert message is not None
            h.publish(message)
        for c, conn in enumerate(h.conns):
            if not conn.up:
                h.connect(c)
            while conn.resubscribes:
                h.answer(c)
            conn.send(Message("", "heartbeat"))
            while conn.queue:
                h.deliver(c, ns)
                h.check()

    for _ in range(1000):
        round_(STEP_NS // 10)
        if not any(conn.resubscribes or conn.muted for conn in h.conns):
            break
    assert not any(conn.muted for conn in h.conns), "a stopped channel was never resubscribed"
    for _ in range(20):
        h.tick(60 * 1_000_000_000)  # past every wait after a crossed snapshot
        round_(0)
        if not any(conn.resubscribes for conn in h.conns) and all(
            replica.valid for s in SYMBOLS[venue_id] for replica in h.book(s).replicas.values()
        ):
            break
    for symbol, sub in h.subs.items():
        book = h.book(symbol)
        assert book.state is SymbolState.LIVE, (symbol, book.state)
        assert sub.normalized() == venue.symbols[symbol].states[-1]
        assert set(book.replicas) == set(range(n_conns)), (symbol, "a connection has none")
        for conn_id, replica in book.replicas.items():
            assert replica.valid, (symbol, conn_id, replica.state)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_live_kraken_book_is_the_venues(data: st.DataObject) -> None:
    run(kraken.VENUE, data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_live_coinbase_book_is_the_venues(data: st.DataObject) -> None:
    run(coinbase.VENUE, data)
