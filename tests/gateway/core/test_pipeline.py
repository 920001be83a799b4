"""VenuePipeline without an event loop: frames, connection events, snapshots and the clock
in; publications and actions out.

The venue here is a stand-in whose parser maps registered frames to venue events, so each
test states exactly which events a frame carries; the arbiters are the real ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from itertools import pairwise

import msgspec
import pytest

from feeds.binance import BinanceSpotRule
from gateway.core.activity import ActivityLimits
from gateway.core.arbiter import ArbiterLimits
from gateway.core.arbiter import Checksum
from gateway.core.arbiter import SymbolArbiter
from gateway.core.model import STOPPING_REASON
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import ConnectionSequence
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import InstrumentPrecision
from gateway.core.model import Side
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.model import Trade
from gateway.core.model import TradeOut
from gateway.core.model import VenueContractError
from gateway.core.model import VenueEvent
from gateway.core.model import VenueNotice
from gateway.core.pipeline import LOG_EVERY
from gateway.core.pipeline import LOG_FIRST
from gateway.core.pipeline import Action
from gateway.core.pipeline import BookRebuilt
from gateway.core.pipeline import BookState
from gateway.core.pipeline import CaughtUp
from gateway.core.pipeline import FetchSnapshot
from gateway.core.pipeline import Reconnect
from gateway.core.pipeline import Resubscribe
from gateway.core.pipeline import Step
from gateway.core.pipeline import SymbolRejected
from gateway.core.pipeline import VenuePipeline
from gateway.core.replicated import ReplicatedBook
from gateway.core.sequenced import SequencedBook

from .arbiter_streams import crc

WINDOW_NS = 1_000
LIMITS = ArbiterLimits(reorder_window_ns=WINDOW_NS)


@dataclass
class FakeVenue:
    """A venue adapter whose frames are registered: ``frame(events)`` returns the bytes
    that parse to ``events``; any other bytes break the venue's contract."""

    venue: str = "seq"
    unsequenced: bool = False
    can_resubscribe: bool = True
    frames: dict[bytes, list[VenueEvent]] = field(default_factory=dict)
    checksums: list[tuple[int, int]] = field(default_factory=list)

    def frame(self, *events: VenueEvent) -> bytes:
        raw = b"frame-%d" % len(self.frames)
        self.frames[raw] = list(events)
        return raw

    @property
    def parse(self) -> Callable[[bytes, int, int], list[VenueEvent]]:
        def parse(raw: bytes, recv_ns: int, conn_id: int) -> list[VenueEvent]:
            if raw not in self.frames:
                raise VenueContractError(f"unknown frame {raw[:10]!r}")
            return self.frames[raw]

        return parse

    @property
    def parse_snapshot(self) -> Callable[[str, bytes, int, int], DepthSnapshot] | None:
        def parse(symbol: str, body: bytes, recv_ns: int, conn_id: int) -> DepthSnapshot:
            if not body.isdigit():
                raise VenueContractError("not a snapshot")
            return snap(symbol, int(body), venue=self.venue, recv_ns=recv_ns)

        return parse

    @property
    def resubscribe_messages(self) -> Callable[[str], list[bytes]] | None:
        return (
            (lambda symbol: [b"resubscribe " + symbol.encode()]) if self.can_resubscribe else None
        )

    @property
    def checksum_at_precision(self) -> Callable[[int, int], Checksum] | None:
        def make(price_precision: int, qty_precision: int) -> Checksum:
            self.checksums.append((price_precision, qty_precision))
            return crc

        return make

    def new_arbiter(self, symbol: str, limits: ArbiterLimits) -> SymbolArbiter:
        key = f"{self.venue}:{symbol}"
        if self.unsequenced:
            return ReplicatedBook(key)
        return SequencedBook(key, BinanceSpotRule(), limits)


def diff(symbol: str, first: int, last: int, conn: int = 0, venue: str = "seq") -> DepthDiff:
    return DepthDiff(venue, symbol, first, last, -1, (("100", str(last)),), (), 0, 0, conn)


def snap(
    symbol: str, last_id: int, *, venue: str = "seq", conn: int = -1, recv_ns: int = 0
) -> DepthSnapshot:
    return DepthSnapshot(venue, symbol, last_id, (("99", "1"),), (("101", "1"),), recv_ns, conn)


def trade(trade_id: int, conn: int) -> Trade:
    return Trade("seq", "BTC", trade_id, "100", "1", Side.BUY, 1, 2, conn)


def pipeline(
    venue: FakeVenue, symbols: list[str] | None = None, *, rest: bool = True, up: int = 2
) -> VenuePipeline:
    p = VenuePipeline(
        venue,
        ["BTC", "ETH"] if symbols is None else symbols,
        limits=LIMITS,
        rest_snapshots=rest,
    )
    for conn_id in range(up):
        assert p.receive_connection(conn_id, True, 0) == Step([], [])
    return p


def kinds(step: Step) -> list[str]:
    return [type(e).__name__ for e in step.publications]


def synced(venue: FakeVenue, *, rest: bool = True) -> VenuePipeline:
    """Both symbols live at id 10 on connections 0 and 1."""
    p = pipeline(venue, rest=rest)
    for symbol in ("BTC", "ETH"):
        p.receive_frame(0, venue.frame(diff(symbol, 10, 10)), 1, 0)
        step = p.receive_snapshot(snap(symbol, 10), 0)
        assert kinds(step) == ["BookReset", "StatusChange"]
    return p


# --- snapshots wanted ---------------------------------------------------------------------


def test_first_update_asks_for_one_snapshot_and_the_reset_clears_the_fetch_backoff() -> None:
    venue = FakeVenue()
    p = pipeline(venue)
    step = p.receive_frame(0, venue.frame(diff("BTC", 5, 6)), 1, 0)
    assert step == Step([], [FetchSnapshot("BTC", 1)])
    # The same update from the other connection: the snapshot is already wanted.
    assert p.receive_frame(1, venue.frame(diff("BTC", 5, 6)), 1, 0) == Step([], [])
    step = p.receive_snapshot(snap("BTC", 5), 0)
    assert kinds(step) == ["BookReset", "StatusChange"]
    assert step.actions == [BookRebuilt("BTC")]
    state = p.book_state("seq:BTC")
    assert state == BookState(p.books["seq:BTC"].book, 1, 0, 6, SymbolState.LIVE)
    assert p.book_state("seq:ETH") is None and p.book_state("seq:NOPE") is None


def test_a_gap_every_connection_missed_gives_exactly_one_fetch() -> None:
    venue = FakeVenue()
    p = synced(venue)
    step = p.receive_frame(0, venue.frame(diff("BTC", 13, 13, conn=0)), 1, 0)
    assert step == Step([], []), "ids 11..12 may still come from connection 1"
    assert p.timer_armed and p.deadline_ns() == WINDOW_NS
    step = p.receive_frame(1, venue.frame(diff("BTC", 14, 14, conn=1)), 1, 0)
    assert step.publications == [
        StatusChange("seq:BTC", SymbolState.RESYNCING, "gap 11-12: ids missing on every connection")
    ]
    assert step.actions == [FetchSnapshot("BTC", 2)]
    assert p.books["seq:BTC"].stats.gaps == 1 and p.book_state("seq:BTC") is None


