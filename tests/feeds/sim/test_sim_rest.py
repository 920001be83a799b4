"""REST depth endpoints of the simulated OKX and Bybit venues, fetched with httpx and parsed
with the gateway's own parsers; Kraken and Coinbase serve none."""

from __future__ import annotations

import time

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from feeds import bybit
from feeds import okx
from feeds.sim.bybit import FIRST_U
from feeds.sim.okx import PATH as OKX_WS_PATH
from feeds.sim.simulators import SimBybit
from feeds.sim.simulators import SimCoinbase
from feeds.sim.simulators import SimKraken
from feeds.sim.simulators import SimOkx
from feeds.sim.simulators import SimVenue
from gateway.core.book import L2Book
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import VenueContractError

from .conftest import frames_until
from .conftest import get
from .conftest import rest_base

OKX_SYMBOL = "BTC-USDT"
BYBIT_SYMBOL = "BTCUSDT"


async def wait_steps(sim: SimVenue, symbol: str, steps: int = 5) -> None:
    """Let the generator move the book a few times."""
    first = sim.true_book(symbol).normalized()
    await sim.wait_steps(steps)
    assert sim.true_book(symbol).normalized() != first


def assert_top(snap: DepthSnapshot, truth: L2Book, depth: int) -> None:
    assert list(snap.bids) == truth.bids(depth)
    assert list(snap.asks) == truth.asks(depth)
    assert len(snap.bids) == min(depth, len(truth.bids()))
    assert len(snap.asks) == min(depth, len(truth.asks()))


# --- OKX ------------------------------------------------------------------------------------


async def test_okx_rest_book_is_the_true_top_n_with_the_current_seq_id() -> None:
    async with SimOkx([OKX_SYMBOL, "ETH-USDT"], n_endpoints=1, interval_s=0.01) as sim:
        base = rest_base(sim)
        assert base.startswith("http://127.0.0.1:")
        assert not base.endswith(":0")
        await wait_steps(sim, OKX_SYMBOL)
        sim.pause()
        for symbol in (OKX_SYMBOL, "ETH-USDT"):
            for depth in (1, 25, okx.MAX_SNAPSHOT_LIMIT):
                response = await get(okx.snapshot_url(base, symbol, depth))
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("application/json")
                snap = okx.parse_snapshot(symbol, response.content, time.time_ns())
                assert snap.last_id == sim.last_id(symbol)
                assert_top(snap, sim.true_book(symbol), depth)
        # No sz: OKX's default of 1 level per side.
        response = await get(f"{base}{okx.SNAPSHOT_PATH}?instId={OKX_SYMBOL}")
        snap = okx.parse_snapshot(OKX_SYMBOL, response.content, time.time_ns())
        assert_top(snap, sim.true_book(OKX_SYMBOL), 1)
        data = msgspec.json.decode(response.content)["data"][0]
        assert set(data) == {"asks", "bids", "ts", "seqId"}
        assert [len(level) for level in data["bids"] + data["asks"]] == [4, 4]
        assert sim.rest_requests == 7


async def test_okx_rest_book_spliced_with_the_stream_as_in_the_2026_procedure() -> None:
    """Buffer the stream, fetch the REST book mid-stream, drop updates with seqId <= the
    book's seqId: the first kept update links (prevSeqId == seqId) and every checksum after
    it matches, ending on the true book."""
    async with SimOkx([OKX_SYMBOL], n_endpoints=1, interval_s=0.01) as sim:
        async with connect(sim.public_urls[0]) as ws:
            await ws.send(okx.subscribe_messages([OKX_SYMBOL])[0])
            buffered: list[DepthDiff] = []

            def keep(raw: bytes) -> None:
                events = okx.parse(raw, time.time_ns(), 0)
                buffered.extend(e for e in events if isinstance(e, DepthDiff))

            while len(buffered) < 3:
                keep(await ws.recv(decode=False))
            # The stream goes on into the connection's buffer meanwhile.
            url = okx.snapshot_url(rest_base(sim), OKX_SYMBOL, okx.MAX_SNAPSHOT_LIMIT)
            snap = okx.parse_snapshot(OKX_SYMBOL, (await get(url)).content, 0)
            while sum(d.last_id > snap.last_id for d in buffered) < 3:
                keep(await ws.recv(decode=False))
            sim.pause()
            await ws.send("ping")  # its pong comes after what was sent before the pause
            async for raw in frames_until(ws, lambda raw: raw == b"pong"):
                keep(raw)
        assert buffered[0].prev_id is not None and buffered[0].prev_id < snap.last_id
        kept = [d for d in buffered if d.last_id > snap.last_id]
        assert kept and kept[0].prev_id == snap.last_id
        book = L2Book()
        book.load(snap.bids, snap.asks)
        for diff in kept:
            book.apply(diff.bids, diff.asks)
            assert okx.book_checksum(book) == diff.checksum
        assert kept[-1].last_id == sim.last_id(OKX_SYMBOL)
        truth = sim.true_book(OKX_SYMBOL)
        assert (book.bids(), book.asks()) == (truth.bids(), truth.asks())


