"""The simulated Kraken venue's ``instrument`` channel (parsed by feeds.kraken) and its
REST ``/0/public/Depth`` endpoint (fetched with httpx on loopback)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect

from feeds import kraken
from feeds.sim.book_process import BookProcess
from feeds.sim.connection import ConnState
from feeds.sim.kraken import DEPTH_PATH
from feeds.sim.kraken import INVALID_ARGUMENTS
from feeds.sim.kraken import UNKNOWN_PAIR
from feeds.sim.kraken import KrakenProtocol
from feeds.sim.kraken import altname
from feeds.sim.kraken import rest_pair_name
from feeds.sim.simulators import SimKraken
from feeds.sim.simulators import SimVenue
from gateway.core.book import L2Book
from gateway.core.model import DepthSnapshot
from gateway.core.model import InstrumentPrecision
from gateway.core.model import VenueNotice

from .conftest import get
from .conftest import rest_base

SYMBOLS = ["BTC/USD", "ETH/USD"]
REAL_DEPTH = "kraken/flashbook/rest-depth-btc.json"


async def recv(ws: ClientConnection) -> bytes:
    """The next frame that is not a heartbeat."""
    while True:
        frame = await ws.recv(decode=False)
        if frame != b'{"channel":"heartbeat"}':
            return frame


async def wait_steps(sim: SimVenue, symbol: str, steps: int = 5) -> None:
    first = sim.true_book(symbol).normalized()
    await sim.wait_steps(steps)
    assert sim.true_book(symbol).normalized() != first


# --- instrument -----------------------------------------------------------------------------


def test_instrument_snapshot_has_the_wire_shape_and_the_simulators_precisions() -> None:
    procs = {s: BookProcess(s, 1, mid=100.0, tick="0.05") for s in [*SYMBOLS, "DOGE/USD"]}
    protocol = KrakenProtocol(2, tick="0.05", lot="0.0001")
    protocol.attach(procs)
    state = ConnState("/v2")
    frames = protocol.on_message(state, kraken.instrument_message(), time.time_ns())
    assert len(frames) == 2
    ack = msgspec.json.decode(frames[0])
    assert ack["method"] == "subscribe" and ack["success"] is True
    assert ack["result"] == {"channel": "instrument", "snapshot": True}
    assert [type(e) for e in kraken.parse(frames[0], 0, 0)] == [VenueNotice]
    body = msgspec.json.decode(frames[1])
    assert (body["channel"], body["type"]) == ("instrument", "snapshot")
    assert [a["id"] for a in body["data"]["assets"]] == ["BTC", "USD", "ETH", "DOGE"]
    pairs = body["data"]["pairs"]
    assert [p["symbol"] for p in pairs] == [*SYMBOLS, "DOGE/USD"]
    assert set(pairs[0]) == {
        "symbol",
        "base",
        "quote",
        "status",
        "qty_precision",
        "qty_increment",
        "price_precision",
        "price_increment",
        "cost_precision",
        "marginable",
        "has_index",
        "cost_min",
        "tick_size",
        "qty_min",
    }
    assert (pairs[0]["base"], pairs[0]["quote"], pairs[0]["status"]) == ("BTC", "USD", "online")
    assert (pairs[0]["price_increment"], pairs[0]["tick_size"]) == (0.05, 0.05)
    # Increments are fixed-point JSON numbers, never 1e-08.
    assert b'"qty_increment":0.00000001,' in frames[1] and b"e-" not in frames[1]
    assert b'"qty_min":0.0001}' in frames[1]
    expected = {s: (2, 8) for s in procs}
    assert kraken.precisions_from_instrument(frames[1]) == protocol.precisions == expected
    events = kraken.parse(frames[1], 7, 3)
    assert events == [InstrumentPrecision("kraken", s, 2, 8, 7, 3) for s in procs]
    # Already subscribed: ack only; unsubscribe: ack; subscribe again: a fresh snapshot.
    assert len(protocol.on_message(state, kraken.instrument_message(), 0)) == 1
    unsubscribe = b'{"method":"unsubscribe","params":{"channel":"instrument"},"req_id":4}'
    (reply,) = protocol.on_message(state, unsubscribe, 0)
    assert msgspec.json.decode(reply)["result"] == {"channel": "instrument"}
    assert msgspec.json.decode(reply)["req_id"] == 4
    assert not state.subs
    assert protocol.on_message(state, kraken.instrument_message(), 0)[1] == frames[1]


@pytest.mark.parametrize("tick", ["0.1", "0.01"])
async def test_instrument_over_loopback_gives_the_precisions_the_book_checksums_at(
    tick: str,
) -> None:
    async with SimKraken(
        SYMBOLS, n_endpoints=1, interval_s=0.05, tick=tick, heartbeat_interval_s=None
    ) as sim:
        expected = {symbol: (len(tick) - 2, 8) for symbol in SYMBOLS}
        assert sim.precisions == expected
        async with connect(sim.v2_urls[0]) as ws:
            assert b'"channel":"status"' in await recv(ws)
            # The gateway's message ("snapshot": true).
            await ws.send(kraken.instrument_message())
            ack = msgspec.json.decode(await recv(ws))
            assert ack["success"] is True and ack["result"]["channel"] == "instrument"
            snapshot = await recv(ws)
            precisions = kraken.precisions_from_instrument(snapshot)
            assert precisions == sim.precisions == expected
            await ws.send(b'{"method":"unsubscribe","params":{"channel":"instrument"}}')
            ack = msgspec.json.decode(await recv(ws))
            assert (ack["method"], ack["success"]) == ("unsubscribe", True)
            # Without "snapshot": it defaults to true.
            await ws.send(b'{"method":"subscribe","params":{"channel":"instrument"},"req_id":9}')
            ack = msgspec.json.decode(await recv(ws))
            assert (ack["req_id"], ack["result"]["snapshot"]) == (9, True)
            assert kraken.precisions_from_instrument(await recv(ws)) == expected
            # "snapshot": false: the ack only (the pong comes next).
            await ws.send(b'{"method":"unsubscribe","params":{"channel":"instrument"}}')
            await recv(ws)
            await ws.send(
                b'{"method":"subscribe","params":{"channel":"instrument","snapshot":false}}'
            )
            ack = msgspec.json.decode(await recv(ws))
            assert ack["result"] == {"channel": "instrument", "snapshot": False}
            await ws.send(kraken.ping_message(5))
            assert msgspec.json.decode(await recv(ws))["method"] == "pong"
            # The book's checksum, at the announced precisions, is the one sent.
            await ws.send(kraken.subscribe_messages(["BTC/USD"])[0])
            await recv(ws)
            frame = await recv(ws)
            (snap,) = kraken.parse(frame, 0, 0)
            assert isinstance(snap, DepthSnapshot)
            pp, qp = precisions["BTC/USD"]
            for price, qty in snap.bids + snap.asks:
                assert len(price.partition(".")[2]) == pp
                assert len(qty.partition(".")[2]) == qp
            book = L2Book()
            book.load(snap.bids, snap.asks)
            assert kraken.checksum_function(pp, qp)(book) == snap.checksum


# --- REST Depth -----------------------------------------------------------------------------


def test_rest_pair_names() -> None:
    assert [rest_pair_name(s) for s in ("BTC/USD", "ETH/USD", "SOL/USD", "ETH/BTC")] == [
        "XXBTZUSD",
        "XETHZUSD",
        "SOLUSD",
        "XETHXXBT",
    ]
    assert [rest_pair_name(s) for s in ("DOGE/USD", "BTC/USDT", "USDT/USD", "XRP/EUR")] == [
        "XDGUSD",
        "XBTUSDT",
        "USDTZUSD",
        "XXRPZEUR",
    ]
    assert [altname(s) for s in ("BTC/USD", "ETH/USD", "DOGE/USD")] == [
        "XBTUSD",
        "ETHUSD",
        "XDGUSD",
    ]


def _levels(side: list[list[Any]]) -> list[tuple[str, str]]:
    return [(price, volume) for price, volume, _ in side]


async def test_rest_depth_is_the_true_top_n_in_the_real_shape(
    real_data: Callable[[str], Path],
) -> None:
    real = json.loads(real_data(REAL_DEPTH).read_text())
    start_s = time.time_ns() // 1_000_000_000
    async with SimKraken(SYMBOLS, n_endpoints=1, interval_s=0.01, rest=True) as sim:
        base = rest_base(sim)
        assert base.startswith("http://127.0.0.1:") and not base.endswith(":0")
        await wait_steps(sim, "BTC/USD")
        sim.pause()
        now_s = time.time_ns() // 1_000_000_000
        for symbol, name in (("BTC/USD", "XXBTZUSD"), ("ETH/USD", "XETHZUSD")):
            truth = sim.true_book(symbol)
            for pair in (symbol, name, altname(symbol)):
                for count in (1, 10, 500):
                    response = await get(f"{base}{DEPTH_PATH}?pair={pair}&count={count}")
                    assert response.status_code == 200
                    assert response.headers["content-type"].startswith("application/json")
                    body = json.loads(response.content)
                    assert body["error"] == []
                    assert list(body["result"]) == [name]
                    book = body["result"][name]
                    assert list(book) == ["asks", "bids"]
                    assert _levels(book["bids"]) == truth.bids(count)
                    assert _levels(book["asks"]) == truth.asks(count)
                    assert len(book["bids"]) == min(count, len(truth.bids()))
            # The real shape: [str, str, int] per level.
            for level in book["bids"] + book["asks"]:
                assert [type(v) for v in level] == [
                    type(v) for v in real["result"]["XXBTZUSD"]["asks"][0]
                ]
                assert start_s <= level[2] <= now_s
        # No count: Kraken's default of 100.
        response = await get(f"{base}{DEPTH_PATH}?pair=XBTUSD")
        book = json.loads(response.content)["result"]["XXBTZUSD"]
        truth = sim.true_book("BTC/USD")
        assert _levels(book["bids"]) == truth.bids(100)
        assert _levels(book["asks"]) == truth.asks(100)
        assert sim.rest_requests == 2 * 3 * 3 + 1


def test_rest_depth_level_timestamps_are_the_second_of_the_last_change() -> None:
    proc = BookProcess("BTC/USD", 5, mid=60_000.0, tick="0.1")
    protocol = KrakenProtocol(1, rest=True)
    protocol.attach({"BTC/USD": proc})
    later_s = 1_700_000_000
    start_s: int | None = None  # the first time the protocol is given
    changed: dict[str, int] = {}
    for step in range(20):
        batch = proc.step()
        if batch is None:
            continue
        at_s = later_s + step
        start_s = at_s if start_s is None else start_s
        protocol.on_batch("BTC/USD", batch, at_s * 1_000_000_000 + 123)
        for price, qty in batch.bids + batch.asks:
            if qty.strip("0."):
                changed[price] = at_s
            else:
                changed.pop(price, None)
    status, raw, _, _ = protocol.rest_response({"pair": "XXBTZUSD", "count": "500"}, 0)
    assert status == 200
    book = json.loads(raw)["result"]["XXBTZUSD"]
    fmt = {protocol.format_level("BTC/USD", (p, "0"))[0]: p for p in changed}
    seen = unchanged = 0
    for price, _, stamp in book["bids"] + book["asks"]:
        if price in fmt:
            assert stamp == changed[fmt[price]]
            seen += 1
        else:
            assert stamp == start_s, "unchanged since attach: the first time given"
            unchanged += 1
    assert seen > 10 and unchanged > 0


async def test_rest_depth_errors_and_other_paths() -> None:
    async with SimKraken(["BTC/USD"], n_endpoints=1, interval_s=0.05, rest=True) as sim:
        base = rest_base(sim)
        for pair in ("DOGE/USD", "XXBTZEUR", "xbtusd", "BTC-USD"):
            response = await get(f"{base}{DEPTH_PATH}?pair={pair}&count=5")
            assert response.status_code == 200
            assert json.loads(response.content) == {"error": [UNKNOWN_PAIR]}
        for query in ("count=5", "pair=", "pair=XBTUSD&count=0", "pair=XBTUSD&count=501"):
            response = await get(f"{base}{DEPTH_PATH}?{query}")
            assert response.status_code == 200
            assert json.loads(response.content) == {"error": [INVALID_ARGUMENTS]}, query
        for count in ("x", "-1", "9" * 50, "1.5"):
            response = await get(f"{base}{DEPTH_PATH}?pair=XBTUSD&count={count}")
            assert json.loads(response.content) == {"error": [INVALID_ARGUMENTS]}
        for path in ("/0/public/AssetPairs", "/", "/v2", "/0/public/depth"):
            response = await get(f"{base}{path}?pair=XBTUSD")
            assert response.status_code == 404
