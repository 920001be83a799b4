"""The simulated venues' limits: attempts per window then a ban, messages per second,
streams per connection, REST requests per window; every refusal counted."""

from __future__ import annotations

from dataclasses import replace

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.exceptions import InvalidStatus

from feeds import okx
from feeds.sim.binance_coinm import BinanceCoinmProtocol
from feeds.sim.binance_spot import BinanceSpotProtocol
from feeds.sim.binance_usdm import BinanceUsdmProtocol
from feeds.sim.bybit import BybitProtocol
from feeds.sim.coinbase import CoinbaseProtocol
from feeds.sim.connection import CloseConnection
from feeds.sim.connection import ConnState
from feeds.sim.kraken import KrakenProtocol
from feeds.sim.limits import VENUE_LIMITS
from feeds.sim.limits import SimLimits
from feeds.sim.limits import VenueLimiter
from feeds.sim.limits import retry_after_header
from feeds.sim.okx import OkxProtocol
from feeds.sim.simulators import SimBinanceSpot
from feeds.sim.simulators import SimOkx
from feeds.sim.venue import VenueProtocol
from gateway.wire.venues import ADAPTERS

SECOND_NS = 1_000_000_000


def test_attempts_over_the_window_are_refused_then_an_address_that_keeps_going_is_banned() -> None:
    limiter = VenueLimiter(SimLimits(connect_attempts=2, connect_window_s=10.0, ban_s=60.0))
    assert limiter.admit_connection("a", 0) is None
    assert limiter.admit_connection("a", 1 * SECOND_NS) is None
    # Another address has a window of its own.
    assert limiter.admit_connection("b", 1 * SECOND_NS) is None
    refused = limiter.admit_connection("a", 2 * SECOND_NS)
    assert refused is not None and refused.status == 429
    assert dict(refused.headers)["Retry-After"] == "8"  # the first attempt leaves at 10 s
    # Trying again before the Retry-After: banned for ban_s, whatever the window says.
    banned = limiter.admit_connection("a", 3 * SECOND_NS)
    assert banned is not None and banned.status == 418
    assert dict(banned.headers)["Retry-After"] == "60"
    banned_again = limiter.admit_connection("a", 30 * SECOND_NS)
    assert banned_again is not None and banned_again.status == 418
    assert limiter.admit_connection("a", 64 * SECOND_NS) is None
    stats = limiter.stats
    assert (stats.connects_refused, stats.connects_banned, stats.bans) == (1, 2, 1)
    assert stats.violations == 3


