"""OKX adapter: messages, parsing of every frame kind, the checksum vectors of
exchange-protocols.md §6/§8, the sequence rule through the arbiter (doc example, resets
seen from several connections), the real 2022 recording, and fuzzing (any bytes in →
events or VenueContractError out, nothing else)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import zlib
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from feeds import okx
from gateway.capture import CaptureReader
from gateway.core.arbiter import ArbiterLimits
from gateway.core.arbiter import Link
from gateway.core.book import L2Book
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level
from gateway.core.model import ReconnectWanted
from gateway.core.model import Side
from gateway.core.model import SnapshotWanted
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.model import Trade
from gateway.core.model import VenueNotice
from gateway.core.sequenced import SequencedBook

from . import fuzzing

SYMBOL = "BTC-USDT"
KEY = "okx:BTC-USDT"

# Doc frames (§6), verbatim apart from the ellipses.
DOC_SNAPSHOT = (
    b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[{'
    b'"asks":[["8476.98","415","0","13"],["8477","7","0","2"]],'
    b'"bids":[["8476.97","256","0","12"],["8475.55","101","0","1"]],'
    b'"ts":"1597026383085","checksum":-855196043,"prevSeqId":-1,"seqId":123456}]}'
)
DOC_UPDATE = (
    b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{'
    b'"asks":[["8476.98","0","0","0"]],"bids":[["8476.97","250","0","11"]],'
    b'"ts":"1597026383085","checksum":-855196043,"prevSeqId":123456,"seqId":123457}]}'
)
TRADES = (
    b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":['
    b'{"instId":"BTC-USDT","tradeId":"338476308","px":"30243.5","sz":"0.001","side":"buy",'
    b'"ts":"1652459226050","count":"1","seqId":1234},'
    b'{"instId":"BTC-USDT","tradeId":"338476309","px":"30243.4","sz":"0.0002","side":"sell",'
    b'"ts":"1652459226051"}]}'
)
SUBSCRIBED = (
    b'{"id":"1512","event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"},'
    b'"connId":"a4d3ae55"}'
)
ERROR = b'{"id":"1512","event":"error","code":"60012","msg":"Invalid request","connId":"a4d"}'
UPGRADE = (
    b'{"event":"notice","code":"64008","msg":"The connection will soon be closed for a '
    b'service upgrade. Please reconnect.","connId":"a4d3ae55"}'
)
TICKER = b'{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"last":"1"}]}'
BBO = (
    b'{"arg":{"channel":"bbo-tbt","instId":"BCH-USDT-SWAP"},"data":[{"asks":[["111.06",'
    b'"55154","0","2"]],"bids":[["111.05","57745","0","2"]],"ts":"1670324386802",'
    b'"seqId":363996337}]}'
)
REST_BOOK = (
    b'{"code":"0","msg":"","data":[{"asks":[["41006.8","0.60038921","0","1"]],'
    b'"bids":[["41006.3","0.30178218","0","2"]],"ts":"1629966436396","seqId":99}]}'
)

REAL_PATH = "okx/cryptofeed/OKX.ws.1.0"


# --- messages and URLs --------------------------------------------------------------------


def test_endpoints_and_urls() -> None:
    assert okx.VENUE == "okx"
    assert okx.WS_ENDPOINTS[0] == "wss://ws.okx.com:8443/ws/v5/public"
    assert {"wseea", "wsus", "wsaws"} <= {e.split("//")[1].split(".")[0] for e in okx.WS_ENDPOINTS}
    assert all(e.endswith("/ws/v5/public") for e in okx.WS_ENDPOINTS)
    assert okx.REST_ENDPOINTS == ("https://www.okx.com", "https://openapi.okx.com")
    assert okx.connect_url(okx.WS_ENDPOINTS[1], ["BTC-USDT"]) == okx.WS_ENDPOINTS[1]
    assert okx.snapshot_url("https://www.okx.com/", "BTC-USDT", 400) == (
        "https://www.okx.com/api/v5/market/books?instId=BTC-USDT&sz=400"
    )
    for bad in (0, 401):
        with pytest.raises(ValueError):
            okx.snapshot_url("https://www.okx.com", "BTC-USDT", bad)
    assert okx.ping_message() == b"ping"
    assert okx.PING_INTERVAL_S == 20.0
    assert okx.parse(b"pong", 1, 0) == []


def test_subscribe_messages() -> None:
    (msg,) = okx.subscribe_messages(["BTC-USDT", "ETH-USDT"])
    assert json.loads(msg) == {
        "op": "subscribe",
        "args": [
            {"channel": "books", "instId": "BTC-USDT"},
            {"channel": "trades", "instId": "BTC-USDT"},
            {"channel": "books", "instId": "ETH-USDT"},
            {"channel": "trades", "instId": "ETH-USDT"},
        ],
    }
    (unsub,) = okx.unsubscribe_messages(["BTC-USDT"], "books50-l2-tbt")
    assert json.loads(unsub)["op"] == "unsubscribe"
    assert json.loads(unsub)["args"][0] == {"channel": "books50-l2-tbt", "instId": "BTC-USDT"}
    assert [json.loads(m)["op"] for m in okx.resubscribe_messages("BTC-USDT")] == [
        "unsubscribe",
        "subscribe",
    ]
    with pytest.raises(ValueError):
        okx.subscribe_messages(["BTC-USDT"], "books5")
    with pytest.raises(ValueError):
        okx.subscribe_messages([])


def test_subscribe_messages_split_at_64_kb_keeping_a_symbols_channels_together() -> None:
    symbols = [f"COIN{i:05d}-USDT-SWAP" for i in range(3000)]
    messages = okx.subscribe_messages(symbols, "books-l2-tbt")
    assert len(messages) > 1
    args = []
    for message in messages:
        decoded = json.loads(message)
        assert len(msgspec.json.encode(decoded["args"])) <= okx.MAX_ARGS_BYTES
        chunk = decoded["args"]
        assert len(chunk) % 2 == 0  # books and trades of a symbol stay together
        args += chunk
    assert [a["instId"] for a in args[::2]] == symbols
    assert {a["channel"] for a in args} == {"books-l2-tbt", "trades"}


# --- checksum -----------------------------------------------------------------------------

BMOSCON_ASKS: list[Level] = [
    ("28923.3", "1.87800235"), ("28923.4", "0.04"), ("28924.3", "0.06867412"),
    ("28925.6", "0.09861686"), ("28925.8", "0.16453656"), ("28925.9", "2.23"),
    ("28926", "0.32274814"), ("28926.1", "0.6232534"), ("28926.4", "1.04"),
    ("28926.8", "0.01707781"), ("28928.5", "0.07061975"), ("28929", "0.144"),
    ("28930.2", "0.1"), ("28930.3", "6.40922866"), ("28931.9", "0.54902396"),
    ("28932", "0.17306693"), ("28932.7", "2.5672"), ("28932.8", "1.19528238"),
    ("28932.9", "0.05"), ("28933", "0.34194526"), ("28933.5", "0.02319626"),
    ("28933.6", "0.764"), ("28933.7", "0.01"), ("28934.4", "0.05"), ("28935", "0.0115"),
    ("28935.1", "0.48"), ("28935.8", "0.00696447"), ("28935.9", "0.144"),
    ("28936", "0.12700417"), ("28936.5", "1.58799999"),
]  # fmt: skip
BMOSCON_BIDS: list[Level] = [
    ("28923.2", "0.0000001"), ("28923", "0.49101312"), ("28922.4", "0.01251868"),
    ("28921.2", "0.00020273"), ("28920.9", "0.00009315"), ("28920.3", "0.00008106"),
    ("28920", "0.03448414"), ("28919.6", "0.00002087"), ("28919.3", "0.00026015"),
    ("28919", "0.0000519"), ("28917.7", "0.00014609"), ("28916.7", "0.00002008"),
    ("28915.9", "0.00009415"), ("28915", "0.0454951"), ("28914.6", "0.007"),
    ("28914.3", "0.12709954"), ("28913.7", "0.0060879"), ("28913.6", "0.00342"),
    ("28913.3", "0.00574477"), ("28911.8", "0.00106132"), ("28911.1", "0.00011083"),
    ("28911", "0.00008173"), ("28910", "0.0006918"), ("28909.9", "0.06897"),
    ("28909.8", "0.00975481"), ("28909.6", "0.00001002"), ("28909", "0.00134995"),
    ("28908.5", "0.00796815"), ("28908.4", "0.17308796"), ("28908.1", "0.67728285"),
]  # fmt: skip


def test_checksum_vectors() -> None:
    assert zlib.crc32(b"123456789") == 0xCBF43926
    bids: list[Level] = [("3366.1", "7"), ("3366", "6")]
    asks: list[Level] = [("3366.8", "9"), ("3368", "8")]
    assert okx.checksum(bids, asks) == -1881014294
    assert okx.checksum([("3366.1", "7")], [("3366.8", "9"), ("3368", "8"), ("3372", "8")]) == (
        831078360
    )
    # bmoscon/orderbook tests/test_checksums.py::test_okx_checksum: 2399502091 unsigned.
    assert okx.checksum(BMOSCON_BIDS, BMOSCON_ASKS) == 2399502091 - (1 << 32) == -1895465205
    assert okx.checksum([], []) == 0


def test_checksum_uses_the_wire_strings() -> None:
    bids: list[Level] = [("3366.1", "7"), ("3366", "6")]
    asks: list[Level] = [("3366.8", "9"), ("3368", "8")]
    assert okx.checksum([("3366.1", "7"), ("3366.0", "6")], asks) != -1881014294
    assert okx.checksum(bids, [("3366.8", "9"), ("3368.0", "8")]) != -1881014294
    tiny = okx.checksum([("28923.2", "0.0000001")], [])
    assert tiny != okx.checksum([("28923.2", "1e-07")], [])


def test_book_checksum_takes_the_top_25_of_an_l2book() -> None:
    book = L2Book()
    book.load(reversed(BMOSCON_BIDS), reversed(BMOSCON_ASKS))  # order does not matter
    assert okx.book_checksum(book) == -1895465205
    book = L2Book()
    book.load([("3366.1", "7"), ("3366", "6")], [("3368", "8"), ("3366.8", "9")])
    assert okx.book_checksum(book) == -1881014294


# --- parsing ------------------------------------------------------------------------------


def test_snapshot_and_update_frames() -> None:
    (snap,) = okx.parse(DOC_SNAPSHOT, 10, 3)
    assert snap == DepthSnapshot(
        "okx",
        "BTC-USDT",
        123456,
        (("8476.97", "256"), ("8475.55", "101")),
        (("8476.98", "415"), ("8477", "7")),
        10,
        3,
        checksum=-855196043,
    )
    (diff,) = okx.parse(DOC_UPDATE, 11, 3)
    assert diff == DepthDiff(
        "okx",
        "BTC-USDT",
        123457,
        123457,
        123456,
        (("8476.97", "250"),),
        (("8476.98", "0"),),
        1597026383085,
        11,
        3,
        checksum=-855196043,
    )
    assert diff.key == KEY


def test_checksum_zero_or_absent_is_none_and_unsigned_is_normalised() -> None:
    (zero,) = okx.parse(DOC_UPDATE.replace(b"-855196043", b"0"), 1, 0)
    assert isinstance(zero, DepthDiff) and zero.checksum is None
    (absent,) = okx.parse(DOC_UPDATE.replace(b'"checksum":-855196043,', b""), 1, 0)
    assert isinstance(absent, DepthDiff) and absent.checksum is None
    (snap,) = okx.parse(DOC_SNAPSHOT.replace(b"-855196043", b"0"), 1, 0)
    assert isinstance(snap, DepthSnapshot) and snap.checksum is None
    (unsigned,) = okx.parse(DOC_UPDATE.replace(b"-855196043", b"2399502091"), 1, 0)
    assert isinstance(unsigned, DepthDiff) and unsigned.checksum == -1895465205


def test_keepalive_and_reset_updates() -> None:
    keepalive = DOC_UPDATE.replace(b'"prevSeqId":123456', b'"prevSeqId":123457')
    keepalive = keepalive.replace(b'[["8476.98","0","0","0"]]', b"[]")
    keepalive = keepalive.replace(b'[["8476.97","250","0","11"]]', b"[]")
    (ka,) = okx.parse(keepalive, 1, 0)
    assert isinstance(ka, DepthDiff)
    assert (ka.first_id, ka.last_id, ka.prev_id, ka.bids, ka.asks) == (
        123458,
        123457,
        123457,
        (),
        (),
    )
    (reset,) = okx.parse(DOC_UPDATE.replace(b'"seqId":123457', b'"seqId":3'), 1, 0)
    assert isinstance(reset, DepthDiff) and (reset.prev_id, reset.last_id) == (123456, 3)


def test_update_without_seq_ids_is_the_pre_2023_feed() -> None:
    old = DOC_UPDATE.replace(b',"prevSeqId":123456,"seqId":123457', b"")
    (diff,) = okx.parse(old, 1, 0)
    assert isinstance(diff, DepthDiff)
    assert (diff.first_id, diff.last_id, diff.prev_id) == (-1, -1, -1)
    (snap,) = okx.parse(DOC_SNAPSHOT.replace(b',"prevSeqId":-1,"seqId":123456', b""), 1, 0)
    assert isinstance(snap, DepthSnapshot) and snap.last_id == -1


def test_books_l2_tbt_channels() -> None:
    for channel in (b"books50-l2-tbt", b"books-l2-tbt"):
        (diff,) = okx.parse(DOC_UPDATE.replace(b'"books"', b'"' + channel + b'"'), 1, 0)
        assert isinstance(diff, DepthDiff) and diff.last_id == 123457


def test_trades() -> None:
    first, second = okx.parse(TRADES, 5, 2)
    assert first == Trade(
        "okx", "BTC-USDT", 338476308, "30243.5", "0.001", Side.BUY, 1652459226050, 5, 2
    )
    assert isinstance(second, Trade) and second.side is Side.SELL and second.trade_id == 338476309


def test_control_frames() -> None:
    (ack,) = okx.parse(SUBSCRIBED, 1, 0)
    assert isinstance(ack, VenueNotice)
    assert (ack.kind, ack.detail, ack.reconnect) == ("ack", "subscribe books BTC-USDT", False)
    (err,) = okx.parse(ERROR, 1, 0)
    assert isinstance(err, VenueNotice) and err.kind == "error" and "60012" in err.detail
    assert not err.reconnect
    (upgrade,) = okx.parse(UPGRADE, 1, 0)
    assert isinstance(upgrade, VenueNotice)
    assert (upgrade.kind, upgrade.reconnect) == ("notice", True)
    (other,) = okx.parse(UPGRADE.replace(b"64008", b"64009"), 1, 0)
    assert isinstance(other, VenueNotice) and not other.reconnect
    assert okx.parse(TICKER, 1, 0) == []
    assert okx.parse(BBO, 1, 0) == []


def test_rest_snapshot() -> None:
    snap = okx.parse_snapshot("btc-usdt", REST_BOOK, 7)
    assert snap == DepthSnapshot(
        "okx",
        "BTC-USDT",
        99,
        (("41006.3", "0.30178218"),),
        (("41006.8", "0.60038921"),),
        7,
        -1,
    )
    no_seq = okx.parse_snapshot("BTC-USDT", REST_BOOK.replace(b',"seqId":99', b""), 7)
    assert no_seq.last_id == -1


#: REST book bodies the snapshot parser refuses (tests/feeds/test_contract.py).
BAD_SNAPSHOTS = [
    b'{"code":"51001","msg":"Instrument ID does not exist","data":[]}',
    b'{"code":"0","msg":"","data":[]}',
    b'{"code":"0","msg":""}',
    REST_BOOK.replace(b'"0.60038921"', b'"x"'),
    REST_BOOK.replace(b"99", b"-5"),
    b"<html>",
]


#: Frames okx.parse refuses with VenueContractError (tests/feeds/test_contract.py).
BAD_FRAMES = [
    *fuzzing.NOT_FRAMES,
    b"ping",
    b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update"}',
    b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[]}',
    b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":null}',
    DOC_UPDATE.replace(b'"action":"update",', b""),
    DOC_UPDATE.replace(b'"update"', b'"partial"'),
    DOC_UPDATE.replace(b'"instId":"BTC-USDT"', b'"instId":""'),
    *fuzzing.bad_decimals(DOC_UPDATE, b'"8476.97"'),
    DOC_UPDATE.replace(b'"250"', b'"inf"'),
    DOC_UPDATE.replace(b'["8476.97","250","0","11"]', b'["8476.97"]'),
    DOC_UPDATE.replace(b'"prevSeqId":123456,', b""),
    DOC_UPDATE.replace(b'"seqId":123457', b'"seqId":-2'),
    DOC_UPDATE.replace(b'"prevSeqId":123456', b'"prevSeqId":-1'),
    DOC_UPDATE.replace(b'"seqId":123457', b'"seqId":"123457"'),
    DOC_UPDATE.replace(b"-855196043", b"99999999999"),
    DOC_UPDATE.replace(b'"ts":"1597026383085"', b'"ts":"soon"'),
    DOC_UPDATE.replace(b'"ts":"1597026383085"', b'"ts":1597026383085'),
    DOC_SNAPSHOT.replace(b'"seqId":123456', b'"seqId":-7'),
    TRADES.replace(b'"side":"buy"', b'"side":"up"'),
    TRADES.replace(b'"tradeId":"338476308"', b'"tradeId":"t1"'),
    TRADES.replace(b'"tradeId":"338476308"', b'"tradeId":338476308'),
    TRADES.replace(b'"0.001"', b'"-0.001"'),
    b'{"arg":{"channel":"trades","instId":"BTC-USDT"}}',
    b'{"arg":"books","data":[]}',
    b'{"event":5}',
    DOC_UPDATE.replace(b"BTC-USDT", b"BTC-\xff"),  # invalid UTF-8
]


# --- the sequence rule ----------------------------------------------------------------------


def _frame(
    prev: int,
    seq: int,
    *,
    bids: list[Level] | None = None,
    asks: list[Level] | None = None,
    action: str = "update",
    crc: int = 0,
) -> bytes:
    data = {
        "asks": [[p, q, "0", "1"] for p, q in asks or []],
        "bids": [[p, q, "0", "1"] for p, q in bids or []],
        "ts": "1700000000000",
        "checksum": crc,
        "prevSeqId": prev,
        "seqId": seq,
    }
    return msgspec.json.encode(
        {"arg": {"channel": "books", "instId": SYMBOL}, "action": action, "data": [data]}
    )


def _diff(
    prev: int,
    seq: int,
    *,
    conn: int = 0,
    recv_ns: int = 0,
    bids: list[Level] | None = None,
    asks: list[Level] | None = None,
) -> DepthDiff:
    (event,) = okx.parse(_frame(prev, seq, bids=bids, asks=asks), recv_ns, conn)
    assert isinstance(event, DepthDiff)
    return event


def _snapshot(seq: int, bids: list[Level], asks: list[Level], conn: int = 0) -> DepthSnapshot:
    crc = okx.checksum(bids, asks)
    (event,) = okx.parse(_frame(-1, seq, bids=bids, asks=asks, action="snapshot", crc=crc), 0, conn)
    assert isinstance(event, DepthSnapshot)
    return event


def test_rule_cases() -> None:
    rule = okx.OkxRule()
    assert rule.name == "okx"
    assert rule.classify(_diff(10, 15), 10) is Link.LINKS
    assert rule.classify(_diff(15, 15), 15) is Link.LINKS  # keepalive
    assert rule.classify(_diff(10, 15), 15) is Link.STALE
    assert rule.classify(_diff(15, 15), 16) is Link.STALE
    assert rule.classify(_diff(16, 20), 15) is Link.FUTURE
    assert rule.classify(_diff(12, 18), 15) is Link.LINKS  # covers the applied id
    assert rule.classify(_diff(15, 3), 15) is Link.LINKS  # reset
    assert rule.resets == 1
    assert rule.classify(_diff(3, 5), 3) is Link.LINKS
    # Late copies from a slower connection: the reset and what came before it.
    assert rule.classify(_diff(15, 3, conn=1), 5) is Link.STALE
    assert rule.classify(_diff(15, 15, conn=1), 5) is Link.STALE
    assert rule.classify(_diff(10, 15, conn=1), 5) is Link.STALE
    assert rule.stragglers == 3
    # A genuine hole in the new sequence is still future.
    assert rule.classify(_diff(8, 9), 5) is Link.FUTURE


def test_rule_stragglers_are_recognised_only_for_a_window() -> None:
    rule = okx.OkxRule(straggler_window_ns=1_000)
    assert rule.classify(_diff(10, 15, recv_ns=0), 10) is Link.LINKS
    assert rule.classify(_diff(15, 3, recv_ns=10), 15) is Link.LINKS
    assert rule.classify(_diff(10, 15, conn=1, recv_ns=500), 3) is Link.STALE
    assert rule.classify(_diff(10, 15, conn=1, recv_ns=5_000), 3) is Link.FUTURE


def test_pre_seq_id_updates_always_link() -> None:
    rule = okx.OkxRule()
    old = DOC_UPDATE.replace(b',"prevSeqId":123456,"seqId":123457', b"")
    (diff,) = okx.parse(old, 1, 0)
    assert isinstance(diff, DepthDiff)
    assert rule.classify(diff, -1) is Link.LINKS
    assert rule.classify(diff, 500) is Link.LINKS


def test_rule_reset_before_its_ids_waits_then_links() -> None:
    rule = okx.OkxRule()
    # Connection 0 lost 10→15: its reset and the updates after it arrive first.
    assert rule.classify(_diff(15, 3, conn=0), 10) is Link.FUTURE
    assert rule.classify(_diff(3, 5, conn=0), 10) is Link.STALE  # re-sent by conn 1 later
    assert rule.classify(_diff(3, 12, conn=0), 10) is Link.STALE  # never applied to the old book
    assert rule.classify(_diff(10, 15, conn=1), 10) is Link.LINKS
    assert rule.classify(_diff(15, 3, conn=0), 15) is Link.LINKS  # drained from the buffer
    assert rule.classify(_diff(15, 3, conn=1), 3) is Link.STALE
    assert rule.classify(_diff(3, 5, conn=1), 3) is Link.LINKS


def test_rule_forgets_a_waiting_reset_once_the_book_is_past_it() -> None:
    rule = okx.OkxRule()
    assert rule.classify(_diff(15, 3, conn=0), 10) is Link.FUTURE
    # A resync loaded a snapshot of the new sequence (id 7): the reset is history.
    rule.on_snapshot(_snapshot(7, [("1", "1")], [("2", "1")]))
    assert rule.classify(_diff(15, 3, conn=0), 7) is Link.STALE
    assert rule.classify(_diff(7, 9, conn=0), 7) is Link.LINKS

    # Without the hook: an update linking from a connection already past the reset proves it.
    rule = okx.OkxRule()
    assert rule.classify(_diff(15, 3, conn=0), 10) is Link.FUTURE
    assert rule.classify(_diff(7, 9, conn=0), 7) is Link.LINKS
    assert rule.classify(_diff(15, 3, conn=0), 9) is Link.STALE


# --- the rule as a state machine: every row of its table -------------------------------------

RS, RE, RA = okx.RuleState, okx.RuleEvent, okx.RuleAction
WINDOW_NS = 1_000


def _ids(prev: int, seq: int, *, conn: int = 0, recv_ns: int = 0) -> DepthDiff:
    """An update with the ids the parser gives ``prevSeqId``/``seqId`` (no levels)."""
    first, last, prev_id = (-1, -1, -1) if seq < 0 else (prev + 1, seq, prev)
    return DepthDiff(okx.VENUE, SYMBOL, first, last, prev_id, (), (), 0, recv_ns, conn)


def _following() -> okx.OkxRule:
    return okx.OkxRule(straggler_window_ns=WINDOW_NS)


def _after_reset() -> okx.OkxRule:
    """FOLLOWING, 10→15 then the reset 15→3 linked at time 100 (both now stragglers)."""
    rule = _following()
    assert rule.classify(_ids(10, 15, recv_ns=100), 10) is Link.LINKS
    assert rule.classify(_ids(15, 3, recv_ns=100), 15) is Link.LINKS
    return rule


def _waiting() -> okx.OkxRule:
    """RESET_WAITING: connection 0 sent the reset 15→3 at time 0 while the book is at 10."""
    rule = _following()
    assert rule.classify(_ids(15, 3, conn=0), 10) is Link.FUTURE
    return rule


def _waiting_after_reset() -> okx.OkxRule:
    """RESET_WAITING with stragglers: after :func:`_after_reset`, reset 8→2 came early."""
    rule = _after_reset()
    assert rule.classify(_ids(8, 2, conn=0, recv_ns=100), 3) is Link.FUTURE
    return rule


def _after_waited_reset() -> okx.OkxRule:
    """FOLLOWING: connection 1 sent the reset 15→3 at time 100 while the book was at 10;
    connection 0 delivered 10→15 at 200 and its copy of the reset, linking, at 300."""
    rule = _following()
    assert rule.classify(_ids(15, 3, conn=1, recv_ns=100), 10) is Link.FUTURE
    assert rule.classify(_ids(10, 15, recv_ns=200), 10) is Link.LINKS
    assert rule.classify(_ids(15, 3, recv_ns=300), 15) is Link.LINKS
    return rule


#: (rule in the state, the input, applied id, event, link, next state, actions, counters
#: ``(resets, stragglers)`` after the input). The link is None for a snapshot.
Row = tuple[
    Callable[[], okx.OkxRule],
    DepthDiff | DepthSnapshot,
    int,
    okx.RuleEvent,
    Link | None,
    okx.RuleState,
    tuple[okx.RuleAction, ...],
    tuple[int, int],
]
SNAP = DepthSnapshot(okx.VENUE, SYMBOL, 7, (("1", "1"),), (("2", "1"),), 50, 0)
F, W = RS.FOLLOWING, RS.RESET_WAITING
# fmt: off
ROWS: list[Row] = [
    (_following, _ids(-1, -1), 10, RE.UNSEQUENCED, Link.LINKS, F, (), (0, 0)),
    (_after_reset, _ids(10, 15, conn=1, recv_ns=500), 3,
     RE.STRAGGLER, Link.STALE, F, (RA.COUNT_STRAGGLER,), (1, 1)),
    # Connection 1's keepalive before its copy of the reset (buffered behind it).
    (_after_waited_reset, _ids(15, 15, conn=1, recv_ns=50), 3,
     RE.OLD_SEQUENCE, Link.STALE, F, (RA.COUNT_STRAGGLER,), (1, 1)),
    (_following, _ids(10, 15), 10, RE.LINKS, Link.LINKS, F, (RA.REMEMBER,), (0, 0)),
    (_following, _ids(15, 15), 15, RE.LINKS, Link.LINKS, F, (RA.REMEMBER,), (0, 0)),
    (_following, _ids(12, 18), 15, RE.COVERS, Link.LINKS, F, (RA.REMEMBER,), (0, 0)),
    (_following, _ids(16, 20), 15, RE.FUTURE, Link.FUTURE, F, (), (0, 0)),
    (_following, _ids(10, 15), 15, RE.STALE, Link.STALE, F, (), (0, 0)),
    (_following, _ids(15, 3), 15, RE.RESET_LINKS, Link.LINKS, F, (RA.RESET,), (1, 0)),
    (_following, _ids(15, 3), 10, RE.RESET_EARLY, Link.FUTURE, W, (RA.WAIT,), (0, 0)),
    (_following, _ids(15, 3), 20, RE.RESET_STALE, Link.STALE, F, (), (0, 0)),
    (_following, SNAP, 7, RE.SNAPSHOT, None, F, (), (0, 0)),
    (_waiting, _ids(-1, -1), 10, RE.UNSEQUENCED, Link.LINKS, W, (), (0, 0)),
    (_waiting_after_reset, _ids(10, 15, conn=1, recv_ns=500), 3,
     RE.STRAGGLER, Link.STALE, W, (RA.COUNT_STRAGGLER,), (1, 1)),
    # Connection 1 had no copy of the reset when it linked, at 100.
    (_waiting_after_reset, _ids(15, 15, conn=1, recv_ns=50), 3,
     RE.OLD_SEQUENCE, Link.STALE, W, (RA.COUNT_STRAGGLER,), (1, 1)),
    (_waiting, _ids(10, 15, conn=1), 10, RE.LINKS, Link.LINKS, W, (RA.REMEMBER,), (0, 0)),
    (_waiting, _ids(8, 12, conn=1), 10, RE.COVERS, Link.LINKS, W, (RA.REMEMBER,), (0, 0)),
    (_waiting, _ids(12, 14, conn=1), 10, RE.FUTURE, Link.FUTURE, W, (), (0, 0)),
    (_waiting, _ids(5, 8, conn=1), 10, RE.STALE, Link.STALE, W, (), (0, 0)),
    (_waiting, _ids(10, 2, conn=1), 10, RE.RESET_LINKS, Link.LINKS, F, (RA.RESET,), (1, 0)),
    (_waiting, _ids(20, 1, conn=1), 10, RE.RESET_EARLY, Link.FUTURE, W, (RA.WAIT,), (0, 0)),
    (_waiting, _ids(9, 1, conn=1), 10, RE.RESET_STALE, Link.STALE, W, (), (0, 0)),
    (_waiting, _ids(15, 3, conn=1), 15,
     RE.WAITING_RESET_LINKS, Link.LINKS, F, (RA.RESET,), (1, 0)),
    (_waiting, _ids(15, 3, conn=1, recv_ns=WINDOW_NS + 1), 15,  # links, however late
     RE.WAITING_RESET_LINKS, Link.LINKS, F, (RA.RESET,), (1, 0)),
    (_waiting, _ids(15, 3, conn=1, recv_ns=WINDOW_NS), 10,
     RE.WAITING_RESET_EARLY, Link.FUTURE, W, (RA.CROSS,), (0, 0)),
    (_waiting, _ids(15, 3, conn=1), 20,  # the book is past it
     RE.WAITING_RESET_PASSED, Link.STALE, F, (RA.RETIRE, RA.COUNT_STRAGGLER), (0, 1)),
    (_waiting, _ids(15, 3, conn=1, recv_ns=WINDOW_NS + 1), 10,  # it waited too long
     RE.WAITING_RESET_PASSED, Link.STALE, F, (RA.RETIRE, RA.COUNT_STRAGGLER), (0, 1)),
    (_waiting, _ids(10, 12, conn=0), 10,
     RE.CROSSED_LINKS, Link.LINKS, F, (RA.RETIRE, RA.REMEMBER), (0, 0)),
    (_waiting, _ids(12, 14, conn=0), 10, RE.CROSSED_FUTURE, Link.FUTURE, W, (), (0, 0)),
    (_waiting, _ids(3, 5, conn=0), 10, RE.CROSSED_STALE, Link.STALE, W, (), (0, 0)),
    (_waiting, SNAP, 7, RE.SNAPSHOT, None, F, (RA.RETIRE,), (0, 0)),
]
# fmt: on


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"{row[0].__name__}-{row[3].name}")
def test_rule_table_row(row: Row) -> None:
    make, given, applied_id, event, link, state, actions, counters = row
    rule = make()
    assert okx.transition(rule.state, event) == (state, actions)
    if isinstance(given, DepthSnapshot):
        assert link is None
        rule.on_snapshot(given)
    else:
        assert rule.event(given, applied_id) is event
        assert okx.LINK_OF[event] is link
        assert rule.classify(given, applied_id) is link
    assert rule.state is state
    assert (rule.resets, rule.stragglers) == counters


def test_rule_table_rows_cover_every_transition() -> None:
    covered = {(make().state, event) for make, _, _, event, *_ in ROWS}
    assert covered == set(okx.TRANSITIONS)
    assert set(okx.LINK_OF) == set(okx.RuleEvent) - {RE.SNAPSHOT}


@pytest.mark.parametrize(
    "event",
    [
        RE.WAITING_RESET_LINKS,
        RE.WAITING_RESET_EARLY,
        RE.WAITING_RESET_PASSED,
        RE.CROSSED_LINKS,
        RE.CROSSED_FUTURE,
        RE.CROSSED_STALE,
    ],
)
def test_rule_events_of_a_waiting_reset_are_errors_while_following(
    event: okx.RuleEvent,
) -> None:
    assert (F, event) not in okx.TRANSITIONS
    with pytest.raises(okx.RuleStateError, match=event.name):
        okx.transition(F, event)


def test_rule_table_has_no_other_undefined_pair() -> None:
    undefined = {(s, e) for s in RS for e in RE} - set(okx.TRANSITIONS)
    assert {s for s, _ in undefined} == {F}
    assert len(undefined) == 6


def test_rule_event_changes_nothing() -> None:
    """Classification is separate from the state change: ``event`` may be asked any number
    of times; only ``classify`` and ``on_snapshot`` move the rule."""
    rule = _waiting()
    before = (rule.state, rule.resets, rule.stragglers)
    for _ in range(3):
        assert rule.event(_ids(15, 3, conn=1), 15) is RE.WAITING_RESET_LINKS
    assert (rule.state, rule.resets, rule.stragglers) == before
    assert rule.classify(_ids(15, 3, conn=1), 15) is Link.LINKS
    assert rule.state is F and rule.resets == 1


def _run(book: SequencedBook, events: list[DepthDiff | DepthSnapshot]) -> list[object]:
    out: list[object] = []
    for i, event in enumerate(events):
        now = 1_000 + i
        if isinstance(event, DepthSnapshot):
            out += book.on_snapshot(event, now)
        else:
            out += book.on_diff(event, now)
    return out


def test_what_a_connection_received_before_its_copy_of_a_linked_reset_is_stale() -> None:
    """Once a reset linked, an update is of the sequence before it when its connection
    received it before its copy of the reset; with no copy of it then, before it linked;
    but not from a connection that had crossed another reset waiting then."""
    rule = _after_waited_reset()  # copies: conn 1 at 100, conn 0 at 300 (linked)
    assert rule.event(_ids(15, 15, conn=1, recv_ns=99), 3) is RE.OLD_SEQUENCE
    assert rule.event(_ids(15, 15, conn=0, recv_ns=299), 3) is RE.OLD_SEQUENCE
    assert rule.event(_ids(15, 15, conn=2, recv_ns=299), 3) is RE.OLD_SEQUENCE, "no copy yet"
    # After its copy, or after the reset linked with none: of the new sequence.
    assert rule.classify(_ids(3, 4, conn=1, recv_ns=101), 3) is Link.LINKS
    assert rule.event(_ids(4, 4, conn=2, recv_ns=301), 4) is RE.LINKS
    # A copy of a pair from before the reset, received after the connection's copy of it:
    # the new sequence's own (ids climbing back), no longer a straggler.
    assert rule.event(_ids(10, 15, conn=1, recv_ns=500), 10) is RE.LINKS
    assert rule.event(_ids(10, 15, conn=2, recv_ns=500), 10) is RE.STRAGGLER

    # Connection 0 crossed the reset 20→5 waiting when connection 1's reset 10→3 linked:
    # connection 0 is past 10→3 since a time not known; what it received is not judged.
    rule = _following()
    assert rule.classify(_ids(20, 5, recv_ns=1), 10) is Link.FUTURE
    assert rule.classify(_ids(10, 3, conn=1, recv_ns=2), 10) is Link.LINKS
    assert rule.event(_ids(20, 5, recv_ns=1), 3) is RE.RESET_EARLY
    assert rule.event(_ids(12, 14, conn=2, recv_ns=1), 3) is RE.OLD_SEQUENCE


def test_the_rule_knows_the_connections_past_the_reset_that_linked() -> None:
    """The connections past the last linked reset: the linking one, those whose copy came
    while it waited, and those whose copy was dropped while another reset waited."""
    rule = _after_waited_reset()
    assert rule.past_reset() == {0, 1}  # of the linked 15→3
    assert rule.classify(_ids(8, 2, recv_ns=400), 3) is Link.FUTURE  # waits
    assert rule.classify(_ids(8, 2, conn=1, recv_ns=410), 3) is Link.FUTURE
    assert rule.classify(_ids(2, 1, conn=1, recv_ns=420), 3) is Link.STALE
    assert rule.classify(_ids(3, 8, conn=2, recv_ns=430), 3) is Link.LINKS
    assert rule.classify(_ids(8, 2, recv_ns=400), 8) is Link.LINKS
    assert rule.past_reset() == {0, 1}
    assert rule.classify(_ids(2, 1, conn=2, recv_ns=440), 2) is Link.LINKS
    assert rule.past_reset() == {1, 2}, "conn 1's copy came before it linked; conn 0 has none"


def test_doc_example_through_the_arbiter_with_a_late_duplicate_of_the_reset() -> None:
    """snapshot -1→10, update 10→15, keepalive 15→15, reset 15→3, update 3→5 (§6), on two
    connections, the second one slower."""
    rule = okx.OkxRule()
    book = SequencedBook(KEY, rule, checksum=okx.book_checksum)
    for conn in (0, 1):
        book.on_connection(conn, True, 0)
    snap = _snapshot(10, [("100", "1"), ("99", "2")], [("101", "1"), ("102", "3")])
    u15_bids: list[Level] = [("100", "4")]
    u15_asks: list[Level] = [("101", "0")]
    reset_bids: list[Level] = [("99", "0"), ("98", "5")]
    reset_asks: list[Level] = [("103", "1")]
    u5_asks: list[Level] = [("101.5", "2")]
    events: list[DepthDiff | DepthSnapshot] = [
        snap,
        _diff(10, 15, conn=0, bids=u15_bids, asks=u15_asks),
        _diff(10, 15, conn=1, bids=u15_bids, asks=u15_asks),
        _diff(15, 15, conn=0),
        _diff(15, 3, conn=0, bids=reset_bids, asks=reset_asks),
        _diff(15, 15, conn=1),  # the slower connection's keepalive, after the reset
        _diff(3, 5, conn=0, asks=u5_asks),
        _diff(15, 3, conn=1, bids=reset_bids, asks=reset_asks),  # late copy: not a gap
        _diff(3, 5, conn=1, asks=u5_asks),
        _diff(5, 6, conn=1, bids=[("100", "0")]),
        _diff(5, 6, conn=0, bids=[("100", "0")]),
    ]
    out = _run(book, events)
    assert not [e for e in out if isinstance(e, SnapshotWanted)]
    assert not [e for e in out if isinstance(e, StatusChange) and e.state is not SymbolState.LIVE]
    deltas = [e for e in out if isinstance(e, BookDelta)]
    assert [d.venue_id for d in deltas] == [15, 15, 3, 5, 6]
    assert [d.seq for d in deltas] == [1, 2, 3, 4, 5]
    assert sum(isinstance(e, BookReset) for e in out) == 1
    assert book.applied_id == 6 and book.has_book and book.pending == 0
    assert book.stats.gaps == 0
    # The arbiter counts copies with ids at or below its snapshot's as "stale", not
    # "duplicates"; after the reset, copies 15→3 and 3→5 are below the snapshot's id 10.
    assert book.stats.duplicates + book.stats.stale == 5
    assert book.stats.conn(0).first_wins == 4 and book.stats.conn(1).first_wins == 1
    assert rule.resets == 1
    assert book.book.bids() == [("98", "5")]
    assert book.book.asks() == [("101.5", "2"), ("102", "3"), ("103", "1")]


def test_a_reset_arriving_before_its_ids_waits_for_the_other_connection() -> None:
    """Connection 0 lost 10→15 and delivers the reset first; connection 1 fills the hole."""
    book = SequencedBook(KEY, okx.OkxRule(), checksum=okx.book_checksum)
    for conn in (0, 1):
        book.on_connection(conn, True, 0)
    u15: list[Level] = [("100", "4")]
    reset: list[Level] = [("98", "5")]
    u5: list[Level] = [("97", "1")]
    u8: list[Level] = [("100", "0")]
    out = _run(
        book,
        [
            _snapshot(10, [("100", "1")], [("101", "1")]),
            _diff(15, 3, conn=0, bids=reset),
            _diff(3, 5, conn=0, bids=u5),
            _diff(10, 15, conn=1, bids=u15),
            _diff(15, 3, conn=1, bids=reset),
            _diff(3, 5, conn=1, bids=u5),
            _diff(5, 8, conn=0, bids=u8),
            _diff(5, 8, conn=1, bids=u8),
        ],
    )
    assert not [e for e in out if isinstance(e, SnapshotWanted)]
    assert [e.venue_id for e in out if isinstance(e, BookDelta)] == [15, 3, 5, 8]
    assert book.applied_id == 8 and book.pending == 0 and book.stats.gaps == 0
    assert book.book.bids() == [("98", "5"), ("97", "1")]


def _two_connections(events: list[DepthDiff | DepthSnapshot]) -> tuple[SequencedBook, list[object]]:
    """A book on connections 0 and 1 that received ``events`` in turn, 1 ms apart (each
    frame its own receive time), without asking for a snapshot; and what it returned."""
    return _connections(2, events)


def _connections(
    n_conns: int, events: list[DepthDiff | DepthSnapshot]
) -> tuple[SequencedBook, list[object]]:
    """:func:`_two_connections` on connections 0 to ``n_conns - 1``."""
    book = SequencedBook(KEY, okx.OkxRule(), checksum=okx.book_checksum)
    for conn in range(n_conns):
        book.on_connection(conn, True, 0)
    arrivals = [
        msgspec.structs.replace(e, recv_ns=i * 1_000_000) if isinstance(e, DepthDiff) else e
        for i, e in enumerate(events)
    ]
    out = _run(book, arrivals)
    assert not [e for e in out if isinstance(e, SnapshotWanted)]
    return book, out


def test_an_update_a_connection_received_before_its_reset_is_of_the_old_sequence() -> None:
    """Connection 1 lost 10→11 and 11→12: it buffers 12→13, then its reset 13→3 waits. When
    connection 0 fills the hole, 12→13 (received before connection 1's reset) is applied as
    of the old sequence, and the reset after it."""
    u11: list[Level] = [("100", "2")]
    u12: list[Level] = [("100", "3")]
    u13: list[Level] = [("100", "4")]
    reset: list[Level] = [("99", "5")]
    book, out = _two_connections(
        [
            _snapshot(10, [("100", "1")], [("101", "1")]),
            _diff(12, 13, conn=1, bids=u13),
            _diff(13, 3, conn=1, bids=reset),
            _diff(10, 11, conn=0, bids=u11),
            _diff(11, 12, conn=0, bids=u12),
            _diff(12, 13, conn=0, bids=u13),
            _diff(13, 3, conn=0, bids=reset),
        ]
    )
    assert [e.venue_id for e in out if isinstance(e, BookDelta)] == [11, 12, 13, 3]
    assert book.applied_id == 3 and book.pending == 0
    assert book.book.bids() == [("100", "4"), ("99", "5")]


def test_a_late_copy_of_the_reset_before_the_last_is_a_straggler() -> None:
    """Two resets in a row (20→12, 12→3): connection 1's late copies of both are stale."""
    book, _ = _two_connections(
        [
            _snapshot(20, [("100", "1")], [("101", "1")]),
            _diff(20, 12, conn=0, bids=[("100", "2")]),
            _diff(12, 3, conn=0, bids=[("100", "3")]),
            _diff(20, 12, conn=1, bids=[("100", "2")]),
            _diff(12, 3, conn=1, bids=[("100", "3")]),
        ]
    )
    assert book.applied_id == 3 and book.pending == 0 and book.stats.gaps == 0


def test_ids_climbing_back_through_the_old_ones_after_a_reset_are_new() -> None:
    """After the reset 20→3, the new sequence reaches 10→15 again, which linked before it:
    received after the connection's copy of the reset, that is the new sequence's update
    (not a late copy of the old one), applied; a copy of the old one from a connection that
    has not crossed the reset yet is still a straggler."""
    rule = _following()
    arrivals = iter(range(1, 100))

    def ids(prev: int, seq: int, conn: int = 0) -> DepthDiff:
        return _ids(prev, seq, conn=conn, recv_ns=next(arrivals))

    assert rule.classify(ids(10, 15), 10) is Link.LINKS
    assert rule.classify(ids(15, 20), 15) is Link.LINKS
    assert rule.classify(ids(20, 3), 20) is Link.LINKS  # conn 0: the reset
    assert rule.classify(ids(10, 15, conn=1), 3) is Link.STALE  # conn 1: a late old copy
    assert rule.classify(ids(20, 3, conn=1), 3) is Link.STALE  # conn 1 crosses the reset
    assert rule.classify(ids(3, 10), 3) is Link.LINKS
    assert rule.classify(ids(3, 10, conn=1), 10) is Link.STALE
    assert rule.classify(ids(10, 15), 10) is Link.LINKS, "the new sequence's 10→15"
    assert rule.classify(ids(10, 15, conn=1), 15) is Link.STALE
    assert rule.classify(ids(15, 20, conn=1), 15) is Link.LINKS, "conn 1 first this time"
    assert rule.stragglers == 2


def test_a_connection_behind_a_reset_says_nothing_of_a_hole_after_it() -> None:
    """Connection 1 delivers 18→20, the reset 20→12, and loses 12→13; connection 0, behind
    the reset, delivers its copy of 18→20 only then: its id 20 says nothing of the hole at
    13, which its copy of 12→13 fills."""
    book, _ = _two_connections(
        [
            _snapshot(18, [("100", "1")], [("101", "1")], conn=0),
            _snapshot(18, [("100", "1")], [("101", "1")], conn=1),
            _diff(18, 20, conn=1, bids=[("100", "2")]),
            _diff(20, 12, conn=1, bids=[("100", "3")]),
            _diff(13, 14, conn=1, bids=[("100", "5")]),
            _diff(18, 20, conn=0, bids=[("100", "2")]),
            _diff(20, 12, conn=0, bids=[("100", "3")]),
            _diff(12, 13, conn=0, bids=[("100", "4")]),
        ]
    )
    assert book.applied_id == 14 and book.pending == 0 and book.stats.gaps == 0
    assert book.book.bids() == [("100", "5")]


def _keepalive_behind_a_reset(conn_1_resets: bool) -> tuple[SequencedBook, list[object]]:
    """Resets 21→10 and 11→3, keepalive 11→11 between them, on three connections.
    Connection 1 lost 20→21 and 10→11, connection 2 20→21 and 21→10: connection 2's copy
    of 10→11 is stale while 21→10 waits, and once connection 0 links 21→10, connection 2
    lags it at id 11, so its keepalive 11→11 is dropped as of the older sequence (it is
    never applied). Its reset 11→3 is buffered, then connection 1's keepalive, at the same
    buffer position (prevSeqId 11); then, with ``conn_1_resets``, connection 1's copy of the
    reset. Connection 0 fills the hole at 10→11: the reset links."""
    snap = [_snapshot(20, [("100", "1")], [("101", "1")], conn=c) for c in range(3)]
    u21 = _diff(20, 21, bids=[("100", "2")])
    r10: list[Level] = [("99", "1")]
    u11: list[Level] = [("100", "3")]
    r3: list[Level] = [("99", "5")]
    conn_1 = [_diff(11, 11, conn=1)]
    if conn_1_resets:
        conn_1.append(_diff(11, 3, conn=1, bids=r3))
    return _connections(
        3,
        [
            *snap,
            _diff(21, 10, conn=1, bids=r10),
            _diff(10, 11, conn=2, bids=u11),
            u21,
            _diff(11, 11, conn=2),
            _diff(11, 3, conn=2, bids=r3),
            *conn_1,
            _diff(21, 10, bids=r10),
            _diff(10, 11, bids=u11),
            _diff(11, 11),
            _diff(11, 3, bids=r3),
            _diff(3, 4, bids=[("100", "4")]),
        ],
    )


def test_a_keepalive_buffered_behind_the_reset_after_it_is_dropped_once_the_reset_links() -> None:
    """Connection 1's keepalive 11→11, received before its copy of the reset 11→3, is of
    the old sequence once the reset links: dropped, not left waiting for id 11 in the new
    sequence (:func:`_keepalive_behind_a_reset`)."""
    book, out = _keepalive_behind_a_reset(conn_1_resets=True)
    assert [e.venue_id for e in out if isinstance(e, BookDelta)] == [21, 10, 11, 3, 4]
    assert book.applied_id == 4 and book.pending == 0 and book.stats.gaps == 0
    assert book.state is SymbolState.LIVE
    assert book.book.bids() == [("100", "4"), ("99", "5")]


def test_a_keepalive_of_a_connection_that_lost_the_reset_is_dropped_once_it_links() -> None:
    """As above, but connection 1 lost the reset too: its keepalive, received before the
    reset linked while it had delivered no copy of it, is of the old sequence."""
    book, out = _keepalive_behind_a_reset(conn_1_resets=False)
    assert [e.venue_id for e in out if isinstance(e, BookDelta)] == [21, 10, 11, 3, 4]
    assert book.applied_id == 4 and book.pending == 0 and book.stats.gaps == 0
    assert book.book.bids() == [("100", "4"), ("99", "5")]


#: The ids of :func:`_at_different_paces`: keepalives and three resets (20001→19800,
#: 19804→19600, 19600→19400), then ordinary updates.
_PACES_IDS = [
    (-1, 20000),
    (20000, 20001),
    (20001, 19800),
    (19800, 19800),
    (19800, 19800),
    (19800, 19801),
    (19801, 19802),
    (19802, 19803),
    (19803, 19804),
    (19804, 19804),
    (19804, 19600),
    (19600, 19400),
    (19400, 19401),
    (19401, 19402),
    (19402, 19403),
    (19403, 19404),
]


def _at_different_paces(after: list[tuple[int, int]]) -> tuple[SequencedBook, L2Book]:
    """The example hypothesis found for the resets-and-keepalives property, on three
    connections: connection 2 lost 20000→20001 and the first reset, connection 1 lost
    20000→20001. Connection 2's reset 19804→19600 is buffered before connection 1's
    keepalive 19804→19804 (the same buffer position), connection 1's copy of it behind
    them; connections 1 and 2 deliver their copies of 19600→19400 while 19804→19600 waits.
    Connection 0 then delivers everything up to 19401→19402, and ``after`` (connection,
    message index) follows. Returns the book and the venue's book at the last message."""
    snap_bids: list[Level] = [("100", "1")]
    snap_asks: list[Level] = [("200", "1")]

    def message(index: int, conn: int) -> DepthDiff | DepthSnapshot:
        prev, seq = _PACES_IDS[index]
        if index == 0:
            return _snapshot(seq, snap_bids, snap_asks, conn=conn)
        # A keepalive changes nothing; every other update sets a level of its own.
        bids: list[Level] = [] if prev == seq else [(str(100 - index), str(index))]
        return _diff(prev, seq, conn=conn, bids=bids)

    # (connection, message index), in the order delivered.
    schedule = [(0, 0), (1, 0), (2, 0), (1, 2), (1, 3), (1, 4), (1, 5), (2, 3), (0, 1)]
    schedule += [(1, 6), (1, 7), (1, 8), (2, 4), (2, 9), (2, 10), (1, 9), (1, 10), (1, 11)]
    schedule += [(2, 11), (2, 12), *((0, i) for i in range(2, 14)), *after]
    venue = L2Book()
    venue.load(snap_bids, snap_asks)
    for index in range(1, max(i for _, i in schedule) + 1):
        diff = message(index, 0)
        assert isinstance(diff, DepthDiff)
        venue.apply(diff.bids, diff.asks)
    book, _ = _connections(3, [message(index, conn) for conn, index in schedule])
    return book, venue


def test_resets_and_keepalives_at_different_paces_leave_nothing_buffered() -> None:
    """When connection 0 fills the hole, the reset 19804→19600 links and connection 1's
    keepalive buffered behind it (and its copy of the reset) must go, leaving the book live
    with nothing buffered (:func:`_at_different_paces`)."""
    book, venue = _at_different_paces([])
    assert book.state is SymbolState.LIVE and book.pending == 0
    assert book.applied_id == 19402 and book.stats.gaps == book.stats.resyncs == 0
    assert book.book.bids() == venue.bids() and book.book.asks() == venue.asks()


def test_connections_whose_copies_of_a_reset_came_before_it_linked_still_cover() -> None:
    """Connections 1 and 2 delivered their copies of the resets 19804→19600 (buffered) and
    19600→19400 (dropped while the other waited) before connection 0 linked them: they are
    past both, so their updates are used. Connection 0 loses 19402→19403: theirs fills the
    hole, no gap (:func:`_at_different_paces`)."""
    after = [(1, 12), (1, 13), (2, 13), (1, 14), (2, 14), (0, 15)]
    book, venue = _at_different_paces(after)
    assert book.state is SymbolState.LIVE and book.pending == 0
    assert book.applied_id == 19404 and book.stats.gaps == book.stats.resyncs == 0
    assert book.book.bids() == venue.bids() and book.book.asks() == venue.asks()


def test_a_connection_that_lost_a_reset_is_past_it_with_its_copy_of_the_next() -> None:
    """Connection 1 lost the reset 20000→19800; its late copy of the next reset,
    19800→19600, shows it past both: its next update is used, and fills the hole
    connection 0 left."""
    snap = [_snapshot(20000, [("100", "1")], [("101", "1")], conn=c) for c in (0, 1)]
    r19800: list[Level] = [("99", "1")]
    r19600: list[Level] = [("98", "1")]
    u19601: list[Level] = [("100", "2")]
    book, out = _two_connections(
        [
            *snap,
            _diff(20000, 19800, bids=r19800),
            _diff(19800, 19600, bids=r19600),
            _diff(19800, 19600, conn=1, bids=r19600),
            _diff(19600, 19601, conn=1, bids=u19601),
        ]
    )
    assert [e.venue_id for e in out if isinstance(e, BookDelta)] == [19800, 19600, 19601]
    assert book.applied_id == 19601 and book.pending == 0 and book.stats.gaps == 0
    assert book.book.bids() == [("100", "2"), ("99", "1"), ("98", "1")]


#: The level each message of the reset tests below sets: resets one of their own below
#: the snapshot's, updates a new size at the top.
_STEP_BIDS: dict[int, list[Level]] = {
    19800: [("99", "1")],
    19600: [("98", "1")],
    19400: [("97", "1")],
    19200: [("96", "1")],
    19201: [("100", "2")],
    19401: [("100", "2")],
    19402: [("100", "3")],
}


def _step(prev: int, seq: int, conn: int = 0) -> DepthDiff:
    """Message ``prev``→``seq`` from ``conn``, setting its level of :data:`_STEP_BIDS`."""
    return _diff(prev, seq, conn=conn, bids=_STEP_BIDS[seq])


def _settled(out: list[object]) -> list[int]:
    """The ids of the deltas in ``out``, asserting that no connection was asked to
    reconnect."""
    assert not [e for e in out if isinstance(e, ReconnectWanted)]
    return [e.venue_id for e in out if isinstance(e, BookDelta)]


def _from_20000(events: list[DepthDiff]) -> tuple[SequencedBook, list[object]]:
    """Connections 0 and 1 with their snapshots at 20000, then ``events``."""
    snap = [_snapshot(20000, [("100", "1")], [("101", "1")], conn=c) for c in (0, 1)]
    return _two_connections([*snap, *events])


def test_a_connection_whose_early_copy_of_a_reset_links_later_is_heard_at_the_next() -> None:
    """Connection 1 lost the reset 20000→19800 and delivered its copy of the next one,
    19800→19600, before connection 0 delivered 20000→19800: that copy is the first thing
    it delivers after its snapshot. Once connection 0 links 19800→19600, connection 1 is
    past it and was heard in its sequence: at connection 0's next reset, 19600→19400, it
    lags that reset like any connection heard from, is not taken as silent (asked to
    reconnect), and once its copy of the reset comes, its next update is used."""
    book, out = _from_20000(
        [
            _step(19800, 19600, conn=1),
            _step(20000, 19800),
            _step(19800, 19600),
            _step(19600, 19400),
            _step(19400, 19401),
            _step(19600, 19400, conn=1),
            _step(19400, 19401, conn=1),
            _step(19401, 19402, conn=1),
        ]
    )
    assert _settled(out) == [19800, 19600, 19400, 19401, 19402]
    assert book.applied_id == 19402 and book.pending == 0 and book.stats.gaps == 0
    assert book.book.bids() == [("100", "3"), ("99", "1"), ("98", "1"), ("97", "1")]


#: Connection 0 delivers the resets 20000→19800 and 19800→19600; connection 1 lost them.
_LOST_RESETS = [(20000, 19800), (19800, 19600)]


def test_a_connection_that_lost_resets_leads_the_next_one_from_the_books_id() -> None:
    """Connection 1, behind the two resets it lost, delivers the next one, 19600→19400,
    first: it links to the book's id, so connection 1 is past every reset applied and
    leads the book into it; its next update is used, connection 0's copies are stale."""
    book, out = _from_20000(
        [
            *(_step(prev, seq) for prev, seq in _LOST_RESETS),
            _step(19600, 19400, conn=1),
            _step(19400, 19401, conn=1),
            _step(19600, 19400),
            _step(19400, 19401),
        ]
    )
    assert _settled(out) == [19800, 19600, 19400, 19401]
    assert book.stats.conn(1).first_wins == 2
    assert book.applied_id == 19401 and book.pending == 0 and book.stats.gaps == 0
    assert book.book.bids() == [("100", "2"), ("99", "1"), ("98", "1"), ("97", "1")]


def test_a_connection_that_lost_resets_is_past_a_later_one_it_delivered_first() -> None:
    """Connection 1 lost three resets and delivers the fourth, 19400→19200, while the book
    is at 19600: dropped then (the book has not reached it), but once connection 0 links
    it, connection 1 is past it and its next update is used."""
    book, out = _from_20000(
        [
            *(_step(prev, seq) for prev, seq in _LOST_RESETS),
            _step(19400, 19200, conn=1),
            _step(19600, 19400),
            _step(19400, 19200),
            _step(19200, 19201, conn=1),
        ]
    )
    assert _settled(out) == [19800, 19600, 19400, 19200, 19201]
    assert book.applied_id == 19201 and book.pending == 0 and book.stats.gaps == 0
    assert book.book.bids() == [("100", "2"), ("99", "1"), ("98", "1"), ("97", "1"), ("96", "1")]


def test_a_hole_in_the_new_sequence_is_still_a_gap() -> None:
    book = SequencedBook(KEY, okx.OkxRule(), ArbiterLimits(reorder_window_ns=10))
    book.on_connection(0, True, 0)
    out = _run(
        book,
        [
            _snapshot(10, [("100", "1")], [("101", "1")]),
            _diff(10, 15, bids=[("100", "2")]),
            _diff(15, 3, asks=[("102", "1")]),
            _diff(5, 8, asks=[("102", "2")]),  # 3→5 lost
        ],
    )
    assert book.pending == 1
    out += book.on_timer(10_000)
    assert any(isinstance(e, SnapshotWanted) for e in out)
    assert book.stats.gaps == 1


# --- the real recording ---------------------------------------------------------------------


def _real_events(path: Path) -> list[DepthDiff | DepthSnapshot | Trade | VenueNotice]:
    events: list[DepthDiff | DepthSnapshot | Trade | VenueNotice] = []
    reader = CaptureReader(path)
    for record in reader:
        if record.kind != "ws":
            continue
        for event in okx.parse(record.payload, record.recv_ns, record.conn_id):
            assert isinstance(event, DepthDiff | DepthSnapshot | Trade | VenueNotice)
            events.append(event)
    assert reader.stats.malformed == 0
    return events


def test_real_recording_checksums(real_data: Callable[[str], Path]) -> None:
    """Every book frame of the 2022 recording (3 snapshots, 287 updates, 3 instruments)
    matches its checksum on a book kept with L2Book."""
    events = _real_events(real_data(REAL_PATH))
    books: dict[str, L2Book] = {}
    verified = failed = crossed = 0
    for event in events:
        if isinstance(event, DepthSnapshot):
            book = books.setdefault(event.symbol, L2Book())
            book.load(event.bids, event.asks)
        elif isinstance(event, DepthDiff):
            assert (event.first_id, event.last_id, event.prev_id) == (-1, -1, -1)
            book = books[event.symbol]
            book.apply(event.bids, event.asks)
        else:
            continue
        assert event.checksum is not None
        if okx.book_checksum(book) == event.checksum:
            verified += 1
        else:
            failed += 1
        crossed += book.is_crossed()
    assert (verified, failed, crossed) == (290, 0, 0)
    assert sorted(books) == ["BTC-USD-220527", "BTC-USDT", "UNI-USD-SWAP"]
    assert sum(isinstance(e, DepthSnapshot) for e in events) == 3
    assert sum(isinstance(e, DepthDiff) for e in events) == 287
    assert sum(isinstance(e, Trade) for e in events) == 74
    assert all(e.kind == "ack" for e in events if isinstance(e, VenueNotice))
    assert books["BTC-USDT"].bid_count == 400


def test_real_recording_through_the_arbiter(real_data: Callable[[str], Path]) -> None:
    """The same frames through SequencedBook with OkxRule end with the same books, and the
    arbiter's own checksum verification agrees on every frame."""
    events = _real_events(real_data(REAL_PATH))
    plain: dict[str, L2Book] = {}
    arbiters: dict[str, SequencedBook] = {}
    out: list[object] = []
    for i, event in enumerate(events):
        if not isinstance(event, DepthDiff | DepthSnapshot):
            continue
        arbiter = arbiters.get(event.key)
        if arbiter is None:
            arbiter = arbiters[event.key] = SequencedBook(
                event.key, okx.OkxRule(), checksum=okx.book_checksum
            )
            arbiter.on_connection(event.conn_id, True, i)
        book = plain.setdefault(event.symbol, L2Book())
        if isinstance(event, DepthSnapshot):
            book.load(event.bids, event.asks)
            out += arbiter.on_snapshot(event, i)
        else:
            book.apply(event.bids, event.asks)
            out += arbiter.on_diff(event, i)
    assert not [e for e in out if isinstance(e, SnapshotWanted)]
    assert len(arbiters) == 3
    for key, arbiter in arbiters.items():
        book = plain[key.partition(":")[2]]
        assert arbiter.has_book and arbiter.state is SymbolState.LIVE
        assert arbiter.book.bids() == book.bids() and arbiter.book.asks() == book.asks()
        assert arbiter.stats.gaps == 0 and arbiter.stats.checksum_failed == 0
        assert arbiter.stats.crossed == 0
    assert sum(a.stats.checksum_ok for a in arbiters.values()) == 290
    assert sum(a.stats.updates for a in arbiters.values()) == 287


# --- fuzzing --------------------------------------------------------------------------------


def _received_frames(path: Path) -> Iterator[bytes]:
    """The frames received in an OKX session file (not its connect and sent lines)."""
    for line in path.read_bytes().splitlines():
        stamp, sep, frame = line.partition(b": ")
        if sep and b" " not in stamp:
            yield frame


@functools.cache
def _seeds(real_data: fuzzing.RealData) -> list[bytes]:
    """The sample frames, and up to 3 of each kind (first 40 bytes) of the real session."""
    frames = [DOC_SNAPSHOT, DOC_UPDATE, TRADES, SUBSCRIBED, ERROR, UPGRADE, TICKER, REST_BOOK]
    received = _received_frames(real_data(REAL_PATH))
    return frames + fuzzing.first_of_each_kind(received, lambda frame: frame[:40])


EVENT_TYPES = DepthDiff | DepthSnapshot | Trade | VenueNotice


CONTRACT = fuzzing.ParserContract(
    parse=okx.parse,
    types=EVENT_TYPES,
    bad_frames=BAD_FRAMES,
    seeds=_seeds,
    numbers=fuzzing.VenueNumbers(
        DOC_UPDATE,
        price=b'"8476.97"',
        qty=b'"250"',
        # From the recorded session (cryptofeed).
        real=("30218.8", "0.05426064", "0.0002", "779573", "1", "0"),
        refused=("3.02188e+04", "8476.97e0", "2.5E+2"),
    ),
    snapshot=lambda body: okx.parse_snapshot("BTC-USDT", body, 1),
    bad_snapshots=BAD_SNAPSHOTS,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [
            ("data", 0, "asks"),
            ("data", 0, "bids"),
            ("data", 0, "seqId"),
            ("data", 0, "prevSeqId"),
            ("data", 0, "checksum"),
            ("data", 0, "ts"),
            ("action",),
            ("arg",),
            ("arg", "instId"),
            ("data",),
        ]
    ),
    fuzzing.JSON_VALUES,
)
def test_wrong_types_in_a_book_frame_raise_the_contract_error(
    where: tuple[str | int, ...], value: object
) -> None:
    frame = fuzzing.with_value(DOC_UPDATE, where, value)
    if not fuzzing.accepted(lambda: okx.parse(frame, 1, 0), EVENT_TYPES):
        return
    if where == ("data", 0, "asks"):  # accepted only as a list of string levels
        assert fuzzing.are_string_levels(value, exact=False)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["tradeId", "px", "sz", "side", "ts", "instId"]), fuzzing.JSON_VALUES)
