"""Binance COIN-M adapter (its endpoints, limits and snapshot URL are tested beside USD-M's,
in test_binance_usdm.py): stream URLs of contracts, contract symbols, parsing of every
frame kind (USD-M's framing with the ``ps`` pair), the ``/dapi/v1/depth`` snapshot, how its
frames and hosts are told from USD-M's in captures, its registry entry, and fuzzing (any
bytes in → events or VenueContractError out)."""

from __future__ import annotations

import json

import pytest

from feeds import binance_coinm as coinm
from feeds import binance_usdm as usdm
from gateway.capture.venues import connection_venue
from gateway.capture.venues import cryptofeed_venue
from gateway.capture.venues import venue_from_frame
from gateway.core import model
from gateway.core.arbiter import Link
from gateway.wire.venues import ADAPTERS

from . import fuzzing

DEPTH = (
    b'{"stream":"btcusd_perp@depth@100ms","data":{"e":"depthUpdate","E":1591270260907,'
    b'"T":1591270260891,"s":"BTCUSD_PERP","ps":"BTCUSD","U":17285681,"u":17285702,'
    b'"pu":17285675,"b":[["9517.6","10"]],"a":[["9518.5","45"],["9532.1","0"]]}}'
)
RAW_DEPTH = json.dumps(json.loads(DEPTH)["data"]).encode()
DELIVERY_DEPTH = DEPTH.replace(b"btcusd_perp", b"btcusd_261225").replace(
    b"BTCUSD_PERP", b"BTCUSD_261225"
)
AGG_TRADE = (
    b'{"stream":"btcusd_perp@aggTrade","data":{"e":"aggTrade","E":1591261134288,"a":424951,'
    b'"s":"BTCUSD_PERP","p":"9643.5","q":"2","f":606073,"l":606073,"T":1591261134199,'
    b'"m":false}}'
)
BOOK_TICKER = (
    b'{"stream":"btcusd_perp@bookTicker","data":{"e":"bookTicker","u":17242169,'
    b'"s":"BTCUSD_PERP","ps":"BTCUSD","b":"9548.1","B":"52","a":"9548.5","A":"11",'
    b'"T":1591268628155,"E":1591268628166}}'
)
SHUTDOWN = b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770000000000}}'
REST_BOOK = (
    b'{"lastUpdateId":16769853,"symbol":"BTCUSD_PERP","pair":"BTCUSD","E":1591250106370,'
    b'"T":1591250106368,"bids":[["9638.0","431"]],"asks":[["9638.2","12"]]}'
)
EVENT_TYPES = model.DepthDiff | model.Trade | model.VenueNotice


# --- URLs and symbols --------------------------------------------------------------------------


def test_stream_urls_of_contracts() -> None:
    (public,) = coinm.WS_ENDPOINTS
    assert coinm.stream_url(public, ["BTCUSD_PERP", "btcusd_261225", "BTCUSD_PERP"]) == (
        "wss://dstream.binance.com/public/stream?streams="
        "btcusd_perp@depth@100ms/btcusd_261225@depth@100ms"
    )
    (market,) = coinm.MARKET_WS_ENDPOINTS
    assert coinm.market_stream_url(market, ["BTCUSD_PERP"]) == (
        "wss://dstream.binance.com/market/stream?streams=btcusd_perp@aggTrade"
    )
    assert json.loads(coinm.subscribe_frame(["ETHUSD_PERP"], 3)) == {
        "method": "SUBSCRIBE",
        "params": ["ethusd_perp@depth@100ms"],
        "id": 3,
    }
    with pytest.raises(ValueError, match="at most 200"):
        coinm.stream_url(public, [f"C{i}USD_PERP" for i in range(201)])


@pytest.mark.parametrize(
    ("symbol", "pair"),
    [("BTCUSD_PERP", "BTCUSD"), ("btcusd_261225", "BTCUSD"), ("ETHUSD_270326", "ETHUSD")],
)
def test_pair_of_a_contract(symbol: str, pair: str) -> None:
    assert coinm.pair_of(symbol) == pair


@pytest.mark.parametrize("symbol", ["BTCUSDT", "BTCUSD_", "BTCUSD_2612", "_PERP", "BTC-USD"])
def test_pair_of_rejects_what_is_not_a_contract(symbol: str) -> None:
    with pytest.raises(ValueError, match="not a COIN-M contract"):
        coinm.pair_of(symbol)


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "symbol"),
    [(DEPTH, "BTCUSD_PERP"), (RAW_DEPTH, "BTCUSD_PERP"), (DELIVERY_DEPTH, "BTCUSD_261225")],
)
def test_depth_frames(frame: bytes, symbol: str) -> None:
    (diff,) = coinm.parse(frame, 7, 2)
    assert isinstance(diff, model.DepthDiff)
    assert (diff.venue, diff.symbol, diff.conn_id, diff.recv_ns) == ("binance-coinm", symbol, 2, 7)
    assert (diff.first_id, diff.last_id, diff.prev_id) == (17285681, 17285702, 17285675)
    assert diff.event_ms == 1591270260907
    assert list(diff.bids) == [("9517.6", "10")]
    assert list(diff.asks) == [("9518.5", "45"), ("9532.1", "0")]


