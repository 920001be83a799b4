"""Binance USD-M futures: endpoints, stream names, and parsing of wire frames into
venue-neutral events (exchange-protocols.md §2).

Pure: takes bytes, returns events; no I/O. Any frame that breaks the venue's contract raises
:class:`gateway.core.model.VenueContractError` and nothing else.

Endpoints (the 2026 split; the legacy root URLs were retired on 2026-04-23):

- ``wss://fstream.binance.com/public`` carries the high-frequency streams: diff depth
  (``<s>@depth@100ms``) and ``@bookTicker``. :func:`stream_url` builds its combined-stream
  URL ``<endpoint>/stream?streams=...``.
- ``wss://fstream.binance.com/market`` carries ``@aggTrade`` (USD-M has no public raw
  ``@trade`` stream), mark price, klines and tickers. Trades therefore need a connection of
  their own: :func:`market_stream_url` builds it. :func:`parse` reads frames of either
  endpoint, so one parser serves both kinds of connection.

Sequence rule: a diff covers update ids ``U..u`` and carries ``pu``, the ``u`` of the
previous event of the stream. USD-M ids are not contiguous (``U`` of the next event is
usually above ``u + 1``), so continuity is ``pu == L``, not ``U == L + 1``
(:class:`BinanceFuturesRule`). A :class:`~gateway.core.model.DepthDiff` gets
``first_id = U``, ``last_id = u``, ``prev_id = pu``. The REST snapshot's ``lastUpdateId``
is the book's id.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlencode

import msgspec

from feeds.binance import DEPTH_UPDATE_SHAPE
from feeds.binance import Framing
from feeds.binance import depth_snapshot
from feeds.binance import depth_stream
from feeds.binance import weight_at
from gateway.core.arbiter import Link
from gateway.core.arbiter import StatelessRule
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import VenueEvent

VENUE: Final = "binance-usdm"

#: Public (high-frequency) WebSocket endpoint: diff depth and bookTicker.
WS_ENDPOINTS: Final = ("wss://fstream.binance.com/public",)
#: Market WebSocket endpoint: aggTrade, markPrice, klines, tickers.
MARKET_WS_ENDPOINTS: Final = ("wss://fstream.binance.com/market",)
#: Before the 2026 split every stream was under the root (``/ws/...``, ``/stream?...``);
#: retired 2026-04-23. For reading old captures and old documentation.
LEGACY_WS_ENDPOINTS: Final = ("wss://fstream.binance.com",)
#: Testnet root (secondary source: nautilus_trader); its split is not documented.
TESTNET_WS_ENDPOINTS: Final = ("wss://fstream.binancefuture.com",)
REST_ENDPOINTS: Final = ("https://fapi.binance.com",)

TRADE_SUFFIX: Final = "@aggTrade"
SNAPSHOT_PATH: Final = "/fapi/v1/depth"
#: The depths ``/fapi/v1/depth`` accepts.
SNAPSHOT_LIMITS: Final = (5, 10, 20, 50, 100, 500, 1000)
MAX_SNAPSHOT_LIMIT: Final = 1000
#: The REST depth asked for unless configured (weight 20).
DEFAULT_SNAPSHOT_LIMIT: Final = 1000
#: REST ``REQUEST_WEIGHT`` budget per minute per IP.
REST_WEIGHT_PER_MINUTE: Final = 2400
#: Streams per connection: 200 on the current docs, 1024 on older text; the lower is used.
MAX_STREAMS_PER_CONNECTION: Final = 200
#: Incoming messages per second per connection (pings, pongs and JSON requests count).
MAX_MESSAGES_PER_S: Final = 10

#: Diff-depth stream names (``<s>@depth``, ``<s>@depth@100ms``, ``@500ms``); partial-depth
#: streams (``<s>@depth5@100ms``) carry top-N books in depthUpdate events and must never be
#: applied as diffs, so they do not match.
DIFF_DEPTH_STREAM: Final = re.compile(r"[^@]+@depth(?:@\d+ms)?")


#: REST request weight of ``/fapi/v1/depth``: ``(largest limit, weight)``, ascending.
SNAPSHOT_WEIGHTS: Final = ((50, 2), (100, 5), (500, 10), (MAX_SNAPSHOT_LIMIT, 20))


def snapshot_weight(limit: int) -> int:
    """REST request weight of ``/fapi/v1/depth`` at ``limit`` levels."""
    return weight_at(limit, SNAPSHOT_WEIGHTS)


def trade_stream(symbol: str) -> str:
    return symbol.lower() + TRADE_SUFFIX


def _combined_url(endpoint: str, names: list[str]) -> str:
    if not names:
        raise ValueError("at least one symbol is required")
    if len(names) > MAX_STREAMS_PER_CONNECTION:
        raise ValueError(f"at most {MAX_STREAMS_PER_CONNECTION} streams per connection")
    return endpoint.rstrip("/") + "/stream?streams=" + "/".join(names)


def stream_url(endpoint: str, symbols: Sequence[str]) -> str:
    """Combined-stream URL of the diff depth of ``symbols`` on a public endpoint
    (``wss://fstream.binance.com/public/stream?streams=btcusdt@depth@100ms/...``).

    Depth only: trades live on the market endpoint (:func:`market_stream_url`).
    """
    return _combined_url(endpoint, [depth_stream(s) for s in dict.fromkeys(symbols)])


def market_stream_url(endpoint: str, symbols: Sequence[str]) -> str:
    """Combined-stream URL of the aggregate trades of ``symbols`` on a market endpoint
    (``wss://fstream.binance.com/market/stream?streams=btcusdt@aggTrade/...``)."""
    return _combined_url(endpoint, [trade_stream(s) for s in dict.fromkeys(symbols)])


def check_snapshot_limit(limit: int) -> None:
    """Raises ValueError unless ``limit`` is one of :data:`SNAPSHOT_LIMITS`, the depths a
    futures market's REST serves (``/fapi/v1/depth``, ``/dapi/v1/depth``: the same)."""
    if limit not in SNAPSHOT_LIMITS:
        accepted = ", ".join(map(str, SNAPSHOT_LIMITS))
        raise ValueError(f"snapshot limit must be one of {accepted}, got {limit}")


def depth_url(rest_base: str, path: str, symbol: str, limit: int) -> str:
    """``GET <path>?symbol=<SYMBOL>&limit=<limit>`` of a futures market's REST depth
    (:func:`check_snapshot_limit`)."""
    check_snapshot_limit(limit)
    query = urlencode({"symbol": symbol.upper(), "limit": limit})
    return f"{rest_base.rstrip('/')}{path}?{query}"


def snapshot_url(rest_base: str, symbol: str, limit: int) -> str:
    """``GET /fapi/v1/depth?symbol=<SYMBOL>&limit=<limit>`` (:func:`depth_url`)."""
    return depth_url(rest_base, SNAPSHOT_PATH, symbol, limit)


def subscribe_frame(symbols: Sequence[str], request_id: int) -> bytes:
    """A live SUBSCRIBE request for the diff depth of ``symbols`` (public endpoint)."""
    params = [depth_stream(s) for s in dict.fromkeys(symbols)]
    return msgspec.json.encode({"method": "SUBSCRIBE", "params": params, "id": request_id})


# --- sequence rule ------------------------------------------------------------------------


class BinanceFuturesRule(StatelessRule):
    """The futures link rule of USD-M and COIN-M (a :class:`gateway.core.arbiter.LinkRule`):
    ``u <= L`` is stale; ``pu == L`` or a range covering ``L`` links; anything else leaves a
    hole.

    Futures ids are not contiguous, so the spot rule would see holes that are not there.
    """

    name = "binance-usdm"
    #: Ids are not contiguous; BTCUSDT steps ~10^4 per 100 ms event.
    max_id_jump = 10**8

    def classify(self, diff: DepthDiff, applied_id: int) -> Link:
        if diff.last_id <= applied_id:
            return Link.STALE
        if diff.prev_id == applied_id or diff.first_id <= applied_id:
            return Link.LINKS
        return Link.FUTURE

    def continues(self, diff: DepthDiff, last_id: int) -> bool:
        return self.classify(diff, last_id) is Link.LINKS


# --- parsing ------------------------------------------------------------------------------


def futures_framing(venue: str) -> Framing:
    """The framing of a Binance futures market (USD-M, COIN-M): diff-depth streams,
    ``aggTrade`` trades, depth events chained by ``pu``."""
    return Framing(
        venue, is_depth_stream=DIFF_DEPTH_STREAM.fullmatch, trade_suffix=TRADE_SUFFIX, futures=True
    )


_parse: Final = futures_framing(VENUE).parse


def parse(raw: bytes, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    """Events in one WebSocket frame of a public or market connection, combined
    (``{"stream":..,"data":..}``) or raw.

    Diff depth becomes DepthDiff, aggTrade becomes Trade, control replies and shutdown
    notices become VenueNotice; other streams (bookTicker, kline, markPrice, partial depth)
    give an empty list. In raw-stream mode a partial-depth event cannot be told from a diff:
    use combined streams. Raises VenueContractError for anything that is not a valid frame.
    """
    return _parse(raw, recv_ns, conn_id)


def parse_snapshot(symbol: str, body: bytes, recv_ns: int, conn_id: int = -1) -> DepthSnapshot:
    """A REST ``/fapi/v1/depth`` response body as a snapshot of ``symbol``."""
    return depth_snapshot(VENUE, symbol, body, recv_ns, conn_id)


# --- recognising Binance futures in captures (VenueAdapter.hosts, frame_venue) --------------

#: COIN-M futures (:mod:`feeds.binance_coinm`), told apart from USD-M by :func:`frame_venue`.
COINM_VENUE: Final = "binance-coinm"
#: Hosts of USD-M's WebSocket and REST endpoints.
HOSTS: Final = {"fstream.binance.com": VENUE, "fapi.binance.com": VENUE}
#: cryptofeed's feed id of USD-M.
CRYPTOFEED_NAMES: Final = {"BINANCE_FUTURES": VENUE}


def frame_venue(head: bytes) -> str | None:
    """The futures market of a depth update in ``head`` (a frame's first bytes): COIN-M's
    carry ``ps``, USD-M's ``pu`` without it; None for anything else."""
    if not DEPTH_UPDATE_SHAPE.search(head):
        return None
    if b'"ps":' in head:
        return COINM_VENUE
    return VENUE if b'"pu":' in head else None
