"""Kraken WebSocket v2 adapter: messages, parsing with exact decimal text, the CRC32 book
checksum on the documented vectors and the recorded session, and fuzzing (any bytes in →
events or VenueContractError out, nothing else)."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from feeds import kraken
from gateway.core.book import L2Book
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import InstrumentPrecision
from gateway.core.model import Level
from gateway.core.model import Side
from gateway.core.model import Trade
from gateway.core.model import VenueContractError
from gateway.core.model import VenueEvent
from gateway.core.model import VenueNotice

from . import fuzzing
from .fuzzing import replaced
from .sessions import SessionBooks

RealData = Callable[[str], Path]

SESSION = "kraken/flashbook/live-btc-eth.ndjson"
VECTORS = "kraken/vectors/kraken_v2_checksum_vectors.jsonl"
ASSET_PAIRS = "kraken/flashbook/assetpairs.json"

# The Kraken docs' MATIC/USD example (exchange-protocols.md §5): price precision 4, qty 8.
MATIC_SNAPSHOT = (
    b'{"channel":"book","type":"snapshot","data":[{"symbol":"MATIC/USD",'
    b'"bids":[{"price":0.5666,"qty":4831.75496356},{"price":0.5665,"qty":6658.22734739},'
    b'{"price":0.5664,"qty":18724.91513344},{"price":0.5663,"qty":11563.92544914},'
    b'{"price":0.5662,"qty":14006.65365711},{"price":0.5661,"qty":17454.85679807},'
    b'{"price":0.566,"qty":18097.1547},{"price":0.5659,"qty":33644.89175666},'
    b'{"price":0.5658,"qty":148.3464},{"price":0.5657,"qty":606.70854372}],'
    b'"asks":[{"price":0.5668,"qty":4410.79769741},{"price":0.5669,"qty":4655.40412487},'
    b'{"price":0.567,"qty":49844.89424998},{"price":0.5671,"qty":24306.41678},'
    b'{"price":0.5672,"qty":29783.25223475},{"price":0.5673,"qty":57234.71239278},'
    b'{"price":0.5674,"qty":45065.04744},{"price":0.5675,"qty":5912.76380354},'
    b'{"price":0.5676,"qty":42514.92434778},{"price":0.5677,"qty":36304.0847022}],'
    b'"checksum":2439117997}]}'
)
MATIC_UPDATE = (
    b'{"channel":"book","type":"update","data":[{"symbol":"MATIC/USD",'
    b'"bids":[{"price":0.5657,"qty":1098.3947558}],"asks":[],'
    b'"checksum":2114181697,"timestamp":"2023-10-06T17:35:55.440295Z"}]}'
)
UPDATE = (
    b'{"channel":"book","type":"update","data":[{"symbol":"ETH/USD","bids":[{"price":1773.90,'
    b'"qty":0.00000000},{"price":1773.70,"qty":28.18950592}],"asks":[],"checksum":188427729,'
    b'"timestamp":"2026-07-07T23:00:04.000677Z"}]}'
)
TRADE = (
    b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell",'
    b'"price":63501.6,"qty":0.00185211,"ord_type":"limit","trade_id":103436769,'
    b'"timestamp":"2026-07-07T23:00:05.562702Z"}]}'
)


# --- the CRC and the documented vectors ---------------------------------------------------


def test_crc32_sanity() -> None:
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_docs_btc_usd_vector_3310070434() -> None:
    asks = [
        ("45285.2", "0.00100000"),
        ("45286.4", "1.54571953"),
        ("45286.6", "1.54571109"),
        ("45289.6", "1.54560911"),
        ("45290.2", "0.15890660"),
        ("45291.8", "1.54553491"),
        ("45294.7", "0.04454749"),
        ("45296.1", "0.35380000"),
        ("45297.5", "0.09945542"),
        ("45299.5", "0.18772827"),
    ]
    bids = [
        ("45283.5", "0.10000000"),
        ("45283.4", "1.54582015"),
        ("45282.1", "0.10000000"),
        ("45281.0", "0.10000000"),
        ("45280.3", "1.54592586"),
        ("45279.0", "0.07990000"),
        ("45277.6", "0.03310103"),
        ("45277.5", "0.30000000"),
        ("45277.3", "1.54602737"),
        ("45276.6", "0.15445238"),
    ]
    assert kraken.checksum_levels(bids, asks) == 3310070434
    assert kraken.checksum_levels(bids, asks, 1, 8) == 3310070434
    # The same levels as a float-minded producer would print them: the precision restores them.
    short = [(p.rstrip("0").rstrip("."), q.rstrip("0")) for p, q in bids]
    assert kraken.checksum_levels(short, asks, 1, 8) == 3310070434
    assert kraken.checksum_levels(short, asks) != 3310070434


def _book_of(frame: bytes) -> tuple[L2Book, int | None]:
    (snap,) = kraken.parse(frame, 1, 0)
    assert isinstance(snap, DepthSnapshot)
    book = L2Book()
    book.load(snap.bids, snap.asks)
    return book, snap.checksum


def test_docs_matic_vectors_need_the_instrument_precision() -> None:
    book, expected = _book_of(MATIC_SNAPSHOT)
    assert expected == 2439117997
    assert kraken.checksum(book, 4, 8) == 2439117997
    assert kraken.checksum_function(4, 8)(book) == 2439117997
    # The wire digits alone ("0.566", "18097.1547") are not enough: the documented negative.
    assert kraken.book_checksum(book) == 3830085102
    (diff,) = kraken.parse(MATIC_UPDATE, 2, 0)
    assert isinstance(diff, DepthDiff) and diff.checksum == 2114181697
    book.apply(diff.bids, diff.asks)
    kraken.truncate_to_depth(book, 10)
    assert kraken.checksum(book, 4, 8) == 2114181697


def test_docs_v1_vector_974947235() -> None:
    asks = [(f"0.{5005 + 5 * i:05d}", "0.00000500") for i in range(10)]
    assert asks[0] == ("0.05005", "0.00000500") and asks[-1][0] == "0.05050"
    bid_prices = ["0.05000", "0.04995", "0.04990", "0.04980", "0.04975"]
    bid_prices += ["0.04970", "0.04965", "0.04960", "0.04955", "0.04950"]
    bids = [(p, "0.00000500") for p in bid_prices]
    assert kraken.checksum_levels(bids, asks) == 974947235
    assert kraken.checksum_levels(bids, asks, 5, 8) == 974947235


def test_checksum_rendering_edge_cases() -> None:
    assert kraken.checksum_levels([], []) == 0  # an empty book
    # Exponent-form strings are rendered in fixed point, never "5E-6".
    exp = kraken.checksum_levels([("0.05", "5E-6")], [], 2, 8)
    assert exp == kraken.checksum_levels([("0.05", "0.00000500")], [])
    assert exp == zlib.crc32(b"5500")
    # More digits than the precision: rounded like the venue renders them.
    assert kraken.checksum_levels([("1.25", "1")], [], 1, 0) == zlib.crc32(b"121")
    # Only the top 10 of each side count.
    asks = [(str(100 + i), "1") for i in range(12)]
    assert kraken.checksum_levels([], asks) == kraken.checksum_levels([], asks[:10])
    with pytest.raises(ValueError):
        kraken.checksum_levels([], [], -1, 8)
    with pytest.raises(ValueError):
        kraken.checksum_function(2, -1)
    assert kraken.checksum_function() is kraken.book_checksum


def test_checksum_vectors_file(real_data: RealData) -> None:
    verified: Counter[str] = Counter()
    books: dict[str, L2Book] = {}
    with real_data(VECTORS).open(encoding="utf-8") as lines:
        for line in lines:
            vector = json.loads(line)
            (event,) = kraken.parse(vector["raw"].encode(), 1, 0)
            assert isinstance(event, DepthSnapshot | DepthDiff)
            book = books.setdefault(vector["group"], L2Book())
            if isinstance(event, DepthSnapshot):
                assert vector["step"] == 0
                book.load(event.bids, event.asks)
            else:
                book.apply(event.bids, event.asks)
            kraken.truncate_to_depth(book, 10)
            assert kraken.book_checksum(book) == event.checksum, vector["group"]
            verified[vector["group"]] += 1
    assert verified == {"kraken-docs-btcusd": 1, "algo-usd-live-2024-10-03": 2, "gst-usd": 1}


# --- the recorded session -----------------------------------------------------------------


def _replay(
    path: Path, checksum: Callable[[L2Book, str], int], truncate: bool
) -> tuple[int, int, int | None, Counter[str]]:
    """Replay the session frame by frame: (verified, failed, first failing line, counts)."""
    session = SessionBooks()
    counts = session.counts
    ok = failed = 0
    first_failure: int | None = None
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            for event in kraken.parse(line.rstrip(b"\n"), number, 7):
                assert event.conn_id == 7
                if isinstance(event, DepthSnapshot | DepthDiff):
                    book = session.on_book(event)
                    if truncate:
                        kraken.truncate_to_depth(book, 10)
                    if checksum(book, event.symbol) == event.checksum:
                        ok += 1
                    else:
                        failed += 1
                        first_failure = first_failure or number
                else:
                    counts[type(event).__name__] += 1
    return ok, failed, first_failure, counts


def test_recorded_session_every_checksum_matches(real_data: RealData) -> None:
    ok, failed, _, counts = _replay(
        real_data(SESSION), lambda book, _: kraken.book_checksum(book), truncate=True
    )
    assert (ok, failed) == (2962, 0)
    assert counts == {
        "DepthSnapshot BTC/USD": 1,
        "DepthDiff BTC/USD": 561,
        "DepthSnapshot ETH/USD": 1,
        "DepthDiff ETH/USD": 2399,
        "Trade": 17,
        "VenueNotice": 5,  # the status frame and 4 subscribe acks
    }


def test_recorded_session_with_assetpairs_precisions(real_data: RealData) -> None:
    precisions = kraken.precisions_from_assetpairs(real_data(ASSET_PAIRS).read_bytes())
    assert precisions["BTC/USD"] == precisions["XBT/USD"] == (1, 8)
    assert precisions["ETH/USD"] == (2, 8)
    functions = {symbol: kraken.checksum_function(*p) for symbol, p in precisions.items()}
    ok, failed, _, _ = _replay(
        real_data(SESSION), lambda book, symbol: functions[symbol](book), truncate=True
    )
    assert (ok, failed) == (2962, 0)


def test_recorded_session_without_truncation_fails(real_data: RealData) -> None:
    ok, failed, first, _ = _replay(
        real_data(SESSION), lambda book, _: kraken.book_checksum(book), truncate=False
    )
    assert (ok, failed, first) == (1170, 1792, 25)


def test_recorded_session_numbers_are_exact_text(real_data: RealData) -> None:
    with real_data(SESSION).open("rb") as lines:
        frames = [line.rstrip(b"\n") for line in lines]
    snaps = [e for f in frames[:20] for e in kraken.parse(f, 1, 0) if isinstance(e, DepthSnapshot)]
    btc = next(s for s in snaps if s.symbol == "BTC/USD")
    assert btc.bids[:3] == (
        ("63501.6", "0.63889204"),
        ("63500.9", "0.00005100"),
        ("63499.0", "0.78741286"),
    )
    eth = next(s for s in snaps if s.symbol == "ETH/USD")
    assert eth.bids[1] == ("1774.00", "0.31278143")
    (trade,) = [e for f in frames if b'"trade_id":103436768' in f for e in kraken.parse(f, 1, 0)]
    assert trade == Trade(
        "kraken", "BTC/USD", 103436768, "63501.9", "0.00004134", Side.BUY, 1783465204590, 1, 0
    )


# --- messages -----------------------------------------------------------------------------


def test_outgoing_messages() -> None:
    sub = [json.loads(m) for m in kraken.subscribe_messages(["BTC/USD", "ETH/USD", "BTC/USD"])]
    assert sub == [
        {
            "method": "subscribe",
            "params": {
                "channel": "book",
                "symbol": ["BTC/USD", "ETH/USD"],
                "depth": 10,
                "snapshot": True,
            },
        },
        {
            "method": "subscribe",
            "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"], "snapshot": False},
        },
    ]
    unsub = [json.loads(m) for m in kraken.unsubscribe_messages(["BTC/USD"], 25)]
    assert unsub == [
        {
            "method": "unsubscribe",
            "params": {"channel": "book", "symbol": ["BTC/USD"], "depth": 25},
        },
        {"method": "unsubscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}},
    ]
    resub = [json.loads(m) for m in kraken.resubscribe_messages("ETH/USD")]
    assert [m["method"] for m in resub] == ["unsubscribe", "subscribe"]
    assert all(m["params"]["channel"] == "book" for m in resub)
    assert resub[1]["params"] == {
        "channel": "book",
        "symbol": ["ETH/USD"],
        "depth": 10,
        "snapshot": True,
    }
    assert kraken.ping_message() == b'{"method":"ping","req_id":1}'
    assert json.loads(kraken.ping_message(101)) == {"method": "ping", "req_id": 101}
    assert kraken.connect_url("wss://ws.kraken.com/v2", ["BTC/USD"]) == "wss://ws.kraken.com/v2"
    assert kraken.WS_ENDPOINTS == ("wss://ws.kraken.com/v2", "wss://beta-ws.kraken.com/v2")
    with pytest.raises(ValueError):
        kraken.subscribe_messages([])
    with pytest.raises(ValueError):
        kraken.subscribe_messages("BTC/USD")
    with pytest.raises(ValueError):
        kraken.subscribe_messages(["BTC/USD"], 20)
    with pytest.raises(ValueError):
        kraken.resubscribe_messages("BTC/USD", 0)


def test_precisions() -> None:
    body = (
        b'{"error":[],"result":{"XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD",'
        b'"pair_decimals":1,"lot_decimals":8},"XDGUSD":{"wsname":"XDG/USD","pair_decimals":7,'
        b'"lot_decimals":8},"NOWS":{"pair_decimals":1,"lot_decimals":1}}}'
    )
    assert kraken.precisions_from_assetpairs(body) == {
        "BTC/USD": (1, 8),
        "XBT/USD": (1, 8),
        "DOGE/USD": (7, 8),
        "XDG/USD": (7, 8),
    }
    for bad in (
        b'{"error":["EQuery:Unknown asset pair"]}',
        b'{"error":[],"result":{"X":{"wsname":"A/B","pair_decimals":-1,"lot_decimals":8}}}',
        b'{"error":[],"result":{"X":{"wsname":"A/B","pair_decimals":"1","lot_decimals":8}}}',
        b"<html>",
    ):
        with pytest.raises(VenueContractError):
            kraken.precisions_from_assetpairs(bad)
    instrument = (
        b'{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":[{"symbol":'
        b'"BTC/USD","base":"BTC","quote":"USD","price_precision":1,"qty_precision":8}]}}'
    )
    assert kraken.precisions_from_instrument(instrument) == {"BTC/USD": (1, 8)}
    with pytest.raises(VenueContractError):
        kraken.precisions_from_instrument(UPDATE)
    assert kraken.parse(instrument, 1, 0) == [InstrumentPrecision("kraken", "BTC/USD", 1, 8, 1, 0)]


# --- parsing ------------------------------------------------------------------------------


def test_update_keeps_exact_text_and_order() -> None:
    (diff,) = kraken.parse(UPDATE, 10, 3)
    assert diff == DepthDiff(
        "kraken",
        "ETH/USD",
        -1,
        -1,
        -1,
        (("1773.90", "0.00000000"), ("1773.70", "28.18950592")),
        (),
        1783465204000,
        10,
        3,
        188427729,
    )
    twice = (
        b'{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[],"asks":['
        b'{"price":2.5,"qty":1.0},{"price":2.5,"qty":0},{"price":2.5,"qty":0.000003}],'
        b'"checksum":0,"timestamp":"2024-01-01T00:00:00Z"}]}'
    )
    (diff,) = kraken.parse(twice, 1, 0)
    assert isinstance(diff, DepthDiff)
    assert diff.asks == (("2.5", "1.0"), ("2.5", "0"), ("2.5", "0.000003"))
    book = L2Book()
    book.apply(diff.bids, diff.asks)
    assert book.asks() == [("2.5", "0.000003")]  # applied in order: the last one wins


def test_one_event_per_data_element() -> None:
    frame = (
        b'{"channel":"book","type":"update","data":['
        b'{"symbol":"A/USD","bids":[{"price":1,"qty":1}],"asks":[],"checksum":1,'
        b'"timestamp":"2024-01-01T00:00:00.5Z"},'
        b'{"symbol":"B/USD","bids":[],"asks":[{"price":2,"qty":0.00000500}],"checksum":2}]}'
    )
    first, second = kraken.parse(frame, 1, 0)
    assert isinstance(first, DepthDiff) and isinstance(second, DepthDiff)
    assert (first.symbol, first.event_ms, first.bids) == ("A/USD", 1704067200500, (("1", "1"),))
    assert (second.symbol, second.event_ms, second.asks) == ("B/USD", 0, (("2", "0.00000500"),))


def test_trades_and_control_frames() -> None:
    (trade,) = kraken.parse(TRADE, 5, 1)
    assert trade == Trade(
        "kraken", "BTC/USD", 103436769, "63501.6", "0.00185211", Side.SELL, 1783465205562, 5, 1
    )
    assert kraken.parse(b'{"channel":"heartbeat"}', 1, 0) == []
    assert kraken.parse(b'{"method":"pong","req_id":101,"time_in":"x","time_out":"y"}', 1, 0) == []
    assert kraken.parse(b'{"channel":"ticker","type":"update","data":[{}]}', 1, 0) == []
    (status,) = kraken.parse(
        b'{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online",'
        b'"api_version":"v2","connection_id":4421894013101914413}]}',
        1,
        0,
    )
    assert status == VenueNotice("kraken", "status", "system online api v2", False, 1, 0)
    (ack,) = kraken.parse(
        b'{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,'
        b'"symbol":"BTC/USD"},"success":true,"time_in":"a","time_out":"b"}',
        1,
        0,
    )
    assert ack == VenueNotice("kraken", "ack", "subscribe book BTC/USD", False, 1, 0)
    (err,) = kraken.parse(
        b'{"error":"Currency pair not supported","method":"subscribe","success":false,'
        b'"symbol":"NOPE/USD","time_in":"a","time_out":"b"}',
        1,
        0,
    )
    assert isinstance(err, VenueNotice) and err.kind == "error"
    assert "NOPE/USD" in err.detail and "not supported" in err.detail
    (rate,) = kraken.parse(b'{"Error":"Exceeded msg rate"}', 1, 0)
    assert isinstance(rate, VenueNotice) and rate.kind == "error"


#: Frames kraken.parse refuses with VenueContractError (tests/feeds/test_contract.py).
BAD_FRAMES = [
    *fuzzing.NOT_FRAMES,
    b'{"channel":"book","type":"update"}',
    b'{"channel":"book","type":"update","data":[]}',
    b'{"channel":"book","type":"delta","data":[{"symbol":"X/Y"}]}',
    replaced(UPDATE, b'"symbol":"ETH/USD"', b'"symbol":""'),
    *fuzzing.each_replaced(
        UPDATE,
        b"1773.70",
        [
            b'"1773.70"',  # a string where a number is due
            b"-1773.70",
            b"0",  # a zero price
            b"true",
            b"null",
            b"NaN",
            b"Infinity",
            b"1e400",
            b"1e999999999",
            b"1e-999999999",
            b"9" * 400,
        ],
    ),
    replaced(UPDATE, b"28.18950592", b"-0"),
    *fuzzing.each_replaced(
        UPDATE, b"188427729", [b"4294967296", b"-1", b"1.5", b"99999999999999999999999999"]
    ),
    replaced(UPDATE, b"2026-07-07T23:00:04.000677Z", b"yesterday"),
    replaced(UPDATE, b"2026-07-07T23:00:04.000677Z", b"2026-07-07T23:00:04"),  # no zone
    replaced(UPDATE, b'"bids":[', b'"bids":[[1,2],'),
    replaced(TRADE, b'"side":"sell"', b'"side":"short"'),
    *fuzzing.each_replaced(
        TRADE, b"103436769", [b'"103436769"', b"99999999999999999999999", b"-5"]
    ),
    replaced(TRADE, b"63501.6", b"0.0"),
    b'{"channel":"trade","type":"update"}',
    b'{"channel":"status","type":"update","data":{}}',
    b'{"channel":"book","type":"update","data":[{"symbol":"A","bids":[{"price":1}]}]}',
    b'{"channel":"book","type":"update","data":[{"symbol":"\xff\xfe"}]}',
]


# --- fuzzing ------------------------------------------------------------------------------


@cache
def _real_frames(path: Path) -> tuple[bytes, ...]:
    frames: list[bytes] = [MATIC_SNAPSHOT, MATIC_UPDATE, UPDATE, TRADE]
    with path.open("rb") as lines:
        for _, line in zip(range(60), lines, strict=False):
            frames.append(line.rstrip(b"\n"))
    return tuple(frames)


_EVENT_TYPES = DepthDiff | DepthSnapshot | Trade | VenueNotice


def _checked(events: list[VenueEvent]) -> list[VenueEvent]:
    """``events``, after checking what Kraken adds to :func:`fuzzing.check_events`: numbers
    in fixed point, checksums unsigned 32-bit."""
    for event in events:
        if isinstance(event, DepthDiff | DepthSnapshot):
            levels: tuple[Level, ...] = event.bids + event.asks
            for price, qty in levels:
                assert "e" not in price.lower() and "e" not in qty.lower()
            if event.checksum is not None:
                assert 0 <= event.checksum < 1 << 32
    return events


CONTRACT = fuzzing.ParserContract(
    parse=lambda raw, recv_ns, conn_id: _checked(kraken.parse(raw, recv_ns, conn_id)),
    types=_EVENT_TYPES,
    bad_frames=BAD_FRAMES,
    seeds=lambda real_data: _real_frames(real_data(SESSION)),
    numbers=fuzzing.VenueNumbers(
        UPDATE,
        price=b"1773.70",
        qty=b"28.18950592",
        # From the recorded session: JSON numbers in fixed point at the pair's precision.
        real=("63501.6", "63499.0", "1.30271205", "0.00005100", "0.00000000"),
        # JSON numbers outside the grammar, and the decimal as a string.
        refused=("5e-06", "4.8E-7", "1.5E+3", "1773.70e0", "-1773.70", "-0.0"),
        json_numbers=True,
    ),
)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**40), 10**40)
    | st.floats()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


def _encode(value: object) -> str:
    """JSON text of ``value``; non-finite floats become the NaN/Infinity literals, and
    Decimals are written as JSON numbers (exponent form included)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.sampled_from(["price", "qty"]))
