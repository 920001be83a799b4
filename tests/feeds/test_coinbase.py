"""Coinbase adapters: Advanced Trade (``level2`` as ``l2_data``, the connection-wide
``sequence_num``) and the legacy Exchange feed; real recordings replayed into books; fuzzing
(any bytes in → events or VenueContractError out, nothing else)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from feeds import coinbase
from gateway.core.model import ConnectionSequence
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Side
from gateway.core.model import Trade
from gateway.core.model import VenueNotice

from . import fuzzing
from .fuzzing import replaced
from .sessions import SessionBooks

RealData = Callable[[str], Path]

ADVANCED = "coinbase/cryptofeed/COINBASE.jsonl.gz"
EXCHANGE = "coinbase/flashbook/live-btc-eth.ndjson"

L2_SNAPSHOT = (
    b'{"channel":"l2_data","client_id":"","timestamp":"2023-02-09T20:32:50.714964855Z",'
    b'"sequence_num":0,"events":[{"type":"snapshot","product_id":"BTC-USD","updates":['
    b'{"side":"bid","event_time":"1970-01-01T00:00:00Z","price_level":"21921.73",'
    b'"new_quantity":"0.06317902"},{"side":"offer","event_time":"1970-01-01T00:00:00Z",'
    b'"price_level":"21921.74","new_quantity":"0.5"}]}]}'
)
L2_UPDATE = (
    b'{"channel":"l2_data","timestamp":"2026-08-09T21:05:48.506659391Z","sequence_num":15,'
    b'"events":[{"type":"update","product_id":"BTC-USD","updates":[{"side":"offer",'
    b'"event_time":"2026-08-09T21:05:48.264069Z","price_level":"65106.54",'
    b'"new_quantity":"0.15361938"},{"side":"bid","event_time":"2026-08-09T21:05:48.264069Z",'
    b'"price_level":"65062.5","new_quantity":"0"},{"side":"offer",'
    b'"event_time":"2026-08-09T21:05:48.264069Z","price_level":"65155.5",'
    b'"new_quantity":"0.00000011"}]}]}'
)
MARKET_TRADES = (
    b'{"channel":"market_trades","timestamp":"2026-08-09T21:05:48.251397169Z",'
    b'"sequence_num":9,"events":[{"type":"update","trades":[{"product_id":"BTC-USD",'
    b'"trade_id":"1068572091","price":"65083.67","size":"0.01034361",'
    b'"time":"2026-08-09T21:05:48.167634Z","side":"SELL"}]}]}'
)
HEARTBEAT = (
    b'{"channel":"heartbeats","timestamp":"2026-08-09T21:05:48.856364007Z","sequence_num":35,'
    b'"events":[{"current_time":"2026-08-09 21:05:48.854840045 +0000 UTC m=+41691.260485341",'
    b'"heartbeat_counter":41691}]}'
)
SUBSCRIPTIONS = (
    b'{"channel":"subscriptions","timestamp":"2026-08-09T21:05:48.228846629Z","sequence_num":2,'
    b'"events":[{"subscriptions":{"market_trades":["BTC-USD","ETH-USD"]}}]}'
)
EX_L2UPDATE = (
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","63507.67","0.00000000"],'
    b'["buy","63509.77","0.12596486"],["sell","63543.00","2.00000000"]],'
    b'"time":"2026-07-07T22:58:17.068248Z"}'
)
EX_SNAPSHOT = (
    b'{"type":"snapshot","product_id":"BTC-USD","bids":[["10101.10","0.45054140"]],'
    b'"asks":[["10102.55","0.57753524"]]}'
)
EX_MATCH = (
    b'{"type":"match","trade_id":1052119289,"maker_order_id":"15bc","taker_order_id":"13d7",'
    b'"side":"sell","size":"0.2","price":"63514.6","product_id":"BTC-USD",'
    b'"sequence":132235026010,"time":"2026-07-07T22:58:17.164892Z"}'
)


# --- messages -----------------------------------------------------------------------------


def test_outgoing_messages() -> None:
    subs = [json.loads(m) for m in coinbase.subscribe_messages(["BTC-USD", "ETH-USD"])]
    assert subs == [
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": channel}
        for channel in ("level2", "market_trades", "heartbeats")
    ]
    unsubs = [json.loads(m) for m in coinbase.unsubscribe_messages(["BTC-USD"])]
    assert [m["type"] for m in unsubs] == ["unsubscribe"] * 3
    assert [json.loads(m) for m in coinbase.resubscribe_messages("ETH-USD")] == [
        {"type": "unsubscribe", "product_ids": ["ETH-USD"], "channel": "level2"},
        {"type": "subscribe", "product_ids": ["ETH-USD"], "channel": "level2"},
    ]
    (ex,) = coinbase.exchange_subscribe_messages(["BTC-USD"])
    assert json.loads(ex) == {
        "type": "subscribe",
        "product_ids": ["BTC-USD"],
        "channels": ["level2_batch", "matches", "heartbeat"],
    }
    assert coinbase.WS_ENDPOINTS == ("wss://advanced-trade-ws.coinbase.com",)
    assert coinbase.USER_WS_ENDPOINT not in coinbase.WS_ENDPOINTS
    assert coinbase.connect_url(coinbase.WS_ENDPOINTS[0], ["BTC-USD"]) == coinbase.WS_ENDPOINTS[0]
    with pytest.raises(ValueError):
        coinbase.subscribe_messages([])
    with pytest.raises(ValueError):
        coinbase.subscribe_messages("BTC-USD")
    with pytest.raises(ValueError):
        coinbase.exchange_subscribe_messages(["BTC-USD"], "full")


# --- Advanced Trade parsing ---------------------------------------------------------------


def test_snapshot_and_update_follow_the_connection_sequence() -> None:
    seq, snap = coinbase.parse(L2_SNAPSHOT, 10, 2)
    assert seq == ConnectionSequence("coinbase", 0, 10, 2)
    assert snap == DepthSnapshot(
        "coinbase", "BTC-USD", -1, (("21921.73", "0.06317902"),), (("21921.74", "0.5"),), 10, 2
    )
    seq, diff = coinbase.parse(L2_UPDATE, 11, 2)
    assert seq == ConnectionSequence("coinbase", 15, 11, 2)
    assert diff == DepthDiff(
        "coinbase",
        "BTC-USD",
        -1,
        -1,
        -1,
        (("65062.5", "0"),),
        (("65106.54", "0.15361938"), ("65155.5", "0.00000011")),
        1786309548506,
        11,
        2,
        None,
    )


def test_trades_heartbeats_acks_and_errors() -> None:
    seq, trade = coinbase.parse(MARKET_TRADES, 5, 1)
    assert seq == ConnectionSequence("coinbase", 9, 5, 1)
    # "SELL" is the maker's side: the aggressor bought (the trade is at the best ask).
    assert trade == Trade(
        "coinbase", "BTC-USD", 1068572091, "65083.67", "0.01034361", Side.BUY, 1786309548167, 5, 1
    )
    assert coinbase.parse(HEARTBEAT, 1, 0) == [ConnectionSequence("coinbase", 35, 1, 0)]
    seq, ack = coinbase.parse(SUBSCRIPTIONS, 1, 0)
    assert seq == ConnectionSequence("coinbase", 2, 1, 0)
    assert isinstance(ack, VenueNotice) and ack.kind == "ack" and "market_trades" in ack.detail
    ticker = b'{"channel":"ticker","timestamp":"x","sequence_num":7,"events":[{"type":"update"}]}'
    assert coinbase.parse(ticker, 1, 0) == [ConnectionSequence("coinbase", 7, 1, 0)]
    (err,) = coinbase.parse(b'{"type":"error","message":"failure to subscribe"}', 1, 0)
    assert err == VenueNotice("coinbase", "error", "failure to subscribe", False, 1, 0)


#: Frames coinbase.parse refuses with VenueContractError (tests/feeds/test_contract.py).
BAD_FRAMES = [
    *fuzzing.NOT_FRAMES,
    b'{"type":"subscribe"}',
    replaced(L2_UPDATE, b'"sequence_num":15,', b""),
    *fuzzing.each_replaced(
        L2_UPDATE,
        b'"sequence_num":15',
        [
            b'"sequence_num":-1',
            b'"sequence_num":"15"',
            b'"sequence_num":99999999999999999999999',
            b'"sequence_num":NaN',
        ],
    ),
    replaced(L2_UPDATE, b'"type":"update"', b'"type":"delta"'),
    replaced(L2_UPDATE, b'"side":"offer"', b'"side":"ask"'),
    replaced(L2_UPDATE, b'"product_id":"BTC-USD"', b'"product_id":""'),
    *fuzzing.bad_decimals(L2_UPDATE, b'"65106.54"'),
    *fuzzing.each_replaced(L2_UPDATE, b'"0.15361938"', [b'"abc"', b"Infinity"]),
    replaced(L2_UPDATE, b'"2026-08-09T21:05:48.506659391Z"', b'"soon"'),
    replaced(L2_UPDATE, b'"events":[', b'"events":{"a":[') + b"}",
    b'{"channel":"l2_data","timestamp":"2026-08-09T21:05:48Z","sequence_num":1}',
    replaced(MARKET_TRADES, b'"SELL"', b'"SHORT"'),
    *fuzzing.each_replaced(
        MARKET_TRADES, b'"1068572091"', [b"1068572091", b'"99999999999999999999999"', b'"-1"']
    ),
    replaced(MARKET_TRADES, b'"65083.67"', b'"0"'),
    replaced(MARKET_TRADES, b'"2026-08-09T21:05:48.167634Z"', b'"2026-08-09"'),
    replaced(L2_UPDATE, b'"BTC-USD"', b'"\xff\xfe"'),
]


# --- legacy Exchange parsing --------------------------------------------------------------


def test_exchange_frames() -> None:
    (diff,) = coinbase.parse_exchange(EX_L2UPDATE, 3, 4)
    assert diff == DepthDiff(
        "coinbase-exchange",
        "BTC-USD",
        -1,
        -1,
        -1,
        (("63507.67", "0.00000000"), ("63509.77", "0.12596486")),
        (("63543.00", "2.00000000"),),
        1783465097068,
        3,
        4,
        None,
    )
    (snap,) = coinbase.parse_exchange(EX_SNAPSHOT, 3, 4)
    assert snap == DepthSnapshot(
        "coinbase-exchange",
        "BTC-USD",
        -1,
        (("10101.10", "0.45054140"),),
        (("10102.55", "0.57753524"),),
        3,
        4,
    )
    (trade,) = coinbase.parse_exchange(EX_MATCH, 3, 4)
    # The match's side is the maker's: a resting sell was lifted, the aggressor bought.
    assert trade == Trade(
        "coinbase-exchange", "BTC-USD", 1052119289, "63514.6", "0.2", Side.BUY, 1783465097164, 3, 4
    )
    (last,) = coinbase.parse_exchange(replaced(EX_MATCH, b'"match"', b'"last_match"'), 3, 4)
    assert isinstance(last, Trade)
    heartbeat = b'{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD"}'
    assert coinbase.parse_exchange(heartbeat, 1, 0) == []
    (ack,) = coinbase.parse_exchange(b'{"type":"subscriptions","channels":[]}', 1, 0)
    assert isinstance(ack, VenueNotice) and ack.kind == "ack"
    (err,) = coinbase.parse_exchange(
        b'{"type":"error","message":"Failed to subscribe","reason":"level2 requires auth"}', 1, 0
    )
    assert err == VenueNotice(
        "coinbase-exchange", "error", "Failed to subscribe: level2 requires auth", False, 1, 0
    )


#: Frames coinbase.parse_exchange refuses with VenueContractError (tests/feeds/test_contract.py).
BAD_EXCHANGE_FRAMES = [
    b"",
    b"{}",
    b'{"type":1}',
    replaced(EX_L2UPDATE, b'"buy"', b'"bid"'),
    *fuzzing.each_replaced(EX_L2UPDATE, b'"63509.77"', [b"63509.77", b'"NaN"', b'"-1"']),
    replaced(EX_L2UPDATE, b'"0.12596486"', b'"1e999"'),
    replaced(EX_L2UPDATE, b'["sell","63543.00","2.00000000"]', b'["sell","63543.00"]'),
    replaced(EX_L2UPDATE, b'"2026-07-07T22:58:17.068248Z"', b'"noon"'),
    replaced(EX_SNAPSHOT, b'"bids":[["10101.10","0.45054140"]],', b""),
    replaced(EX_SNAPSHOT, b'"10101.10"', b'"Infinity"'),
    *fuzzing.each_replaced(EX_MATCH, b"1052119289", [b"99999999999999999999999", b'"1052119289"']),
    replaced(EX_MATCH, b'"side":"sell"', b'"side":"up"'),
]


# --- the recordings -----------------------------------------------------------------------


def _advanced_frames(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """``(conn_id, recv_ns, raw frame)`` of the received frames of a cryptofeed format-2
    JSONL capture (``t`` = header/http/connect/send/recv, ``data`` = the raw frame)."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record["t"] == "recv":
                conn = int(record["conn"].rsplit(".", 1)[1])
                yield conn, int(record["ts"] * 1e9), record["data"].encode()


