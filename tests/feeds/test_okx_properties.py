"""Property tests of OKX ``books`` through the parser and the sequenced arbiter (hypothesis),
against a model of the venue written from its rules (exchange-protocols.md §6, §8), not
from the adapter:

- a subscription starts with a snapshot (``prevSeqId: -1``); each update's ``prevSeqId`` is
  the previous message's ``seqId``, which rises by a varying step; an update with no change
  is a keepalive (``prevSeqId == seqId``, no levels); maintenance may reset the sequence
  (an update whose ``seqId < prevSeqId``), the book carrying on. The model's resets go below
  every id used before (real seqIds are large and a reset goes far below them): a pair of
  ids seen before a reset never comes again after it;
- levels are ``[price, size, "0", count]`` strings, size ``"0"`` deletes;
- ``checksum``: CRC32 of the top 25 levels per side of the book after the message,
  ``bid:size:ask:size:...`` with the wire strings, as a signed int32.

2-3 connections deliver every message in order, interleaved arbitrarily after their
snapshots; connections past the first lose some updates. Invariant: a book served ``live``
is the venue's after the message whose ids it applied (in the newest reset segment any
connection delivered); no update is lost on every connection, so no resync is asked for;
every checksum the arbiter checks matches.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import note
from hypothesis import settings
from hypothesis import strategies as st

from feeds import okx
from gateway.core.arbiter import ArbiterLimits
from gateway.core.model import ArbiterEvent
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import SnapshotWanted
from gateway.core.model import SymbolState
from gateway.core.sequenced import SequencedBook

from .streams import LateSubscriptions
from .streams import interleaved

INST = "BTC-USDT"
KEY = f"{okx.VENUE}:{INST}"
#: 30 levels a side, deeper than the checksum's 25, prices in the venue's plain forms.
BID_PRICES = [f"{p}" if p % 3 else f"{p}.5" for p in range(170, 200)]
ASK_PRICES = [f"{p}" if p % 4 else f"{p}.25" for p in range(201, 231)]
SIZES = ["0", "0.001", "7", "12.5"]
WINDOW_NS = 10**15
#: Between two frames' receive times.
STEP_NS = 1_000_000

Normal = tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]


def _best_first(side: dict[str, str], bids: bool) -> list[tuple[str, str]]:
    return sorted(side.items(), key=lambda level: float(level[0]), reverse=bids)


def _normal(bids: dict[str, str], asks: dict[str, str]) -> Normal:
    return (
        tuple((float(p), float(q)) for p, q in _best_first(bids, True)),
        tuple((float(p), float(q)) for p, q in _best_first(asks, False)),
    )


def _checksum(bids: dict[str, str], asks: dict[str, str]) -> int:
    """§6: the top 25 of each side interleaved, missing levels skipped, signed CRC32."""
    top_bids, top_asks = _best_first(bids, True)[:25], _best_first(asks, False)[:25]
    parts: list[str] = []
    for i in range(25):
        for side in (top_bids, top_asks):
            if i < len(side):
                parts += side[i]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


@dataclass(frozen=True)
class Venue:
    #: (frame data of one book message, snapshot?) in the venue's order.
    messages: list[tuple[dict[str, object], bool]]
    #: The book after each message.
    books: list[Normal]
    #: Its levels as the venue spells them (bids, asks), after each message.
    levels: list[tuple[dict[str, str], dict[str, str]]]

    def seq_id(self, index: int) -> int:
        return int(str(self.messages[index][0]["seqId"]))


change = st.tuples(st.booleans(), st.integers(0, 29), st.sampled_from(SIZES))
#: An update: its level changes (none: a keepalive), its id step, and whether it resets.
update = st.tuples(st.lists(change, max_size=4), st.integers(1, 4), st.integers(0, 12))


@st.composite
def venues(draw: st.DrawFn) -> Venue:
    bids = {BID_PRICES[i]: "1" for i in draw(st.sets(st.integers(0, 29), min_size=1))}
    asks = {ASK_PRICES[i]: "2" for i in draw(st.sets(st.integers(0, 29), min_size=1))}
    seq = start = draw(st.integers(20_000, 20_060))

    def data(prev: int, levels_b: list[list[str]], levels_a: list[list[str]]) -> dict[str, object]:
        return {
            "asks": levels_a,
            "bids": levels_b,
            "ts": "1597026383085",
            "checksum": _checksum(bids, asks),
            "prevSeqId": prev,
            "seqId": seq,
        }

    snapshot_b = [[p, q, "0", "1"] for p, q in _best_first(bids, True)]
    snapshot_a = [[p, q, "0", "1"] for p, q in _best_first(asks, False)]
    messages = [(data(-1, snapshot_b, snapshot_a), True)]
    books = [_normal(bids, asks)]
    levels = [(dict(bids), dict(asks))]
    for changes, step, reset_roll in draw(st.lists(update, max_size=30)):
        prev = seq
        if reset_roll == 0:
            # Below every id used so far: ids of different segments never meet.
            seq = start = start - draw(st.integers(200, 600))
        elif changes:
            seq += step
        wire_b: list[list[str]] = []
        wire_a: list[list[str]] = []
        for is_bid, index, size in changes:
            side, wire = (bids, wire_b) if is_bid else (asks, wire_a)
            price = (BID_PRICES if is_bid else ASK_PRICES)[index]
            if size == "0":
                side.pop(price, None)
            else:
                side[price] = size
            wire.append([price, size, "0", "0" if size == "0" else "1"])
        messages.append((data(prev, wire_b, wire_a), False))
        books.append(_normal(bids, asks))
        levels.append((dict(bids), dict(asks)))
    return Venue(messages, books, levels)


def _frame(message: dict[str, object], snapshot: bool) -> bytes:
    return json.dumps(
        {
            "arg": {"channel": "books", "instId": INST},
            "action": "snapshot" if snapshot else "update",
            "data": [message],
        }
    ).encode()


def _dropped(data: st.DataObject, message: dict[str, object]) -> bool:
    """Whether a connection past the first loses ``message``: an update that changes the
    book, never a keepalive (the same on every connection, and the next update's
    ``prevSeqId`` would not tell it was lost)."""
    return message["prevSeqId"] != message["seqId"] and data.draw(st.booleans())


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_live_okx_book_is_the_venues_with_resets_and_keepalives(data: st.DataObject) -> None:
    venue = data.draw(venues())
    n_conns = data.draw(st.integers(2, 3))
    indices = range(len(venue.messages))
    copies = [
        [i for i in indices if i == 0 or c == 0 or not _dropped(data, venue.messages[i][0])]
        for c in range(n_conns)
    ]
    schedule = interleaved(data.draw, copies)

    arb = SequencedBook(
        KEY,
        okx.OkxRule(),
        ArbiterLimits(reorder_window_ns=WINDOW_NS),
        checksum=okx.book_checksum,
    )
    for c in range(n_conns):
        arb.on_connection(c, True, 0)
    live = Live(venue)
    for step, (c, index) in enumerate(schedule):
        message, snapshot = venue.messages[index]
        _deliver(arb, c, index, message, snapshot, step * STEP_NS)
        live.check(arb, index)
    live.check_end(arb)
    _covers_after_the_last_reset(arb, venue, copies, len(schedule) * STEP_NS)


def _covers_after_the_last_reset(
    arb: SequencedBook, venue: Venue, copies: list[list[int]], now_ns: int
) -> None:
    """A connection past the first that delivered its copy of the venue's last reset is
    past it: an update that only it delivers next is applied."""
    resets = [
        i
        for i, (message, snapshot) in enumerate(venue.messages)
        if not snapshot and venue.seq_id(i) < int(str(message["prevSeqId"]))
    ]
    past = [c for c in range(1, len(copies)) if resets and resets[-1] in copies[c]]
    if not past:
        return
    seq = venue.seq_id(len(venue.messages) - 1)
    # No level changes: the book, and so its checksum, stays the venue's last.
    message = {**venue.messages[-1][0], "asks": [], "bids": [], "prevSeqId": seq, "seqId": seq + 1}
    _deliver(arb, past[-1], len(venue.messages), message, False, now_ns)
    assert arb.applied_id == seq + 1 and arb.pending == 0


def _deliver(
    arb: SequencedBook,
    conn: int,
    index: int,
    message: dict[str, object],
    snapshot: bool,
    now_ns: int,
    *,
    resync: bool = False,
) -> list[ArbiterEvent]:
    """Message ``index`` from ``conn`` through the parser: no update is lost on every
    connection, so no resync (unless ``resync``)."""
    note(f"conn {conn}: #{index} {message['prevSeqId']}->{message['seqId']}")
    out: list[ArbiterEvent] = []
    for event in okx.parse(_frame(message, snapshot), now_ns, conn):
        if isinstance(event, DepthSnapshot):
            out += arb.on_snapshot(event, now_ns)
        else:
            assert isinstance(event, DepthDiff)
            out += arb.on_diff(event, now_ns)
    assert resync or not any(isinstance(e, SnapshotWanted) for e in out), (arb.stats, out)
    return out


class Live:
    """Where in the venue's messages the live book was last found."""

    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        #: The venue message the live book was last found at, and the latest delivered.
        self.position = self.delivered = 0

    def check(self, arb: SequencedBook, index: int) -> None:
        """Message ``index`` was just delivered. A live book is the venue's after a message
        with the applied id, delivered, and not before the one it was at: the venue's
        messages applied in order."""
        self.delivered = max(self.delivered, index)
        if arb.state is not SymbolState.LIVE:
            return
        venue, book = self.venue, arb.book.normalized()
        at = [
            k
            for k in range(self.position, self.delivered + 1)
            if venue.seq_id(k) == arb.applied_id and venue.books[k] == book
        ]
        assert at, "live but not the venue's book"
        self.position = at[0]

    def check_end(self, arb: SequencedBook, *, resynced: bool = False) -> None:
        """The book is live at the venue's last book; no checksum failed, and no resync
        unless ``resynced`` (then the book may have waited out a window)."""
        assert arb.stats.checksum_failed == 0
        assert resynced or arb.stats.gaps == arb.stats.resyncs == 0
        assert arb.state is SymbolState.LIVE and arb.pending == 0
        assert arb.book.normalized() == self.venue.books[-1]


