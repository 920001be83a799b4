"""Property tests of Bybit books through the sequenced arbiter (hypothesis), against a model
of the venue written from its rules (exchange-protocols.md §7), not from the arbiter:

- every subscription starts with a ``snapshot``; each ``delta`` carries ``u`` one above the
  previous one; levels are absolute, size ``"0"`` deletes;
- a service restart sends every subscription a ``snapshot`` with ``u == 1`` (a new book),
  after which ``u`` counts up from 1 again.

2-3 connections deliver the same stream, each in order, interleaved arbitrarily (so a slow
connection may still deliver updates and snapshots of the old sequence after a fast one
delivered the restart); connections other than the first lose some deltas. Invariant: a book served
``live`` is the venue's book, in the newest sequence any connection delivered, at its
applied ``u``; and as no update is lost on every connection, no resync is ever asked for.
A connection may lose a restart snapshot alone: its ids go back (the venue's new ids stay
far below its old ones), and a live book is then the venue's after a message delivered,
never older than it was (that connection's deltas of a newer sequence are not used).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import note
from hypothesis import settings
from hypothesis import strategies as st

from feeds.bybit import LINEAR
from feeds.bybit import BybitRule
from gateway.core.arbiter import ArbiterLimits
from gateway.core.model import ArbiterEvent
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level
from gateway.core.model import ReconnectWanted
from gateway.core.model import SnapshotWanted
from gateway.core.model import SymbolState
from gateway.core.sequenced import SequencedBook

from .streams import LateSubscriptions
from .streams import interleaved

SYMBOL = "BTCUSDT"
KEY = f"{LINEAR}:{SYMBOL}"
BID_PRICES = [f"{p}.0" for p in range(90, 100)]
ASK_PRICES = [f"{p}.0" for p in range(101, 111)]
QTYS = ["0", "0.5", "1.25", "3"]
#: Never passes in these tests: only what the connections deliver decides.
WINDOW_NS = 10**15

#: The venue's book as {price: qty} per side.
Book = tuple[dict[str, str], dict[str, str]]


def _normalized(book: Book) -> tuple[tuple[tuple[float, float], ...], ...]:
    bids, asks = book
    return (
        tuple(sorted(((float(p), float(q)) for p, q in bids.items()), reverse=True)),
        tuple(sorted((float(p), float(q)) for p, q in asks.items())),
    )


@dataclass(frozen=True)
class Message:
    """What the venue sends every subscription, in order: a snapshot or a delta of
    sequence ``sequence`` at update id ``u``."""

    sequence: int
    u: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    snapshot: bool


@dataclass(frozen=True)
class Venue:
    messages: list[Message]
    #: The venue's book after each (sequence, u).
    books: dict[tuple[int, int], tuple[tuple[tuple[float, float], ...], ...]]
    #: Its levels as the venue spells them, after each message.
    levels: list[tuple[tuple[Level, ...], tuple[Level, ...]]]


#: Whether a connection past the first keeps a delta.
_kept = st.integers(0, 5).map(bool)
level_change = st.tuples(st.booleans(), st.integers(0, 9), st.integers(0, len(QTYS) - 1))


@st.composite
def venues(draw: st.DrawFn) -> Venue:
    """One or more sequences: the first from a snapshot at some ``u``, each later one from a
    restart snapshot at ``u == 1``; deltas change one level each. Two restarts never send
    the same book (the venue's books have many levels; the model's few would otherwise
    repeat, and two identical ``u == 1`` books are one reset to anyone who receives them):
    each sequence's bids start at a quantity of its own."""
    messages: list[Message] = []
    books: dict[tuple[int, int], tuple[tuple[tuple[float, float], ...], ...]] = {}
    levels: list[tuple[tuple[Level, ...], tuple[Level, ...]]] = []
    n_sequences = draw(st.integers(1, 3))
    for sequence in range(n_sequences):
        u = draw(st.integers(2, 30)) if sequence == 0 else 1
        first_qty = str(sequence + 1)
        bids = {p: first_qty for p in draw(st.sets(st.sampled_from(BID_PRICES), min_size=1))}
        asks = {p: "2" for p in draw(st.sets(st.sampled_from(ASK_PRICES), min_size=1))}
        book: Book = (bids, asks)
        books[sequence, u] = _normalized(book)
        messages.append(
            Message(sequence, u, tuple(bids.items()), tuple(asks.items()), snapshot=True)
        )
        levels.append((tuple(bids.items()), tuple(asks.items())))
        for is_bid, price_index, qty_index in draw(st.lists(level_change, max_size=25)):
            u += 1
            price = (BID_PRICES if is_bid else ASK_PRICES)[price_index]
            qty = QTYS[qty_index]
            side = bids if is_bid else asks
            if qty == "0":
                side.pop(price, None)
            else:
                side[price] = qty
            level = ((price, qty),)
            messages.append(
                Message(sequence, u, level if is_bid else (), () if is_bid else level, False)
            )
            books[sequence, u] = _normalized(book)
            levels.append((tuple(bids.items()), tuple(asks.items())))
    return Venue(messages, books, levels)