def test_advanced_trade_recording(real_data: RealData) -> None:
    session = SessionBooks()
    counts, trades, books = session.counts, session.trades, session.books
    last: dict[int, int] = {}
    gaps = crossed = sequences = 0
    for conn, recv_ns, raw in _advanced_frames(real_data(ADVANCED)):
        events = coinbase.parse(raw, recv_ns, conn)
        # Every message carries the connection's counter, first.
        assert isinstance(events[0], ConnectionSequence)
        for event in events:
            if isinstance(event, ConnectionSequence):
                sequences += 1
                if event.conn_id in last and event.seq != last[event.conn_id] + 1:
                    gaps += 1
                last[event.conn_id] = event.seq
            elif isinstance(event, DepthSnapshot | DepthDiff):
                if isinstance(event, DepthDiff):
                    assert event.event_ms > 1_700_000_000_000
                crossed += session.on_book(event).is_crossed()
            elif isinstance(event, Trade):
                session.on_trade(event)
            else:
                assert isinstance(event, VenueNotice) and event.kind == "ack"
                counts["ack"] += 1
    assert (sequences, gaps, last) == (1030, 0, {2: 1029})
    assert crossed == 0
    assert counts["DepthSnapshot BTC-USD"] == counts["DepthSnapshot ETH-USD"] == 1
    assert (counts["DepthDiff BTC-USD"], counts["DepthDiff ETH-USD"]) == (399, 374)
    assert counts["ack"] == 5
    assert books["BTC-USD"].bid_count > 10_000 and books["BTC-USD"].ask_count > 10_000
    # The aggressor side is never contradicted by the book: buys print at the ask, sells at
    # the bid (the wire ``side`` is the maker's).
    assert trades[Side.BUY, "bid"] == trades[Side.SELL, "ask"] == 0
    assert trades[Side.BUY, "ask"] == 48 and trades[Side.SELL, "bid"] == 23