def test_a_late_answer_to_a_superseded_fetch_is_discarded_never_applied() -> None:
    venue = FakeVenue()
    p = synced(venue)
    p.receive_frame(0, venue.frame(diff("BTC", 13, 13, conn=0)), 1, 0)
    first = p.receive_frame(1, venue.frame(diff("BTC", 13, 13, conn=1)), 1, 0).actions
    assert first == [FetchSnapshot("BTC", 2)]
    # The rebuilt book gaps again while the first fetch is still out: a new attempt.
    p.receive_snapshot(snap("BTC", 14), 0, attempt=2)
    p.receive_frame(0, venue.frame(diff("BTC", 17, 17, conn=0)), 1, 0)
    second = p.receive_frame(1, venue.frame(diff("BTC", 17, 17, conn=1)), 1, 0).actions
    assert second == [FetchSnapshot("BTC", 3)]
    # The answer to attempt 2 again (a retry of it that came back late): discarded.
    assert p.receive_snapshot(snap("BTC", 16), 0, attempt=2) == Step([], [])
    assert p.stats.snapshots_superseded == 1 and p.book_state("seq:BTC") is None
    # The current attempt's answer rebuilds the book; a second answer to it is discarded.
    assert kinds(p.receive_snapshot(snap("BTC", 17), 0, attempt=3)) == [
        "BookReset",
        "StatusChange",
    ]
    assert p.receive_snapshot(snap("BTC", 17), 0, attempt=3) == Step([], [])
    assert p.stats.snapshots_superseded == 2
    # Another symbol's attempts are its own.
    assert p.snapshot_attempts.current("ETH") == 1
    assert p.snapshot_attempts.current("BTC") == 3


def test_a_gap_without_rest_resubscribes_on_every_connection_that_is_up() -> None:
    venue = FakeVenue()
    p = synced(venue, rest=False)
    p.receive_connection(2, True, 0)
    p.receive_connection(2, False, 0)  # down again: it subscribes afresh when it comes up
    p.receive_frame(0, venue.frame(diff("ETH", 13, 13, conn=0)), 1, 0)
    step = p.receive_frame(1, venue.frame(diff("ETH", 13, 13, conn=1)), 1, 0)
    assert step.actions == [Resubscribe(0, "ETH"), Resubscribe(1, "ETH")]
    assert p.stats.resubscribes == 2 * 2 + 2  # the initial syncs of both symbols, then ETH
    # A venue that cannot resubscribe one symbol is asked nothing.
    mute = FakeVenue(can_resubscribe=False)
    p = pipeline(mute, rest=False)
    assert p.receive_frame(0, mute.frame(diff("BTC", 5, 6)), 1, 0) == Step([], [])
    assert p.stats.resubscribes == 0


def test_the_reorder_window_is_the_clock_passed_in() -> None:
    venue = FakeVenue()
    p = synced(venue)
    p.receive_frame(0, venue.frame(diff("BTC", 13, 13)), 1, 500)
    assert p.deadline_ns() == 500 + WINDOW_NS
    assert p.on_timer(500 + WINDOW_NS - 1) == Step([], [])
    step = p.on_timer(500 + WINDOW_NS)
    assert kinds(step) == ["StatusChange"] and step.actions == [FetchSnapshot("BTC", 2)]
    assert p.deadline_ns() is None
    p.on_timer(10**9)
    assert not p.timer_armed, "a book without a deadline is no longer watched"


def test_a_filled_hole_publishes_in_order_and_disarms_the_timer() -> None:
    venue = FakeVenue()
    p = synced(venue)
    p.receive_frame(0, venue.frame(diff("BTC", 12, 12)), 1, 0)
    step = p.receive_frame(1, venue.frame(diff("BTC", 11, 11, conn=1)), 1, 0)
    assert [(e.seq, e.venue_id) for e in step.publications if isinstance(e, BookDelta)] == [
        (1, 11),
        (2, 12),
    ]
    assert p.deadline_ns() is None


# --- the venue breaking its contract --------------------------------------------------------


def test_unknown_symbols_are_counted_and_create_no_book() -> None:
    venue = FakeVenue()
    p = pipeline(venue)
    other = venue.frame(diff("DOGE", 1, 2), snap("DOGE", 2, conn=0))
    assert p.receive_frame(0, other, 1, 0) == Step([], [])
    assert p.stats.unknown_symbols == 2 and set(p.books) == {"seq:BTC", "seq:ETH"}
    # A REST snapshot of a symbol not carried is dropped.
    assert p.receive_snapshot(snap("DOGE", 2), 0) == Step([], [])


def test_bad_frames_are_counted_per_connection_and_logged_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    venue = FakeVenue()
    p = synced(venue)
    before = p.books["seq:BTC"].book.normalized()
    caplog.set_level(logging.WARNING, logger="gateway.core.pipeline")
    for _ in range(LOG_EVERY):
        assert p.receive_frame(0, b"junk", 1, 0) == Step([], [])
    assert p.receive_frame(1, b"junk", 1, 0) == Step([], [])
    assert p.stats.bad_frames == LOG_EVERY + 1
    assert p.bad_frames_by_conn == {0: LOG_EVERY, 1: 1}
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == LOG_FIRST + 1 + 1  # the first ten, the 1000th, conn 1's first
    assert logged[-2].startswith(f"conn 0: bad frame #{LOG_EVERY} from seq")
    assert p.books["seq:BTC"].book.normalized() == before
    # A REST body the venue's parser rejects is a bad frame too.
    assert p.receive_rest("BTC", b"{", 1, 0) == Step([], [])
    assert p.stats.bad_frames == LOG_EVERY + 2 and p.bad_frames_by_conn[-1] == 1


def test_a_venue_notice_asking_to_reconnect_gives_one_reconnect() -> None:
    venue = FakeVenue()
    p = pipeline(venue)
    shutdown = VenueNotice("seq", "shutdown", "maintenance", True, 1, 1)
    error = VenueNotice("seq", "error", "bad request", False, 1, 1)
    assert p.receive_frame(1, venue.frame(error), 1, 0) == Step([], [])
    # A notice renews a healthy connection (make-before-break).
    step = p.receive_frame(1, venue.frame(shutdown, shutdown), 1, 0)
    assert step == Step([], [Reconnect(1, renew=True)])
    assert p.stats.notices == 3


def test_a_connection_silent_at_a_venue_reset_is_reconnected_with_no_fault_counted() -> None:
    venue = FakeVenue()
    p = synced(venue)  # connection 1 is up and silent
    reset = DepthSnapshot("seq", "BTC", 1, (("50", "1"),), (), 0, 0, reset=True)
    step = p.receive_frame(0, venue.frame(reset), 1, 0)
    assert kinds(step) == ["BookDelta"] and step.actions == [Reconnect(1, fault=False)]
    assert p.faults_by_conn == {}, "nothing counted against its score"


def test_a_connection_whose_implausible_ids_its_own_stream_contradicts_is_reconnected() -> None:
    venue = FakeVenue()
    p = synced(venue)
    far = 10**12
    step = p.receive_frame(1, venue.frame(diff("BTC", 11, 11 + far, conn=1)), 1, 0)
    assert step == Step([], []), "held: connection 0 may confirm it"
    # Connection 1 goes on below its own implausible copy: that copy was bogus.
    step = p.receive_frame(1, venue.frame(diff("BTC", 11, 11, conn=1)), 1, 0)
    assert kinds(step) == ["BookDelta"] and step.actions == [Reconnect(1)]
    assert p.faults_by_conn == {1: 1}, "counted against its score"
    stats = p.books["seq:BTC"].stats
    assert stats.conn(1).disagreements == 1 and stats.resyncs == 0
    assert p.book_state("seq:BTC") is not None


def test_a_connection_whose_implausible_ids_the_others_contradict_is_reconnected() -> None:
    venue = FakeVenue()
    p = synced(venue)
    step = p.receive_frame(1, venue.frame(diff("BTC", 11, 11 + 10**12, conn=1)), 1, 0)
    assert step == Step([], [])
    # Connection 0's copy of the update starting at 11 ends at 11: the held copy was bogus.
    step = p.receive_frame(0, venue.frame(diff("BTC", 11, 11, conn=0)), 1, 0)
    assert kinds(step) == ["BookDelta"] and step.actions == [Reconnect(1)]
    assert p.faults_by_conn == {1: 1}
    stats = p.books["seq:BTC"].stats
    assert stats.conn(1).disagreements == 1 and stats.resyncs == 0 and stats.obsolete == 1


