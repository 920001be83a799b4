"""Binance USD-M adapter: URLs of the 2026 endpoint split (COIN-M's beside them: the same
split on other hosts), parsing of every frame kind, the REST snapshot, the real 2021
cryptofeed recording through the arbiter (the futures rule syncs all 4 symbols with 0 gaps;
the spot rule does not), connections that batch the same ids differently, and fuzzing (any
bytes in → events or VenueContractError out)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from feeds import binance_coinm as coinm
from feeds import binance_usdm as usdm
from feeds.binance import BinanceSpotRule
from feeds.binance_usdm import BinanceFuturesRule
from gateway.capture import CaptureReader
from gateway.capture import rest_symbol
from gateway.core.arbiter import Link
from gateway.core.arbiter import LinkRule
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Side
from gateway.core.model import Trade
from gateway.core.model import VenueNotice
from gateway.core.sequenced import SequencedBook

from . import fuzzing

DEPTH = (
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":123456789,'
    b'"T":123456788,"s":"BTCUSDT","U":157,"u":160,"pu":149,'
    b'"b":[["0.0024","10"]],"a":[["0.0026","100"]]}}'
)
RAW_DEPTH = json.dumps(json.loads(DEPTH)["data"]).encode()
AGG_TRADE = (
    b'{"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1626992741575,"a":16599292,'
    b'"s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,'
    b'"m":false}}'
)
BOOK_TICKER = (
    b'{"stream":"sushiusdt@bookTicker","data":{"e":"bookTicker","u":600859600576,'
    b'"s":"SUSHIUSDT","b":"7.6110","B":"2","a":"7.6120","A":"297","T":1,"E":2}}'
)
REST_BOOK = (
    b'{"lastUpdateId":1027024,"E":1589436922972,"T":1589436922959,'
    b'"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}'
)
REAL = "binance/cryptofeed/BINANCE_FUTURES.ws.1.0"
SYMBOLS = ("AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT")
EVENT_TYPES = DepthDiff | Trade | VenueNotice


# --- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("futures", "venue", "stream_host", "rest_api"),
    [(usdm, "binance-usdm", "fstream", "fapi"), (coinm, "binance-coinm", "dstream", "dapi")],
    ids=["usdm", "coinm"],
)
def test_endpoints_and_limits_of_the_2026_split(
    futures: ModuleType, venue: str, stream_host: str, rest_api: str
) -> None:
    """USD-M and COIN-M (USD-M's wire on other hosts) split alike, with the same limits."""
    root = f"wss://{stream_host}.binance.com"
    endpoints = (futures.WS_ENDPOINTS, futures.MARKET_WS_ENDPOINTS, futures.LEGACY_WS_ENDPOINTS)
    assert endpoints == ((f"{root}/public",), (f"{root}/market",), (root,))
    rest = (futures.VENUE, futures.REST_ENDPOINTS, futures.SNAPSHOT_PATH)
    assert rest == (venue, (f"https://{rest_api}.binance.com",), f"/{rest_api}/v1/depth")
    assert futures.REST_WEIGHT_PER_MINUTE == 2400
    assert (futures.MAX_MESSAGES_PER_S, futures.MAX_STREAMS_PER_CONNECTION) == (10, 200)


def test_stream_urls() -> None:
    (public,) = usdm.WS_ENDPOINTS
    assert usdm.stream_url(public, ["BTCUSDT", "ethusdt", "BTCUSDT"]) == (
        "wss://fstream.binance.com/public/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms"
    )
    (market,) = usdm.MARKET_WS_ENDPOINTS
    assert usdm.market_stream_url(market + "/", ["BTCUSDT"]) == (
        "wss://fstream.binance.com/market/stream?streams=btcusdt@aggTrade"
    )
    (legacy,) = usdm.LEGACY_WS_ENDPOINTS
    assert usdm.stream_url(legacy, ["BTCUSDT"]) == (
        "wss://fstream.binance.com/stream?streams=btcusdt@depth@100ms"
    )
    with pytest.raises(ValueError):
        usdm.stream_url(public, [])
    with pytest.raises(ValueError):
        usdm.stream_url(public, [f"S{i}USDT" for i in range(201)])
    assert json.loads(usdm.subscribe_frame(["BTCUSDT"], 7)) == {
        "method": "SUBSCRIBE",
        "params": ["btcusdt@depth@100ms"],
        "id": 7,
    }


@pytest.mark.parametrize(
    ("futures", "symbol", "url"),
    [
        (usdm, "btcusdt", "https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=1000"),
        (
            coinm,
            "btcusd_perp",
            "https://dapi.binance.com/dapi/v1/depth?symbol=BTCUSD_PERP&limit=1000",
        ),
    ],
    ids=["usdm", "coinm"],
)
def test_snapshot_url_and_weights(futures: ModuleType, symbol: str, url: str) -> None:
    (rest,) = futures.REST_ENDPOINTS
    assert futures.snapshot_url(rest, symbol, 1000) == url
    assert futures.snapshot_url(rest + "/", symbol, 1000) == url
    for limit in (0, 1, 30, 5000):
        with pytest.raises(ValueError, match="one of"):
            futures.snapshot_url(rest, symbol, limit)
    weights = {limit: futures.snapshot_weight(limit) for limit in futures.SNAPSHOT_LIMITS}
    assert weights == {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}


# --- parsing ------------------------------------------------------------------------------


def test_depth_frames() -> None:
    (diff,) = usdm.parse(DEPTH, 10, 3)
    assert diff == DepthDiff(
        "binance-usdm",
        "BTCUSDT",
        157,
        160,
        149,
        (("0.0024", "10"),),
        (("0.0026", "100"),),
        123456789,
        10,
        3,
    )
    assert usdm.parse(RAW_DEPTH, 10, 3) == [diff]
    for name in ("btcusdt@depth", "btcusdt@depth@500ms"):
        assert usdm.parse(DEPTH.replace(b"btcusdt@depth@100ms", name.encode()), 10, 3) == [diff]


def test_trade_control_and_other_frames() -> None:
    (trade,) = usdm.parse(AGG_TRADE, 10, 3)
    assert trade == Trade(
        "binance-usdm", "CTKUSDT", 16599292, "1.01100", "10", Side.BUY, 1626992741421, 10, 3
    )
    (sold,) = usdm.parse(AGG_TRADE.replace(b'"m":false', b'"m":true'), 10, 3)
    assert isinstance(sold, Trade) and sold.side is Side.SELL
    (ack,) = usdm.parse(b'{"result":null,"id":1}', 1, 0)
    assert isinstance(ack, VenueNotice) and ack.kind == "ack"
    (err,) = usdm.parse(b'{"code":2,"msg":"Invalid request"}', 1, 0)
    assert isinstance(err, VenueNotice) and err.kind == "error"
    (shutdown,) = usdm.parse(b'{"stream":"!serverShutdown","data":{"e":"serverShutdown"}}', 1, 0)
    assert isinstance(shutdown, VenueNotice) and shutdown.reconnect
    assert usdm.parse(BOOK_TICKER, 1, 0) == []
    assert usdm.parse(json.dumps(json.loads(BOOK_TICKER)["data"]).encode(), 1, 0) == []
    # Partial-depth streams carry top-N books in depthUpdate events: never diffs.
    assert usdm.parse(DEPTH.replace(b"btcusdt@depth@100ms", b"btcusdt@depth5@100ms"), 1, 0) == []


#: Frames usdm.parse refuses with VenueContractError (tests/feeds/test_contract.py).
BAD_FRAMES = [
    *fuzzing.NOT_FRAMES,
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate"}}',
    DEPTH.replace(b'"pu":149,', b""),  # USD-M diffs always carry pu
    DEPTH.replace(b'"U":157', b'"U":161'),  # U > u
    DEPTH.replace(b'"pu":149', b'"pu":157'),  # pu not below U
    DEPTH.replace(b'"pu":149', b'"pu":-2'),
    DEPTH.replace(b'"U":157', b'"U":-1'),
    *fuzzing.bad_decimals(DEPTH, b'"0.0024"'),
    DEPTH.replace(b'"u":160', b'"u":99999999999999999999999'),
    RAW_DEPTH.replace(b'"pu": 149', b'"pu": "149"'),
    AGG_TRADE.replace(b'"a":16599292', b'"a":"16599292"'),
    AGG_TRADE.replace(b'"a":16599292', b'"a":-1'),
    AGG_TRADE.replace(b'"q":"10"', b'"q":"x"'),
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","s":"\xff"}}',
]


def test_snapshot_parsing() -> None:
    snap = usdm.parse_snapshot("btcusdt", REST_BOOK, 5)
    assert snap == DepthSnapshot(
        "binance-usdm",
        "BTCUSDT",
        1027024,
        (("4.00000000", "431.00000000"),),
        (("4.00000200", "12.00000000"),),
        5,
        -1,
    )


#: REST book bodies the snapshot parser refuses (tests/feeds/test_contract.py).
BAD_SNAPSHOTS = [
    b'{"code":-1121,"msg":"Invalid symbol."}',
    REST_BOOK.replace(b"1027024", b"-1"),
    REST_BOOK.replace(b'"4.00000000"', b'"four"'),
]


# --- the real recording -------------------------------------------------------------------


def _replay(path: Path, rule: type[LinkRule], batches: int = 1) -> dict[str, SequencedBook]:
    """Every depth diff and REST snapshot of the capture through one SequencedBook per
    symbol. With ``batches`` > 1, a second connection carries the same stream re-batched:
    each of its events covers ``batches`` consecutive events of the first, one event late."""
    books: dict[str, SequencedBook] = {}
    held: dict[str, list[DepthDiff]] = {}

    def book(key: str) -> SequencedBook:
        if key not in books:
            books[key] = SequencedBook(key, rule())
            for conn_id in range(2 if batches > 1 else 1):
                books[key].on_connection(conn_id, True, 0)
        return books[key]

    for record in CaptureReader(path):
        if record.kind == "rest":
            symbol = rest_symbol(record.url)
            assert symbol is not None
            snap = usdm.parse_snapshot(symbol, record.payload, record.recv_ns)
            book(snap.key).on_snapshot(snap, record.recv_ns)
        elif record.kind == "ws":
            for event in usdm.parse(record.payload, record.recv_ns, record.conn_id):
                if not isinstance(event, DepthDiff):
                    continue
                target = book(event.key)
                target.on_diff(event, record.recv_ns)
                if batches > 1:
                    group = held.setdefault(event.key, [])
                    group.append(event)
                    if len(group) == batches:
                        target.on_diff(_merge(group), record.recv_ns)
                        group.clear()
    return books


def _merge(group: list[DepthDiff]) -> DepthDiff:
    """One event covering ``group`` (later levels override earlier ones), as a connection
    that batches differently would send it."""
    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    for diff in group:
        bids.update(diff.bids)
        asks.update(diff.asks)
    first, last = group[0], group[-1]
    return msgspec.structs.replace(
        last,
        first_id=first.first_id,
        prev_id=first.prev_id,
        bids=tuple(bids.items()),
        asks=tuple(asks.items()),
        conn_id=1,
    )


def test_real_recording_with_the_futures_rule(real_data: Callable[[str], Path]) -> None:
    books = _replay(real_data(REAL), BinanceFuturesRule)
    assert sorted(books) == [f"binance-usdm:{s}" for s in SYMBOLS]
    updates = {key.partition(":")[2]: b.stats.updates for key, b in books.items()}
    stale = {key.partition(":")[2]: b.stats.stale for key, b in books.items()}
    # 764 diffs: those at or below the snapshot's lastUpdateId are stale, the rest apply.
    assert updates == {"SUSHIUSDT": 252, "AKROUSDT": 187, "CTKUSDT": 179, "KEEPUSDT": 131}
    assert stale == {"SUSHIUSDT": 3, "AKROUSDT": 2, "CTKUSDT": 6, "KEEPUSDT": 4}
    for key, b in books.items():
        s = b.stats
        assert (s.gaps, s.crossed, s.snapshots, s.snapshots_unused) == (0, 0, 1, 0), key
        assert b.pending == 0 and b.has_book, key
    assert books["binance-usdm:SUSHIUSDT"].applied_id == 600860425198


def test_real_recording_rejects_the_spot_rule(real_data: Callable[[str], Path]) -> None:
    """USD-M ids are not contiguous. With the spot rule, the first diff after the snapshot
    fails ``U <= L + 1`` on 3 of the 4 symbols (what binance/SOURCES.md counts); the 4th
    (SUSHIUSDT: its first diff has ``U == L``) links one diff, then fails ``U == u + 1``
    on the next. So the arbiter declares a gap on all 4."""
    books = _replay(real_data(REAL), BinanceSpotRule)
    synced = {key.partition(":")[2] for key, b in books.items() if b.stats.updates > 0}
    assert synced == {"SUSHIUSDT"}
    assert books["binance-usdm:SUSHIUSDT"].stats.updates == 1
    assert all(b.stats.gaps >= 1 and not b.has_book for b in books.values())


@pytest.mark.parametrize("batches", [2, 3])
def test_real_recording_from_a_connection_that_batches_differently(
    real_data: Callable[[str], Path], batches: int
) -> None:
    """Connections may cut the same ids into different events (ccxt #26819): the second
    connection's events cover several of the first's; coverage, not tuples, decides."""
    single = _replay(real_data(REAL), BinanceFuturesRule)
    books = _replay(real_data(REAL), BinanceFuturesRule, batches=batches)
    for key, b in books.items():
        assert (b.stats.gaps, b.stats.crossed) == (0, 0), key
        assert b.stats.duplicates > 0, key
        assert b.applied_id == single[key].applied_id, key
        assert b.book.normalized() == single[key].book.normalized(), key


# --- fuzzing --------------------------------------------------------------------------------


@functools.cache
def _seeds(real_data: fuzzing.RealData) -> list[bytes]:
    """The sample frames, and up to 3 of each stream kind of the real recording."""
    lines = real_data(REAL).read_bytes().splitlines()[1:]
    frames = (line.partition(b": ")[2] for line in lines)
    recorded = fuzzing.first_of_each_kind(frames, lambda frame: frame[: frame.find(b"@") + 6])
    return [DEPTH, RAW_DEPTH, AGG_TRADE, BOOK_TICKER, *recorded]


CONTRACT = fuzzing.ParserContract(
    parse=usdm.parse,
    types=EVENT_TYPES,
    bad_frames=BAD_FRAMES,
    seeds=_seeds,
    numbers=fuzzing.VenueNumbers(
        DEPTH,
        price=b'"0.0024"',
        qty=b'"10"',
        # From the recorded USD-M session (cryptofeed).
        real=("7.6110", "2710.01451", "0.01737", "297", "0.0000", "0"),
        refused=("2.4e-3", "7.6110E0"),
    ),
    snapshot=lambda body: usdm.parse_snapshot("BTCUSDT", body, 1),
    bad_snapshots=BAD_SNAPSHOTS,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["b", "a", "U", "u", "pu", "s", "E"]), fuzzing.JSON_VALUES)
