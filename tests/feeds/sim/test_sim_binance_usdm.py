"""The simulated Binance USD-M futures venue: its id sequencing, wire format and loopback.

Loopback tests are async and run under the deadline of conftest.py.
"""

from __future__ import annotations

import itertools
import json
from types import ModuleType
from typing import NamedTuple

import httpx
import msgspec
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.exceptions import InvalidStatus

from feeds import binance_usdm as usdm
from feeds.binance import BinanceSpotRule
from feeds.binance_usdm import BinanceFuturesRule
from feeds.sim import binance_usdm as render
from feeds.sim.book_process import BookProcess
from feeds.sim.simulators import SimBinanceUsdm
from gateway.core.arbiter import LinkRule
from gateway.core.book import L2Book
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Side
from gateway.core.model import Trade
from gateway.core.sequenced import SequencedBook

from .conftest import read_diffs

SYMBOL = "BTCUSDT"


# --- pure: sequencing and rendering ----------------------------------------------------------


def test_every_rendered_frame_parses_back_and_ids_chain_by_pu_with_holes() -> None:
    book = render.UsdmBook(BookProcess(SYMBOL, 7, actions_per_step=4.0), 7)
    start_id = book.last_u
    events = [e for e in (book.step() for _ in range(400)) if e is not None]
    assert len(events) > 350
    prev = start_id
    holes = 0
    for i, event in enumerate(events):
        frame = render.event_frame(event, 1_700_000_000_000 + i)
        assert frame.startswith(b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":')
        data = json.loads(frame)["data"]
        assert list(data) == ["e", "E", "T", "s", "U", "u", "pu", "b", "a"]
        assert data["T"] <= data["E"]
        (diff,) = usdm.parse(frame, 5, 3)
        assert isinstance(diff, DepthDiff)
        assert (diff.venue, diff.symbol, diff.conn_id) == ("binance-usdm", SYMBOL, 3)
        assert (diff.first_id, diff.last_id, diff.prev_id) == (
            event.first_id,
            event.last_id,
            event.prev_id,
        )
        assert (tuple(diff.bids), tuple(diff.asks)) == (event.bids, event.asks)
        assert diff.event_ms == 1_700_000_000_000 + i
        assert diff.prev_id == prev < diff.first_id <= diff.last_id
        holes += diff.first_id > prev + 1
        prev = diff.last_id
    # Mostly not contiguous (k >= 2), sometimes contiguous (k == 1).
    assert len(events) // 2 < holes < len(events)
    assert book.last_u == prev

    trades = book.take_trades()
    assert len(trades) > 20 and book.take_trades() == []
    for trade in trades:
        frame = render.agg_trade_frame(SYMBOL, trade, 1_700_000_000_000)
        assert frame.startswith(b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":')
        (parsed,) = usdm.parse(frame, 5, 3)
        assert isinstance(parsed, Trade)
        assert (parsed.trade_id, parsed.price, parsed.qty) == (
            trade.trade_id,
            trade.price,
            trade.qty,
        )
        assert parsed.side is (Side.SELL if trade.buyer_is_maker else Side.BUY)

    snap_id, bids, asks = book.snapshot(1000)
    body = render.snapshot_body(snap_id, bids, asks, 1_700_000_000_000)
    assert list(json.loads(body)) == ["lastUpdateId", "E", "T", "bids", "asks"]
    snapshot = usdm.parse_snapshot("btcusdt", body, 9)
    assert isinstance(snapshot, DepthSnapshot)
    assert (snapshot.symbol, snapshot.last_id) == (SYMBOL, snap_id)
    assert (list(snapshot.bids), list(snapshot.asks)) == (bids, asks)


def test_snapshot_ids_fall_inside_the_next_event_and_sync_by_the_futures_rule() -> None:
    book = render.UsdmBook(BookProcess(SYMBOL, 11, actions_per_step=4.0), 11)
    inside = at_pu = 0
    for _ in range(60):
        snap_id, bids, asks = book.snapshot(1000)
        local = L2Book()
        local.load(bids, asks)
        event = book.step() or book.flush()
        assert event is not None
        if event.first_id <= snap_id < event.last_id:
            inside += 1  # the engine is ahead of the stream: id inside U..u
        else:
            assert snap_id in (event.prev_id, event.last_id)
            at_pu += snap_id == event.prev_id
        # The documented sync: the first event covers the snapshot or chains by pu.
        assert event.first_id <= snap_id <= event.last_id or event.prev_id == snap_id
        local.apply(event.bids, event.asks)
        assert local.normalized() == book.published_book.normalized()
    assert inside > 40


# --- loopback -------------------------------------------------------------------------------


async def read_until(ws: ClientConnection, last_id: int) -> list[DepthDiff]:
    """Diffs received until the one that ends at ``last_id`` (-1: the first); a depth
    stream carries nothing else."""
    diffs, trades = await read_diffs(ws, usdm.parse, last_id)
    assert not trades
    return diffs


def rebuild(
    rule: LinkRule,
    snapshot: DepthSnapshot,
    buffered: list[DepthDiff],
    a: list[DepthDiff],
    b: list[DepthDiff],
) -> SequencedBook:
    """Feed a SequencedBook as the gateway would: buffered diffs of connection 0, the REST
    snapshot, then both connections interleaved, 20 ms apart (past the reorder window
    when a hole stays open)."""
    book = SequencedBook(SYMBOL, rule)
    now_ns = 0
    book.on_connection(0, True, now_ns)
    book.on_connection(1, True, now_ns)
    for diff in buffered:
        book.on_diff(diff, now_ns)
    book.on_snapshot(snapshot, now_ns)
    for pair in itertools.zip_longest(a, b):
        for conn_id, diff in enumerate(pair):
            if diff is not None:
                now_ns += 20_000_000
                book.on_diff(msgspec.structs.replace(diff, conn_id=conn_id), now_ns)
                book.on_timer(now_ns)
    return book


class Session(NamedTuple):
    """What two public connections to one symbol received (:func:`two_endpoint_session`)."""

    #: The REST snapshot's response, requested after the first diff of connection ``a``.
    response: httpx.Response
    #: Diffs of ``a`` up to the first; then of ``a`` and ``b`` up to ``target``.
    buffered: list[DepthDiff]
    diffs_a: list[DepthDiff]
    diffs_b: list[DepthDiff]
    #: The venue's last ``u`` once paused.
    target: int


async def two_endpoint_session(sim: SimBinanceUsdm, feed: ModuleType, symbol: str) -> Session:
    """Two connections to ``symbol``'s diff depth (one per endpoint, URLs by ``feed``, a
    futures adapter module), the REST snapshot at limit 1000 (weight 20) after the first
    diff, 20 more steps, then the venue paused: every diff up to its last id."""
    urls = [feed.stream_url(base, [symbol]) for base in sim.public_urls]
    assert urls[0].endswith(f"/public/stream?streams={symbol.lower()}@depth@100ms")
    async with (
        connect(urls[0], compression=None) as a,
        connect(urls[1], compression=None) as b,
        httpx.AsyncClient() as http,
    ):
        buffered, _ = await read_diffs(a, feed.parse, -1)
        response = await http.get(feed.snapshot_url(sim.rest_url, symbol, 1000))
        assert response.status_code == 200
        assert response.headers["x-mbx-used-weight-1m"] == "20"
        await sim.wait_steps(20)
        sim.pause()
        target = sim.last_id(symbol)
        assert sim.snapshot(symbol)[0] == target  # paused: engine == stream
        diffs_a, trades_a = await read_diffs(a, feed.parse, target)
        diffs_b, trades_b = await read_diffs(b, feed.parse, target)
    assert not trades_a and not trades_b  # a depth stream carries nothing else
    assert sim.stats(0).frames_sent > 20 and sim.stats(1).frames_sent > 20
    for diffs in (buffered + diffs_a, diffs_b):
        for prev, diff in itertools.pairwise(diffs):
            assert diff.prev_id == prev.last_id
    return Session(response, buffered, diffs_a, diffs_b, target)


def rebuilt_with_no_gap(session: Session, snapshot: DepthSnapshot, true_book: L2Book) -> None:
    """The futures rule rebuilds ``true_book`` from the session, with no gap."""
    futures = rebuild(
        BinanceFuturesRule(), snapshot, session.buffered, session.diffs_a, session.diffs_b
    )
    assert futures.stats.gaps == 0 and futures.stats.snapshots == 1
    assert futures.applied_id == session.target
    assert futures.book.normalized() == true_book.normalized()
    assert not futures.book.is_crossed()


async def test_two_endpoints_rest_plus_diffs_rebuild_the_true_book_with_no_gap() -> None:
    async with SimBinanceUsdm(
        [SYMBOL, "ETHUSDT"], n_endpoints=2, interval_s=0.01, jitter_ms=4.0
    ) as sim:
        session = await two_endpoint_session(sim, usdm, SYMBOL)
        true_book = sim.true_book(SYMBOL)
    snapshot = usdm.parse_snapshot(SYMBOL, session.response.content, 0)
    keys = ["lastUpdateId", "E", "T", "bids", "asks"]
    assert list(json.loads(session.response.content)) == keys
    rebuilt_with_no_gap(session, snapshot, true_book)

    # The spot rule sees the hidden ids as holes.
    spot = rebuild(BinanceSpotRule(), snapshot, session.buffered, session.diffs_a, session.diffs_b)
    assert spot.stats.gaps >= 1


async def test_rest_errors_and_wrong_paths() -> None:
    async with (
        SimBinanceUsdm([SYMBOL], n_endpoints=1, interval_s=0.01) as sim,
        httpx.AsyncClient() as http,
    ):
        base = sim.rest_url + usdm.SNAPSHOT_PATH
        ok = await http.get(base, params={"symbol": SYMBOL})
        assert ok.status_code == 200
        assert ok.headers["x-mbx-used-weight-1m"] == "10"  # default limit 500
        assert len(json.loads(ok.content)["bids"]) <= 500
        for limit in (5, 10, 20, 50, 100, 500, 1000):
            good = await http.get(base, params={"symbol": SYMBOL, "limit": limit})
            assert good.status_code == 200
            n = len(json.loads(good.content)["asks"])
            assert n == limit if limit <= 20 else 20 <= n <= limit
        cases: list[tuple[dict[str, str | int], int]] = [
            ({"symbol": SYMBOL, "limit": 7}, -1130),
            ({"symbol": SYMBOL, "limit": 5000}, -1130),
            ({"symbol": SYMBOL, "limit": "x"}, -1100),
            ({"symbol": "XRPUSDT", "limit": 5}, -1121),
            ({"limit": 5}, -1102),
        ]
        for params, code in cases:
            bad = await http.get(base, params=params)
            assert bad.status_code == 400
            assert json.loads(bad.content)["code"] == code
        spot_path = await http.get(sim.rest_url + "/api/v3/depth", params={"symbol": SYMBOL})
        assert spot_path.status_code == 404

        root = sim.endpoint_urls[0]
        with pytest.raises(InvalidStatus) as refused:
            async with connect(root + "/stream?streams=btcusdt@depth@100ms"):
                pass
        assert refused.value.response.status_code == 404
        for wrong in (
            "/public/stream?streams=btcusdt@trade",
            "/public/stream?streams=btcusdt@aggTrade",
            "/market/stream?streams=btcusdt@depth@100ms",
        ):
            async with connect(root + wrong) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        market = usdm.market_stream_url(sim.market_urls[0], [SYMBOL])
        async with connect(market, compression=None) as ws:
            trades: list[Trade] = []
            while len(trades) < 3:
                for event in usdm.parse(await ws.recv(decode=False), 0, 0):
                    assert isinstance(event, Trade)
                    trades.append(event)
            ids = [t.trade_id for t in trades]
            assert ids == list(range(ids[0], ids[0] + 3))
        async with connect(root + "/public/stream") as ws:
            await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}')
            assert await ws.recv() == '{"result":null,"id":1}'
            diffs = await read_until(ws, -1)
            assert diffs[0].symbol == SYMBOL
