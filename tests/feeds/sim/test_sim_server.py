"""The simulated Binance spot venue on loopback: WebSocket endpoints, REST, faults.

Async tests run under the deadline of conftest.py.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.exceptions import InvalidStatus

from feeds import binance
from feeds.sim.simulators import SimBinanceSpot
from gateway.core.book import L2Book
from gateway.core.model import DepthDiff
from gateway.core.model import Trade
from gateway.core.model import VenueEvent
from gateway.core.model import VenueNotice
from tests.harness import cancel_within
from tests.harness import started
from tests.harness import tcp_connect
from tests.harness import wait_peer_closed

from .conftest import get
from .conftest import read_diffs

SYMBOL = "BTCUSDT"


async def events(ws: ClientConnection) -> list[VenueEvent]:
    raw = await ws.recv(decode=False)
    return binance.parse(raw, time.monotonic_ns(), 0)


async def read_until(ws: ClientConnection, last_id: int) -> tuple[list[DepthDiff], list[Trade]]:
    """Diffs and trades received until the diff that ends at ``last_id`` (-1: the first)."""
    return await read_diffs(ws, binance.parse, last_id)


def assert_contiguous(diffs: list[DepthDiff]) -> None:
    for prev, diff in itertools.pairwise(diffs):
        assert diff.first_id == prev.last_id + 1


def sync_book(snapshot_body: bytes, diffs: list[DepthDiff]) -> L2Book:
    """Binance's documented procedure: snapshot, drop u <= L, first links, then contiguous."""
    snapshot = binance.parse_snapshot(SYMBOL, snapshot_body, 0)
    book = L2Book()
    book.load(snapshot.bids, snapshot.asks)
    last = snapshot.last_id
    live = [diff for diff in diffs if diff.last_id > last]
    assert live, "the snapshot is newer than every diff"
    assert live[0].first_id <= last + 1 <= live[0].last_id
    for diff in live:
        assert diff.first_id <= last + 1
        book.apply(diff.bids, diff.asks)
        last = diff.last_id
    return book


async def test_endpoints_send_identical_streams_and_snapshot_plus_diffs_is_the_true_book() -> None:
    async with SimBinanceSpot(
        [SYMBOL, "ETHUSDT"], n_endpoints=3, interval_s=0.01, jitter_ms=4.0
    ) as sim:
        urls = [binance.stream_url(base, [SYMBOL]) for base in sim.endpoint_urls[:2]]
        async with (
            connect(urls[0], compression=None) as a,
            connect(urls[1], compression=None) as b,
            httpx.AsyncClient() as http,
        ):
            first_a, _ = await read_until(a, -1)  # buffer from the first diff on
            response = await http.get(binance.snapshot_url(sim.rest_url, SYMBOL, 5000))
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/json")
            await sim.wait_steps(30)
            sim.pause()
            target = sim.last_id(SYMBOL)
            diffs_a, trades_a = await read_until(a, target)
            diffs_b, trades_b = await read_until(b, target)
            diffs_a = first_a + diffs_a
        assert sim.stats(0).connections_accepted == sim.stats(1).connections_accepted == 1
        assert sim.stats(2).connections_accepted == 0
        assert sim.stats(0).frames_sent > 20

        assert_contiguous(diffs_a)
        assert_contiguous(diffs_b)
        # Same ids, levels and trades wherever both connections cover the same range.
        start = max(diffs_a[0].first_id, diffs_b[0].first_id)
        common_a = [(d.first_id, d.last_id, d.bids, d.asks) for d in diffs_a if d.first_id >= start]
        common_b = [(d.first_id, d.last_id, d.bids, d.asks) for d in diffs_b if d.first_id >= start]
        assert len(common_a) > 10 and common_a == common_b
        trades_ab = [
            [(t.trade_id, t.price, t.qty, t.side) for t in ts] for ts in (trades_a, trades_b)
        ]
        first_trade = max(trades_ab[0][0][0], trades_ab[1][0][0])
        common_ab = [[t for t in ts if t[0] >= first_trade] for ts in trades_ab]
        assert len(common_ab[0]) > 3 and common_ab[0] == common_ab[1]
        ids = [t[0] for t in common_ab[0]]
        assert ids == list(range(first_trade, first_trade + len(ids)))

        book = sync_book(response.content, diffs_a)
        assert book.normalized() == sim.true_book(SYMBOL).normalized()
        assert not book.is_crossed()


