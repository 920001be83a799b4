"""Binance spot adapter: URLs, parsing of real frames, and fuzzing (any bytes in → events
or VenueContractError out, nothing else)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings

from feeds import binance
from gateway.core.arbiter import Link
from gateway.core.model import DepthDiff
from gateway.core.model import Side
from gateway.core.model import Trade
from gateway.core.model import VenueContractError
from gateway.core.model import VenueNotice

from . import fuzzing

DEPTH = (
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT",'
    b'"U":5,"u":7,"b":[["1.5","2"]],"a":[["1.6","0.00000000"]]}}'
)
TRADE = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":9,"p":"1.5",'
    b'"q":"0.1","T":2,"m":true,"M":true}}'
)


def test_urls() -> None:
    assert binance.stream_url("wss://stream.binance.com:9443", ["BTCUSDT", "ETHUSDT"]) == (
        "wss://stream.binance.com:9443/stream?streams="
        "btcusdt@depth@100ms/btcusdt@trade/ethusdt@depth@100ms/ethusdt@trade"
    )
    assert binance.snapshot_url("https://api.binance.com/", "btcusdt", 1000) == (
        "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000"
    )
    with pytest.raises(ValueError):
        binance.snapshot_url("https://x", "BTCUSDT", 5001)
    with pytest.raises(ValueError):
        binance.stream_url("wss://x", [])
    assert [binance.snapshot_weight(n) for n in (100, 500, 1000, 5000)] == [5, 25, 50, 250]
    assert [binance.snapshot_weight(n) for n in (1, 101, 501, 1001, 9999)] == [5, 25, 50, 250, 250]


def test_depth_trade_and_control_frames() -> None:
    (diff,) = binance.parse(DEPTH, 10, 3)
    assert diff == DepthDiff(
        "binance", "BTCUSDT", 5, 7, -1, (("1.5", "2"),), (("1.6", "0.00000000"),), 1, 10, 3
    )
    (trade,) = binance.parse(TRADE, 10, 3)
    assert isinstance(trade, Trade) and trade.side is Side.SELL and trade.trade_id == 9
    (notice,) = binance.parse(b'{"stream":"!serverShutdown","data":{"e":"serverShutdown"}}', 1, 0)
    assert isinstance(notice, VenueNotice) and notice.reconnect
    (ack,) = binance.parse(b'{"result":null,"id":1}', 1, 0)
    assert isinstance(ack, VenueNotice) and ack.kind == "ack"
    (err,) = binance.parse(b'{"code":2,"msg":"Invalid request"}', 1, 0)
    assert isinstance(err, VenueNotice) and err.kind == "error"
    assert binance.parse(b'{"stream":"btcusdt@bookTicker","data":{"u":1}}', 1, 0) == []


#: Frames binance.parse refuses with VenueContractError (tests/feeds/test_contract.py).
BAD_FRAMES = [
    *fuzzing.NOT_FRAMES,
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate"}}',
    DEPTH.replace(b'"U":5', b'"U":9'),  # U > u
    *fuzzing.bad_decimals(DEPTH, b'"1.5"'),
    DEPTH.replace(b'"U":5', b'"U":99999999999999999999999'),
    TRADE.replace(b'"t":9', b'"t":"9"'),
]


def test_snapshot_parsing() -> None:
    snap = binance.parse_snapshot("btcusdt", b'{"lastUpdateId":3,"bids":[],"asks":[]}', 5)
    assert (snap.symbol, snap.last_id, snap.recv_ns) == ("BTCUSDT", 3, 5)
    with pytest.raises(VenueContractError):
        binance.parse_snapshot("BTCUSDT", b'{"code":-1121,"msg":"Invalid symbol."}', 5)


def _real_frames() -> list[bytes]:
    path = (
        Path(__file__).resolve().parents[2].parent
        / "shared/data/real/binance/hftbacktest/spot/btcusdt_20240808.gz"
    )
    if not path.exists():
        return [DEPTH, TRADE]
    frames = []
    with gzip.open(path, "rb") as lines:
        for _, line in zip(range(40), lines, strict=False):
            frames.append(line.split(b" ", 1)[1].rstrip(b"\n"))
    return frames


REAL = _real_frames()


CONTRACT = fuzzing.ParserContract(
    parse=binance.parse,
    types=DepthDiff | Trade | VenueNotice,
    bad_frames=BAD_FRAMES,
    seeds=lambda _: REAL,
    numbers=fuzzing.VenueNumbers(
        DEPTH,
        price=b'"1.5"',
        qty=b'"2"',
        # From the recorded spot sessions (hftbacktest, cryptofeed).
        real=("61737.63000000", "0.32329000", "0.00006421", "6195.00000000", "0.00000000", "0"),
        refused=("6.421e-05", "61737.63000000e0", "6.17376300E+4"),
    ),
)


@settings(max_examples=200, deadline=None)
@given(fuzzing.JSON_VALUES)
def test_wrong_types_in_a_depth_frame_raise_the_contract_error(value: object) -> None:
    frame = fuzzing.with_value(DEPTH, ("data", "b"), value)
    if fuzzing.accepted(lambda: binance.parse(frame, 1, 0), DepthDiff):
        # Accepted only when the value is a list of [price, qty] string pairs.
        assert fuzzing.are_string_levels(value)


# --- sequence rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last", "applied", "link"),
    [
        (5, 7, 7, Link.STALE),  # u <= L
        (3, 6, 7, Link.STALE),
        (8, 9, 7, Link.LINKS),  # U == L + 1
        (5, 9, 7, Link.LINKS),  # U <= L + 1 <= u: overlapping ids are applied whole
        (9, 9, 7, Link.FUTURE),  # U > L + 1: ids missing
    ],
)
def test_spot_rule(first: int, last: int, applied: int, link: Link) -> None:
    rule = binance.BinanceSpotRule()
    assert rule.name == "binance-spot"
    diff = DepthDiff(binance.VENUE, "BTCUSDT", first, last, -1, (), (), 0, 0, 0)
    assert rule.classify(diff, applied) is link