async def test_okx_rest_errors_and_other_paths() -> None:
    async with SimOkx([OKX_SYMBOL], n_endpoints=1, interval_s=0.05) as sim:
        base = rest_base(sim)
        response = await get(okx.snapshot_url(base, "DOGE-USDT", 5))
        assert response.status_code == 200
        assert msgspec.json.decode(response.content) == {
            "code": "51001",
            "msg": "Instrument ID does not exist",
            "data": [],
        }
        with pytest.raises(VenueContractError, match="51001"):
            okx.parse_snapshot("DOGE-USDT", response.content, 0)
        response = await get(f"{base}{okx.SNAPSHOT_PATH}?sz=5")
        assert msgspec.json.decode(response.content)["code"] == "50014"
        for sz in ("0", "401", "x", "9" * 50):
            response = await get(f"{base}{okx.SNAPSHOT_PATH}?instId={OKX_SYMBOL}&sz={sz}")
            assert response.status_code == 200
            assert msgspec.json.decode(response.content)["code"] == "51000"
        for path in ("/api/v5/market/books-full", "/", bybit.SNAPSHOT_PATH, OKX_WS_PATH):
            response = await get(f"{base}{path}?instId={OKX_SYMBOL}")
            assert response.status_code == 404
        # HTTP only: a WebSocket handshake on the REST port is refused.
        with pytest.raises(InvalidStatus) as refused:
            async with connect(base.replace("http://", "ws://") + okx.SNAPSHOT_PATH):
                pass
        assert refused.value.response.status_code == 200
        with pytest.raises(InvalidStatus) as refused:
            async with connect(base.replace("http://", "ws://") + OKX_WS_PATH):
                pass
        assert refused.value.response.status_code == 404
        assert sim.rest_requests == 12


# --- Bybit ----------------------------------------------------------------------------------


@pytest.mark.parametrize("venue", [bybit.SPOT, bybit.LINEAR])
async def test_bybit_rest_book_is_the_true_top_n_with_the_depth_200_u_when_unsubscribed(
    venue: str,
) -> None:
    category = bybit.CATEGORIES[venue]
    async with SimBybit(
        [BYBIT_SYMBOL, "ETHUSDT"], n_endpoints=1, interval_s=0.01, category=category
    ) as sim:
        base = rest_base(sim)
        assert sim.u(BYBIT_SYMBOL, 200) is None
        await wait_steps(sim, BYBIT_SYMBOL)
        sim.pause()
        url = bybit.snapshot_url(base, BYBIT_SYMBOL, 50, venue)
        snap = bybit.parse_snapshot(BYBIT_SYMBOL, (await get(url)).content, 0, venue=venue)
        # The first REST book starts orderbook.200's u.
        assert snap.last_id == FIRST_U == sim.u(BYBIT_SYMBOL, 200)
        assert_top(snap, sim.true_book(BYBIT_SYMBOL), 50)
        sim.resume()
        await wait_steps(sim, BYBIT_SYMBOL)
        sim.pause()
        u = sim.u(BYBIT_SYMBOL, 200)
        assert u is not None and u > FIRST_U
        for depth in (1, 200, bybit.MAX_SNAPSHOT_LIMIT):
            url = bybit.snapshot_url(base, BYBIT_SYMBOL, depth, venue)
            response = await get(url)
            assert response.status_code == 200
            snap = bybit.parse_snapshot(BYBIT_SYMBOL, response.content, 0, venue=venue)
            assert snap.last_id == u
            assert_top(snap, sim.true_book(BYBIT_SYMBOL), depth)
        body = msgspec.json.decode(response.content)
        assert (body["retCode"], body["retMsg"]) == (0, "OK")
        assert set(body["result"]) == {"s", "b", "a", "ts", "u", "seq", "cts"}
        # No limit: the category's default.
        response = await get(f"{base}{bybit.SNAPSHOT_PATH}?category={category}&symbol=ETHUSDT")
        snap = bybit.parse_snapshot("ETHUSDT", response.content, 0, venue=venue)
        assert_top(snap, sim.true_book("ETHUSDT"), 1 if venue == bybit.SPOT else 25)


