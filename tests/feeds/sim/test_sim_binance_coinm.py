"""The simulated Binance COIN-M futures venue: USD-M's simulator with COIN-M's contracts, the
``ps`` pair, ``/dapi/v1/depth`` and the fault language, read back by feeds.binance_coinm.

Loopback tests are async and run under the deadline of conftest.py.
"""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.asyncio.client import connect

from feeds import binance_coinm as coinm
from feeds.sim import binance_usdm as render
from feeds.sim.binance_coinm import BinanceCoinmProtocol
from feeds.sim.book_process import BookProcess
from feeds.sim.faults import FaultPlan
from feeds.sim.simulators import SimBinanceCoinm
from gateway.capture.venues import venue_from_frame
from gateway.core.model import DepthDiff
from gateway.core.model import Trade
from gateway.core.model import VenueNotice

from .test_sim_binance_usdm import rebuilt_with_no_gap
from .test_sim_binance_usdm import two_endpoint_session

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
        session = await two_endpoint_session(sim, coinm, DELIVERY)
        true_book = sim.true_book(DELIVERY)
        async with httpx.AsyncClient() as http:
            usdm_path = await http.get(sim.rest_url + "/fapi/v1/depth", params={"symbol": PERP})
            assert usdm_path.status_code == 404
    for diffs in (session.buffered, session.diffs_a, session.diffs_b):
        assert all(d.venue == "binance-coinm" and d.symbol == DELIVERY for d in diffs)
    body = json.loads(session.response.content)
    assert (body["symbol"], body["pair"]) == (DELIVERY, "BTCUSD")
    snapshot = coinm.parse_snapshot(DELIVERY, session.response.content, 0)
    rebuilt_with_no_gap(session, snapshot, true_book)


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
