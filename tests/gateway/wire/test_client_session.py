"""ClientSession: gateway messages in, typed events, requests and warnings out. No event loop."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.model import Side
from gateway.core.model import SymbolState
from gateway.core.transitions import UndefinedTransition
from gateway.core.transitions import transition
from gateway.wire.client_session import GATEWAY_STOPPED
from gateway.wire.client_session import RETRY_TRANSITIONS
from gateway.wire.client_session import BboEvent
from gateway.wire.client_session import BookEvent
from gateway.wire.client_session import ClientSession
from gateway.wire.client_session import ClientState
from gateway.wire.client_session import Event
from gateway.wire.client_session import GatewayError
from gateway.wire.client_session import RecoveryEvent
from gateway.wire.client_session import RetryEvent
from gateway.wire.client_session import RetryInput
from gateway.wire.client_session import RetryState
from gateway.wire.client_session import StatusEvent
from gateway.wire.client_session import Step
from gateway.wire.client_session import TradeEvent
from gateway.wire.client_session import disconnect_reason
from gateway.wire.client_session import mid_of
from gateway.wire.client_session import spread_of
from gateway.wire.protocol import GOING_AWAY_REASON
from gateway.wire.protocol import Bbo
from gateway.wire.protocol import CloseCode
from gateway.wire.protocol import Delta
from gateway.wire.protocol import Error
from gateway.wire.protocol import ErrorCode
from gateway.wire.protocol import RecoverFrom
from gateway.wire.protocol import Resync
from gateway.wire.protocol import ServerMessage
from gateway.wire.protocol import Snapshot
from gateway.wire.protocol import Status
from gateway.wire.protocol import StreamPosition
from gateway.wire.protocol import Subscribe
from gateway.wire.protocol import Subscribed
from gateway.wire.protocol import TradeMsg
from gateway.wire.protocol import encode_json
from gateway.wire.protocol import encode_msgpack
from tests.gateway.core.state_tables import specify

KEY = "binance:BTCUSDT"
KEY2 = "binance:ETHUSDT"
BIDS = [("100.00", "1"), ("99.50", "2")]
ASKS = [("100.50", "1"), ("101.00", "2")]

LIVE, STALE, RESYNCING, SYNCING = (
    SymbolState.LIVE,
    SymbolState.STALE,
    SymbolState.RESYNCING,
    SymbolState.SYNCING,
)


class Feed:
    """A session fed encoded messages, with a clock that ticks once per message."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self.now_ns = 1_000

    def __call__(self, msg: ServerMessage, *, msgpack: bool = False) -> Step:
        self.now_ns += 1
        data: str | bytes = encode_msgpack(msg) if msgpack else encode_json(msg).decode()
        return self.session.on_data(data, self.now_ns)

    def lost(self, reason: str = "gateway connection lost: 1006") -> Step:
        self.now_ns += 1
        return self.session.on_disconnected(reason, self.now_ns)


def statuses(events: list[Event]) -> list[tuple[str, ClientState, str]]:
    return [(e.symbol, e.state, e.reason) for e in events if isinstance(e, StatusEvent)]


def delta(seq: int, bids: tuple[tuple[str, str], ...] = (), epoch: int = 1) -> Delta:
    return Delta(KEY, epoch, seq, 1000 + seq, bids, ())


def test_the_subscribe_request_names_the_channels_depth_and_format() -> None:
    session = ClientSession([KEY, KEY2, KEY], ["book", "bbo", "trade", "bbo"], 10, "msgpack")
    assert session.subscribe_request() == Subscribe(
        [KEY, KEY2], ["book", "bbo", "trade"], 10, "msgpack"
    )
    assert ClientSession([KEY]).subscribe_request() == Subscribe([KEY], ["book"], None, "json")