def _subscribed(venue: Venue, index: int) -> dict[str, object]:
    """The snapshot that answers a subscription made when the venue was at message
    ``index``: its book then, at that message's ``seqId``."""
    bids, asks = venue.levels[index]
    return {
        "asks": [[p, q, "0", "1"] for p, q in _best_first(asks, False)],
        "bids": [[p, q, "0", "1"] for p, q in _best_first(bids, True)],
        "ts": "1597026383085",
        "checksum": _checksum(bids, asks),
        "prevSeqId": -1,
        "seqId": venue.seq_id(index),
    }


@pytest.mark.parametrize("unseen", [False, True], ids=["late", "unseen"])
@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_live_okx_book_is_the_venues_with_late_subscriptions(
    unseen: bool, data: st.DataObject
) -> None:
    """Subscriptions answered late, before or after a reset the book saw
    (:class:`LateSubscriptions`); connections past the first lose some updates. With
    ``unseen``, answered at any message, also after a reset no connection delivered yet."""
    venue = data.draw(venues())
    indices = range(len(venue.messages))
    Queued = tuple[dict[str, object], bool]

    def subscription(conn: int, at: int) -> list[tuple[int, Queued]]:
        later = [
            i for i in indices if i > at and (conn == 0 or not _dropped(data, venue.messages[i][0]))
        ]
        return [(at, (_subscribed(venue, at), True))] + [(i, venue.messages[i]) for i in later]

    resets = [i for i in indices if venue.seq_id(i) < int(str(venue.messages[i][0]["prevSeqId"]))]
    first = [(i, venue.messages[i]) for i in indices]
    conns = LateSubscriptions(
        data.draw, data.draw(st.integers(2, 3)), first, resets, subscription, unseen=unseen
    )
    arb = SequencedBook(
        KEY, okx.OkxRule(), ArbiterLimits(reorder_window_ns=WINDOW_NS), checksum=okx.book_checksum
    )
    conns.connect(arb)
    live = Live(venue)
    for c, index, (message, snapshot), now_ns in conns.deliveries(arb, STEP_NS):
        out = _deliver(arb, c, index, message, snapshot, now_ns, resync=unseen)
        conns.answer(arb, out, now_ns)
        live.check(arb, index)
    live.check_end(arb, resynced=unseen)