def test_wrong_types_in_a_trade_frame_raise_the_contract_error(field: str, value: object) -> None:
    frame = fuzzing.with_value(TRADES, ("data", 0, field), value)
    if fuzzing.accepted(lambda: okx.parse(frame, 1, 0), Trade):
        assert isinstance(value, str)


# --- layering -------------------------------------------------------------------------------


def test_module_is_pure() -> None:
    probe = (
        "import sys, feeds.okx; "
        "print(sorted(m for m in ('asyncio','websockets','socket','uvloop','httpx') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_reset_buffered_before_the_snapshot_reopens_a_connection_silent_until_then() -> None:
    """Connection 1's 10→11 and reset 11→3 wait for the snapshot; applied after it, the
    reset leaves connection 2, up and silent, of unknown sequence: it is reopened."""
    book = SequencedBook(KEY, okx.OkxRule(), checksum=okx.book_checksum)
    for conn in (0, 1, 2):
        book.on_connection(conn, True, 0)
    book.on_diff(_diff(10, 11, conn=1, bids=[("100", "2")]), 0)
    book.on_diff(_diff(11, 3, conn=1, bids=[("99", "5")]), 0)
    out = book.on_snapshot(_snapshot(10, [("100", "1")], [("101", "1")]), 0)
    assert book.applied_id == 3 and book.pending == 0
    assert [e.conn_id for e in out if isinstance(e, ReconnectWanted)] == [2]
    # Connection 2's subscription was answered before the reset: not a jump.
    assert book.on_snapshot(_snapshot(11, [("100", "2")], [("101", "1")], conn=2), 0) == []
    assert book.applied_id == 3 and book.stats.jumps == 0


def test_a_reset_buffered_from_past_the_rebuilding_snapshot_is_forgotten() -> None:
    """Connection 1 lost 19800→19801 and buffered its reset 19801→19600; the window passes
    and connection 1's resubscription answer at 19600 rebuilds the book. The reset came
    before that answer on its stream, waiting for ids past the snapshot it never delivers:
    forgotten with it, the book stays live at 19600 instead of resyncing at every rebuild."""
    book = SequencedBook(
        KEY, okx.OkxRule(), ArbiterLimits(reorder_window_ns=10), checksum=okx.book_checksum
    )
    for conn in (0, 1):
        book.on_connection(conn, True, 0)
    _run(
        book,
        [
            *(_snapshot(20000, [("100", "1")], [("101", "1")], conn=c) for c in (0, 1)),
            _diff(20000, 19800, bids=[("99", "1")]),
            _diff(20000, 19800, conn=1, recv_ns=1, bids=[("99", "1")]),
            _diff(19801, 19600, conn=1, recv_ns=2, asks=[("201", "0.001")]),
        ],
    )
    assert any(isinstance(e, SnapshotWanted) for e in book.on_timer(10_000))
    answer = _snapshot(19600, [("100", "1"), ("99", "1")], [("101", "1"), ("201", "0.001")], 1)
    out = book.on_snapshot(answer, 10_001)
    assert [e.epoch for e in out if isinstance(e, BookReset)] == [2]
    assert book.state is SymbolState.LIVE and book.pending == 0 and book.has_book
    out = book.on_timer(20_000) + book.on_timer(30_000)
    assert not [e for e in out if isinstance(e, SnapshotWanted | StatusChange)]
    assert book.applied_id == 19600 and book.stats.gaps == 1