def test_wrong_types_in_a_level_raise_the_contract_error(value: object, field: str) -> None:
    frame = json.loads(UPDATE)
    frame["data"][0]["bids"][1][field] = "@@"
    text = _encode(frame).replace('"@@"', _encode(value), 1)
    try:
        (diff,) = kraken.parse(text.encode(), 1, 0)
    except VenueContractError:
        return
    # Accepted only for a non-negative (price: positive) number in fixed point, kept exactly.
    assert isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    text = _encode(value)
    assert "e" not in text.lower() and not text.startswith("-")
    assert isinstance(diff, DepthDiff)
    fuzzing.check_events(_checked([diff]), DepthDiff)
    assert diff.bids[1][0 if field == "price" else 1] == text


@settings(max_examples=200, deadline=None)
@given(_JSON)
def test_wrong_types_for_the_bids_raise_the_contract_error(value: object) -> None:
    frame = json.loads(UPDATE)
    frame["data"][0]["bids"] = value
    if fuzzing.accepted(
        lambda: _checked(kraken.parse(_encode(frame).encode(), 1, 0)), _EVENT_TYPES
    ):
        # Accepted only when the value is a list of {price, qty} objects.
        assert isinstance(value, list)
        assert all(isinstance(lv, dict) and {"price", "qty"} <= lv.keys() for lv in value)