def test_an_address_that_waits_as_told_is_never_banned() -> None:
    limiter = VenueLimiter(SimLimits(connect_attempts=1, connect_window_s=1.0, ban_s=60.0))
    assert limiter.admit_connection("a", 0) is None
    refused = limiter.admit_connection("a", SECOND_NS // 2)
    assert refused is not None and refused.status == 429
    assert limiter.admit_connection("a", SECOND_NS) is None
    assert limiter.stats.bans == 0


def test_streams_over_the_limit_close_the_connection_with_the_venues_reason() -> None:
    limiter = VenueLimiter(SimLimits(max_streams=2, close_code=4004, streams_reason="Too many"))
    state = ConnState("/")
    state.subs.update({"a", "b"})
    limiter.streams(state)
    state.subs.add("c")
    with pytest.raises(CloseConnection) as closed:
        limiter.streams(state)
    assert (closed.value.code, closed.value.reason) == (4004, "Too many: 3 > 2")
    assert limiter.stats.stream_closes == 1


def test_rest_requests_over_the_window_are_refused_with_the_venues_status() -> None:
    limits = VENUE_LIMITS["bybit"]
    limiter = VenueLimiter(limits)
    assert limits.rest_requests is not None
    for n in range(limits.rest_requests):
        assert limiter.admit_rest("x", n) is None
    assert limiter.admit_rest("x", limits.rest_requests) == (403, 5.0 - limits.rest_requests / 1e9)
    # Going on before the Retry-After: Bybit's ten-minute stop.
    assert limiter.admit_rest("x", SECOND_NS) == (403, 600.0)
    assert (limiter.stats.rest_refused, limiter.stats.rest_banned) == (1, 1)


def test_scaled_limits_keep_the_counts_and_shorten_the_windows() -> None:
    limits = VENUE_LIMITS["binance-spot"].scaled(0.01)
    assert limits.connect_attempts == 300 and limits.connect_window_s == pytest.approx(3.0)
    assert limits.ban_s == pytest.approx(1.2)
    assert retry_after_header(0.2) == "1" and retry_after_header(2.5) == "3"


async def test_okx_refuses_the_fourth_handshake_within_a_second_with_429() -> None:
    limits = SimLimits(connect_attempts=3, connect_window_s=60.0)
    async with SimOkx(["BTC-USDT"], 1, interval_s=0.05, limits=limits) as sim:
        for _ in range(3):
            async with connect(sim.public_urls[0]):
                pass
        with pytest.raises(InvalidStatus) as refused:
            async with connect(sim.public_urls[0]):
                pass
        assert refused.value.response.status_code == 429
        assert sim.limit_stats().connects_refused == 1
        assert sim.stats(0).connections_accepted == 3


async def test_a_flood_of_messages_closes_the_connection_and_is_counted() -> None:
    limits = replace(VENUE_LIMITS["okx"], messages_per_s=2)
    async with SimOkx(["BTC-USDT"], 1, interval_s=0.05, limits=limits) as sim:
        async with connect(sim.public_urls[0]) as ws:
            with pytest.raises(ConnectionClosed):
                for _ in range(4):
                    await ws.send(okx.ping_message())
                async for _ in ws:
                    pass
            assert ws.close_code == 4004 and ws.close_reason == "Requests too frequent"
        assert sim.limit_stats().message_closes == 1


async def test_binance_closes_a_connection_whose_url_names_too_many_streams() -> None:
    limits = SimLimits(max_streams=3)
    async with SimBinanceSpot(["BTCUSDT", "ETHUSDT"], 1, limits=limits) as sim:
        url = (
            sim.endpoint_urls[0]
            + "/stream?streams="
            + "/".join(
                f"{s}@{kind}" for s in ("btcusdt", "ethusdt") for kind in ("depth@100ms", "trade")
            )
        )
        async with connect(url) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1008 and ws.close_reason == "Too many streams: 4 > 3"
        assert sim.limit_stats().stream_closes == 1


#: The simulated venue whose limits each gateway venue meets.
SIM_OF = {
    "binance": "binance-spot",
    "binance-usdm": "binance-usdm",
    "binance-coinm": "binance-coinm",
    "bybit-spot": "bybit",
    "bybit-linear": "bybit",
    "okx": "okx",
    "kraken": "kraken",
    "coinbase": "coinbase",
}


@pytest.mark.parametrize("venue", sorted(SIM_OF))
def test_the_gateways_venue_limits_stay_within_the_simulated_venues(venue: str) -> None:
    gateway = ADAPTERS[venue].limits
    sim = VENUE_LIMITS[SIM_OF[venue]]
    if sim.connect_attempts is not None:
        assert gateway.connect_window_s == sim.connect_window_s
        assert gateway.connect_attempts_per_window <= sim.connect_attempts
    if sim.messages_per_s is not None:
        assert gateway.messages_per_s <= sim.messages_per_s
    if sim.max_streams is not None:
        assert gateway.max_streams_per_connection is not None
        assert gateway.max_streams_per_connection <= sim.max_streams
    if sim.rest_requests is not None:
        assert gateway.rest_window_s == sim.rest_window_s
        assert gateway.rest_weight_per_window <= sim.rest_requests


@pytest.mark.parametrize(
    "protocol",
    [
        BinanceSpotProtocol(),
        BinanceUsdmProtocol(seed=1),
        BinanceCoinmProtocol(seed=1),
        OkxProtocol(),
        BybitProtocol(),
        KrakenProtocol(),
        CoinbaseProtocol(),
    ],
    ids=lambda protocol: protocol.name,
)
def test_every_simulated_venue_enforces_its_documented_limits(protocol: VenueProtocol) -> None:
    assert protocol.limiter.limits == VENUE_LIMITS[protocol.name]


def test_bybit_counts_its_streams_in_characters_of_topics() -> None:
    limiter = VenueLimiter(VENUE_LIMITS["bybit"])
    state = ConnState("/v5/public/spot")
    topics = [f"orderbook.200.COIN{i:04d}USDT" for i in range(1000)]
    state.subs.update(topics[:500])
    limiter.streams(state)  # 500 x 27 characters: within 21,000
    state.subs.update(topics)
    with pytest.raises(CloseConnection):
        limiter.streams(state)


def test_coinbase_counts_messages_per_address_over_every_connection() -> None:
    limiter = VenueLimiter(VENUE_LIMITS["coinbase"])
    first, second, elsewhere = ConnState("/"), ConnState("/"), ConnState("/")
    first.extra["source"] = second.extra["source"] = "127.0.0.1"
    elsewhere.extra["source"] = "127.0.0.2"
    for n in range(4):
        limiter.client_message(first, n)
        limiter.client_message(second, n)
        limiter.client_message(elsewhere, n)
    with pytest.raises(CloseConnection):
        limiter.client_message(second, 5)  # the ninth of the address within a second
    limiter.client_message(elsewhere, 5)
    assert limiter.stats.message_closes == 1