def test_wrong_types_in_a_depth_frame_raise_the_contract_error(field: str, value: object) -> None:
    frame = fuzzing.with_value(DEPTH, ("data", field), value)
    if not fuzzing.accepted(lambda: usdm.parse(frame, 1, 0), DepthDiff):
        return
    if field in ("b", "a"):  # accepted only as a list of [price, qty] string pairs
        assert fuzzing.are_string_levels(value)
    elif field != "s":
        assert isinstance(value, int)


# --- sequence rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last", "prev", "applied", "link"),
    [
        (150, 160, 149, 160, Link.STALE),  # u <= L
        (150, 155, 149, 160, Link.STALE),
        (170, 180, 160, 160, Link.LINKS),  # pu == L, ids not contiguous
        (150, 170, 140, 160, Link.LINKS),  # U <= L < u: covers the applied id
        (170, 180, 165, 160, Link.FUTURE),  # pu > L: events missing
        (161, 170, 155, 160, Link.FUTURE),  # U == L + 1 is no link without pu == L
    ],
)
def test_futures_rule(first: int, last: int, prev: int, applied: int, link: Link) -> None:
    rule = BinanceFuturesRule()
    assert rule.name == "binance-usdm"
    diff = DepthDiff(usdm.VENUE, "BTCUSDT", first, last, prev, (), (), 0, 0, 0)
    assert rule.classify(diff, applied) is link