def test_exchange_recording(real_data: RealData) -> None:
    session = SessionBooks()
    counts, trades = session.counts, session.trades
    crossed = 0
    with real_data(EXCHANGE).open("rb") as lines:
        for number, line in enumerate(lines):
            for event in coinbase.parse_exchange(line.rstrip(b"\n"), number, 0):
                assert event.venue == "coinbase-exchange"
                if isinstance(event, DepthSnapshot | DepthDiff):
                    crossed += session.on_book(event).is_crossed()
                elif isinstance(event, Trade):
                    session.on_trade(event)
                else:
                    counts[type(event).__name__] += 1
    assert crossed == 0
    assert counts == {
        "DepthSnapshot BTC-USD": 1,
        "DepthSnapshot ETH-USD": 1,
        "DepthDiff BTC-USD": 979,
        "DepthDiff ETH-USD": 919,
        "Trade": 437,
        "VenueNotice": 1,
    }
    # level2_50 is batched, matches are not: 2 of 437 trades print against a book that has
    # not caught up; the other 435 agree with the aggressor side.
    assert trades[Side.BUY, "ask"] == 88 and trades[Side.SELL, "bid"] == 347
    assert trades[Side.BUY, "bid"] + trades[Side.SELL, "ask"] == 2


# --- fuzzing ------------------------------------------------------------------------------