def test_a_venue_that_restarted_its_ids_is_fetched_again_and_rebuilt_in_the_new_ids() -> None:
    venue = FakeVenue()
    p = synced(venue)
    p.receive_frame(0, venue.frame(diff("BTC", 11, 11, conn=0)), 1, 0)
    assert p.books["seq:BTC"].applied_id == 11
    # Both connections go on from id 3: below the book, for longer than twice the window.
    assert p.receive_frame(0, venue.frame(diff("BTC", 3, 3, conn=0)), 1, 0) == Step([], [])
    step = p.receive_frame(1, venue.frame(diff("BTC", 4, 4, conn=1)), 1, 2 * WINDOW_NS)
    reason = "venue reset: every connection below the book's id 11 for 0 ms (up to id 4)"
    assert step == Step(
        [StatusChange("seq:BTC", SymbolState.RESYNCING, reason)], [FetchSnapshot("BTC", 2)]
    )
    p.receive_frame(0, venue.frame(diff("BTC", 5, 5, conn=0)), 1, 2 * WINDOW_NS)
    step = p.receive_rest("BTC", b"4", 1, 2 * WINDOW_NS)
    assert kinds(step) == ["BookReset", "StatusChange"] and step.actions == [BookRebuilt("BTC")]
    state = p.book_state("seq:BTC")
    assert state is not None and (state.venue_id, state.state) == (5, SymbolState.LIVE)


def test_the_plausibility_bound_is_given_to_every_book() -> None:
    p = VenuePipeline(FakeVenue(), ["BTC"], limits=ArbiterLimits(max_id_jump=5))
    book = p.books["seq:BTC"]
    assert isinstance(book, SequencedBook) and book.max_id_jump == 5
    default = VenuePipeline(FakeVenue(), ["BTC"]).books["seq:BTC"]
    assert isinstance(default, SequencedBook)
    assert default.max_id_jump == BinanceSpotRule.max_id_jump


# --- trades and connections -----------------------------------------------------------------


def test_trades_are_deduplicated_across_connections() -> None:
    venue = FakeVenue()
    p = pipeline(venue)
    first = p.receive_frame(0, venue.frame(trade(7, 0), trade(8, 0)), 1, 0)
    assert [e.trade.trade_id for e in first.publications if isinstance(e, TradeOut)] == [7, 8]
    assert p.receive_frame(1, venue.frame(trade(7, 1), trade(8, 1)), 1, 0) == Step([], [])
    later = p.receive_frame(1, venue.frame(trade(9, 1)), 1, 0)
    assert later.publications == [TradeOut(trade(9, 1))]
    assert p.trades["seq:BTC"].duplicates == 2


def test_a_connection_sequence_jump_resubscribes_every_symbol_on_that_connection() -> None:
    venue = FakeVenue(venue="rep", unsequenced=True)
    p = VenuePipeline(venue, ["BTC", "ETH"], rest_snapshots=False)
    for conn_id in (0, 1):
        p.receive_connection(conn_id, True, 0)
        for symbol in ("BTC", "ETH"):
            p.receive_frame(conn_id, venue.frame(snap(symbol, -1, venue="rep", conn=conn_id)), 1, 0)
    assert all(book.has_book for book in p.books.values())
    # The venue numbers each connection's messages from 0.
    assert p.receive_frame(0, venue.frame(ConnectionSequence("rep", 0, 1, 0)), 1, 0) == Step([], [])
    assert p.receive_frame(0, venue.frame(ConnectionSequence("rep", 1, 1, 0)), 1, 0) == Step([], [])
    step = p.receive_frame(0, venue.frame(ConnectionSequence("rep", 5, 1, 0)), 1, 0)
    assert step.actions == [Resubscribe(0, "BTC"), Resubscribe(0, "ETH")]
    assert p.stats.connection_gaps == 1 and p.sequences.gaps == 1
    # Connection 1 kept its replicas; a new connection starts its own counter.
    p.receive_connection(0, False, 0)
    p.receive_connection(0, True, 0)
    step = p.receive_frame(0, venue.frame(ConnectionSequence("rep", 0, 1, 0)), 1, 0)
    assert step == Step([], []) and p.stats.connection_gaps == 1
    # Its first message above 0: the ones before it were lost (its snapshots among them).
    p.receive_connection(1, False, 0)
    p.receive_connection(1, True, 0)
    step = p.receive_frame(1, venue.frame(ConnectionSequence("rep", 2, 1, 1)), 1, 0)
    assert step.actions == [Resubscribe(1, "BTC"), Resubscribe(1, "ETH")]
    assert p.stats.connection_gaps == 2


def test_a_message_late_on_its_connection_sequence_is_ignored() -> None:
    """A snapshot that arrives after the update behind it: loaded, it would make a valid
    replica without that update. The update's jump resubscribed the replica already."""
    venue = FakeVenue(venue="rep", unsequenced=True)
    p = VenuePipeline(venue, ["BTC"], rest_snapshots=False)
    p.receive_connection(0, True, 0)
    update = DepthDiff("rep", "BTC", -1, -1, -1, (("100", "2"),), (), 5, 1, 0)
    step = p.receive_frame(0, venue.frame(ConnectionSequence("rep", 1, 1, 0), update), 1, 0)
    assert step.actions == [Resubscribe(0, "BTC")], "message 0 was not seen"
    late = venue.frame(ConnectionSequence("rep", 0, 1, 0), snap("BTC", -1, venue="rep", conn=0))
    assert p.receive_frame(0, late, 1, 0) == Step([], [])
    book = p.books["rep:BTC"]
    assert isinstance(book, ReplicatedBook) and not book.replicas[0].valid
    assert p.stats.connection_late_messages == 1 and p.stats.connection_gaps == 1
    # The answer to the resubscribe comes after: it is used.
    answer = venue.frame(ConnectionSequence("rep", 2, 1, 0), snap("BTC", -1, venue="rep", conn=0))
    assert p.receive_frame(0, answer, 1, 0).publications and book.replicas[0].valid