async def test_close_endpoint_closes_and_refuses_until_reopened() -> None:
    async with SimBinanceSpot([SYMBOL], n_endpoints=2, interval_s=0.01) as sim:
        url = binance.stream_url(sim.endpoint_urls[0], [SYMBOL])
        async with connect(url, compression=None) as ws:
            await read_until(ws, -1)
            await sim.close_endpoint(0)
            assert not sim.is_open(0) and sim.is_open(1)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        with pytest.raises(OSError):
            async with connect(url, compression=None, open_timeout=2):
                pass
        other = binance.stream_url(sim.endpoint_urls[1], [SYMBOL])
        async with connect(other, compression=None) as ws:
            await read_until(ws, -1)
        await sim.open_endpoint(0)
        assert sim.is_open(0)
        async with connect(url, compression=None) as ws:
            await read_until(ws, -1)
        assert sim.stats(0).connections_accepted == 2


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def test_closing_an_endpoint_closes_every_connection_it_accepted() -> None:
    """A connection that never sends its request, and one the endpoint's loop sees in the
    turn it closes, are closed with the endpoint."""
    async with SimBinanceSpot([SYMBOL], n_endpoints=2, interval_s=0.01) as sim:
        port = _port(sim.endpoint_urls[0])
        silent = tcp_connect(port)
        url = binance.stream_url(sim.endpoint_urls[0], [SYMBOL])
        async with connect(url, compression=None) as ws:  # accepted after the silent one
            await read_until(ws, -1)
            late = tcp_connect(port)
            await asyncio.sleep(0)  # the endpoint closes in the turn its loop sees ``late``
            async with asyncio.timeout(5.0):  # a handshake's open timeout is 10 s
                await sim.close_endpoint(0)
        await wait_peer_closed(silent)
        await wait_peer_closed(late)


async def test_a_stopping_venue_closes_the_connections_waiting_for_their_request() -> None:
    sim = SimBinanceSpot([SYMBOL], n_endpoints=1, interval_s=0.01)
    async with asyncio.TaskGroup() as tasks:
        run = await started(tasks, sim.run)
        silent = tcp_connect(_port(sim.endpoint_urls[0]))
        silent_rest = tcp_connect(_port(sim.rest_url))
        # Accepted after the silent ones: their transports are made when these are answered.
        async with connect(binance.stream_url(sim.endpoint_urls[0], [SYMBOL])) as ws:
            await read_until(ws, -1)
        assert (await get(binance.snapshot_url(sim.rest_url, SYMBOL, 5))).status_code == 200
        await cancel_within(run, 5.0)  # a handshake's open timeout is 10 s
    await wait_peer_closed(silent)
    await wait_peer_closed(silent_rest)


async def test_live_subscribe_and_request_errors() -> None:
    async with (
        SimBinanceSpot([SYMBOL], n_endpoints=1, interval_s=0.01) as sim,
        connect(sim.endpoint_urls[0] + "/stream", compression=None) as ws,
    ):
        await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}')
        assert await ws.recv() == '{"result":null,"id":1}'
        trades = [e for _ in range(3) for e in await events(ws)]
        assert all(isinstance(e, Trade) for e in trades)
        await ws.send('{"method":"SUBSCRIBE","params":["xrpusdt@trade"],"id":2}')
        await ws.send("not json")
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":3}')
        replies: list[str] = []
        while len(replies) < 3:
            raw = await ws.recv(decode=True)
            if not raw.startswith('{"stream":'):
                replies.append(raw)
        assert replies[0].startswith('{"code":2,') and replies[0].endswith('"id":2}')
        assert replies[1].startswith('{"code":3,"msg":"Invalid JSON')
        assert replies[2] == '{"result":["btcusdt@trade"],"id":3}'