def test_trade_control_shutdown_and_other_frames() -> None:
    (trade,) = coinm.parse(AGG_TRADE, 1, 0)
    assert isinstance(trade, model.Trade)
    assert (trade.venue, trade.symbol, trade.trade_id) == ("binance-coinm", "BTCUSD_PERP", 424951)
    assert (trade.price, trade.qty, trade.side) == ("9643.5", "2", model.Side.BUY)
    (notice,) = coinm.parse(SHUTDOWN, 1, 0)
    assert isinstance(notice, model.VenueNotice)
    assert (notice.venue, notice.kind, notice.reconnect) == ("binance-coinm", "shutdown", True)
    (ack,) = coinm.parse(b'{"result":null,"id":3}', 1, 0)
    assert isinstance(ack, model.VenueNotice) and ack.kind == "ack"
    (error,) = coinm.parse(b'{"code":2,"msg":"Invalid request"}', 1, 0)
    assert isinstance(error, model.VenueNotice) and error.kind == "error"
    assert coinm.parse(BOOK_TICKER, 1, 0) == []
    partial = DEPTH.replace(b"@depth@100ms", b"@depth5@100ms")
    assert coinm.parse(partial, 1, 0) == []


BAD_FRAMES = [
    b"",
    b"not json",
    b'{"stream":"btcusd_perp@depth@100ms"}',
    DEPTH.replace(b'"pu":17285675,', b""),  # futures events chain by pu
    DEPTH.replace(b'"pu":17285675', b'"pu":17285681'),  # pu not below U
    DEPTH.replace(b'"u":17285702', b'"u":17285680'),  # u below U
    DEPTH.replace(b'"9517.6"', b"9517.6"),
    AGG_TRADE.replace(b'"a":424951', b'"a":-1'),
    b'{"foo":1}',
]


@pytest.mark.parametrize("frame", BAD_FRAMES)
def test_bad_frames_raise_the_contract_error(frame: bytes) -> None:
    with pytest.raises(model.VenueContractError):
        coinm.parse(frame, 1, 0)


def test_snapshot_parsing() -> None:
    snapshot = coinm.parse_snapshot("BTCUSD_PERP", REST_BOOK, 5, 1)
    assert isinstance(snapshot, model.DepthSnapshot)
    assert (snapshot.venue, snapshot.symbol, snapshot.last_id) == (
        "binance-coinm",
        "BTCUSD_PERP",
        16769853,
    )
    assert (list(snapshot.bids), list(snapshot.asks)) == ([("9638.0", "431")], [("9638.2", "12")])


#: REST book bodies the snapshot parser refuses (tests/feeds/test_contract.py).
BAD_SNAPSHOTS = [REST_BOOK.replace(b"16769853", b"-5")]


# --- captures and the registry ----------------------------------------------------------------


def test_coinm_is_told_from_usdm_by_frame_host_and_feed_name() -> None:
    assert venue_from_frame(DEPTH) == "binance-coinm"
    assert venue_from_frame(RAW_DEPTH) == "binance-coinm"
    usdm_frame = DEPTH.replace(b'"ps":"BTCUSD",', b"")
    assert venue_from_frame(usdm_frame) == "binance-usdm"
    assert connection_venue("wss://dstream.binance.com/public/stream?streams=x") == "binance-coinm"
    assert connection_venue("https://dapi.binance.com/dapi/v1/depth?symbol=X") == "binance-coinm"
    assert connection_venue("wss://fstream.binance.com/public") == "binance-usdm"
    assert cryptofeed_venue("BINANCE_DELIVERY") == "binance-coinm"
    assert cryptofeed_venue("BINANCE_FUTURES") == "binance-usdm"


def test_registry_entry_shares_the_futures_rule_and_the_market_endpoint() -> None:
    adapter = ADAPTERS["binance-coinm"]
    assert (adapter.venue, adapter.mode) == ("binance-coinm", "sequenced")
    assert adapter.snapshot_paths == ("/dapi/v1/depth",)
    assert adapter.rest_weight_per_minute == 2400
    assert adapter.snapshot_weight(1000) == 20
    assert adapter.link_rule is usdm.BinanceFuturesRule
    assert adapter.trade_endpoint is not None and adapter.trade_stream_url is not None
    (public,) = coinm.WS_ENDPOINTS
    market = adapter.trade_endpoint(public)
    assert market == "wss://dstream.binance.com/market"
    assert adapter.trade_stream_url(market, ["BTCUSD_PERP"]).endswith("btcusd_perp@aggTrade")
    assert adapter.notice_frame is not None
    (notice,) = adapter.parse(adapter.notice_frame(1_770_000_000_000_000_000), 1, 0)
    assert isinstance(notice, model.VenueNotice) and notice.reconnect
    rule = adapter.new_arbiter("BTCUSD_PERP")
    assert rule.key == "binance-coinm:BTCUSD_PERP"
    diff = model.DepthDiff("binance-coinm", "BTCUSD_PERP", 170, 180, 160, (), (), 0, 0, 0)
    assert usdm.BinanceFuturesRule().classify(diff, 160) is Link.LINKS


# --- fuzzing --------------------------------------------------------------------------------

SEEDS = [DEPTH, RAW_DEPTH, DELIVERY_DEPTH, AGG_TRADE, BOOK_TICKER, SHUTDOWN]

CONTRACT = fuzzing.ParserContract(
    parse=coinm.parse,
    types=EVENT_TYPES,
    bad_frames=BAD_FRAMES,
    seeds=lambda _: SEEDS,
    numbers=fuzzing.VenueNumbers(
        DEPTH,
        price=b'"9517.6"',
        qty=b'"10"',
        # COIN-M has no recording here: the documented frames' forms (USD-M's wire).
        real=("9517.6", "9638.0", "431", "0"),
        refused=("9.5176e3", "1E1"),
    ),
    snapshot=lambda body: coinm.parse_snapshot("BTCUSD_PERP", body, 1),
    bad_snapshots=BAD_SNAPSHOTS,
)