def test_a_flood_of_late_and_lost_messages_logs_a_few_lines_a_minute_per_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection that sends its messages out of order (each late or a jump) is counted
    in full, but logged a few lines a minute, the next line saying how many were not."""
    venue = FakeVenue(venue="rep", unsequenced=True)
    p = VenuePipeline(venue, ["BTC"], rest_snapshots=False)
    p.receive_connection(0, True, 0)
    caplog.set_level(logging.WARNING, logger="gateway.core.pipeline")
    caplog.clear()
    now_ns = 0
    for n in range(0, 200, 2):  # n + 1 before n: a jump, then a late message
        for seq in (n + 1, n):
            now_ns += 10_000_000
            p.receive_frame(0, venue.frame(ConnectionSequence("rep", seq, 1, 0)), 1, now_ns)
    assert p.stats.connection_gaps == 100 and p.stats.connection_late_messages == 100
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.core.pipeline"]
    assert sum("arrived late" in line for line in lines) == 5
    assert sum("messages lost" in line for line in lines) == 5
    caplog.clear()
    p.receive_frame(0, venue.frame(ConnectionSequence("rep", 300, 1, 0)), 1, now_ns + 61 * 10**9)
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.core.pipeline"]
    assert lines == ["conn 0: messages lost (sequence jump); resubscribing (95 similar suppressed)"]


def test_trade_connections_are_not_told_to_the_books() -> None:
    venue = FakeVenue()
    p = VenuePipeline(venue, ["BTC"], trade_conn_ids={9})
    p.receive_connection(9, True, 0)
    assert p.receive_connection(9, False, 0) == Step([], [])
    assert p.books["seq:BTC"].state is SymbolState.SYNCING, "not stale: no book connection"
    step = p.receive_connection(0, False, 0)
    assert step.publications == [
        StatusChange("seq:BTC", SymbolState.STALE, "every upstream connection down")
    ]


def test_book_updates_on_a_trade_connection_never_reach_the_books() -> None:
    """A trade-only connection that delivers depth (a venue or a replay serving the wrong
    stream on that path) is counted; the books never count on it, so they still go stale
    when every book connection is down."""
    venue = FakeVenue()
    p = VenuePipeline(venue, ["BTC"], trade_conn_ids={9})
    for conn_id in (0, 9):
        p.receive_connection(conn_id, True, 0)
    p.receive_rest("BTC", b"5", 1, 0)
    assert p.receive_frame(0, venue.frame(diff("BTC", 6, 6, conn=0)), 1, 0).publications
    assert p.receive_frame(9, venue.frame(diff("BTC", 7, 7, conn=9)), 1, 0) == Step([], [])
    assert p.receive_frame(9, venue.frame(snap("BTC", 9, conn=9)), 1, 0) == Step([], [])
    assert p.stats.book_updates_on_trade_connections == 2
    assert p.books["seq:BTC"].applied_id == 6
    step = p.receive_connection(0, False, 0)
    assert step.publications == [
        StatusChange("seq:BTC", SymbolState.STALE, "every upstream connection down")
    ]


# --- open pipelines (verify) ----------------------------------------------------------------


def test_an_open_pipeline_carries_every_symbol_of_its_venue() -> None:
    venue = FakeVenue()
    p = VenuePipeline(venue, None)
    p.receive_connection(0, True, 0)
    precision = InstrumentPrecision("seq", "SOL", 4, 8, 1, 0)
    p.receive_frame(0, venue.frame(precision), 1, 0)
    assert p.books == {} and venue.checksums == [(4, 8)]
    p.receive_frame(0, venue.frame(diff("SOL", 5, 6)), 1, 0)
    book = p.books["seq:SOL"]
    assert book.checksum is crc, "the precision announced before the book applies to it"
    step = p.receive_rest("SOL", b"6", 1, 0)
    assert kinds(step) == ["BookReset", "StatusChange"]
    assert step.actions == [], "no fetcher: nothing to tell it"
    # Another venue's events are not this pipeline's symbols.
    p.receive_frame(0, venue.frame(diff("SOL", 1, 2, venue="other")), 1, 0)
    assert p.stats.unknown_symbols == 1 and set(p.books) == {"seq:SOL"}


def test_precision_sets_the_checksum_of_a_carried_book() -> None:
    venue = FakeVenue()
    p = pipeline(venue)
    p.receive_frame(0, venue.frame(InstrumentPrecision("seq", "BTC", 2, 3, 1, 0)), 1, 0)
    p.receive_frame(0, venue.frame(InstrumentPrecision("seq", "XRP", 2, 3, 1, 0)), 1, 0)
    assert p.books["seq:BTC"].checksum is crc and p.books["seq:ETH"].checksum is None
    assert p.stats.unknown_symbols == 0, "precisions of other instruments are not errors"


def test_steps_hold_publications_in_arbiter_order() -> None:
    venue = FakeVenue()
    p = synced(venue)
    frame = venue.frame(diff("BTC", 11, 11), diff("ETH", 11, 11), trade(1, 0))
    step = p.receive_frame(0, frame, 1, 0)
    assert kinds(step) == ["BookDelta", "BookDelta", "TradeOut"]
    assert [e.key for e in step.publications if isinstance(e, BookDelta)] == ["seq:BTC", "seq:ETH"]
    # An in-band snapshot ahead of the live book is published as a delta, not a reset.
    jump = p.receive_snapshot(snap("BTC", 20, conn=0), 0)
    assert kinds(jump) == ["BookDelta"] and jump.actions == []


# --- visibility: event latency, status lines ----------------------------------------------


def test_event_latency_is_observed_per_connection_where_the_venue_sent_an_event_time() -> None:
    venue = FakeVenue()
    p = synced(venue)
    timed = [
        msgspec.structs.replace(diff("BTC", 11, 11), event_ms=1_000, recv_ns=1_004_000_000),
        msgspec.structs.replace(diff("BTC", 11, 11, conn=1), event_ms=1_000, recv_ns=999_000_000),
    ]
    for event in timed:
        p.receive_frame(event.conn_id, venue.frame(event), event.recv_ns, 0)
    # Diffs without an event time (event_ms 0, as synced() sends) are not observed.
    latency = p.event_latency_by_conn
    assert set(latency) == {0, 1}
    assert latency[0].count == 1 and latency[0].sum == pytest.approx(0.004)
    assert latency[1].sum == pytest.approx(-0.001), "a venue clock ahead of ours"
    assert latency[1].cumulative()[0] == (0.0, 1)


def test_each_status_change_is_one_line_naming_venue_and_symbol(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = synced(FakeVenue())
    caplog.set_level(logging.INFO, logger="gateway.core.pipeline")
    for conn_id in (0, 1):
        p.receive_connection(conn_id, False, 0)
    lines = [(r.levelname, r.getMessage(), r.venue, r.symbol) for r in caplog.records]  # type: ignore[attr-defined]
    assert lines == [
        ("WARNING", "seq:BTC: stale (every upstream connection down)", "seq", "BTC"),
        ("WARNING", "seq:ETH: stale (every upstream connection down)", "seq", "ETH"),
    ]


def _live(venue: FakeVenue, p: VenuePipeline, symbol: str) -> None:
    for conn_id in (0, 1):
        p.receive_frame(conn_id, venue.frame(snap(symbol, 10, conn=conn_id)), 1, 0)
        p.receive_frame(conn_id, venue.frame(diff(symbol, 10, 10, conn=conn_id)), 1, 0)
    if not venue.unsequenced:
        p.receive_snapshot(snap(symbol, 10), 0)


def _refused(venue: FakeVenue, p: VenuePipeline, symbol: str) -> None:
    p.receive_frame(
        0, venue.frame(VenueNotice("seq", "error", f"unknown {symbol}", False, 1, 0)), 1, 0
    )


def _every_connection_down(venue: FakeVenue, p: VenuePipeline, symbol: str) -> None:
    _live(venue, p, symbol)
    for conn_id in (0, 1):
        p.receive_connection(conn_id, False, 0)


_Bring = Callable[[FakeVenue, VenuePipeline, str], None]
#: How ETH is brought to its state when the gateway stops, and BTC's and ETH's states then.
_BEFORE_THE_STOP: dict[str, tuple[_Bring, SymbolState, SymbolState]] = {
    "live": (_live, SymbolState.SYNCING, SymbolState.LIVE),
    "syncing": (lambda venue, p, symbol: None, SymbolState.SYNCING, SymbolState.SYNCING),
    "refused by the venue": (_refused, SymbolState.SYNCING, SymbolState.STALE),
    "every connection down": (_every_connection_down, SymbolState.STALE, SymbolState.STALE),
}


@pytest.mark.parametrize("unsequenced", [False, True])
@pytest.mark.parametrize("before", list(_BEFORE_THE_STOP))
def test_a_stop_publishes_every_symbol_stale_with_its_reason_once_in_one_info_line(
    caplog: pytest.LogCaptureFixture, unsequenced: bool, before: str
) -> None:
    """The gateway's own stop is no outage: whatever each symbol's state (stale already for
    another reason too), the stop publishes it stale with the stopping reason, so that
    every subscriber hears it, and logs one INFO line for the venue; the connections ended
    by the stop publish and log nothing."""
    venue = FakeVenue(unsequenced=unsequenced)
    p = pipeline(venue, ["BTC", "ETH"])
    bring, btc, eth = _BEFORE_THE_STOP[before]
    bring(venue, p, "ETH")
    assert (p.state("seq:BTC"), p.state("seq:ETH")) == (btc, eth)
    caplog.set_level(logging.INFO, logger="gateway.core.pipeline")
    caplog.clear()
    step = p.stop()
    assert step == Step(
        [
            StatusChange("seq:BTC", SymbolState.STALE, STOPPING_REASON),
            StatusChange("seq:ETH", SymbolState.STALE, STOPPING_REASON),
        ],
        [],
    )
    already = [btc, eth].count(SymbolState.STALE)
    lines = [(r.levelname, r.getMessage(), r.__dict__["venue"]) for r in caplog.records]
    assert lines == [
        (
            "INFO",
            f"seq: 2 symbols now stale (the gateway is stopping), {already} of them stale already",
            "seq",
        )
    ]
    assert all(p.state(key) is SymbolState.STALE for key in p.books)
    if eth is SymbolState.LIVE:
        published = p.book_state("seq:ETH")
        assert published is not None and published.state is SymbolState.STALE
    # The connections fall as the stop closes them, a last frame arrives: nothing more.
    assert p.stop() == Step([], [])
    assert p.receive_frame(0, venue.frame(diff("ETH", 11, 11)), 1, 0) == Step([], [])
    for conn_id in (0, 1):
        assert p.receive_connection(conn_id, False, 0) == Step([], [])
    assert p.receive_snapshot(snap("BTC", 20), 0) == Step([], [])
    assert p.on_timer(10**12) == Step([], []) and not p.timer_armed
    assert p.auditable_symbols() == []
    assert len(caplog.records) == 1
    assert all(p.state(key) is SymbolState.STALE for key in p.books)


# --- venue faults in the books: crossed books, too many levels ------------------------------


def crossing(symbol: str, last: int) -> DepthDiff:
    return DepthDiff("seq", symbol, last, last, -1, (("101.5", "1"),), (), 0, 0, 0)


def test_a_crossed_book_is_counted_logged_rate_limited_and_rebuilt_never_published(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.core.pipeline")
    venue = FakeVenue()
    p = synced(venue)
    reason = "crossed book (bid 101.5 >= ask 101)"
    for n in range(8):
        last = 11 + 2 * n
        step = p.receive_frame(0, venue.frame(crossing("BTC", last)), 1, 0)
        assert step.publications == [StatusChange("seq:BTC", SymbolState.RESYNCING, reason)]
        assert step.actions == [FetchSnapshot("BTC", 2 + n)]
        state = p.book_state("seq:BTC")
        assert state is None  # nothing is served while the book is rebuilt
        assert kinds(p.receive_snapshot(snap("BTC", last + 1), 0)) == ["BookReset", "StatusChange"]
    assert p.stats.crossed_books == 8 and p.books["seq:BTC"].stats.crossed_faults == 8
    logged = [r.getMessage() for r in caplog.records if "not published" in r.getMessage()]
    assert len(logged) == 5  # LogLimiter's burst per symbol and minute
    assert logged[0] == f"seq:BTC: {reason}; not published, rebuilding"
    p.receive_frame(0, venue.frame(crossing("BTC", 27)), 1, 61_000_000_000)
    logged = [r.getMessage() for r in caplog.records if "not published" in r.getMessage()]
    assert len(logged) == 6 and logged[-1].endswith("(3 similar suppressed)")


def test_a_crossed_snapshot_waits_on_the_pipeline_timer_before_the_next_fetch() -> None:
    venue = FakeVenue()
    p = synced(venue)
    p.receive_frame(0, venue.frame(crossing("BTC", 11)), 1, 0)
    crossed = DepthSnapshot("seq", "BTC", 12, (("102", "1"),), (("101", "1"),), 0, -1)
    step = p.receive_snapshot(crossed, 0)
    assert kinds(step) == ["StatusChange"] and step.actions == []
    assert p.timer_armed and p.deadline_ns() == 1_000_000_000
    assert p.on_timer(999_999_999) == Step([], [])
    assert p.on_timer(1_000_000_000).actions == [FetchSnapshot("BTC", 3)]


def test_levels_beyond_the_cap_are_pruned_and_an_oversized_frame_is_refused() -> None:
    venue = FakeVenue()
    p = VenuePipeline(
        venue,
        ["BTC"],
        limits=ArbiterLimits(reorder_window_ns=WINDOW_NS, max_levels=3),
        rest_snapshots=True,
    )
    p.receive_connection(0, True, 0)
    p.receive_frame(0, venue.frame(diff("BTC", 10, 10)), 1, 0)
    too_deep = tuple((str(90 + i), "1") for i in range(4))
    step = p.receive_snapshot(DepthSnapshot("seq", "BTC", 10, too_deep, (), 0, -1), 0)
    book = p.books["seq:BTC"]
    refused = "snapshot of 4 bid and 0 ask levels exceeds the cap of 3 per side"
    waiting = f"{refused}; snapshot not used; next snapshot in 1 s"
    assert step == Step([StatusChange("seq:BTC", SymbolState.SYNCING, waiting)], [])
    assert not book.has_book and book.stats.bad_updates == 1
    # The next snapshot is asked after a wait, not at once (the venue would send it again).
    assert p.on_timer(999_999_999) == Step([], [])
    assert p.on_timer(1_000_000_000).actions == [FetchSnapshot("BTC", 2)]
    assert kinds(p.receive_snapshot(snap("BTC", 10), 0)) == ["BookReset", "StatusChange"]
    # One frame of more levels than the cap: refused, the book unchanged.
    oversized = DepthDiff("seq", "BTC", 11, 11, -1, too_deep, (), 0, 0, 0)
    assert p.receive_frame(0, venue.frame(oversized), 1, 0) == Step([], [])
    assert book.book.bids() == [("99", "1")] and book.stats.bad_updates == 2
    # Updates that leave a side above the cap: the farthest levels are pruned, and the
    # published delta says so, so that subscribers' books stay equal to the gateway's.
    deeper = DepthDiff(
        "seq", "BTC", 11, 11, -1, (("98", "1"), ("97", "1"), ("96", "1")), (), 0, 0, 0
    )
    step = p.receive_frame(0, venue.frame(deeper), 1, 0)
    assert book.book.bids() == [("99", "1"), ("98", "1"), ("97", "1")]
    (delta,) = step.publications
    assert isinstance(delta, BookDelta) and delta.bids[-1] == ("96", "0")
    assert book.stats.levels_pruned == 1


# --- sharded connections --------------------------------------------------------------------


def test_a_book_is_told_only_of_the_connections_that_carry_its_symbol() -> None:
    venue = FakeVenue()
    # Connection 0 carries BTC, 1 carries ETH, 2 carries both (not named: every symbol).
    p = VenuePipeline(
        venue,
        ["BTC", "ETH"],
        limits=LIMITS,
        rest_snapshots=False,
        conn_symbols={0: ["BTC"], 1: ["ETH"]},
    )
    for conn_id in (0, 1, 2):
        p.receive_connection(conn_id, True, 0)
    # A snapshot wanted resubscribes only on the connections carrying the symbol.
    step = p.receive_frame(0, venue.frame(diff("BTC", 5, 6, conn=0)), 1, 0)
    assert step.actions == [Resubscribe(0, "BTC"), Resubscribe(2, "BTC")]
    step = p.receive_frame(1, venue.frame(diff("ETH", 5, 6, conn=1)), 1, 0)
    assert step.actions == [Resubscribe(1, "ETH"), Resubscribe(2, "ETH")]
    for symbol, conn_id in (("BTC", 0), ("ETH", 1)):
        p.receive_frame(conn_id, venue.frame(snap(symbol, 6, conn=conn_id)), 1, 0)
        assert p.books[f"seq:{symbol}"].state == SymbolState.LIVE
    # ETH's connections are untouched by BTC's going down, and the other way round.
    p.receive_connection(1, False, 0)
    p.receive_connection(2, False, 0)
    assert p.books["seq:ETH"].state == SymbolState.STALE
    assert p.books["seq:BTC"].state == SymbolState.LIVE


def test_epochs_count_from_the_base_and_deltas_carry_the_venue_event_time() -> None:
    venue = FakeVenue()
    base = 1_796_000_000_000_000  # a start time in microseconds: what the service passes
    p = VenuePipeline(venue, ["BTC"], limits=LIMITS, epoch_base=base)
    p.receive_connection(0, True, 0)
    p.receive_frame(0, venue.frame(diff("BTC", 5, 6)), 1, 0)
    reset = p.receive_snapshot(snap("BTC", 5), 0).publications[0]
    assert isinstance(reset, BookReset) and reset.epoch == base + 1
    timed = DepthDiff("seq", "BTC", 7, 7, -1, (("100", "7"),), (), 1_700_000_000_123, 99, 0)
    (delta,) = p.receive_frame(0, venue.frame(timed), 99, 0).publications
    assert isinstance(delta, BookDelta) and delta.epoch == base + 1
    assert (delta.event_ms, delta.recv_ns) == (1_700_000_000_123, 99)
    (untimed,) = p.receive_frame(0, venue.frame(diff("BTC", 8, 8)), 1, 0).publications
    assert isinstance(untimed, BookDelta) and untimed.event_ms is None  # the venue sent none


# --- catching up (make-before-break renewals) ---------------------------------------------


def test_a_watched_connection_caught_up_once_its_copies_reach_every_applied_id() -> None:
    venue = FakeVenue()
    p = synced(venue)
    p.receive_frame(0, venue.frame(diff("BTC", 11, 12)), 1, 0)
    p.receive_connection(5, True, 0)
    p.watch_catch_up(5)  # BTC applied up to 12, ETH up to 10
    assert p.receive_frame(5, venue.frame(diff("BTC", 11, 11)), 1, 0).actions == []
    # Connection 0 runs ahead: the targets stay the applied ids when the watch began.
    p.receive_frame(0, venue.frame(diff("BTC", 13, 14), diff("ETH", 11, 11)), 1, 0)
    assert p.receive_frame(5, venue.frame(diff("BTC", 12, 12)), 1, 0).actions == []
    step = p.receive_frame(5, venue.frame(diff("ETH", 11, 11)), 1, 0)
    assert step.actions == [CaughtUp(5)]
    # Told once; other connections are never watched.
    assert p.receive_frame(5, venue.frame(diff("BTC", 13, 14)), 1, 0).actions == []
    assert p.receive_frame(1, venue.frame(diff("ETH", 12, 12)), 1, 0).actions == []


def test_a_watched_connection_that_reconnects_starts_its_catch_up_over() -> None:
    venue = FakeVenue()
    p = synced(venue)
    p.receive_connection(5, True, 0)
    p.watch_catch_up(5)
    p.receive_frame(5, venue.frame(diff("BTC", 11, 11)), 1, 0)
    p.receive_connection(5, False, 0)
    p.receive_connection(5, True, 0)
    p.receive_frame(5, venue.frame(diff("ETH", 11, 11)), 1, 0)
    assert p.receive_frame(5, venue.frame(diff("ETH", 12, 12)), 1, 0).actions == []
    p.unwatch_catch_up(5)
    assert p.receive_frame(5, venue.frame(diff("BTC", 12, 12)), 1, 0).actions == []


def test_an_unsequenced_connection_caught_up_once_every_replica_is_valid() -> None:
    venue = FakeVenue(venue="rep", unsequenced=True)
    p = VenuePipeline(venue, ["BTC", "ETH"], rest_snapshots=False)
    p.receive_connection(3, True, 0)
    p.watch_catch_up(3)
    step = p.receive_frame(3, venue.frame(snap("BTC", -1, venue="rep", conn=3)), 1, 0)
    assert CaughtUp(3) not in step.actions
    step = p.receive_frame(3, venue.frame(snap("ETH", -1, venue="rep", conn=3)), 1, 0)
    assert CaughtUp(3) in step.actions


def test_a_watched_trade_connection_caught_up_at_its_first_trade() -> None:
    venue = FakeVenue()
    p = VenuePipeline(venue, ["BTC"])
    p.add_trade_connection(9)
    p.receive_connection(9, True, 0)
    p.watch_catch_up(9)
    assert (
        p.receive_frame(9, venue.frame(VenueNotice("seq", "ack", "", False, 1, 9)), 1, 0).actions
        == []
    )
    assert p.receive_frame(9, venue.frame(trade(1, 9)), 1, 0).actions == [CaughtUp(9)]


def per_connection_state(p: VenuePipeline) -> list[int]:
    """How many entries the pipeline and its books keep keyed by connection."""
    sizes = [
        len(p.bad_frames_by_conn),
        len(p.event_latency_by_conn),
        len(p.faults_by_conn),
        len(p.trade_conn_ids),
        len(p._conn_keys),
        len(p._catching_up),
        len(p._catch_up_targets),
        len(p._up),
    ]
    for book in p.books.values():
        sizes.append(len(book.stats.connections))
        if isinstance(book, ReplicatedBook):
            sizes.append(len(book.replicas))
        else:
            assert isinstance(book, SequencedBook)
            sizes.append(len(book._conn_high))
    return sizes


def renew(p: VenuePipeline, venue: FakeVenue, conn_id: int, next_id: int) -> None:
    """One renewal's replacement: it comes up watched, brings every kind of per-connection
    count (updates first, duplicates, an event latency, a bad frame, a connection sequence
    gap), and is closed for good; a trade-only one beside it likewise."""
    p.set_connection_symbols(conn_id, ["BTC"])
    p.receive_connection(conn_id, True, 0)
    p.watch_catch_up(conn_id)
    if venue.unsequenced:
        p.receive_frame(conn_id, venue.frame(snap("BTC", -1, venue="rep", conn=conn_id)), 1, 0)
        p.receive_frame(conn_id, venue.frame(ConnectionSequence("rep", 0, 1, conn_id)), 1, 0)
        p.receive_frame(conn_id, venue.frame(ConnectionSequence("rep", 5, 1, conn_id)), 1, 0)
    else:
        levels = (("100", str(next_id)),)
        for conn in (conn_id, 0):
            update = DepthDiff("seq", "BTC", next_id, next_id, -1, levels, (), 1, 2, conn)
            p.receive_frame(conn, venue.frame(update), 1, 0)
    p.receive_frame(conn_id, b"not a frame", 1, 0)
    p.receive_connection(conn_id, False, 0)
    p.forget_connection(conn_id)
    trades = conn_id + 1
    p.add_trade_connection(trades)
    p.receive_connection(trades, True, 0)
    p.receive_frame(trades, b"not a frame either", 1, 0)
    p.receive_connection(trades, False, 0)
    p.forget_connection(trades)


@pytest.mark.parametrize("unsequenced", [False, True], ids=["sequenced", "unsequenced"])
def test_renewals_leave_no_per_connection_state_behind(unsequenced: bool) -> None:
    """What the pipeline keeps per connection is bounded by the connections open, not by
    the renewals over the process's life: 100 renewals hold what one does."""
    if unsequenced:
        venue = FakeVenue(venue="rep", unsequenced=True)
        p = VenuePipeline(venue, ["BTC", "ETH"], rest_snapshots=False)
        for conn_id in (0, 1):
            p.receive_connection(conn_id, True, 0)
            for symbol in ("BTC", "ETH"):
                frame = venue.frame(snap(symbol, -1, venue="rep", conn=conn_id))
                p.receive_frame(conn_id, frame, 1, 0)
    else:
        venue = FakeVenue()
        p = synced(venue)
    renew(p, venue, 10, 11)
    after_one = per_connection_state(p)
    book = p.books[f"{venue.venue}:BTC"]
    assert p.stats.bad_frames == 2
    for n in range(1, 100):
        renew(p, venue, 10 + 2 * n, 11 + n)
    assert per_connection_state(p) == after_one
    assert p.stats.bad_frames == 200  # the venue's totals keep counting
    assert all(conn_id < 10 for conn_id in book.stats.connections)