async def test_bybit_rest_u_is_the_u_of_the_smallest_subscribed_depth() -> None:
    async with SimBybit([BYBIT_SYMBOL], n_endpoints=1, interval_s=0.01) as sim:
        async with connect(sim.public_urls[0]) as ws:
            await ws.send(bybit.subscribe_messages([BYBIT_SYMBOL], 200)[0])
            await ws.send(bybit.subscribe_messages([BYBIT_SYMBOL], 50)[0])
            last_u: dict[int, int] = {}
            while len(last_u) < 2 or last_u[50] < FIRST_U + 3:
                raw = await ws.recv(decode=False)
                for event in bybit.parse_spot(raw, time.time_ns(), 0):
                    if isinstance(event, DepthSnapshot | DepthDiff):
                        topic = msgspec.json.decode(raw)["topic"]
                        last_u[int(topic.split(".")[1])] = event.last_id
            sim.pause()
            await ws.send(bybit.ping_message())  # its pong comes after the queued pushes
            async for raw in frames_until(ws, lambda raw: b'"op":"ping"' in raw):
                topic = msgspec.json.decode(raw).get("topic", "")
                for event in bybit.parse_spot(raw, time.time_ns(), 0):
                    if isinstance(event, DepthDiff):
                        last_u[int(topic.split(".")[1])] = event.last_id
        assert last_u[50] == sim.u(BYBIT_SYMBOL, 50)
        assert last_u[200] == sim.u(BYBIT_SYMBOL, 200)
        url = bybit.snapshot_url_spot(rest_base(sim), BYBIT_SYMBOL, 100)
        snap = bybit.parse_snapshot_spot(BYBIT_SYMBOL, (await get(url)).content, 0)
        assert snap.last_id == last_u[50] == sim.last_id(BYBIT_SYMBOL)
        assert_top(snap, sim.true_book(BYBIT_SYMBOL), 100)


async def test_bybit_rest_errors_and_other_paths() -> None:
    async with SimBybit([BYBIT_SYMBOL], n_endpoints=1, interval_s=0.05) as sim:
        base = rest_base(sim)
        response = await get(bybit.snapshot_url_spot(base, "DOGEUSDT", 5))
        assert response.status_code == 200
        body = msgspec.json.decode(response.content)
        assert body["retCode"] == 10001 and body["result"] == {}
        with pytest.raises(VenueContractError, match="10001"):
            bybit.parse_snapshot_spot("DOGEUSDT", response.content, 0)
        # The symbol exists on the simulated category only.
        response = await get(bybit.snapshot_url_linear(base, BYBIT_SYMBOL, 5))
        assert msgspec.json.decode(response.content)["retCode"] == 10001
        for query in (
            f"symbol={BYBIT_SYMBOL}&limit=5",
            f"category=futures&symbol={BYBIT_SYMBOL}",
            f"category=spot&symbol={BYBIT_SYMBOL}&limit=0",
            f"category=spot&symbol={BYBIT_SYMBOL}&limit=1001",
            f"category=spot&symbol={BYBIT_SYMBOL}&limit=-1",
            f"category=spot&symbol={BYBIT_SYMBOL}&limit={'9' * 50}",
        ):
            response = await get(f"{base}{bybit.SNAPSHOT_PATH}?{query}")
            assert response.status_code == 200
            assert msgspec.json.decode(response.content)["retCode"] == 10001, query
        for path in ("/v5/market/orderbooks", "/", okx.SNAPSHOT_PATH, "/v5/public/spot"):
            response = await get(f"{base}{path}?category=spot&symbol={BYBIT_SYMBOL}")
            assert response.status_code == 404
        # Errors track nothing.
        assert sim.u(BYBIT_SYMBOL, 200) is None


# --- venues without REST --------------------------------------------------------------------


async def test_kraken_and_coinbase_serve_rest_unless_told_not_to() -> None:
    async with SimKraken(["BTC/USD"], n_endpoints=1) as kraken:
        assert kraken.rest_url is not None
    async with SimKraken(["BTC/USD"], n_endpoints=1, rest=False) as kraken:
        assert kraken.rest_url is None
    async with SimCoinbase(["BTC-USD"], n_endpoints=1, rest=False) as coinbase:
        assert coinbase.rest_url is None
    with pytest.raises(ValueError, match="serves no REST"):
        SimKraken(["BTC/USD"], rest_port=0, rest=False)
    with pytest.raises(ValueError, match="serves no REST"):
        SimCoinbase(["BTC-USD"], rest_port=0, rest=False)
