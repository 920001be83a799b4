"""Rendered Binance spot frames: exact bytes, and a round trip through feeds.binance."""

from __future__ import annotations

from feeds import binance
from feeds.sim import binance_spot as render
from feeds.sim.book_process import BookProcess
from feeds.sim.book_process import SimTrade
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Side
from gateway.core.model import Trade
from gateway.core.model import VenueNotice

EVENT_MS = 1_672_515_782_136


def test_depth_frame_bytes_match_the_venue() -> None:
    frame = render.depth_frame(
        "BNBBTC", 157, 160, [("0.0024", "10")], [("0.0026", "100")], EVENT_MS
    )
    assert frame == (
        b'{"stream":"bnbbtc@depth@100ms","data":{"e":"depthUpdate","E":1672515782136,'
        b'"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}}'
    )


def test_trade_shutdown_and_rest_bytes_match_the_venue() -> None:
    trade = SimTrade(trade_id=12345, price="0.00100000", qty="100.00000000", buyer_is_maker=True)
    assert render.trade_frame("BNBBTC", trade, 123456785, trade_ms=123456785) == (
        b'{"stream":"bnbbtc@trade","data":{"e":"trade","E":123456785,"s":"BNBBTC","t":12345,'
        b'"p":"0.00100000","q":"100.00000000","T":123456785,"m":true,"M":true}}'
    )
    assert binance.notice_frame(1_770_123_456_789_999_999) == (
        b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}'
    )
    assert render.snapshot_body(1027024, [("4.00000000", "431.00000000")], []) == (
        b'{"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],"asks":[]}'
    )
    assert render.result_frame(1) == b'{"result":null,"id":1}'
    assert render.result_frame(3, ["btcusdt@trade"]) == b'{"result":["btcusdt@trade"],"id":3}'
    assert render.rest_error_body(-1121, "Invalid symbol.") == (
        b'{"code":-1121,"msg":"Invalid symbol."}'
    )


def test_every_rendered_frame_parses_back_to_the_same_values() -> None:
    process = BookProcess("BTCUSDT", seed=3)
    n_depth = n_trades = 0
    for _ in range(300):
        batch = process.step()
        if batch is None:
            continue
        for trade in batch.trades:
            [event] = binance.parse(render.trade_frame("BTCUSDT", trade, EVENT_MS), 1, 2)
            assert isinstance(event, Trade)
            assert (event.symbol, event.trade_id, event.price, event.qty) == (
                "BTCUSDT",
                trade.trade_id,
                trade.price,
                trade.qty,
            )
            assert event.side is (Side.SELL if trade.buyer_is_maker else Side.BUY)
            assert event.trade_ms == EVENT_MS
            n_trades += 1
        [diff] = binance.parse(render.batch_frame(batch, EVENT_MS), 1, 2)
        assert isinstance(diff, DepthDiff)
        assert (diff.symbol, diff.first_id, diff.last_id) == (
            "BTCUSDT",
            batch.first_id,
            batch.last_id,
        )
        assert (diff.bids, diff.asks) == (batch.bids, batch.asks)
        assert (diff.event_ms, diff.recv_ns, diff.conn_id) == (EVENT_MS, 1, 2)
        n_depth += 1
    assert n_depth > 250 and n_trades > 10

    last_id, bids, asks = process.snapshot(5000)
    snapshot = binance.parse_snapshot("btcusdt", render.snapshot_body(last_id, bids, asks), 5)
    assert isinstance(snapshot, DepthSnapshot)
    assert snapshot.last_id == last_id
    assert (list(snapshot.bids), list(snapshot.asks)) == (bids, asks)


def test_control_frames_parse_as_notices() -> None:
    [shutdown] = binance.parse(binance.notice_frame(EVENT_MS * 1_000_000), 1, 2)
    assert isinstance(shutdown, VenueNotice) and shutdown.reconnect
    [ack] = binance.parse(render.result_frame(7), 1, 2)
    assert isinstance(ack, VenueNotice) and ack.kind == "ack" and not ack.reconnect
    [error] = binance.parse(render.error_frame(2, "Invalid request: x", 7), 1, 2)
    assert isinstance(error, VenueNotice) and error.kind == "error"


def test_stream_names() -> None:
    assert binance.depth_stream("BTCUSDT") == "btcusdt@depth@100ms"
    assert binance.trade_stream("BTCUSDT") == "btcusdt@trade"
    assert binance.stream_names("BTCUSDT") == [
        binance.depth_stream("BTCUSDT"),
        binance.trade_stream("BTCUSDT"),
    ]