def test_a_symbol_that_delivered_on_a_forgotten_connection_is_never_taken_for_refused() -> None:
    venue = FakeVenue()
    p = pipeline(venue, up=1)  # BTC, ETH: no snapshot yet
    p.receive_frame(0, venue.frame(diff("BTC", 10, 10)), 1, 0)
    p.receive_connection(0, False, 0)
    p.forget_connection(0)  # renewed: its counters are gone
    p.receive_connection(1, True, 0)
    detail = "Failed to subscribe: unknown product_ids ['BTC', 'ETH']"
    step = p.receive_frame(1, venue.frame(VenueNotice("seq", "error", detail, False, 1, 1)), 1, 0)
    assert p.rejected.keys() == {"seq:ETH"}
    assert step.actions == [SymbolRejected(1, "ETH", True)]


# --- channel activity ---------------------------------------------------------------------


def test_a_channel_dead_on_one_connection_is_resubscribed_there_and_stale_when_dead_on_all() -> (
    None
):
    venue = FakeVenue()
    limits = ActivityLimits(factor=10.0, min_silence_s=1.0, max_silence_s=60.0, alpha=0.5)
    p = VenuePipeline(
        venue,
        ["BTC", "ETH"],
        limits=LIMITS,
        rest_snapshots=True,
        activity=limits,
    )
    assert p.timer_armed, "channels are watched on the timer"
    for conn_id in (0, 1):
        p.receive_connection(conn_id, True, 0)
    for symbol in ("BTC", "ETH"):
        p.receive_frame(0, venue.frame(diff(symbol, 10, 10)), 1, 0)
        p.receive_snapshot(snap(symbol, 10), 0, attempt=1)
    next_id = {"BTC": 11, "ETH": 11}
    steps: list[Step] = []

    def tick(t_ns: int, btc_on: tuple[int, ...]) -> None:
        for symbol, on in (("ETH", (0, 1)), ("BTC", btc_on)):
            for conn_id in on:
                update = diff(symbol, next_id[symbol], next_id[symbol], conn_id)
                steps.append(p.receive_frame(conn_id, venue.frame(update), 1, t_ns))
            if on:  # a quiet symbol's next update continues its ids
                next_id[symbol] += 1
        steps.append(p.on_timer(t_ns))

    ms = 1_000_000
    for t in range(1, 21):  # both symbols every 0.1 s on both connections
        tick(t * 100 * ms, (0, 1))
    assert not [a for s in steps for a in s.actions]
    steps.clear()
    for t in range(21, 40):  # BTC silent on connection 0, which still carries ETH
        tick(t * 100 * ms, (1,))
    actions = [a for s in steps for a in s.actions]
    assert actions == [Resubscribe(0, "BTC")] and p.stats.silent_channels == 1
    assert all(type(e) is BookDelta for s in steps for e in s.publications), "still live"
    assert p.books["seq:BTC"].state is SymbolState.LIVE
    steps.clear()
    for t in range(40, 60):  # BTC silent everywhere
        tick(t * 100 * ms, ())
    published = [e for s in steps for e in s.publications if type(e) is not BookDelta]
    assert published == [
        StatusChange(
            "seq:BTC",
            SymbolState.STALE,
            "no updates for 1 s on any connection (usual every 0.1 s)",
        )
    ]
    # Connection 1's silence, and connection 0's resubscribe, unanswered, asked again.
    actions = [a for s in steps for a in s.actions]
    assert len(actions) == 2
    assert set(actions) == {Resubscribe(0, "BTC"), Resubscribe(1, "BTC")}
    assert p.stats.silent_channels == 2
    assert p.books["seq:ETH"].state is SymbolState.LIVE, "ETH's traffic never stopped"
    steps.clear()
    tick(60 * 100 * ms, (1,))  # BTC's updates are back
    published = [e for s in steps for e in s.publications if type(e) is not BookDelta]
    assert published == [StatusChange("seq:BTC", SymbolState.LIVE, "upstream back")]
    assert p.stats.revived_channels == 1