@st.composite
def schedules(
    draw: st.DrawFn, venue: Venue, *, lose_resets: bool = False, lose_reset_snapshots: bool = False
) -> list[tuple[int, Message]]:
    """Every connection's copy of the venue's messages (connections past the first lose
    some deltas; with ``lose_resets``, whole sequences between the first and the last too:
    a restart snapshot and every delta after it until the next restart, the shape of a
    lost reset whose deltas could not be told from the older sequence's; with
    ``lose_reset_snapshots``, a restart snapshot alone, the deltas after it kept, where the
    connection's ids go back: its latest id is above every id of the new sequence, as the
    venue's new ids stay far below its old ones), interleaved arbitrarily after their first
    snapshot, each connection in order."""
    n_conns = draw(st.integers(2, 3))
    last = venue.messages[-1].sequence
    top_u = {m.sequence: m.u for m in venue.messages}
    copies: list[list[Message]] = []
    for conn in range(n_conns):
        lost = set()
        if lose_resets and conn > 0:
            lost = draw(st.sets(st.integers(1, last - 1))) if last > 1 else set()
        copy: list[Message] = []
        for m in venue.messages:
            if m.sequence in lost:
                continue
            if not m.snapshot:
                if conn == 0 or draw(_kept):
                    copy.append(m)
            elif not (
                lose_reset_snapshots
                and conn > 0
                and m.u == 1
                and copy[-1].u > top_u[m.sequence]
                and draw(st.booleans())
            ):
                copy.append(m)
        copies.append(copy)
    # Every connection's subscription was answered before the first restart (a connection
    # heard from in no sequence yet cannot tell whose its first snapshot is).
    return interleaved(draw, copies)


def _venue_time_ms(m: Message) -> int:
    """The venue's time of ``m`` (Bybit ``cts``, the engine's time of the book, the same on
    every connection's copy): rises with the venue's messages."""
    return m.sequence * 10**6 + m.u


def _event(conn: int, m: Message) -> DepthDiff | DepthSnapshot:
    """The parser's event of ``m`` (feeds/bybit.py: a snapshot with ``u == 1`` is a reset,
    carrying the frame's ``ts``)."""
    if m.snapshot:
        return DepthSnapshot(
            LINEAR, SYMBOL, m.u, m.bids, m.asks, 0, conn, None, m.u == 1, _venue_time_ms(m)
        )
    return DepthDiff(LINEAR, SYMBOL, m.u, m.u, -1, m.bids, m.asks, 0, 0, conn)


