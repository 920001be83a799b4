"""The simulated Binance COIN-M futures venue: USD-M's simulator with COIN-M's contracts, the
``ps`` pair, ``/dapi/v1/depth`` and the fault language, read back by feeds.binance_coinm.

Loopback tests are async and run under the deadline of conftest.py.
"""

from __future__ import annotations

import itertools
import json

import httpx
import pytest
from websockets.asyncio.client import connect

from feeds import binance_coinm as coinm
from feeds.binance_usdm import BinanceFuturesRule
from feeds.sim import binance_usdm as render
from feeds.sim.binance_coinm import BinanceCoinmProtocol
from feeds.sim.book_process import BookProcess
from feeds.sim.faults import FaultPlan
from feeds.sim.simulators import SimBinanceCoinm
from gateway.capture.venues import venue_from_frame
from gateway.core.model import DepthDiff, Trade, VenueNotice

from .conftest import read_diffs
from .test_sim_binance_usdm import rebuild

PERP = "BTCUSD_PERP"
DELIVERY = "BTCUSD_261225"


# --- pure: rendering ------------------------------------------------------------------------


def test_every_published_frame_names_the_pair_and_parses_back_as_coinm() -> None:
    protocol = BinanceCoinmProtocol(seed=5, max_incoming_per_s=None, rest_weight_limit_1m=None)
    protocol.attach({s: BookProcess(s, 5, actions_per_step=4.0) for s in (PERP, DELIVERY)})
    prev: dict[str, int] = {s: protocol.last_id(s) or 0 for s in (PERP, DELIVERY)}
    depth = trades = 0
    for step in range(200):
        for pub in protocol.step(1_700_000_000_000_000_000 + step * 100_000_000):
            (event,) = coinm.parse(pub.frame, 1, 0)
            if isinstance(event, Trade):
                trades += 1
                continue
            assert isinstance(event, DepthDiff)
            data = json.loads(pub.frame)["data"]
            assert list(data) == ["e", "E", "T", "s", "ps", "U", "u", "pu", "b", "a"]
            assert data["ps"] == "BTCUSD"
            assert venue_from_frame(pub.frame) == "binance-coinm"
            assert (event.venue, event.prev_id) == ("binance-coinm", prev[event.symbol])
            prev[event.symbol] = event.last_id
            depth += 1
    assert depth > 300 and trades > 20
    assert all(protocol.last_id(s) == prev[s] for s in prev)

    body = protocol.snapshot_body(DELIVERY, 20, 1_700_000_000_000_000_000)
    keys = ["lastUpdateId", "symbol", "pair", "E", "T", "bids", "asks"]
    assert list(json.loads(body)) == keys
    assert json.loads(body)["symbol"] == DELIVERY and json.loads(body)["pair"] == "BTCUSD"
    snapshot = coinm.parse_snapshot(DELIVERY, body, 1)
    assert snapshot.last_id == protocol.snapshot(DELIVERY, 20)[0]
    # USD-M's frames and bodies are unchanged: no ps, no symbol, no pair.
    usdm_body = render.snapshot_body(1, [], [], 5)
    assert list(json.loads(usdm_body)) == ["lastUpdateId", "E", "T", "bids", "asks"]


def test_symbols_must_be_contracts() -> None:
    protocol = BinanceCoinmProtocol(seed=1)
    with pytest.raises(ValueError, match="not a COIN-M contract"):
        protocol.attach({"BTCUSDT": BookProcess("BTCUSDT", 1)})


# --- loopback -------------------------------------------------------------------------------


async def test_two_endpoints_rest_plus_diffs_rebuild_the_delivery_book_with_no_gap() -> None:
    async with SimBinanceCoinm(
        [PERP, DELIVERY], n_endpoints=2, interval_s=0.01, jitter_ms=4.0
    ) as sim:
        urls = [coinm.stream_url(base, [DELIVERY]) for base in sim.public_urls]
        assert urls[0].endswith("/public/stream?streams=btcusd_261225@depth@100ms")
        async with (
            connect(urls[0], compression=None) as a,
            connect(urls[1], compression=None) as b,
            httpx.AsyncClient() as http,
        ):
            buffered, _ = await read_diffs(a, coinm.parse, -1)
            response = await http.get(coinm.snapshot_url(sim.rest_url, DELIVERY, 1000))
            assert response.status_code == 200
            assert response.headers["x-mbx-used-weight-1m"] == "20"
            await sim.wait_steps(20)
            sim.pause()
            target = sim.last_id(DELIVERY)
            diffs_a, _ = await read_diffs(a, coinm.parse, target)
            diffs_b, _ = await read_diffs(b, coinm.parse, target)
            usdm_path = await http.get(sim.rest_url + "/fapi/v1/depth", params={"symbol": PERP})
            assert usdm_path.status_code == 404

    snapshot = coinm.parse_snapshot(DELIVERY, response.content, 0)
    for diffs in (buffered + diffs_a, diffs_b):
        assert all(d.venue == "binance-coinm" and d.symbol == DELIVERY for d in diffs)
        for prev, diff in itertools.pairwise(diffs):
            assert diff.prev_id == prev.last_id
    book = rebuild(BinanceFuturesRule(), snapshot, buffered, diffs_a, diffs_b)
    assert book.stats.gaps == 0 and book.stats.snapshots == 1
    assert book.applied_id == target
    assert book.book.normalized() == sim.true_book(DELIVERY).normalized()


async def test_trades_on_the_market_path_and_the_shutdown_notice_fault() -> None:
    far = FaultPlan("ep0:notice@900", 1, 1)
    (notice,) = [a for a in FaultPlan("ep0:notice@0.1", 1, 1).schedule()]
    async with SimBinanceCoinm([PERP], n_endpoints=1, interval_s=0.01, faults=far) as sim:
        market = coinm.market_stream_url(sim.market_urls[0], [PERP])
        async with connect(market, compression=None) as ws:
            trades: list[Trade] = []
            while len(trades) < 3:
                for event in coinm.parse(await ws.recv(decode=False), 0, 0):
                    assert isinstance(event, Trade) and event.venue == "binance-coinm"
                    trades.append(event)
            await sim.apply_fault(notice)
            notices: list[VenueNotice] = []
            while not notices:
                events = coinm.parse(await ws.recv(decode=False), 0, 0)
                notices = [e for e in events if isinstance(e, VenueNotice)]
            assert notices[0].kind == "shutdown" and notices[0].reconnect
            assert sim.stats(0).shutdown_notices == 1