class _Coinbase:
    """An unsequenced venue whose connections number every message (Coinbase's
    ``sequence_num``), BTC and ETH updated every 0.1 s on connections 0 and 1, their
    channels watched; each step's actions are kept."""

    MS = 1_000_000

    def __init__(self) -> None:
        self.venue = FakeVenue(venue="rep", unsequenced=True)
        limits = ActivityLimits(factor=10.0, min_silence_s=1.0, max_silence_s=60.0, alpha=0.5)
        self.p = VenuePipeline(self.venue, ["BTC", "ETH"], rest_snapshots=False, activity=limits)
        self.seq = {0: 0, 1: 0}
        self.actions: list[Action] = []
        self.t = 0
        for conn_id in (0, 1):
            self.p.receive_connection(conn_id, True, 0)
            for symbol in ("BTC", "ETH"):
                self.send(conn_id, snap(symbol, -1, venue="rep", conn=conn_id))

    def send(self, conn_id: int, *events: VenueEvent, lost: int = 0) -> None:
        """One message on ``conn_id``, ``lost`` messages before it never delivered."""
        self.seq[conn_id] += lost
        number = ConnectionSequence("rep", self.seq[conn_id], 1, conn_id)
        self.seq[conn_id] += 1
        now_ns = self.t * 100 * self.MS
        self.actions += self.p.receive_frame(
            conn_id, self.venue.frame(number, *events), 1, now_ns
        ).actions

    def update(self, symbol: str, conn_id: int) -> DepthDiff:
        level = (("100", str(self.t + 1)),)
        return DepthDiff("rep", symbol, -1, -1, -1, level, (), self.t + 1, 1, conn_id)

    def tick(self, btc_on: tuple[int, ...]) -> None:
        """The next 0.1 s: ETH on both connections, BTC on ``btc_on``."""
        self.t += 1
        for symbol, on in (("ETH", (0, 1)), ("BTC", btc_on)):
            for conn_id in on:
                self.send(conn_id, self.update(symbol, conn_id))
        self.actions += self.p.on_timer(self.t * 100 * self.MS).actions

    def replica_valid(self, conn_id: int) -> bool:
        book = self.p.books["rep:BTC"]
        assert isinstance(book, ReplicatedBook)
        replica = book.replicas.get(conn_id)
        return replica is not None and replica.valid