@pytest.mark.parametrize(
    ("lose_resets", "lose_reset_snapshots"),
    [(False, False), (True, False), (True, True)],
    ids=["every-restart", "lost-restarts", "lost-reset-snapshots"],
)
@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_live_bybit_book_is_the_venues_in_its_newest_sequence(
    lose_resets: bool, lose_reset_snapshots: bool, data: st.DataObject
) -> None:
    """Connections past the first lose some deltas; with ``lose_resets``, whole sequences
    between restarts too: the venue's ``ts`` orders a late copy of an older restart after a
    newer one. With ``lose_reset_snapshots``, restart snapshots alone too: a connection
    whose ids went back is of no known sequence, asked to reconnect and not used (these
    connections stay up), so a live book may lag the newest sequence delivered; it is the
    venue's book after a message delivered, never an older one than it was."""
    venue = data.draw(venues())
    schedule = data.draw(
        schedules(venue, lose_resets=lose_resets, lose_reset_snapshots=lose_reset_snapshots)
    )
    note(f"schedule {schedule}")
    arb = SequencedBook(KEY, BybitRule(), ArbiterLimits(reorder_window_ns=WINDOW_NS))
    for conn in {c for c, _ in schedule}:
        arb.on_connection(conn, True, 0)
    index = {m: i for i, m in enumerate(venue.messages)}
    newest = position = delivered = 0
    for conn, message in schedule:
        newest = max(newest, message.sequence)
        delivered = max(delivered, index[message])
        _deliver(arb, conn, message)
        if not lose_reset_snapshots:
            _check_live(arb, venue, newest)
        elif arb.state is SymbolState.LIVE:
            position = _live_position(arb, venue, position, delivered)
    _check_end(arb, venue)


def _deliver(
    arb: SequencedBook, conn: int, message: Message, now_ns: int = 0, *, resync: bool = False
) -> list[ArbiterEvent]:
    """``message`` from ``conn``: no update is lost on every connection, so no resync
    (unless ``resync``)."""
    event = _event(conn, message)
    if isinstance(event, DepthSnapshot):
        out = arb.on_snapshot(event, now_ns)
    else:
        out = arb.on_diff(event, now_ns)
    assert resync or not any(isinstance(e, SnapshotWanted) for e in out), (arb.stats, out)
    return out


def _check_live(arb: SequencedBook, venue: Venue, newest: int) -> None:
    """A live book is the venue's at its ``u`` in the newest sequence delivered."""
    if arb.state is SymbolState.LIVE:
        truth = venue.books.get((newest, arb.applied_id))
        assert arb.book.normalized() == truth, "live but not the venue's book"


def _check_end(arb: SequencedBook, venue: Venue) -> None:
    last = venue.messages[-1]
    assert arb.state is SymbolState.LIVE
    assert (arb.applied_id, arb.book.normalized()) == (last.u, venue.books[last.sequence, last.u])
    assert arb.stats.gaps == arb.stats.resyncs == 0


def _subscribed(venue: Venue, index: int) -> Message:
    """The snapshot that answers a subscription made when the venue was at message
    ``index``: its book then, in its sequence."""
    m = venue.messages[index]
    bids, asks = venue.levels[index]
    return Message(m.sequence, m.u, bids, asks, snapshot=True)


@pytest.mark.parametrize("unseen", [False, True], ids=["late", "unseen"])
@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_live_bybit_book_is_the_venues_with_late_subscriptions(
    unseen: bool, data: st.DataObject
) -> None:
    """Subscriptions answered late, before or after a restart the book saw
    (:class:`LateSubscriptions`); connections past the first lose some deltas. With
    ``unseen``, answered at any message, also after a reset no connection delivered yet."""
    venue = data.draw(venues())
    indices = range(len(venue.messages))

    def subscription(conn: int, at: int) -> list[tuple[int, Message]]:
        later = [(i, venue.messages[i]) for i in indices if i > at]
        kept = [(i, m) for i, m in later if m.snapshot or conn == 0 or data.draw(_kept)]
        return [(at, _subscribed(venue, at)), *kept]

    restarts = [i for i in indices if i > 0 and venue.messages[i].snapshot]
    first = [(i, venue.messages[i]) for i in indices]
    conns = LateSubscriptions(
        data.draw, data.draw(st.integers(2, 3)), first, restarts, subscription, unseen=unseen
    )
    arb = SequencedBook(KEY, BybitRule(), ArbiterLimits(reorder_window_ns=WINDOW_NS))
    conns.connect(arb)
    newest = position = delivered = 0
    for conn, index, message, now_ns in conns.deliveries(arb):
        note(f"conn {conn}: #{index} {message}")
        newest = max(newest, message.sequence)
        delivered = max(delivered, index)
        conns.answer(arb, _deliver(arb, conn, message, now_ns, resync=unseen), now_ns)
        if not unseen:
            _check_live(arb, venue, newest)
        elif arb.state is SymbolState.LIVE:
            position = _live_position(arb, venue, position, delivered)
    if unseen:
        last = venue.messages[-1]
        assert arb.state is SymbolState.LIVE
        assert (arb.applied_id, arb.book.normalized()) == (
            last.u,
            venue.books[last.sequence, last.u],
        )
    else:
        _check_end(arb, venue)


