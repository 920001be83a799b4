"""Binance COIN-M futures (coin-margined, ``dapi``): endpoints, symbols, and parsing of wire
frames into venue-neutral events.

Pure: takes bytes, returns events; no I/O. Any frame that breaks the venue's contract raises
:class:`gateway.core.model.VenueContractError` and nothing else.

COIN-M is USD-M's wire on other hosts (:mod:`feeds.binance_usdm` holds what they share: the
stream names, the framing, the ``pu`` link rule, the REST depth limits and weights):

- ``wss://dstream.binance.com/public`` carries diff depth (``<s>@depth@100ms``) and
  ``@bookTicker``; ``wss://dstream.binance.com/market`` carries ``@aggTrade`` (the trades
  the gateway reads), mark price, klines and tickers. The same split as USD-M's; the root
  (``/ws``, ``/stream``) is the legacy layout, for reading old captures.
- Symbols are contracts: ``BTCUSD_PERP`` (perpetual) or ``BTCUSD_YYMMDD`` (delivery,
  ``BTCUSD_261225``). Every event also carries ``ps``, the contract's pair (``BTCUSD``);
  that key is how a COIN-M frame is told from a USD-M one (:func:`frame_venue`).
- ``depthUpdate`` carries ``U``, ``u`` and ``pu``: continuity is ``pu == L``
  (:class:`BinanceFuturesRule`), exactly as on USD-M.
- REST ``GET /dapi/v1/depth?symbol=BTCUSD_PERP&limit=N``: the limits and weights of
  ``/fapi/v1/depth``; the body adds ``symbol`` and ``pair`` to ``lastUpdateId``, ``E``,
  ``T``, ``bids``, ``asks``. Quantities are in contracts.
- Limits: 2400 REST weight per minute per IP, 10 incoming messages per second and 200
  streams per connection; the server pings every 3 minutes and drops a connection without a
  pong for 10 minutes, and after 24 hours; ``serverShutdown`` asks for a reconnect.
"""

from __future__ import annotations

import re
from typing import Final

from feeds.binance import depth_snapshot
from feeds.binance_usdm import COINM_VENUE
from feeds.binance_usdm import DEFAULT_SNAPSHOT_LIMIT
from feeds.binance_usdm import MAX_MESSAGES_PER_S
from feeds.binance_usdm import MAX_SNAPSHOT_LIMIT
from feeds.binance_usdm import MAX_STREAMS_PER_CONNECTION
from feeds.binance_usdm import SNAPSHOT_LIMITS
from feeds.binance_usdm import BinanceFuturesRule
from feeds.binance_usdm import check_snapshot_limit
from feeds.binance_usdm import depth_url
from feeds.binance_usdm import frame_venue
from feeds.binance_usdm import futures_framing
from feeds.binance_usdm import market_stream_url
from feeds.binance_usdm import snapshot_weight
from feeds.binance_usdm import stream_url
from feeds.binance_usdm import subscribe_frame
from feeds.binance_usdm import trade_stream
from gateway.core.model import DepthSnapshot
from gateway.core.model import VenueEvent

__all__ = [
    "CRYPTOFEED_NAMES",
    "DEFAULT_SNAPSHOT_LIMIT",
    "HOSTS",
    "LEGACY_WS_ENDPOINTS",
    "MARKET_WS_ENDPOINTS",
    "MAX_MESSAGES_PER_S",
    "MAX_SNAPSHOT_LIMIT",
    "MAX_STREAMS_PER_CONNECTION",
    "REST_ENDPOINTS",
    "REST_WEIGHT_PER_MINUTE",
    "SNAPSHOT_LIMITS",
    "SNAPSHOT_PATH",
    "TESTNET_WS_ENDPOINTS",
    "VENUE",
    "WS_ENDPOINTS",
    "BinanceFuturesRule",
    "check_snapshot_limit",
    "frame_venue",
    "market_stream_url",
    "pair_of",
    "parse",
    "parse_snapshot",
    "snapshot_url",
    "snapshot_weight",
    "stream_url",
    "subscribe_frame",
    "trade_stream",
]

VENUE: Final = COINM_VENUE

_WS_ROOT: Final = "wss://dstream.binance.com"
#: The public (diff depth, bookTicker) and market (aggTrade, mark price, klines, tickers)
#: WebSocket endpoints.
WS_ENDPOINTS: Final = (f"{_WS_ROOT}/public",)
MARKET_WS_ENDPOINTS: Final = (f"{_WS_ROOT}/market",)
#: Every stream under the root (``/ws/...``, ``/stream?...``): the layout before the split.
LEGACY_WS_ENDPOINTS: Final = (_WS_ROOT,)
TESTNET_WS_ENDPOINTS: Final = ("wss://dstream.binancefuture.com",)
REST_ENDPOINTS: Final = ("https://dapi.binance.com",)

SNAPSHOT_PATH: Final = "/dapi/v1/depth"
#: REST ``REQUEST_WEIGHT`` budget per minute per IP.
REST_WEIGHT_PER_MINUTE: Final = 2400

#: A COIN-M contract: its pair, then ``PERP`` or a delivery date ``YYMMDD``.
_CONTRACT: Final = re.compile(r"(?P<pair>[A-Z0-9]+)_(?:PERP|\d{6})", re.IGNORECASE)


def pair_of(symbol: str) -> str:
    """The pair of a contract (``BTCUSD`` of ``BTCUSD_PERP`` and of ``BTCUSD_261225``), as
    events carry it in ``ps``. Raises ValueError for a symbol that is not a contract."""
    m = _CONTRACT.fullmatch(symbol)
    if m is None:
        raise ValueError(f"{symbol!r} is not a COIN-M contract (BTCUSD_PERP, BTCUSD_261225)")
    return m.group("pair").upper()


def snapshot_url(rest_base: str, symbol: str, limit: int) -> str:
    """``GET /dapi/v1/depth?symbol=<SYMBOL>&limit=<limit>`` (:func:`check_snapshot_limit`:
    USD-M's limits)."""
    return depth_url(rest_base, SNAPSHOT_PATH, symbol, limit)


_parse: Final = futures_framing(VENUE).parse


def parse(raw: bytes, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    """Events in one WebSocket frame of a public or market connection, combined or raw:
    diff depth becomes DepthDiff, aggTrade becomes Trade, control replies and shutdown
    notices become VenueNotice, other streams give an empty list. Raises
    VenueContractError for anything that is not a valid frame."""
    return _parse(raw, recv_ns, conn_id)


def parse_snapshot(symbol: str, body: bytes, recv_ns: int, conn_id: int = -1) -> DepthSnapshot:
    """A REST ``/dapi/v1/depth`` response body as a snapshot of ``symbol``."""
    return depth_snapshot(VENUE, symbol, body, recv_ns, conn_id)


# --- recognising COIN-M in captures (VenueAdapter.hosts, frame_venue) -----------------------

#: Hosts of COIN-M's WebSocket and REST endpoints.
HOSTS: Final = {"dstream.binance.com": VENUE, "dapi.binance.com": VENUE}
#: cryptofeed's feed id of COIN-M.
CRYPTOFEED_NAMES: Final = {"BINANCE_DELIVERY": VENUE}