def test_a_jump_on_a_connection_awaiting_a_resubscribe_answer_resubscribes_it_again() -> None:
    """BTC's channel died on connection 0: its replica was dropped and BTC resubscribed
    there. The message then lost on connection 0 may be that snapshot: BTC is asked again,
    though connection 0 has no replica to invalidate, and its replica is back with the answer."""
    venue = _Coinbase()
    for _ in range(20):
        venue.tick((0, 1))
    for _ in range(19):  # BTC silent on connection 0, which still carries ETH
        venue.tick((1,))
    assert venue.actions == [Resubscribe(0, "BTC")] and not venue.replica_valid(0)
    venue.actions.clear()
    # The snapshot answering it is lost; BTC's updates come on connection 0 again.
    venue.send(0, venue.update("BTC", 0), lost=1)
    assert venue.actions == [Resubscribe(0, "BTC"), Resubscribe(0, "ETH")]
    assert venue.p.faults_by_conn[0] == 2, "the jump, on each symbol"
    venue.actions.clear()
    venue.send(0, snap("BTC", -1, venue="rep", conn=0))
    assert venue.replica_valid(0)
    # Answered: a later jump resubscribes it as any replica, once.
    venue.send(0, venue.update("BTC", 0), lost=1)
    assert venue.actions.count(Resubscribe(0, "BTC")) == 1