def test_an_unseen_sequence_answered_below_the_book_is_not_placed_by_a_chance_equal_copy() -> None:
    """Connection 1 is answered in sequence 1 below the book (sequence 0 at u 3), loses
    u 3, and its u 4 equals sequence 0's: its u 5 must not be applied onto sequence 0's
    book (the venue never had that book)."""
    arb = SequencedBook(KEY, BybitRule(), ArbiterLimits(reorder_window_ns=WINDOW_NS))
    for conn in (0, 1, 2):
        arb.on_connection(conn, True, 0)
    steps = [
        (0, Message(0, 3, (("90.0", "1"),), (("101.0", "2"),), True)),
        (1, Message(1, 2, (("90.0", "1"), ("96.0", "0.5")), (("101.0", "2"),), True)),
        (0, Message(0, 4, (), (("102.0", "1.25"),), False)),
        (1, Message(1, 4, (), (("102.0", "1.25"),), False)),
        (1, Message(1, 5, (("94.0", "0"),), (), False)),
    ]
    for conn, message in steps:
        event = _event(conn, message)
        if isinstance(event, DepthSnapshot):
            arb.on_snapshot(event, 0)
        else:
            arb.on_diff(event, 0)
    assert arb.applied_id < 5, "sequence 1's u 5 applied onto sequence 0's book"


def test_an_unseen_sequence_answered_below_the_book_is_not_placed_by_a_masked_difference() -> None:
    """Connection 1 is answered in sequence 1 at u 2, without the ask 101 that sequence 0's
    book had at u 2; sequence 0's u 3 deleted it, so the answer with u 3 replayed onto it
    equals the book at u 3. Compared with the book rewound to u 2, it differs. In the
    venue's model a subscription is answered where the venue is, so sequence 1 is the
    venue's newest: the book follows the answer into it (connection 0, of sequence 0,
    reopened), and the right book is the answer's. Connection 1 loses u 3 and u 4 of
    sequence 1: its u 5 waits for them, never applied onto either sequence's u 4, and
    connection 0's u 4 (sequence 0) is dropped."""
    arb = SequencedBook(KEY, BybitRule(), ArbiterLimits(reorder_window_ns=WINDOW_NS))
    for conn in (0, 1):
        arb.on_connection(conn, True, 0)
    asks = tuple((p, "2") for p in ASK_PRICES[:3])
    deleted = (("101.0", "0"),)
    answer = Message(1, 2, (("90.0", "1"),), asks[1:], True)
    steps = [
        (0, Message(0, 2, (("90.0", "1"),), asks, True)),
        (0, Message(0, 3, (), deleted, False)),
        (1, answer),
        (1, Message(1, 5, (("91.0", "1"),), (), False)),
        (0, Message(0, 4, (), (("102.0", "1.25"),), False)),
    ]
    reopened: list[int] = []
    for conn, message in steps:
        out = _deliver(arb, conn, message)
        reopened += [e.conn_id for e in out if isinstance(e, ReconnectWanted)]
    assert arb.applied_id != 5, "sequence 1's u 5 applied onto a book without its u 3, u 4"
    assert arb.applied_id == 2, "sequence 0's u 4 applied onto sequence 1's book"
    assert arb.book.normalized() == _normalized(
        ({p: q for p, q in answer.bids}, {p: q for p, q in answer.asks})
    )
    assert reopened == [0] and arb.stats.venue_resets == 1


def _live_position(arb: SequencedBook, venue: Venue, position: int, delivered: int) -> int:
    """A live book is the venue's after a message with the applied ``u``, delivered, and
    not before the message it was last found at: the venue's messages applied in order
    (the newest sequence delivered may be one the book cannot tell from its own yet).
    Returns that message's index."""
    book = arb.book.normalized()
    at = [
        k
        for k in range(position, delivered + 1)
        if venue.messages[k].u == arb.applied_id
        and venue.books[venue.messages[k].sequence, venue.messages[k].u] == book
    ]
    assert at, "live but not the venue's book"
    return at[0]