async def test_bad_streams_and_paths_are_refused_and_message_flood_closes() -> None:
    async with SimBinanceSpot([SYMBOL], n_endpoints=1, interval_s=0.01) as sim:
        base = sim.endpoint_urls[0]
        async with connect(base + "/stream?streams=xrpusdt@depth@100ms") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008
            assert "xrpusdt@depth@100ms" in closed.value.rcvd.reason
        with pytest.raises(InvalidStatus) as refused:
            async with connect(base + "/ws/btcusdt@depth"):
                pass
        assert refused.value.response.status_code == 404
        async with connect(base + "/stream") as ws:
            for i in range(6):
                await ws.send(f'{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}')
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_slow_client_is_closed_with_1008() -> None:
    # A long seeded delivery delay keeps frames queued: the 4-frame queue overflows.
    async with SimBinanceSpot(
        [SYMBOL], n_endpoints=1, interval_s=0.01, jitter_ms=1000.0, client_queue_frames=4
    ) as sim:
        async with connect(binance.stream_url(sim.endpoint_urls[0], [SYMBOL])) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "client too slow")
        assert sim.stats(0).slow_client_closes == 1
        assert sim.stats(0).connections_open == 0


async def test_shutdown_notice_and_pause_advance() -> None:
    async with SimBinanceSpot([SYMBOL], n_endpoints=2, interval_s=0.01) as sim:
        sim.pause()
        async with connect(binance.stream_url(sim.endpoint_urls[1], [SYMBOL])) as ws:
            await sim.wait_connections(1, 1)
            before = sim.last_id(SYMBOL)
            sim.advance(3)
            assert sim.last_id(SYMBOL) > before
            diffs, _ = await read_until(ws, sim.last_id(SYMBOL))
            assert diffs[0].first_id == before + 1
            sim.send_shutdown_notice(1)
            [notice] = await events(ws)
            assert isinstance(notice, VenueNotice) and notice.reconnect
            assert sim.stats(1).shutdown_notices == 1
            assert sim.last_id(SYMBOL) == diffs[-1].last_id  # paused: nothing new


async def test_rest_errors_weight_and_rate_limit() -> None:
    async with (
        SimBinanceSpot([SYMBOL], n_endpoints=1, rest_weight_limit_1m=30) as sim,
        httpx.AsyncClient(base_url=sim.rest_url) as http,
    ):
        unknown = await http.get("/api/v3/depth", params={"symbol": "XRPUSDT"})
        assert (unknown.status_code, unknown.json()) == (
            400,
            {"code": -1121, "msg": "Invalid symbol."},
        )
        missing = await http.get("/api/v3/depth")
        assert (missing.status_code, missing.json()["code"]) == (400, -1102)
        bad_limit = await http.get("/api/v3/depth", params={"symbol": SYMBOL, "limit": "x"})
        assert (bad_limit.status_code, bad_limit.json()["code"]) == (400, -1100)
        assert (await http.get("/api/v3/ticker")).status_code == 404
        small = await http.get("/api/v3/depth", params={"symbol": SYMBOL, "limit": 5})
        assert small.status_code == 200 and small.headers["x-mbx-used-weight-1m"] == "5"
        snapshot = binance.parse_snapshot(SYMBOL, small.content, 0)
        assert len(snapshot.bids) == len(snapshot.asks) == 5
        over = await http.get("/api/v3/depth", params={"symbol": SYMBOL, "limit": 500})
        assert over.status_code == 200 and over.headers["x-mbx-used-weight-1m"] == "30"
        limited = await http.get("/api/v3/depth", params={"symbol": SYMBOL})
        assert limited.status_code == 429 and limited.json()["code"] == -1003
        assert "retry-after" in limited.headers
        assert sim.rest_stats.snapshots_served == 2
        assert sim.rest_stats.rate_limited == 1


async def test_run_inside_a_task_group_stops_on_cancel() -> None:
    sim = SimBinanceSpot([SYMBOL], n_endpoints=1, interval_s=0.01, snapshot_delay_s=0.05)
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        task = group.create_task(sim.run(ready))
        await ready.wait()
        url = binance.stream_url(sim.endpoint_urls[0], [SYMBOL])
        async with connect(url) as ws:
            await read_until(ws, -1)
            async with httpx.AsyncClient() as http:
                response = await http.get(binance.snapshot_url(sim.rest_url, SYMBOL, 10))
                assert response.status_code == 200
            # The book as of arrival, delivered after the delay: the venue moved meanwhile.
            snapshot = binance.parse_snapshot(SYMBOL, response.content, 0)
            assert snapshot.last_id < sim.last_id(SYMBOL)
            task.cancel()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert task.cancelled()
    with pytest.raises(OSError):
        async with connect(url, open_timeout=2):
            pass