@pytest.mark.parametrize(
    ("symbols", "channels", "depth", "match"),
    [
        ([], ["book"], None, "symbol"),
        ([KEY], [], None, "channel"),
        ([KEY], ["book", "candles"], None, "unknown channel"),
        ([KEY], ["book"], 0, "depth"),
    ],
)
def test_a_bad_subscription_is_refused_at_once(
    symbols: list[str], channels: list[str], depth: int | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        ClientSession(symbols, channels, depth)  # type: ignore[arg-type]


@pytest.mark.parametrize("msgpack", [False, True])
def test_book_events_carry_a_consistent_book_and_no_status_per_delta(msgpack: bool) -> None:
    feed = Feed(ClientSession([KEY]))
    assert feed(Subscribed([KEY], ["book"]), msgpack=msgpack).subscribed
    first = feed(Status(KEY, LIVE, "snapshot applied"), msgpack=msgpack).events
    assert first == [StatusEvent(KEY, LIVE, "snapshot applied", feed.now_ns)]
    (snapshot,) = feed(Snapshot(KEY, 1, 0, 1000, BIDS, ASKS), msgpack=msgpack).events
    assert isinstance(snapshot, BookEvent)
    assert (snapshot.kind, snapshot.epoch, snapshot.seq, snapshot.venue_id) == (
        "snapshot",
        1,
        0,
        1000,
    )
    assert snapshot.state is LIVE and snapshot.recv_ns == feed.now_ns
    events: list[Event] = []
    for seq in range(1, 4):
        events += feed(delta(seq, ((f"99.{seq}0", "3"),)), msgpack=msgpack).events
    assert [(e.kind, e.seq) for e in events if isinstance(e, BookEvent)] == [
        ("delta", 1),
        ("delta", 2),
        ("delta", 3),
    ]
    assert len(events) == 3  # book events only: no status per delta
    book = feed.session.book(KEY)
    assert book is not None and book is snapshot.book
    assert book.bids() == [
        ("100.00", "1"),
        ("99.50", "2"),
        ("99.30", "3"),
        ("99.20", "3"),
        ("99.10", "3"),
    ]
    assert feed.session.position(KEY) == (1, 3)
    assert feed.session.stats.snapshots == 1 and feed.session.stats.deltas == 3


def test_a_repeated_status_yields_nothing_and_a_changed_reason_does() -> None:
    feed = Feed(ClientSession([KEY]))
    events: list[Event] = []
    for state, reason in [
        (SYNCING, ""),
        (SYNCING, ""),
        (LIVE, "snapshot applied"),
        (LIVE, "snapshot applied"),
        (STALE, "every connection down"),
        (STALE, "every connection down"),
        (STALE, "endpoint 2 refused"),
        (LIVE, "snapshot applied"),
    ]:
        events += feed(Status(KEY, state, reason)).events
    assert statuses(events) == [
        (KEY, SYNCING, ""),
        (KEY, LIVE, "snapshot applied"),
        (KEY, STALE, "every connection down"),
        (KEY, STALE, "endpoint 2 refused"),
        (KEY, LIVE, "snapshot applied"),
    ]
    assert feed.session.stats.statuses == 5


def test_a_gap_asks_for_a_resync_and_its_snapshot_ends_it_with_the_gateways_status() -> None:
    feed = Feed(ClientSession([KEY]))
    feed(Status(KEY, LIVE, "snapshot applied"))
    feed(Snapshot(KEY, 1, 0, 1000, BIDS, ASKS))
    feed(delta(1))
    gap = feed(delta(3))
    assert gap.requests == [Resync(KEY)]
    assert [cause for cause, _ in gap.warnings] == ["resync"]
    assert statuses(gap.events) == [
        (KEY, RESYNCING, "sequence gap: expected epoch 1 seq 2, got epoch 1 seq 3")
    ]
    assert feed.session.book(KEY) is None
    assert feed.session.position(KEY) == (1, 1)  # the last consistent one
    # Deltas before the resync's snapshot: nothing, no second resync.
    ignored = feed(delta(4))
    assert ignored.events == [] and ignored.requests == []
    back = feed(Snapshot(KEY, 1, 4, 1004, BIDS, ASKS)).events
    assert statuses(back) == [(KEY, LIVE, "snapshot applied")]
    assert isinstance(back[1], BookEvent) and back[1].state is LIVE and back[1].seq == 4
    assert feed.session.stats.gaps == 1
    assert feed(delta(5)).events[0].kind == "delta"


def test_a_bad_level_voids_the_book_until_a_snapshot() -> None:
    feed = Feed(ClientSession([KEY]))
    feed(Snapshot(KEY, 1, 0, 1000, BIDS, ASKS))
    bad = feed(delta(1, (("-1", "1"),)))
    assert bad.requests == [Resync(KEY)]
    assert statuses(bad.events)[0][1] is RESYNCING
    assert feed.session.book(KEY) is None and feed.session.stats.bad_messages == 1
    bad_snapshot = feed(Snapshot(KEY, 1, 1, 1001, [("x", "1")], ASKS))
    assert statuses(bad_snapshot.events) == [
        (KEY, RESYNCING, "bad level in snapshot: unparseable level ('x', '1')")
    ]
    assert [c for c, _ in bad_snapshot.warnings] == ["bad snapshot"]
    assert feed.session.book(KEY) is None
    assert feed.session.stats.bad_messages == 2


def test_a_lost_connection_makes_every_symbol_stale_once_and_keeps_positions() -> None:
    feed = Feed(ClientSession([KEY, KEY2]))
    feed(Status(KEY, LIVE, "snapshot applied"))
    feed(Snapshot(KEY, 1, 0, 1000, BIDS, ASKS))
    feed(delta(1))
    lost = feed.lost()
    assert statuses(lost.events) == [
        (KEY, STALE, "gateway connection lost: 1006"),
        (KEY2, STALE, "gateway connection lost: 1006"),
    ]
    assert feed.lost().events == []  # a failed reconnect changes nothing
    assert feed.session.book(KEY) is None
    assert feed.session.position(KEY) == (1, 1) and feed.session.position(KEY2) is None
    # The next connection: the gateway's status, then a snapshot.
    assert statuses(feed(Status(KEY, LIVE, "snapshot applied")).events) == [
        (KEY, LIVE, "snapshot applied")
    ]
    assert feed(delta(2)).events == []  # before the snapshot: skipped
    (event,) = feed(Snapshot(KEY, 1, 5, 1005, BIDS, ASKS)).events
    assert isinstance(event, BookEvent) and event.kind == "snapshot"


def test_bbo_and_trades_become_typed_events() -> None:
    feed = Feed(ClientSession([KEY], ["bbo", "trade"]))
    (bbo,) = feed(Bbo(KEY, 1, 7, ("100.10", "2"), ("100.35", "1"))).events
    assert bbo == BboEvent(KEY, 1, 7, ("100.10", "2"), ("100.35", "1"), feed.now_ns)
    assert isinstance(bbo, BboEvent)
    assert bbo.spread() == Decimal("0.25") and bbo.mid() == Decimal("100.225")
    (one_sided,) = feed(Bbo(KEY, 1, 8, None, ("100.35", "1"))).events
    assert isinstance(one_sided, BboEvent) and one_sided.spread() is None
    (trade,) = feed(TradeMsg(KEY, 42, "100.20", "0.5", Side.SELL, 1_700_000_000_123)).events
    assert trade == TradeEvent(KEY, 42, "100.20", "0.5", Side.SELL, 1_700_000_000_123, feed.now_ns)
    assert feed.session.stats.bbos == 2 and feed.session.stats.trades == 1
    # Without the book channel there is no book, whatever arrives.
    assert feed(Snapshot(KEY, 1, 0, 1000, BIDS, ASKS)).events == []
    assert feed.session.book(KEY) is None and feed.session.position(KEY) is None


def test_the_book_view_reads_levels_as_the_venues_strings() -> None:
    feed = Feed(ClientSession([KEY]))
    feed(Snapshot(KEY, 2, 0, 1000, [("100.00", "1"), ("99.50", "2"), ("99.00", "3")], ASKS))
    book = feed.session.book(KEY)
    assert book is not None
    assert book.best_bid() == ("100.00", "1") and book.best_ask() == ("100.50", "1")
    assert book.levels(2) == ([("100.00", "1"), ("99.50", "2")], [("100.50", "1"), ("101.00", "2")])
    assert book.bids(1) == [("100.00", "1")] and book.asks() == ASKS
    assert (book.bid_count, book.ask_count, book.epoch, book.seq) == (3, 2, 2, 0)
    assert book.spread() == Decimal("0.50") and book.mid() == Decimal("100.25")
    feed(Delta(KEY, 2, 1, 1001, (("100.00", "0"), ("99.50", "0"), ("99.00", "0")), ()))
    assert book.best_bid() is None and book.spread() is None and book.mid() is None


def test_spread_and_mid_are_exact_decimals() -> None:
    assert spread_of(("0.1", "1"), ("0.3", "1")) == Decimal("0.2")
    assert mid_of(("64012.10", "1"), ("64012.20", "1")) == Decimal("64012.15")
    assert spread_of(None, ("1", "1")) is None and mid_of(("1", "1"), None) is None


def test_refusals_raise_and_other_errors_and_garbage_are_warnings() -> None:
    feed = Feed(ClientSession([KEY]))
    with pytest.raises(GatewayError, match="unknown_symbol") as refused:
        feed(Error(ErrorCode.UNKNOWN_SYMBOL, "unknown symbol(s): nowhere:X", "nowhere:X"))
    assert refused.value.code == "unknown_symbol"
    not_subscribed = feed(Error(ErrorCode.NOT_SUBSCRIBED, "not subscribed", KEY))
    assert not_subscribed.events == [] and len(not_subscribed.warnings) == 1
    garbage = feed.session.on_data("{not json", 5)
    assert garbage.events == [] and [c for c, _ in garbage.warnings] == ["undecodable"]
    assert feed.session.stats.bad_messages == 1
    # Messages of symbols not subscribed are not ours.
    assert feed(Status(KEY2, LIVE, "snapshot applied")).events == []


def test_a_live_book_is_kept_across_a_lost_connection_and_named_in_recover() -> None:
    session = ClientSession([KEY, KEY2])
    feed = Feed(session)
    feed(Subscribed([KEY, KEY2], ["book"], "gw-1"))
    feed(Snapshot(KEY, 7, 0, 1000, BIDS, ASKS))
    feed(delta(1, (("99.00", "4"),), epoch=7))
    assert session.subscribe_request().recover is None  # first connection: nothing kept
    feed.lost()
    assert session.book(KEY) is None and session.position(KEY) == (7, 1)
    # Only the live book is kept (KEY2 never had one).
    assert session.subscribe_request() == Subscribe(
        [KEY, KEY2], ["book"], None, "json", {KEY: RecoverFrom(7, 1)}
    )
    (recovered,) = feed(Subscribed([KEY, KEY2], ["book"], "gw-1", [KEY])).events
    assert recovered == RecoveryEvent(KEY, True, 7, 1, "gw-1", feed.now_ns)
    missed = Delta(KEY, 7, 2, 1002, (("98.00", "1"),), (), 1_700, 11, 12, True)
    (event,) = feed(missed, msgpack=True).events
    assert isinstance(event, BookEvent) and event.recovered and event.seq == 2
    assert (event.event_ms, event.gateway_recv_ns, event.gateway_send_ns) == (1_700, 11, 12)
    book = session.book(KEY)
    assert book is not None and book.bids() == [
        ("100.00", "1"),
        ("99.50", "2"),
        ("99.00", "4"),
        ("98.00", "1"),
    ]
    assert session.stats.recoveries == 1 and session.stats.recovered_deltas == 1


def test_a_book_not_recovered_waits_for_its_snapshot() -> None:
    session = ClientSession([KEY])
    feed = Feed(session)
    feed(Snapshot(KEY, 7, 0, 1000, BIDS, ASKS))
    feed.lost()
    (not_recovered,) = feed(Subscribed([KEY], ["book"], "gw-2")).events
    assert not_recovered == RecoveryEvent(KEY, False, 7, 0, "gw-2", feed.now_ns)
    assert feed(delta(1, epoch=8)).events == []  # no book to follow: the snapshot comes
    (snap,) = feed(Snapshot(KEY, 8, 5, 1005, BIDS, ASKS, False)).events
    assert isinstance(snap, BookEvent) and snap.kind == "snapshot" and not snap.recovered
    assert session.stats.recovery_misses == 1 and session.instance == "gw-2"


@pytest.mark.parametrize(("recover", "depth"), [(False, None), (True, 10)])
def test_without_recovery_or_with_a_depth_nothing_is_kept(recover: bool, depth: int | None) -> None:
    session = ClientSession([KEY], depth=depth, recover=recover)
    feed = Feed(session)
    feed(Snapshot(KEY, 7, 0, 1000, BIDS, ASKS))
    feed.lost()
    assert session.subscribe_request().recover is None
    assert feed(Subscribed([KEY], ["book"], "gw-1")).events == []


def test_bbo_and_trade_events_carry_the_gateway_times() -> None:
    feed = Feed(ClientSession([KEY], ["bbo", "trade"]))
    (bbo,) = feed(Bbo(KEY, 1, 3, ("100", "1"), None, 1_700, 21, 22)).events
    assert isinstance(bbo, BboEvent)
    assert (bbo.event_ms, bbo.gateway_recv_ns, bbo.gateway_send_ns) == (1_700, 21, 22)
    (trade,) = feed(TradeMsg(KEY, 5, "100", "1", Side.BUY, 1_699, 31, 32), msgpack=True).events
    assert isinstance(trade, TradeEvent)
    assert (trade.ts_ms, trade.gateway_recv_ns, trade.gateway_send_ns) == (1_699, 31, 32)


TRADE_EPOCH = 1_796_000_000_000_000


def trade_msg(seq: int, recovered: bool | None = None, epoch: int = TRADE_EPOCH) -> TradeMsg:
    return TradeMsg(KEY, 100 + seq, "100.5", "0.1", Side.SELL, 1_700, 1, 2, epoch, seq, recovered)


def trade_seqs(events: list[Event]) -> list[tuple[int, bool]]:
    return [(e.seq, e.recovered) for e in events if isinstance(e, TradeEvent)]


def test_a_trade_stream_is_kept_across_a_lost_connection_and_its_missed_trades_follow() -> None:
    session = ClientSession([KEY], ["trade"])
    feed = Feed(session)
    feed(
        Subscribed([KEY], ["trade"], "gw-1", trade_positions={KEY: StreamPosition(TRADE_EPOCH, 4)})
    )
    assert trade_seqs(feed(trade_msg(5)).events) == [(5, False)]
    feed.lost()
    request = session.subscribe_request()
    assert request.recover is None
    assert request.recover_trades == {KEY: RecoverFrom(TRADE_EPOCH, 5)}
    reply = Subscribed(
        [KEY],
        ["trade"],
        "gw-1",
        recovered_trades=[KEY],
        trade_positions={KEY: StreamPosition(TRADE_EPOCH, 7)},
    )
    (recovery,) = feed(reply).events
    assert recovery == RecoveryEvent(KEY, True, TRADE_EPOCH, 5, "gw-1", feed.now_ns, "trade")
    got: list[Event] = []
    for seq in (6, 7):
        got += feed(trade_msg(seq, True)).events
    got += feed(trade_msg(7, True)).events  # a repeat: dropped
    got += feed(trade_msg(8)).events
    assert trade_seqs(got) == [(6, True), (7, True), (8, False)]
    stats = session.stats
    assert (stats.trade_recoveries, stats.recovered_trades, stats.duplicate_trades) == (1, 2, 1)


def test_a_trade_stream_not_recovered_says_so_and_goes_on_from_the_gateways_position() -> None:
    session = ClientSession([KEY], ["trade"])
    feed = Feed(session)
    feed(
        Subscribed([KEY], ["trade"], "gw-1", trade_positions={KEY: StreamPosition(TRADE_EPOCH, 0)})
    )
    feed(trade_msg(1))
    feed.lost()
    other = TRADE_EPOCH + 5
    reply = Subscribed([KEY], ["trade"], "gw-2", trade_positions={KEY: StreamPosition(other, 3)})
    (recovery,) = feed(reply).events
    assert recovery == RecoveryEvent(KEY, False, TRADE_EPOCH, 1, "gw-2", feed.now_ns, "trade")
    step = feed(trade_msg(4, epoch=other))
    assert trade_seqs(step.events) == [(4, False)] and step.warnings == []
    assert session.stats.trade_recovery_misses == 1
    gap = feed(trade_msg(7, epoch=other))  # 5 and 6 lost (e.g. while behind): said
    assert trade_seqs(gap.events) == [(7, False)]
    assert [cause for cause, _ in gap.warnings] == ["trade gap"]
    assert session.stats.trade_gaps == 1


@given(st.lists(st.integers(min_value=1, max_value=30), max_size=60))
def test_trades_are_yielded_once_each_in_increasing_seq(seqs: list[int]) -> None:
    """Whatever order and repeats the messages come in, the events' seqs strictly grow
    and each one received is yielded once."""
    session = ClientSession([KEY], ["trade"])
    feed = Feed(session)
    feed(
        Subscribed([KEY], ["trade"], "gw-1", trade_positions={KEY: StreamPosition(TRADE_EPOCH, 0)})
    )
    yielded = [seq for seq in seqs for _ in trade_seqs(feed(trade_msg(seq)).events)]
    assert yielded == sorted(set(yielded))
    # Exactly the trades beyond every one before them: repeats and older ones dropped.
    assert set(yielded) == {s for i, s in enumerate(seqs) if s > max(seqs[:i], default=0)}


def resyncing_session(
    retry_initial_s: float = 0.05, retry_max_s: float = 2.0
) -> tuple[Feed, ClientSession]:
    session = ClientSession(
        [KEY],
        retry_initial_s=retry_initial_s,
        retry_max_s=retry_max_s,
        rng=random.Random(7),
    )
    feed = Feed(session)
    feed(Subscribed([KEY], ["book"], "gw-1"))
    feed(Snapshot(KEY, 1, 0, 1000, BIDS, ASKS))
    assert feed(delta(2)).requests == [Resync(KEY)]  # a gap
    return feed, session


def test_a_rate_limited_resync_is_retried_after_a_growing_jittered_delay() -> None:
    feed, session = resyncing_session(retry_initial_s=0.1, retry_max_s=0.4)
    delays: list[float] = []
    for attempt in range(1, 5):
        refused = feed(Error(ErrorCode.RATE_LIMITED, "retry in 0.050 s", KEY))
        (retry,) = refused.events
        assert isinstance(retry, RetryEvent)
        assert (retry.op, retry.symbol, retry.attempt) == ("resync", KEY, attempt)
        assert 0 <= retry.delay_s <= min(0.4, 0.1 * 2 ** (attempt - 1))
        assert refused.warnings == [] and refused.requests == []
        delays.append(retry.delay_s)
        due_ns = session.next_retry_ns()
        assert due_ns == feed.now_ns + int(retry.delay_s * 1e9)
        assert session.on_timer(due_ns - 1).requests == []  # not yet
        assert session.on_timer(due_ns).requests == [Resync(KEY)]
        assert session.next_retry_ns() is None  # sent: nothing pending until answered
    assert len(set(delays)) == 4 and session.stats.retries == 4
    feed(Snapshot(KEY, 1, 5, 1005, BIDS, ASKS))  # answered: the backoff starts over
    assert feed(delta(7)).requests == [Resync(KEY)]
    (retry,) = feed(Error(ErrorCode.RATE_LIMITED, "later", KEY)).events
    assert isinstance(retry, RetryEvent) and retry.attempt == 1


def test_a_retry_no_longer_needed_is_not_sent_and_a_lost_connection_drops_retries() -> None:
    feed, session = resyncing_session()
    feed(Error(ErrorCode.RATE_LIMITED, "later", KEY))
    due_ns = session.next_retry_ns()
    assert due_ns is not None
    feed(Snapshot(KEY, 1, 3, 1003, BIDS, ASKS))  # the snapshot came anyway (conflation)
    assert session.next_retry_ns() is None and session.on_timer(due_ns).requests == []
    assert feed(delta(5)).requests == [Resync(KEY)]
    feed(Error(ErrorCode.RATE_LIMITED, "later", KEY))
    feed.lost()
    assert session.next_retry_ns() is None
    # A rate_limited error for a request the session has no use repeating: a warning.
    stray = feed(Error(ErrorCode.RATE_LIMITED, "later", KEY2))
    assert stray.events == [] and [c for c, _ in stray.warnings] == ["error rate_limited"]


def test_a_rate_limited_subscribe_is_retried_until_acknowledged() -> None:
    session = ClientSession([KEY], rng=random.Random(1))
    feed = Feed(session)
    first = session.subscribe_request()
    (retry,) = feed(Error(ErrorCode.RATE_LIMITED, "later")).events
    assert isinstance(retry, RetryEvent) and (retry.op, retry.symbol) == ("subscribe", None)
    due_ns = session.next_retry_ns()
    assert due_ns is not None and session.on_timer(due_ns).requests == [first]
    feed(Subscribed([KEY], ["book"], "gw-1"))
    assert session.next_retry_ns() is None
    stray = feed(Error(ErrorCode.RATE_LIMITED, "later"))  # nothing of ours awaits
    assert stray.events == [] and len(stray.warnings) == 1


def test_a_due_retry_is_sent_only_when_the_table_says_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The session carries out the table's actions: without SEND, nothing goes out."""
    feed, session = resyncing_session()
    feed(Error(ErrorCode.RATE_LIMITED, "later", KEY))
    due_ns = session.next_retry_ns()
    assert due_ns is not None
    due = (RetryState.WAITING, RetryInput.DUE)
    monkeypatch.setitem(RETRY_TRANSITIONS, due, (RetryState.SENT, ()))
    assert session.on_timer(due_ns).requests == []
    assert session.stats.retries == 0 and session.next_retry_ns() is None


RETRY_SPEC = specify(
    "retry",
    RETRY_TRANSITIONS,
    """
    IDLE     REFUSED   WAITING  SCHEDULE
    IDLE     ANSWERED  IDLE     -
    WAITING  REFUSED   WAITING  SCHEDULE
    WAITING  DUE       SENT     SEND
    WAITING  ANSWERED  IDLE     RESET_BACKOFF
    SENT     REFUSED   WAITING  SCHEDULE
    SENT     ANSWERED  IDLE     RESET_BACKOFF
    """,
)


def test_the_retry_table_is_its_spec_and_a_timer_without_a_refusal_is_a_bug() -> None:
    assert dict(RETRY_SPEC.table) == RETRY_SPEC.expected
    undefined = RETRY_SPEC.undefined()
    assert [(state.name, event.name) for state, event in undefined] == [
        ("IDLE", "DUE"),
        ("SENT", "DUE"),
    ]
    for state, event in undefined:
        with pytest.raises(UndefinedTransition):
            transition("retry", RETRY_TRANSITIONS, state, event)


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (CloseCode.GOING_AWAY, GOING_AWAY_REASON, GATEWAY_STOPPED),
        (CloseCode.GOING_AWAY, "", "gateway connection lost: 1001"),  # not the gateway's stop
        (CloseCode.TOO_SLOW, "subscriber too slow: x", "gateway connection lost: 1008"),
        (None, "", "gateway connection lost: 1006"),  # no close frame: the connection broke
    ],
)
def test_the_gateways_stop_is_told_apart_from_a_lost_connection(
    code: int | None, reason: str, expected: str
) -> None:
    description = "1006" if code is None else str(int(code))
    assert disconnect_reason(code, reason, description) == expected


def test_a_stop_of_the_gateway_makes_every_symbol_stale_for_it_and_is_counted() -> None:
    session = ClientSession([KEY, KEY2])
    feed = Feed(session)
    feed(Status(KEY, SymbolState.STALE, GOING_AWAY_REASON, 1))
    step = feed.lost(disconnect_reason(CloseCode.GOING_AWAY, GOING_AWAY_REASON, "1001"))
    assert statuses(step.events) == [
        (KEY, SymbolState.STALE, GATEWAY_STOPPED),
        (KEY2, SymbolState.STALE, GATEWAY_STOPPED),
    ]
    assert session.stats.gateway_stops == 1 and session.stats.disconnects == 1
    feed.lost()
    assert session.stats.gateway_stops == 1 and session.stats.disconnects == 2
