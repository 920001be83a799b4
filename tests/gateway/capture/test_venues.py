"""Venues of URLs and frames, as the venue adapters declare them."""

from __future__ import annotations

import pytest

from gateway.capture import KNOWN_VENUES
from gateway.capture import connection_venue
from gateway.capture import venue_from_frame
from gateway.capture import venue_from_url
from gateway.capture.venues import agreed_venue
from gateway.capture.venues import cryptofeed_venue
from gateway.capture.venues import exchange_of
from gateway.wire.venues import ADAPTERS
from gateway.wire.venues import VenueAdapter

from .samples import BYBIT_DELTA
from .samples import BYBIT_LINEAR
from .samples import BYBIT_SPOT


@pytest.mark.parametrize(
    ("url", "venue"),
    [
        ("wss://stream.binance.com:9443/stream?streams=a", "binance"),
        ("wss://stream.binance.com:443/ws", "binance"),
        ("wss://data-stream.binance.vision/stream", "binance"),
        ("https://api.binance.com/api/v3/depth?symbol=X", "binance"),
        ("wss://fstream.binance.com/stream?streams=a", "binance-usdm"),
        ("https://fapi.binance.com/fapi/v1/depth", "binance-usdm"),
        ("wss://ws.okx.com:8443/ws/v5/public", "okx"),
        ("wss://stream.bybit.com/v5/public/linear", "bybit"),
        ("wss://ws.kraken.com/v2", "kraken"),
        ("wss://advanced-trade-ws.coinbase.com", "coinbase"),
        ("wss://example.com/binance.com", None),
        ("wss://notbinance.com/", None),
        ("", None),
    ],
)
def test_venue_from_url(url: str, venue: str | None) -> None:
    assert venue_from_url(url) == venue


@pytest.mark.parametrize(
    ("url", "venue"),
    [
        (BYBIT_LINEAR, "bybit-linear"),
        (BYBIT_SPOT, "bybit-spot"),
        ("wss://stream-testnet.bybit.com/v5/public/spot", "bybit-spot"),
        ("wss://stream.bybit.kz/v5/public/inverse", "bybit-inverse"),
        ("wss://stream.bybit.com/v5/public/option/", "bybit-option"),
        ("wss://stream.bybit.com/v5/private", "bybit"),
        ("wss://stream.bybit.com/v5/public/linearx", "bybit"),
        ("https://api.bybit.com/v5/market/orderbook?category=spot&symbol=BTCUSDT", "bybit-spot"),
        ("https://api.bybit.com/v5/market/orderbook?category=nope", "bybit"),
        ("wss://ws-feed.exchange.coinbase.com", "coinbase-exchange"),
        ("https://api.exchange.coinbase.com/products/BTC-USD/book", "coinbase-exchange"),
        ("wss://ws-feed.pro.coinbase.com", "coinbase-exchange"),
        ("wss://advanced-trade-ws.coinbase.com", "coinbase"),
        ("wss://fstream.binance.com/public/stream?streams=a", "binance-usdm"),
        ("wss://example.com/v5/public/spot", None),
    ],
)
def test_connection_venue(url: str, venue: str | None) -> None:
    assert connection_venue(url) == venue
    assert venue is None or venue in KNOWN_VENUES


def test_venue_from_url_stays_by_host() -> None:
    assert venue_from_url(BYBIT_SPOT) == "bybit"
    assert venue_from_url("wss://stream.bybit.tr/v5/public/spot") == "bybit"
    assert {"bybit-spot", "bybit-linear", "coinbase-exchange", "bybit"} <= KNOWN_VENUES


@pytest.mark.parametrize(
    ("frame", "venue"),
    [
        (BYBIT_DELTA, "bybit"),
        (b'{"topic": "publicTrade.BTCUSDT", "ts": 1, "type": "snapshot", "data": []}', "bybit"),
        (b'{"channel":"heartbeat"}', "kraken"),
        (b'{"channel":"ticker","type":"update","data":[]}', "kraken"),
        (b'{"channel":"heartbeats","sequence_num":5,"events":[]}', "coinbase"),
        (b'{"type":"match","product_id":"BTC-USD","trade_id":1}', "coinbase-exchange"),
        (b'{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"}}', "okx"),
        (b'{"arg":{"channel":"status"},"data":[]}', "okx"),
        (
            b'{"e":"depthUpdate","E":1,"s":"BTCUSD_PERP","ps":"BTCUSD","U":1,"u":2,"pu":0}',
            "binance-coinm",
        ),
        (b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2}', "binance"),
        (b'{"type":"l2update"}', None),
        (b'{"channels":["book"]}', None),
        (b'{"stream":"btcusdt@depth","data":{}}', None),
        (b'{"group":"x","raw":"{\\"channel\\":\\"book\\"}"}', None),
        (b"", None),
    ],
)
def test_venue_from_frame(frame: bytes, venue: str | None) -> None:
    assert venue_from_frame(frame) == venue


@pytest.mark.parametrize("adapter", ADAPTERS.values(), ids=list(ADAPTERS))
def test_every_endpoint_of_an_adapter_is_recognised_as_its_venue(adapter: VenueAdapter) -> None:
    assert adapter.venue in KNOWN_VENUES
    for url in (*adapter.ws_endpoints, *adapter.rest_endpoints):
        assert connection_venue(url) in (adapter.venue, adapter.exchange), url


@pytest.mark.parametrize(
    ("venues", "agreed"),
    [
        ({}, None),
        ({"okx": "okx"}, "okx"),
        ({"bybit-spot": "bybit", "bybit-linear": "bybit"}, "bybit"),
        ({"okx": "okx", "bybit-spot": "bybit"}, None),
    ],
)
def test_agreed_venue(venues: dict[str, str], agreed: str | None) -> None:
    assert agreed_venue(venues) == agreed


def test_exchange_and_cryptofeed_names() -> None:
    assert exchange_of("bybit-linear") == "bybit"
    assert exchange_of("okx") == "okx"
    assert exchange_of("binance-coinm") == "binance-coinm"
    assert cryptofeed_venue("binance_delivery") == "binance-coinm"
    assert cryptofeed_venue("NOPE") is None


def test_adapters_that_share_a_host_agree_on_its_venue() -> None:
    named: dict[str, set[str]] = {}
    for adapter in ADAPTERS.values():
        for host, venue in adapter.hosts.items():
            named.setdefault(host, set()).add(venue)
    assert named and all(len(venues) == 1 for venues in named.values()), named
