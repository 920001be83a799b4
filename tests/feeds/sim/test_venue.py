"""The pure venue protocols without a server: the shared interface's defaults, and the
Binance protocol's time windows (REST weight, message rate) with a driven clock."""

from __future__ import annotations

import msgspec
import pytest

from feeds.sim.binance_spot import BinanceSpotProtocol
from feeds.sim.binance_usdm import BinanceUsdmProtocol
from feeds.sim.book_process import BookProcess
from feeds.sim.connection import CloseConnection
from feeds.sim.connection import ConnState
from feeds.sim.venue import VenueProtocol
from feeds.sim.venue import query_int

SECOND_NS = 1_000_000_000


def test_query_int_takes_only_short_ascii_digits() -> None:
    assert query_int("25", 6) == 25
    assert query_int("0", 6) == 0
    for bad in ("", "-1", "1.5", "x", "٣", "1234567"):
        assert query_int(bad, 6) is None


def test_a_subscription_is_fresh_once_until_unsubscribed() -> None:
    state = ConnState("/")
    assert state.update_subscription("books:BTC", True)
    assert not state.update_subscription("books:BTC", True)
    assert state.subs == {"books:BTC"}
    assert not state.update_subscription("books:BTC", False)
    assert not state.update_subscription("books:ETH", False)
    assert state.subs == set()
    assert state.update_subscription("books:BTC", True)


def test_a_protocol_with_a_path_serves_that_path_only() -> None:
    protocol = VenueProtocol()
    assert protocol.check_path("/anything") is None
    protocol.path = "/v2"
    assert protocol.check_path("/v2?x=1") is None
    assert protocol.check_path("/v1") == "Only /v2 is simulated\n"


def _spot(**kwargs: int | None) -> BinanceSpotProtocol:
    protocol = BinanceSpotProtocol(**kwargs)
    protocol.attach({"BTCUSDT": BookProcess("BTCUSDT", 1)})
    return protocol


def test_rest_weight_is_counted_over_the_last_60_s_of_the_given_clock() -> None:
    protocol = _spot(rest_weight_limit_1m=30)
    query = {"symbol": "BTCUSDT", "limit": "500"}  # weight 25 on spot
    first = protocol.rest_response(query, 0)
    assert first.status == 200 and dict(first.headers)["X-MBX-USED-WEIGHT-1M"] == "25"
    small = protocol.rest_response({"symbol": "BTCUSDT", "limit": "5"}, 10 * SECOND_NS)
    assert dict(small.headers)["X-MBX-USED-WEIGHT-1M"] == "30"
    limited = protocol.rest_response(query, 59 * SECOND_NS)
    assert limited.status == 429 and dict(limited.headers)["Retry-After"] == "60"
    assert msgspec.json.decode(limited.body)["code"] == -1003
    # 60 s after the first request its weight has left the window.
    again = protocol.rest_response({"symbol": "BTCUSDT", "limit": "5"}, 60 * SECOND_NS)
    assert again.status == 200 and dict(again.headers)["X-MBX-USED-WEIGHT-1M"] == "10"
    assert protocol.rest_statuses == {200: 3, 429: 1}


def test_more_messages_than_allowed_within_one_second_close_the_connection() -> None:
    protocol = _spot(max_incoming_per_s=2)
    state = ConnState("/stream")
    protocol.on_open(state)
    limiter = protocol.limiter
    limiter.client_message(state, 0)
    limiter.client_message(state, SECOND_NS // 2)
    limiter.client_message(state, SECOND_NS)  # the first one is a second old
    with pytest.raises(CloseConnection) as closed:
        limiter.client_message(state, SECOND_NS + 1)
    assert (closed.value.code, closed.value.reason) == (1008, "Too many requests")
    assert limiter.stats.message_closes == 1 and limiter.stats.violations == 1


def test_streams_in_the_url_are_subscribed_and_a_wrong_one_refuses_the_connection() -> None:
    protocol = _spot()
    state = ConnState("/stream?streams=btcusdt@depth@100ms/btcusdt@trade")
    assert protocol.on_open(state) == []
    assert state.subs == {"btcusdt@depth@100ms", "btcusdt@trade"}
    with pytest.raises(CloseConnection, match="xrpusdt@trade"):
        protocol.on_open(ConnState("/stream?streams=xrpusdt@trade"))
    usdm = BinanceUsdmProtocol(seed=1)
    usdm.attach({"BTCUSDT": BookProcess("BTCUSDT", 1)})
    with pytest.raises(CloseConnection, match="served on /market"):
        usdm.on_open(ConnState("/public/stream?streams=btcusdt@aggTrade"))


def test_usdm_pause_publishes_the_open_event_so_stream_and_engine_agree() -> None:
    usdm = BinanceUsdmProtocol(seed=3)
    usdm.attach({"BTCUSDT": BookProcess("BTCUSDT", 3, actions_per_step=4.0)})
    for _ in range(20):
        usdm.step(0)
    engine_id = usdm.snapshot("BTCUSDT", 5)[0]
    pubs = usdm.on_pause(0)
    assert usdm.last_id("BTCUSDT") == engine_id
    assert [pub.key for pub in pubs][-1:] in ([], ["btcusdt@depth@100ms"])
    assert usdm.on_pause(0) == []