_SMALL = 4096


@cache
def _real_frames(advanced: Path, exchange: Path) -> tuple[bytes, ...]:
    frames = [L2_SNAPSHOT, L2_UPDATE, MARKET_TRADES, HEARTBEAT, SUBSCRIPTIONS]
    frames += [EX_L2UPDATE, EX_SNAPSHOT, EX_MATCH]
    for index, (_, _, raw) in enumerate(_advanced_frames(advanced)):
        if len(raw) <= _SMALL:
            frames.append(raw)
        if index >= 80:
            break
    with exchange.open("rb") as lines:
        for _, line in zip(range(60), lines, strict=False):
            if len(line) <= _SMALL:
                frames.append(line.rstrip(b"\n"))
    return tuple(frames)


_EVENT_TYPES = DepthDiff | DepthSnapshot | Trade | VenueNotice | ConnectionSequence


def _seeds(real_data: RealData) -> tuple[bytes, ...]:
    return _real_frames(real_data(ADVANCED), real_data(EXCHANGE))


CONTRACT = fuzzing.ParserContract(
    coinbase.parse,
    _EVENT_TYPES,
    BAD_FRAMES,
    _seeds,
    fuzzing.VenueNumbers(
        L2_UPDATE,
        price=b'"65106.54"',
        qty=b'"0.15361938"',
        # From the recorded Advanced Trade session (cryptofeed).
        real=("65083.66", "65000.5", "65080", "0.0000001", "1.0851362", "100000000", "0"),
        refused=("6.510654e4", "1.5361938E-1"),
    ),
)
EXCHANGE_CONTRACT = fuzzing.ParserContract(
    coinbase.parse_exchange,
    _EVENT_TYPES,
    BAD_EXCHANGE_FRAMES,
    _seeds,
    fuzzing.VenueNumbers(
        EX_L2UPDATE,
        price=b'"63509.77"',
        qty=b'"0.12596486"',
        # From the recorded Exchange session (flashbook).
        real=("1774.93", "1775.00", "0.00000811", "0.56100580", "1775", "0.00000000"),
        refused=("6.350977e4", "0.12596486E0"),
    ),
)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=5)
    | st.sampled_from(["1e400", "NaN", "Infinity", "-0", "9" * 400, "0.00000500"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(_JSON, st.sampled_from(["side", "price_level", "new_quantity", "updates"]))
def test_wrong_types_in_an_l2_update_raise_the_contract_error(value: object, field: str) -> None:
    path = ("events", 0, field) if field == "updates" else ("events", 0, "updates", 0, field)
    # Non-finite floats are written as the NaN / Infinity literals: rejected as JSON.
    frame = fuzzing.with_value(L2_UPDATE, path, value)
    if not fuzzing.accepted(lambda: coinbase.parse(frame, 1, 0), _EVENT_TYPES):
        return
    if field == "updates":
        assert isinstance(value, list) and all(isinstance(u, dict) for u in value)
    elif field == "side":
        assert value in ("bid", "offer")
    else:
        assert isinstance(value, str)
        assert 0 <= float(value) < float("inf")


@settings(max_examples=200, deadline=None)
@given(_JSON, st.sampled_from([0, 1, 2]))
def test_wrong_types_in_an_exchange_change_raise_the_contract_error(
    value: object, index: int
) -> None:
    frame = fuzzing.with_value(EX_L2UPDATE, ("changes", 1, index), value)
    if not fuzzing.accepted(lambda: coinbase.parse_exchange(frame, 1, 0), _EVENT_TYPES):
        return
    assert isinstance(value, str)
    if index == 0:
        assert value in ("buy", "sell")