def test_a_jump_after_the_answer_to_a_silence_resubscribe_asks_nothing_more() -> None:
    """A connection that went down and came up again starts over: nothing is awaited."""
    venue = _Coinbase()
    for _ in range(20):
        venue.tick((0, 1))
    for _ in range(19):
        venue.tick((1,))
    assert venue.actions == [Resubscribe(0, "BTC")]
    venue.actions.clear()
    venue.p.receive_connection(0, False, venue.t * 100 * _Coinbase.MS)
    venue.p.receive_connection(0, True, venue.t * 100 * _Coinbase.MS)
    venue.seq[0] = 0
    venue.send(0, snap("ETH", -1, venue="rep", conn=0))
    venue.send(0, venue.update("ETH", 0), lost=1)
    assert venue.actions == [Resubscribe(0, "BTC"), Resubscribe(0, "ETH")], (
        "each replica, awaiting its snapshot since the connect, once"
    )


def test_a_resubscribe_never_answered_is_asked_again_after_a_wait_that_doubles() -> None:
    """BTC's resubscribe on connection 0 after its silence is never answered: asked again
    when the silence lasted twice the bound since, then four times; the answer ends it."""
    venue = _Coinbase()
    for _ in range(20):
        venue.tick((0, 1))
    asked_at: list[int] = []
    for _ in range(100):  # 10 s, BTC silent on connection 0 (bound: 1 s)
        before = len(venue.actions)
        venue.tick((1,))
        if len(venue.actions) > before:
            assert venue.actions[before:] == [Resubscribe(0, "BTC")]
            asked_at.append(venue.t)
    # Checked every 0.25 s on a clock of 0.1 s steps: each wait, up to 0.3 s later.
    waits = [b - a for a, b in pairwise(asked_at)]
    assert len(waits) == 2 and 20 <= waits[0] <= 23 and 40 <= waits[1] <= 43, asked_at
    assert venue.p.stats.silent_channels == 1, "one silence"
    assert venue.p.stats.resubscribes == 3
    venue.actions.clear()
    venue.send(0, snap("BTC", -1, venue="rep", conn=0))
    assert venue.replica_valid(0) and venue.p.stats.revived_channels == 1
    for _ in range(100):
        venue.tick((0, 1))
    assert venue.actions == []


# --- symbols the venue refuses ------------------------------------------------------------


def test_a_symbol_the_venue_refuses_is_stale_for_good_and_subscribed_without() -> None:
    venue = FakeVenue()
    p = pipeline(venue)
    detail = "Failed to subscribe: unknown product_ids ['ETH']"
    refused = venue.frame(VenueNotice("seq", "error", detail, False, 1, 0))
    step = p.receive_frame(0, refused, 1, 0)
    reason = f"rejected by the venue: {detail}"
    assert step.publications == [StatusChange("seq:ETH", SymbolState.STALE, reason)]
    assert step.actions == [SymbolRejected(0, "ETH", True)]
    assert p.rejected == {"seq:ETH": reason} and p.stats.rejected_symbols == 1
    assert p.state("seq:ETH") is SymbolState.STALE and p.state("seq:BTC") is SymbolState.SYNCING
    # Refused again on the same connection (one error per request): acted on once.
    assert p.receive_frame(0, refused, 1, 0) == Step([], [])
    # Another connection's refusal: its own subscription is sent again, nothing published.
    step = p.receive_frame(1, refused, 1, 0)
    assert step == Step([], [SymbolRejected(1, "ETH", True)])
    # A close reason naming it (Binance): subscribed without it on the next connect.
    step = p.receive_connection(1, False, 0, "closed: Invalid stream name: eth@depth")
    assert step.actions == [SymbolRejected(1, "ETH", False)]
    # The arbiter's own status changes of a refused symbol are not published.
    step = p.receive_connection(0, False, 0)
    assert [e.key for e in step.publications if isinstance(e, StatusChange)] == ["seq:BTC"]
    # Errors naming no carried symbol refuse nothing.
    p.receive_connection(0, True, 0)
    other = venue.frame(VenueNotice("seq", "error", "unknown product_ids ['BTC-X']", False, 1, 0))
    assert p.receive_frame(0, other, 1, 0) == Step([], [])


def test_a_connection_sequence_jump_resubscribes_no_symbol_the_venue_refused() -> None:
    venue = FakeVenue(venue="rep", unsequenced=True)
    p = VenuePipeline(venue, ["BTC", "ETH"], rest_snapshots=False)
    p.receive_connection(0, True, 0)
    detail = "Failed to subscribe: unknown product_ids ['ETH']"
    number = ConnectionSequence("rep", 0, 1, 0)
    refused = venue.frame(number, VenueNotice("rep", "error", detail, False, 1, 0))
    assert p.receive_frame(0, refused, 1, 0).actions == [SymbolRejected(0, "ETH", True)]
    jump = venue.frame(ConnectionSequence("rep", 5, 1, 0))
    assert p.receive_frame(0, jump, 1, 0).actions == [Resubscribe(0, "BTC")]


def test_an_error_naming_a_symbol_that_delivers_is_no_refusal() -> None:
    venue = FakeVenue()
    p = synced(venue)
    detail = "subscribe BTC: Already subscribed"
    step = p.receive_frame(0, venue.frame(VenueNotice("seq", "error", detail, False, 1, 0)), 1, 0)
    assert step == Step([], []) and p.rejected == {}


def test_audit_snapshots_are_compared_never_applied_and_only_live_books_are_audited() -> None:
    venue = FakeVenue()
    p = pipeline(venue)
    assert p.auditable_symbols() == []
    p.receive_frame(0, venue.frame(diff("BTC", 10, 10)), 1, 0)
    p.receive_snapshot(snap("BTC", 10), 0)
    assert p.auditable_symbols() == ["BTC"]
    p.receive_frame(0, venue.frame(diff("BTC", 11, 11)), 1, 0)
    book = p.books["seq:BTC"]
    before = book.book.normalized()
    # The venue's book at id 10 (one bid at 99) replayed with update 11 is the live book.
    assert p.receive_audit_snapshot(snap("BTC", 10), 0) == Step([], [])
    wrong = DepthSnapshot("seq", "BTC", 11, (("99", "5"),), (("101", "1"),), 0, -1)
    assert p.receive_audit_snapshot(wrong, 0) == Step([], [])
    assert (book.stats.audit_rest_ok, book.stats.audit_rest_drift) == (1, 1)
    assert book.book.normalized() == before and book.stats.snapshots == 1
    assert pipeline(FakeVenue(), rest=False).auditable_symbols() == []


def test_a_sharded_replacement_is_told_of_and_catches_up_with_its_shard_only() -> None:
    venue = FakeVenue()
    p = synced(venue)  # BTC and ETH live at id 10
    p.set_connection_symbols(5, ["BTC"])  # a renewal's replacement of a BTC-only slot
    p.receive_connection(5, True, 0)
    btc, eth = p.books["seq:BTC"], p.books["seq:ETH"]
    assert isinstance(btc, SequencedBook) and isinstance(eth, SequencedBook)
    assert 5 in btc._conn_high and 5 not in eth._conn_high
    p.watch_catch_up(5)
    # ETH is not on its shard: BTC alone reaching its applied id catches it up.
    assert p.receive_frame(5, venue.frame(diff("BTC", 10, 10, conn=5)), 1, 0).actions == [
        CaughtUp(5)
    ]
    p.forget_connection(5)
    p.set_connection_symbols(6, [])  # empty: every symbol
    p.receive_connection(6, True, 0)
    assert all(isinstance(b, SequencedBook) and 6 in b._conn_high for b in p.books.values())


def test_a_stop_of_a_venue_of_one_symbol_says_symbol(caplog: pytest.LogCaptureFixture) -> None:
    p = pipeline(FakeVenue(), ["BTC"])
    caplog.set_level(logging.INFO, logger="gateway.core.pipeline")
    caplog.clear()
    p.stop()
    assert [r.getMessage() for r in caplog.records] == [
        "seq: 1 symbol now stale (the gateway is stopping), 0 of them stale already"
    ]
