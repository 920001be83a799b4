"""Bybit v5 adapter (spot and linear): URLs and messages, parsing of every frame kind, trade
ids, the REST snapshot, the sequence rule, the real recordings through the arbiter (cryptofeed
format 2 with 6 books on two categories; Bybit's own ob500 download), and fuzzing (any bytes
in → events or VenueContractError out, nothing else)."""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from feeds import bybit
from gateway.capture import CaptureReader
from gateway.capture import connection_venue
from gateway.core.arbiter import Link
from gateway.core.arbiter import TradeDedup
from gateway.core.connections import Placement
from gateway.core.model import ArbiterEvent
from gateway.core.model import BookDelta
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import ReconnectWanted
from gateway.core.model import Side
from gateway.core.model import SnapshotWanted
from gateway.core.model import SymbolState
from gateway.core.model import Trade
from gateway.core.model import VenueContractError
from gateway.core.model import VenueNotice
from gateway.core.sequenced import SequencedBook

from . import fuzzing

# Doc frames (exchange-protocols.md §7) and real ones (BYBIT.jsonl.gz), shortened.
SNAPSHOT = (
    b'{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1672304484978,'
    b'"data":{"s":"BTCUSDT","b":[["16493.50","0.006"],["16493.00","0.100"]],'
    b'"a":[["16611.00","0.029"],["16612.00","0.213"]],"u":18521288,"seq":7961638724},'
    b'"cts":1672304484976}'
)
DELTA = (
    b'{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1687940967466,'
    b'"data":{"s":"BTCUSDT","b":[["30247.20","30.028"],["30240.00","0"]],'
    b'"a":[["30248.70","0"],["30249.30","0.892"]],"u":177400507,"seq":66544703342},'
    b'"cts":1687940967464}'
)
# Spot puts ts before type.
SPOT_DELTA = (
    b'{"topic":"orderbook.200.BTCUSDT","ts":1786310816618,"type":"delta","data":{"s":"BTCUSDT",'
    b'"b":[["65140.4","0.875077"]],"a":[["65154.6","0.09948"],["65239.1","0"]],'
    b'"u":62505425,"seq":112488545865},"cts":1786310816585}'
)
LINEAR_TRADE = (
    b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1786310819681,"data":[{'
    b'"T":1786310819680,"s":"BTCUSDT","S":"Sell","v":"0.004","p":"65114.20","L":"MinusTick",'
    b'"i":"a9188a0a-82bc-50de-be60-03eedbe3cdd7","BT":false,"RPI":false,"seq":753843954913}]}'
)
SPOT_TRADE = (
    b'{"topic":"publicTrade.ETHUSDT","ts":1786310821917,"type":"snapshot","data":[{'
    b'"i":"2280000001739247417","T":1786310821917,"p":"1923.28","v":"0.04537","S":"Buy",'
    b'"seq":178477362706,"s":"ETHUSDT","BT":false,"RPI":false}]}'
)
LINEAR_ACK = (
    b'{"success":true,"ret_msg":"","conn_id":"d8bu1olkndm7crnfs1e0-j6akw","req_id":"",'
    b'"op":"subscribe"}'
)
SPOT_ACK = (
    b'{"success":true,"ret_msg":"subscribe","conn_id":"d9avt8shteepr00gfc1g-4zd1x",'
    b'"op":"subscribe"}'
)
FAILED_ACK = (
    b'{"success":false,"ret_msg":"Invalid symbol :[orderbook.200.NOPE]","conn_id":"x",'
    b'"req_id":"subscribe-1","op":"subscribe"}'
)
OPTION_ACK = (
    b'{"success":true,"conn_id":"x","data":{"failTopics":[],'
    b'"successTopics":["orderbook.100.BTC-6JAN23-18000-C"]},"type":"COMMAND_RESP"}'
)
SPOT_PONG = b'{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}'
LINEAR_PONG = b'{"success":true,"ret_msg":"pong","conn_id":"x","req_id":"ping","op":"ping"}'
OPTION_PONG = b'{"args":["1672916271846"],"op":"pong"}'
TICKER = (
    b'{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT","bid1Price":"1"},'
    b'"cs":753843907770,"ts":1786310817883}'
)
REST_BOOK = (
    b'{"retCode":0,"retMsg":"OK","result":{"s":"BTCUSDT","a":[["65557.7","16.606555"]],'
    b'"b":[["65485.47","47.081829"]],"ts":1716863719031,"u":230704,"seq":1432604333,'
    b'"cts":1716863718905},"retExtInfo":{},"time":1716863719382}'
)

BYBIT_CAPTURE = "bybit/cryptofeed/BYBIT.jsonl.gz"
OB500 = "bybit/nautilus_trader/xrpusdt-ob500.data.zip"
EVENT_TYPES = DepthDiff | DepthSnapshot | Trade | VenueNotice


# --- URLs and outgoing messages -----------------------------------------------------------


def test_endpoints() -> None:
    assert bybit.VENUES == ("bybit-spot", "bybit-linear")
    assert bybit.WS_ENDPOINTS[bybit.SPOT] == ("wss://stream.bybit.com/v5/public/spot",)
    assert bybit.WS_ENDPOINTS[bybit.LINEAR] == ("wss://stream.bybit.com/v5/public/linear",)
    assert bybit.TESTNET_WS_ENDPOINTS[bybit.LINEAR] == (
        "wss://stream-testnet.bybit.com/v5/public/linear",
    )
    assert bybit.endpoint("stream.bybit.kz", bybit.SPOT) == "wss://stream.bybit.kz/v5/public/spot"
    assert "stream.bybit.tr" in bybit.REGIONAL_HOSTS
    with pytest.raises(ValueError):
        bybit.endpoint("stream.bybit.com", "bybit-option")
    for venue, (url,) in bybit.WS_ENDPOINTS.items():
        assert connection_venue(url) == venue  # what the capture reader tells from a URL
        assert bybit.connect_url(url, ["BTCUSDT"]) == url


def test_snapshot_urls() -> None:
    assert bybit.snapshot_url_spot("https://api.bybit.com/", "btcusdt", 200) == (
        "https://api.bybit.com/v5/market/orderbook?category=spot&symbol=BTCUSDT&limit=200"
    )
    assert bybit.snapshot_url_linear("https://api.bybit.com", "BTCUSDT", 1000).endswith(
        "?category=linear&symbol=BTCUSDT&limit=1000"
    )
    for limit in (0, 1001):
        with pytest.raises(ValueError):
            bybit.snapshot_url("https://x", "BTCUSDT", limit, bybit.SPOT)
    with pytest.raises(ValueError):
        bybit.snapshot_url("https://x", "BTCUSDT", 50, "bybit")


def test_subscribe_messages_carry_at_most_ten_args() -> None:
    symbols = [f"S{i}USDT" for i in range(12)]
    messages = [json.loads(m) for m in bybit.subscribe_messages(symbols)]
    assert [len(m["args"]) for m in messages] == [10, 10, 4]
    assert all(m["op"] == "subscribe" for m in messages)
    assert [m["req_id"] for m in messages] == ["subscribe-1", "subscribe-2", "subscribe-3"]
    args = [a for m in messages for a in m["args"]]
    assert args[:2] == ["orderbook.200.S0USDT", "publicTrade.S0USDT"]
    assert len(args) == 24
    (one,) = bybit.subscribe_messages(["btcusdt", "BTCUSDT"], depth=50)
    assert json.loads(one)["args"] == ["orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"]
    (unsub,) = bybit.unsubscribe_messages(["BTCUSDT"], depth=1000)
    assert json.loads(unsub) == {
        "req_id": "unsubscribe-1",
        "op": "unsubscribe",
        "args": ["orderbook.1000.BTCUSDT", "publicTrade.BTCUSDT"],
    }


def test_subscribe_message_errors() -> None:
    with pytest.raises(ValueError):
        bybit.subscribe_messages([])
    with pytest.raises(ValueError, match="depth"):
        bybit.subscribe_messages(["BTCUSDT"], depth=500)
    with pytest.raises(ValueError, match="21000"):
        bybit.subscribe_messages([f"SYMBOL{i:05d}USDT" for i in range(700)])


def test_resubscribe_asks_for_a_fresh_book_only() -> None:
    unsub, sub = (json.loads(m) for m in bybit.resubscribe_messages("ethusdt", depth=50))
    assert (unsub["op"], unsub["args"]) == ("unsubscribe", ["orderbook.50.ETHUSDT"])
    assert (sub["op"], sub["args"]) == ("subscribe", ["orderbook.50.ETHUSDT"])


def test_ping_message() -> None:
    assert json.loads(bybit.ping_message()) == {"req_id": "ping", "op": "ping"}
    assert json.loads(bybit.ping_message("100001")) == {"req_id": "100001", "op": "ping"}
    assert bybit.PING_INTERVAL_S == 20


# --- parsing ------------------------------------------------------------------------------


def test_snapshot_and_delta() -> None:
    (snap,) = bybit.parse_linear(SNAPSHOT, 10, 3)
    assert snap == DepthSnapshot(
        "bybit-linear",
        "BTCUSDT",
        18521288,
        (("16493.50", "0.006"), ("16493.00", "0.100")),
        (("16611.00", "0.029"), ("16612.00", "0.213")),
        10,
        3,
        venue_time_ms=1672304484976,  # the frame's cts, the engine's time: orders two resets
    )
    assert snap.key == "bybit-linear:BTCUSDT" and not snap.reset
    (diff,) = bybit.parse_linear(DELTA, 11, 3)
    assert diff == DepthDiff(
        "bybit-linear",
        "BTCUSDT",
        177400507,
        177400507,
        -1,
        (("30247.20", "30.028"), ("30240.00", "0")),
        (("30248.70", "0"), ("30249.30", "0.892")),
        1687940967466,
        11,
        3,
    )
    (spot,) = bybit.parse_spot(SPOT_DELTA, 12, 4)
    assert isinstance(spot, DepthDiff)
    assert (spot.key, spot.first_id, spot.last_id) == ("bybit-spot:BTCUSDT", 62505425, 62505425)
    assert bybit.parse(SPOT_DELTA, 12, 4, bybit.SPOT) == [spot]


def test_a_snapshot_with_u_1_is_a_venue_reset() -> None:
    (snap,) = bybit.parse_linear(SNAPSHOT.replace(b'"u":18521288', b'"u":1'), 1, 0)
    assert isinstance(snap, DepthSnapshot) and snap.reset and snap.last_id == 1
    assert snap.venue_time_ms == 1672304484976  # cts
    no_cts = SNAPSHOT.replace(b',"cts":1672304484976', b"")
    (pushed,) = bybit.parse_linear(no_cts, 1, 0)
    assert isinstance(pushed, DepthSnapshot) and pushed.venue_time_ms == 1672304484978  # ts
    (untimed,) = bybit.parse_linear(no_cts.replace(b'"ts":1672304484978,', b""), 1, 0)
    assert isinstance(untimed, DepthSnapshot) and untimed.venue_time_ms is None


def test_trades_of_both_categories() -> None:
    (linear,) = bybit.parse_linear(LINEAR_TRADE, 5, 1)
    hex_id = "a9188a0a82bc50debe6003eedbe3cdd7"
    folded = (int(hex_id[:16], 16) ^ int(hex_id[16:], 16)) & (2**63 - 1)
    assert linear == Trade(
        "bybit-linear", "BTCUSDT", folded, "65114.20", "0.004", Side.SELL, 1786310819680, 5, 1
    )
    (spot,) = bybit.parse_spot(SPOT_TRADE, 6, 2)
    assert isinstance(spot, Trade)
    assert (spot.trade_id, spot.side, spot.qty) == (2280000001739247417, Side.BUY, "0.04537")


def test_trade_ids() -> None:
    assert bybit.trade_id("42") == 42
    assert bybit.trade_id("a9188a0a-82bc-50de-be60-03eedbe3cdd7") == bybit.trade_id(
        "A9188A0A82BC50DEBE6003EEDBE3CDD7"
    )
    big = str(2**64 + 5)
    assert 0 <= bybit.trade_id(big) < 2**63
    assert bybit.trade_id(big) == ((2**64 + 5) >> 64 ^ (2**64 + 5)) & (2**63 - 1)
    for bad in ("", "-1", "1.5", "a9188a0a-82bc-50de-be60", "xyz", "١٢"):
        with pytest.raises(VenueContractError):
            bybit.trade_id(bad)


def test_replies() -> None:
    for ack in (LINEAR_ACK, SPOT_ACK, OPTION_ACK):
        (notice,) = bybit.parse_linear(ack, 1, 0)
        assert isinstance(notice, VenueNotice) and notice.kind == "ack"
        assert not notice.reconnect
    (error,) = bybit.parse_spot(FAILED_ACK, 1, 0)
    assert isinstance(error, VenueNotice) and error.kind == "error"
    assert "Invalid symbol" in error.detail and "subscribe-1" in error.detail
    failed_option = OPTION_ACK.replace(b'"failTopics":[]', b'"failTopics":["orderbook.1.X"]')
    (error,) = bybit.parse_linear(failed_option, 1, 0)
    assert isinstance(error, VenueNotice) and error.kind == "error"
    for pong in (SPOT_PONG, LINEAR_PONG, OPTION_PONG):
        assert bybit.parse_linear(pong, 1, 0) == []
    assert bybit.parse_linear(TICKER, 1, 0) == []
    assert bybit.parse_spot(b'{"topic":"kline.1.BTCUSDT","data":[],"type":"snapshot"}', 1, 0) == []


def test_unknown_venue_is_a_usage_error() -> None:
    with pytest.raises(ValueError):
        bybit.parse(DELTA, 1, 0, "bybit")


#: Frames bybit.parse_linear refuses with VenueContractError (tests/feeds/test_contract.py).
BAD_FRAMES = [
    *fuzzing.NOT_FRAMES,
    b"pong",
    b"{}",
    DELTA.replace(b'"type":"delta"', b'"type":"update"'),
    DELTA.replace(b'"type":"delta",', b""),
    DELTA.replace(b"orderbook.50.BTCUSDT", b"orderbook.BTCUSDT"),
    DELTA.replace(b"orderbook.50.BTCUSDT", b"orderbook.x.BTCUSDT"),
    DELTA.replace(b"orderbook.50.BTCUSDT", b"orderbook.50.ETHUSDT"),  # data.s differs
    DELTA.replace(b'"u":177400507', b'"u":-1'),
    DELTA.replace(b'"u":177400507', b'"u":9223372036854775808'),
    DELTA.replace(b'"u":177400507', b'"u":"177400507"'),
    DELTA.replace(b'"u":177400507', b'"u":1e3'),
    *fuzzing.bad_decimals(DELTA, b'"30247.20"'),
    DELTA.replace(b'["30240.00","0"]', b'["30240.00","0","1"]'),
    DELTA.replace(b',"data":{', b',"x":{'),
    LINEAR_TRADE.replace(b'"Sell"', b'"sell"'),
    LINEAR_TRADE.replace(b'"i":"a9188a0a', b'"i":"zz188a0a'),
    LINEAR_TRADE.replace(b'"v":"0.004"', b'"v":"-0.004"'),
    LINEAR_TRADE.replace(b'"data":[{', b'"data":{"x":[{').replace(b"}]}", b"}]}}"),
    OPTION_ACK.replace(b'"failTopics":[]', b'"failTopics":3'),
    b'{"topic":"orderbook.50.BTCUSDT","type":"delta","data":{"s":"BTCUSDT","b":[],"a":[]}}',
    b'{"topic":"orderbook.50.BTCUSDT","data":"\xff\xfe"}',
]


def test_rest_snapshot() -> None:
    snap = bybit.parse_snapshot_spot("btcusdt", REST_BOOK, 7)
    assert snap == DepthSnapshot(
        "bybit-spot",
        "BTCUSDT",
        230704,
        (("65485.47", "47.081829"),),
        (("65557.7", "16.606555"),),
        7,
        -1,
    )
    assert not snap.reset
    linear = bybit.parse_snapshot_linear("BTCUSDT", REST_BOOK, 7, 2)
    assert (linear.venue, linear.conn_id) == ("bybit-linear", 2)


#: REST book bodies the snapshot parser refuses (tests/feeds/test_contract.py).
BAD_SNAPSHOTS = [
    b'{"retCode":10001,"retMsg":"Illegal category","result":{},"retExtInfo":{},"time":1}',
    b'{"retCode":0,"retMsg":"OK"}',
    REST_BOOK.replace(b'"s":"BTCUSDT"', b'"s":"ETHUSDT"'),
    REST_BOOK.replace(b'"u":230704', b'"u":-5'),
    b"<html>",
]


# --- sequence rule ------------------------------------------------------------------------


def _diff(u: int, conn_id: int = 0) -> DepthDiff:
    return DepthDiff("bybit-linear", "BTCUSDT", u, u, -1, (), (), 0, 0, conn_id)


@pytest.mark.parametrize(
    ("u", "applied", "link"),
    [
        (10, 10, Link.STALE),
        (9, 10, Link.STALE),
        (1, 10, Link.STALE),
        (11, 10, Link.LINKS),
        (12, 10, Link.FUTURE),
        (1, 0, Link.LINKS),
        (5, -1, Link.FUTURE),
    ],
)
def test_bybit_rule(u: int, applied: int, link: Link) -> None:
    rule = bybit.BybitRule()
    assert rule.name == "bybit"
    assert rule.classify(_diff(u), applied) is link


def test_two_connections_fill_each_others_holes() -> None:
    book = SequencedBook("bybit-linear:BTCUSDT", bybit.BybitRule())
    for conn_id in (0, 1):
        book.on_connection(conn_id, True, 0)
    snap = DepthSnapshot("bybit-linear", "BTCUSDT", 100, (("1", "1"),), (("2", "1"),), 0, 0)
    book.on_snapshot(snap, 0)
    book.on_diff(_diff(101, 0), 1)
    book.on_diff(_diff(103, 0), 2)  # 102 lost on connection 0: waits
    assert book.pending == 1 and book.stats.gaps == 0
    book.on_diff(_diff(101, 1), 3)
    book.on_diff(_diff(102, 1), 4)  # connection 1 fills the hole
    book.on_diff(_diff(103, 1), 5)
    assert (book.applied_id, book.pending, book.stats.gaps) == (103, 0, 0)
    assert book.stats.duplicates == 2


def _book_snap(
    u: int, bid: str, conn_id: int, ts_ms: int, cts_ms: int | None = None
) -> DepthSnapshot:
    """A Bybit book snapshot on ``conn_id``, a venue reset when ``u == 1``; its push time
    is ``ts_ms``, its engine time ``cts_ms`` (absent when None)."""
    frame: dict[str, object] = {
        "topic": "orderbook.50.BTCUSDT",
        "type": "snapshot",
        "ts": ts_ms,
        "data": {"s": "BTCUSDT", "b": [[bid, "1"]], "a": [["200", "1"]], "u": u, "seq": 7},
    }
    if cts_ms is not None:
        frame["cts"] = cts_ms
    (snap,) = bybit.parse_linear(json.dumps(frame).encode(), ts_ms, conn_id)
    assert isinstance(snap, DepthSnapshot) and snap.reset is (u == 1)
    return snap


def _book_diff(u: int, bid: str, conn_id: int, recv_ns: int) -> DepthDiff:
    return DepthDiff("bybit-linear", "BTCUSDT", u, u, -1, ((bid, "2"),), (), 0, recv_ns, conn_id)


def _two_connections_at(u: int) -> SequencedBook:
    """A Bybit book whose connections 0 and 1 are both up, subscribed at ``u`` (one bid at
    100): the book built from connection 0's snapshot, connection 1's agreeing."""
    book = SequencedBook("bybit-linear:BTCUSDT", bybit.BybitRule())
    for conn_id in (0, 1):
        book.on_connection(conn_id, True, 0)
    book.on_snapshot(_book_snap(u, "100", 0, 1), 1)
    book.on_snapshot(_book_snap(u, "100", 1, 2), 2)
    return book


def test_an_older_reset_delivered_after_a_newer_one_is_not_followed() -> None:
    """Connection 1 loses reset R1 (ts 1000) and delivers R2 (ts 2000) first; connection 0
    delivers R1, an update of R1's sequence, then R2. Both resets are ``u == 1``: only ts
    orders them. The book stays on R2's sequence and never serves R1's book."""
    book = _two_connections_at(100)
    published: list[ArbiterEvent] = []
    published += book.on_snapshot(_book_snap(1, "80", 1, 2000), 3)  # R2 first, on conn 1
    assert book.book.bids() == [("80", "1")]
    assert book.conns.placement(0) is Placement.BEHIND_RESET
    unused = book.stats.snapshots_unused
    published += book.on_snapshot(_book_snap(1, "90", 0, 1000), 4)  # R1, late, on conn 0
    assert book.stats.snapshots_unused == unused + 1
    published += book.on_diff(_book_diff(2, "91", 0, 5), 5)  # of R1's sequence: dropped
    assert (book.applied_id, book.book.bids()) == (1, [("80", "1")])
    assert book.conns.placement(0) is Placement.BEHIND_RESET
    published += book.on_snapshot(_book_snap(1, "80", 0, 2000), 6)  # its copy of R2
    assert book.conns.placement(0) is Placement.IN_SEQUENCE
    published += book.on_diff(_book_diff(2, "81", 0, 7), 7)
    published += book.on_diff(_book_diff(2, "81", 1, 8), 8)  # a duplicate
    published += book.on_diff(_book_diff(3, "82", 1, 9), 9)  # conn 1's own update applies
    assert book.state is SymbolState.LIVE
    assert book.applied_id == 3
    assert book.book.bids() == [("82", "2"), ("81", "2"), ("80", "1")]
    assert {c: book.conns.placement(c) for c in (0, 1)} == dict.fromkeys(
        (0, 1), Placement.IN_SEQUENCE
    )
    bids_published = {p for d in published if isinstance(d, BookDelta) for p, _ in d.bids}
    assert bids_published.isdisjoint({"90", "91"})  # R1's book never served


def test_a_reset_older_than_the_snapshot_the_book_was_built_from_is_not_followed() -> None:
    """The book is built from connection 1's answer in reset R2's sequence (``u`` 4, no
    reset of its own, ts 3000); connection 2's late answer is R1's reset (ts 1000), of the
    sequence the venue left for R2: not followed, and R1's updates are not used."""
    book = SequencedBook("bybit-linear:BTCUSDT", bybit.BybitRule())
    for conn_id in (1, 2):
        book.on_connection(conn_id, True, 0)
    published = book.on_snapshot(_book_snap(4, "100", 1, 3000), 1)  # R2's sequence at u4
    published += book.on_snapshot(_book_snap(1, "90", 2, 1000), 2)  # R1's, late, on conn 2
    assert (book.stats.snapshots_unused, book.stats.venue_resets) == (1, 0)
    published += book.on_diff(_book_diff(2, "91", 2, 3), 3)  # of R1's sequence: not used
    published += book.on_diff(_book_diff(5, "101", 1, 4), 4)  # R2's sequence goes on
    assert (book.state, book.applied_id) == (SymbolState.LIVE, 5)
    assert book.book.bids() == [("101", "2"), ("100", "1")]
    bids_published = {p for d in published if isinstance(d, BookDelta) for p, _ in d.bids}
    assert bids_published.isdisjoint({"90", "91"})  # R1's book never served


def test_a_connection_behind_the_books_reset_crosses_with_its_copy_after_a_jump_ahead() -> None:
    """Connection 0 lags reset R (ts 2000) when connection 1 jumps the book ahead in R's
    sequence (``u`` 20, ts 3000); connection 0's copy of R, older than that snapshot, is
    the book's own reset: connection 0 crosses into the book's sequence."""
    book = _two_connections_at(100)
    book.on_snapshot(_book_snap(1, "80", 1, 2000), 3)  # R on conn 1
    assert book.conns.placement(0) is Placement.BEHIND_RESET
    book.on_snapshot(_book_snap(20, "99", 1, 3000), 4)  # a jump ahead in R's sequence
    book.on_snapshot(_book_snap(1, "80", 0, 2000), 5)  # conn 0's copy of R
    assert book.conns.placement(0) is Placement.IN_SEQUENCE
    book.on_diff(_book_diff(21, "98", 0, 6), 6)  # conn 0's own update applies
    assert (book.state, book.applied_id) == (SymbolState.LIVE, 21)


def test_copies_of_one_reset_pushed_at_different_times_are_one_reset(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each connection's copy of a reset is pushed at its own ``ts``; the engine's time of
    the book (``cts``) is the same on every copy. A copy pushed earlier than the copy the
    book followed is the same reset: its connection stays in the book's sequence."""
    book = SequencedBook("bybit-linear:BTCUSDT", bybit.BybitRule())
    for conn_id in (0, 1):
        book.on_connection(conn_id, True, 0)
    book.on_snapshot(_book_snap(100, "100", 0, 1, 1), 1)
    book.on_snapshot(_book_snap(100, "100", 1, 2, 1), 2)
    book.on_snapshot(_book_snap(1, "80", 0, 2005, 2000), 3)  # the book follows the reset
    book.on_snapshot(_book_snap(1, "80", 1, 2003, 2000), 4)  # conn 1's copy, pushed earlier
    assert not [r for r in caplog.records if "older than the book's" in r.getMessage()]
    assert {c: book.conns.placement(c) for c in (0, 1)} == dict.fromkeys(
        (0, 1), Placement.IN_SEQUENCE
    )
    book.on_diff(_book_diff(2, "81", 1, 5), 5)  # conn 1's update applies
    assert (book.state, book.applied_id) == (SymbolState.LIVE, 2)
    assert book.book.bids() == [("81", "2"), ("80", "1")]


def test_an_older_reset_on_a_connection_in_sequence_puts_it_behind_the_books_reset(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection in the book's sequence delivers a reset older than the book's: not
    followed (counted, logged once a minute); its updates are dropped."""
    book = SequencedBook("bybit-linear:BTCUSDT", bybit.BybitRule())
    for conn_id in (0, 1):
        book.on_connection(conn_id, True, 0)
    book.on_snapshot(_book_snap(1, "80", 0, 2000), 1)  # the book follows R2
    book.on_diff(_book_diff(2, "81", 0, 2), 2)
    book.on_diff(_book_diff(2, "81", 1, 3), 3)  # conn 1 is heard in R2's sequence
    assert book.conns.placement(1) is Placement.IN_SEQUENCE
    book.on_snapshot(_book_snap(1, "90", 1, 1000), 4)  # R1 on conn 1: older
    assert book.conns.placement(1) is Placement.BEHIND_RESET
    book.on_snapshot(_book_snap(1, "90", 1, 1000), 5)  # again: counted, not logged again
    assert book.stats.snapshots_unused == 2
    assert [
        r.getMessage() for r in caplog.records if "older than the book's" in r.getMessage()
    ] == [
        "bybit-linear:BTCUSDT: conn 1 delivered a venue reset of 1000 ms, older than the"
        " book's of 2000 ms: not followed; the connection is behind the book's reset"
    ]
    book.on_diff(_book_diff(3, "91", 1, 5), 5)  # of R1's sequence: dropped
    assert (book.applied_id, book.book.bids()) == (2, [("81", "2"), ("80", "1")])
    book.on_diff(_book_diff(3, "82", 0, 6), 6)
    assert book.book.best_bid() == ("82", "2")


def test_a_connection_whose_ids_go_back_without_a_reset_is_not_used_until_it_reconnects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Connection 1 lost only reset R1 (``u == 1``) and delivers R1's sequence after it:
    its own ids go back (u2 after its u3) with no reset between, so its stream restarted
    in no known sequence. Nothing it delivers is used (its u4 links to the book's u3, of
    the old sequence); it is asked to reconnect (no fault), logged once a minute."""
    book = _two_connections_at(3)
    published = book.on_diff(_book_diff(2, "91", 1, 3), 3)  # R1 lost: u2 after its u3
    assert [(e.conn_id, e.fault) for e in published if isinstance(e, ReconnectWanted)] == [
        (1, False)
    ]
    assert book.conns.placement(1) is Placement.BEHIND_UNTIL_RECONNECT
    published += book.on_diff(_book_diff(3, "92", 1, 4), 4)
    published += book.on_diff(_book_diff(4, "93", 1, 5), 5)  # links to the book's u3: unused
    assert (book.applied_id, book.book.bids()) == (3, [("100", "1")])
    assert book.stats.stale == 3
    published += book.on_diff(_book_diff(4, "101", 0, 6), 6)  # conn 0 carries the book on
    assert book.state is SymbolState.LIVE
    assert book.book.bids() == [("101", "2"), ("100", "1")]
    bids_published = {p for d in published if isinstance(d, BookDelta) for p, _ in d.bids}
    assert bids_published.isdisjoint({"91", "92", "93"})
    assert [r.getMessage() for r in caplog.records if "went back" in r.getMessage()] == [
        "bybit-linear:BTCUSDT: conn 1 went back from id 3 to 2 without a reset snapshot:"
        " its stream restarted, sequence unknown"
    ]
    book.on_connection(1, False, 7)  # reconnected: heard again as it comes
    book.on_connection(1, True, 8)
    assert book.conns.placement(1) is Placement.IN_SEQUENCE


def test_the_only_connection_whose_ids_go_back_without_a_reset_resyncs_the_book() -> None:
    """Alone, a connection whose ids go back with no reset between leaves no sequence to
    follow: a venue reset recognised, the book resyncs, and its answer in the venue's new
    sequence builds it."""
    book = SequencedBook("bybit-linear:BTCUSDT", bybit.BybitRule())
    book.on_connection(0, True, 0)
    book.on_snapshot(_book_snap(3, "100", 0, 1), 1)
    published = book.on_diff(_book_diff(2, "91", 0, 2), 2)  # R1 lost
    assert any(isinstance(e, SnapshotWanted) for e in published)
    assert (book.state, book.stats.venue_resets) == (SymbolState.RESYNCING, 1)
    book.on_diff(_book_diff(3, "92", 0, 3), 3)
    book.on_diff(_book_diff(4, "93", 0, 4), 4)
    assert (book.state, book.applied_id) == (SymbolState.RESYNCING, -1)  # u4 never applied
    book.on_snapshot(_book_snap(4, "93", 0, 5), 5)  # the answer, in R1's sequence
    book.on_diff(_book_diff(5, "94", 0, 6), 6)
    assert book.state is SymbolState.LIVE
    assert (book.applied_id, book.book.bids()) == (5, [("94", "2"), ("93", "1")])


def test_a_connection_behind_a_reset_whose_ids_go_back_is_not_used_until_it_reconnects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Connection 1, behind reset R1 at u6, lost R1 and R1's updates, then R2's snapshot
    alone: its u5 of R2 goes back with no reset between. It lost a reset snapshot, R1's or
    a later one, so its sequence is unknown: counted as having crossed R1, its u5 would
    follow R1's u4 in the book. It is asked to reconnect (no fault) and nothing it delivers
    is used."""
    book = _two_connections_at(6)
    published = book.on_snapshot(_book_snap(1, "80", 0, 1000), 3)  # R1 on conn 0
    assert book.conns.placement(1) is Placement.BEHIND_RESET
    published += book.on_diff(_book_diff(5, "95", 1, 4), 4)  # R2's u5 on conn 1
    assert [(e.conn_id, e.fault) for e in published if isinstance(e, ReconnectWanted)] == [
        (1, False)
    ]
    assert book.conns.placement(1) is Placement.BEHIND_UNTIL_RECONNECT
    for u, bid in ((2, "81"), (3, "82"), (4, "83")):
        published += book.on_diff(_book_diff(u, bid, 0, 4 + u), 4 + u)
    assert (book.state, book.applied_id) == (SymbolState.LIVE, 4)
    assert book.book.bids() == [("83", "2"), ("82", "2"), ("81", "2"), ("80", "1")]
    bids_published = {p for d in published if isinstance(d, BookDelta) for p, _ in d.bids}
    assert "95" not in bids_published
    assert [r.getMessage() for r in caplog.records if "went back" in r.getMessage()] == [
        "bybit-linear:BTCUSDT: conn 1 went back from id 6 to 5 without a reset snapshot:"
        " its stream restarted, sequence unknown"
    ]


def test_a_connection_reopened_for_ids_that_went_back_is_not_placed_by_going_back_again() -> None:
    """Connection 1 lost reset R1's snapshot: its u2 of R1 goes back, so it is behind until
    it reconnects. It loses R2's snapshot too: its u2 of R2 going back again is no copy of a
    reset, so it stays unused; counted as one, its u5 of R2 would follow the book's u4."""
    book = _two_connections_at(4)
    published = book.on_diff(_book_diff(2, "81", 1, 3), 3)  # R1's u2: gone back
    published += book.on_diff(_book_diff(3, "82", 1, 4), 4)
    published += book.on_diff(_book_diff(2, "71", 1, 5), 5)  # R2's u2: gone back again
    published += book.on_diff(_book_diff(5, "75", 1, 6), 6)
    assert book.conns.placement(1) is Placement.BEHIND_UNTIL_RECONNECT
    assert (book.applied_id, book.book.bids()) == (4, [("100", "1")])
    assert not [d for d in published if isinstance(d, BookDelta)]
    book.on_diff(_book_diff(5, "101", 0, 7), 7)  # conn 0 carries the book on
    assert (book.state, book.applied_id) == (SymbolState.LIVE, 5)
    assert book.book.bids() == [("101", "2"), ("100", "1")]


def test_ids_going_back_while_the_others_lag_the_books_reset_wait_for_them() -> None:
    """Connection 1 delivered reset R1 first (connection 0 is behind it, at u3), then lost
    R2's snapshot alone: its ids go back. Connection 0's copy of R1 brings it into the
    book's sequence, so the book waits for it: connection 1 is reopened, no resync."""
    book = _two_connections_at(3)
    published = book.on_snapshot(_book_snap(1, "80", 1, 1000), 3)  # R1 on conn 1
    for u in (2, 3, 4):
        published += book.on_diff(_book_diff(u, str(80 + u), 1, 3 + u), 3 + u)
    assert book.conns.placement(0) is Placement.BEHIND_RESET
    published += book.on_diff(_book_diff(2, "91", 1, 8), 8)  # R2's u2: gone back
    assert book.conns.placement(1) is Placement.BEHIND_UNTIL_RECONNECT
    assert [e.conn_id for e in published if isinstance(e, ReconnectWanted)] == [1]
    assert (book.state, book.applied_id) == (SymbolState.LIVE, 4)
    published += book.on_snapshot(_book_snap(1, "80", 0, 1000), 9)  # conn 0's copy of R1
    assert book.conns.placement(0) is Placement.IN_SEQUENCE
    for u in (2, 3, 4, 5):
        published += book.on_diff(_book_diff(u, str(80 + u), 0, 9 + u), 9 + u)
    assert (book.state, book.applied_id) == (SymbolState.LIVE, 5)
    assert book.book.best_bid() == ("85", "2")
    assert not any(isinstance(e, SnapshotWanted) for e in published)
    assert (book.stats.resyncs, book.stats.venue_resets) == (0, 1)


# --- real recordings ----------------------------------------------------------------------


def _book_events(path: Path) -> Iterator[DepthDiff | DepthSnapshot | Trade]:
    """Events of a Bybit capture, each connection parsed as the venue of its URL (linear
    when the capture names none: the ob500 download is of a linear symbol)."""
    venues: dict[int, str] = {}
    for record in CaptureReader(path):
        if record.kind == "connect":
            venue = connection_venue(record.url)
            assert venue in bybit.VENUES
            venues[record.conn_id] = venue
        elif record.kind == "ws":
            venue = venues.get(record.conn_id, bybit.LINEAR)
            for event in bybit.parse(record.payload, record.recv_ns, record.conn_id, venue):
                if isinstance(event, DepthDiff | DepthSnapshot | Trade):
                    yield event


def _rebuild(path: Path, max_levels: int) -> dict[str, SequencedBook]:
    books: dict[str, SequencedBook] = {}
    for event in _book_events(path):
        if isinstance(event, Trade):
            continue
        book = books.get(event.key)
        if book is None:
            assert isinstance(event, DepthSnapshot), "every book starts with a snapshot"
            book = books[event.key] = SequencedBook(event.key, bybit.BybitRule())
        if isinstance(event, DepthSnapshot):
            book.on_snapshot(event, event.recv_ns)
        else:
            book.on_diff(event, event.recv_ns)
        assert book.book.bid_count <= max_levels and book.book.ask_count <= max_levels
        assert not book.book.is_crossed()
    return books


def test_real_cryptofeed_capture_six_books(real_data: Callable[[str], Path]) -> None:
    books = _rebuild(real_data(BYBIT_CAPTURE), max_levels=200)
    assert {key: book.stats.updates for key, book in books.items()} == {
        "bybit-linear:BTCUSDT": 413,
        "bybit-linear:ETHUSDT": 420,
        "bybit-linear:SOLUSDT": 382,
        "bybit-linear:DOGEUSDT": 379,
        "bybit-spot:BTCUSDT": 299,
        "bybit-spot:ETHUSDT": 249,
    }
    for key, book in books.items():
        s = book.stats
        assert (s.gaps, s.crossed, s.stale, s.duplicates, s.snapshots) == (0, 0, 0, 0, 1), key
        assert book.pending == 0 and book.has_book, key
        # Bybit deletes the levels that fall out of range: the book stays at 200.
        assert (book.book.bid_count, book.book.ask_count) == (200, 200), key
    assert books["bybit-linear:BTCUSDT"].applied_id == 15077365
    assert books["bybit-spot:ETHUSDT"].applied_id == 56726742


def test_real_cryptofeed_capture_trades(real_data: Callable[[str], Path]) -> None:
    trades = [e for e in _book_events(real_data(BYBIT_CAPTURE)) if isinstance(e, Trade)]
    assert len(trades) == 347
    dedup = TradeDedup()
    for trade in trades:
        dedup.on_trade(trade)
    assert (dedup.accepted, dedup.duplicates) == (347, 0)  # no two ids fold together
    assert {t.venue for t in trades} == {"bybit-linear", "bybit-spot"}


def test_real_ob500_download(real_data: Callable[[str], Path]) -> None:
    (book,) = _rebuild(real_data(OB500), max_levels=500).values()
    assert book.key == "bybit-linear:XRPUSDT"
    s = book.stats
    assert (s.updates, s.gaps, s.crossed, s.snapshots) == (49, 0, 0, 1)
    assert book.applied_id == 20254918
    assert (book.book.bid_count, book.book.ask_count) == (500, 500)


def _linear_btc(path: Path) -> tuple[DepthSnapshot, list[DepthDiff]]:
    events = [e for e in _book_events(path) if e.key == "bybit-linear:BTCUSDT"]
    snap = events[0]
    assert isinstance(snap, DepthSnapshot)
    diffs = [e for e in events[1:] if isinstance(e, DepthDiff)]
    return snap, diffs


def test_real_stream_from_two_lossy_connections(real_data: Callable[[str], Path]) -> None:
    """Connection 1 carries the recorded stream one message late; each connection loses
    different messages: the book never sees a gap and ends where the recording does."""
    snap, diffs = _linear_btc(real_data(BYBIT_CAPTURE))
    single = SequencedBook("k", bybit.BybitRule())
    single.on_snapshot(snap, 0)
    for diff in diffs:
        single.on_diff(diff, 0)

    book = SequencedBook("bybit-linear:BTCUSDT", bybit.BybitRule())
    for conn_id in (0, 1):
        book.on_connection(conn_id, True, 0)
    book.on_snapshot(snap, 0)
    book.on_snapshot(msgspec.structs.replace(snap, conn_id=1), 0)  # its own subscribe
    now = 0
    for i in range(len(diffs) + 1):
        now += 1_000
        if i < len(diffs) and i % 5 != 4:
            book.on_diff(diffs[i], now)
        if i >= 1 and (i - 1) % 5 != 1:  # never the ones connection 0 lost
            book.on_diff(msgspec.structs.replace(diffs[i - 1], conn_id=1), now)
    assert book.stats.gaps == 0 and book.pending == 0
    assert book.stats.updates == len(diffs)
    assert book.stats.duplicates > 0
    assert book.applied_id == single.applied_id
    assert book.book.normalized() == single.book.normalized()


def test_real_stream_missing_on_every_connection_is_a_gap(
    real_data: Callable[[str], Path],
) -> None:
    snap, diffs = _linear_btc(real_data(BYBIT_CAPTURE))
    book = SequencedBook("bybit-linear:BTCUSDT", bybit.BybitRule())
    book.on_snapshot(snap, 0)
    for conn_id in (0, 1):
        book.on_diff(msgspec.structs.replace(diffs[0], conn_id=conn_id), 1)
    for conn_id in (0, 1):
        book.on_diff(msgspec.structs.replace(diffs[2], conn_id=conn_id), 2)  # diffs[1] lost
    assert book.stats.gaps == 1 and book.snapshot_wanted


# --- fuzzing --------------------------------------------------------------------------------


def _received_frames(path: Path) -> Iterator[bytes]:
    """The frames received in a gzipped Bybit capture."""
    with gzip.open(path, "rb") as lines:
        for line in lines:
            record = json.loads(line)
            if record["t"] == "recv":
                yield record.get("data", "").encode()


def _frame_kind(frame: bytes) -> tuple[str, str]:
    head = json.loads(frame)
    return (str(head.get("topic", "")).split(".")[0], str(head.get("type")))


@functools.cache
def _seeds(real_data: fuzzing.RealData) -> list[bytes]:
    """The sample frames, and up to 3 of each (topic, type) of the real capture."""
    frames = [SNAPSHOT, DELTA, SPOT_DELTA, LINEAR_TRADE, SPOT_TRADE, LINEAR_ACK, SPOT_ACK]
    frames += [FAILED_ACK, OPTION_ACK, SPOT_PONG, OPTION_PONG, TICKER]
    received = _received_frames(real_data(BYBIT_CAPTURE))
    return frames + fuzzing.first_of_each_kind(received, _frame_kind)


#: From the recorded sessions (cryptofeed, nautilus_trader XRPUSDT).
REAL_NUMBERS = ("1.9531", "1.9530", "350000.0", "0.0000010", "0.005", "6203", "0")


def _contract(
    venue: str,
    bad_frames: Sequence[bytes],
    frame: bytes,
    price: bytes,
    qty: bytes,
    refused: Sequence[str],
) -> fuzzing.ParserContract:
    """The contract of ``venue``'s frame and REST book parsers. The categories share the
    event types, the seeds, the real number forms and the bad REST bodies; they differ in
    the frames refused and the number grammar's sample (:class:`fuzzing.VenueNumbers`:
    ``frame``, ``price``, ``qty``, ``refused``)."""
    return fuzzing.ParserContract(
        parse=functools.partial(bybit.parse, venue=venue),
        types=EVENT_TYPES,
        bad_frames=bad_frames,
        seeds=_seeds,
        numbers=fuzzing.VenueNumbers(frame, price, qty, real=REAL_NUMBERS, refused=refused),
        snapshot=lambda body: bybit.parse_snapshot("BTCUSDT", body, 1, venue=venue),
        bad_snapshots=BAD_SNAPSHOTS,
    )


SPOT_CONTRACT = _contract(
    bybit.SPOT, (), SPOT_DELTA, b'"65140.4"', b'"0.875077"', ("6.51404e4", "8.75077E-1")
)
LINEAR_CONTRACT = _contract(
    bybit.LINEAR, BAD_FRAMES, DELTA, b'"30247.20"', b'"30.028"', ("3.02472E4", "30.028e0")
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [
            ("data", "b"),
            ("data", "a"),
            ("data", "u"),
            ("data", "s"),
            ("data",),
            ("topic",),
            ("type",),
            ("ts",),
            ("op",),
            ("success",),
            ("req_id",),
        ]
    ),
    fuzzing.JSON_VALUES,
)
def test_wrong_types_in_a_book_frame_raise_the_contract_error(
    where: tuple[str, ...], value: object
) -> None:
    frame = fuzzing.with_value(DELTA, where, value)
    if not fuzzing.accepted(lambda: bybit.parse_linear(frame, 1, 0), EVENT_TYPES):
        return
    if where == ("data", "b"):  # accepted only as a list of string pairs
        assert fuzzing.are_string_levels(value)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["T", "s", "S", "v", "p", "i"]), fuzzing.JSON_VALUES)
def test_wrong_types_in_a_trade_frame_raise_the_contract_error(field: str, value: object) -> None:
    frame = fuzzing.with_value(LINEAR_TRADE, ("data", 0, field), value)
    if fuzzing.accepted(lambda: bybit.parse_linear(frame, 1, 0), Trade):
        assert isinstance(value, int if field == "T" else str)
