"""Bybit v5 public streams, spot and linear: endpoints, subscribe messages, parsing of wire
frames, and the sequence rule that merges redundant connections (exchange-protocols.md §7).

Pure: takes bytes, returns events; no I/O. Any frame that breaks the venue's contract
raises :class:`gateway.core.model.VenueContractError` and nothing else.

Venues: Bybit serves each product category on its own endpoint, with its own books and
ids, so each category is a venue of the gateway: :data:`SPOT` (``bybit-spot``, symbol keys
``bybit-spot:BTCUSDT``) and :data:`LINEAR` (``bybit-linear``, USDT/USDC perpetuals and
futures). The frames of both look alike and do not name their category, so the venue is
given to the parser: :func:`parse` takes it as an argument, and :func:`parse_spot` /
:func:`parse_linear` are the same parser with the venue bound (the ``(raw, recv_ns,
conn_id)`` signature of the other venue modules). The same holds for the REST snapshot
(:func:`snapshot_url`, :func:`parse_snapshot` and their ``_spot`` / ``_linear`` forms).

Books: topic ``orderbook.{depth}.{SYMBOL}``. The first push after a subscribe is
``type:"snapshot"``, then ``type:"delta"``; levels are ``[price, size]`` strings in plain
fixed-point decimal (:data:`NUMBERS`: ``"30247.20"``, ``"0.011"``), a size of ``"0"``
deletes the level. Every push carries ``u``, the update id of that topic.

- a snapshot becomes :class:`~gateway.core.model.DepthSnapshot` with ``conn_id`` of the
  connection, ``last_id = u``, ``reset = (u == 1)`` (Bybit restarted its service: the
  snapshot replaces the book whatever came before) and ``venue_time_ms = cts``, the
  matching engine's time of the book (``ts`` when absent): what orders two resets;
- a delta becomes :class:`~gateway.core.model.DepthDiff` with ``first_id = last_id = u`` and
  ``prev_id = -1``.

Bybit sends a snapshot on every (re)subscribe, on each connection, and again whenever it
has a problem on its side; the parser emits every snapshot and the arbiter decides (newer
than the book: a jump; older: stale). Ids of different depths of one symbol are different
sequences: every connection must subscribe the same depth.

Sequence rule (:class:`BybitRule`): ``u`` grows by exactly 1 per push of a topic; on the
recorded data it does for ``orderbook.200`` and ``orderbook.500`` (0 gaps), although the docs
only promise it for ``orderbook.full``. Whether ``u`` is the same on every connection is
not documented (exchange-protocols.md §10 item 5).

Trades: topic ``publicTrade.{SYMBOL}``; see :func:`trade_id` for the ids.

REST: ``GET /v5/market/orderbook?category=..&symbol=..&limit=..`` returns the book with a
``u``. Whether that ``u`` is in the same sequence as a WebSocket ``orderbook.{depth}`` topic
is not documented; resyncs should resubscribe (:func:`resubscribe_messages`) for an
in-band snapshot, as for OKX.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Sequence
from types import MappingProxyType
from typing import Final
from urllib.parse import parse_qs
from urllib.parse import urlencode
from urllib.parse import urlsplit

import msgspec

from feeds.common import FIXED_POINT
from feeds.common import MAX_INT
from feeds.common import check_levels
from feeds.common import check_snapshot_range
from feeds.common import decode
from feeds.common import decode_push
from feeds.common import endpoint_url
from feeds.common import notice
from feeds.common import rest_snapshot
from feeds.common import taker_side
from gateway.core.arbiter import Link
from gateway.core.arbiter import StatelessRule
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Trade
from gateway.core.model import VenueContractError
from gateway.core.model import VenueEvent

SPOT: Final = "bybit-spot"
LINEAR: Final = "bybit-linear"
VENUES: Final = (SPOT, LINEAR)
#: How prices and sizes are written on the wire (both categories).
NUMBERS: Final = FIXED_POINT
#: Bybit's ``category`` of each venue (the path of its endpoint, the REST parameter).
CATEGORIES: Final[Mapping[str, str]] = MappingProxyType({SPOT: "spot", LINEAR: "linear"})

_HOST: Final = "stream.bybit.com"
_TESTNET_HOST: Final = "stream-testnet.bybit.com"
#: Hosts of Bybit's regional entities (Turkey, Indonesia, Kazakhstan, Georgia, Japan).
#: They serve the same ``/v5/public/<category>`` paths; whether their books are the
#: global ones is not documented, so they are not among the default endpoints.
REGIONAL_HOSTS: Final = (
    "stream.bybit.tr",
    "stream.bybit.id",
    "stream.bybit.kz",
    "stream.bybitgeorgia.ge",
    "stream.manepa.jp",
)


def _category(venue: str) -> str:
    try:
        return CATEGORIES[venue]
    except KeyError:
        raise ValueError(f"venue must be one of {VENUES}, got {venue!r}") from None


def endpoint(host: str, venue: str) -> str:
    """The public WebSocket endpoint of ``venue`` on ``host``
    (``wss://<host>/v5/public/<category>``)."""
    return f"wss://{host}/v5/public/{_category(venue)}"


#: Mainnet public endpoints per venue.
WS_ENDPOINTS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {venue: (endpoint(_HOST, venue),) for venue in VENUES}
)
#: Testnet public endpoints per venue.
TESTNET_WS_ENDPOINTS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {venue: (endpoint(_TESTNET_HOST, venue),) for venue in VENUES}
)
REST_ENDPOINTS: Final = ("https://api.bybit.com",)
TESTNET_REST_ENDPOINTS: Final = ("https://api-testnet.bybit.com",)

SNAPSHOT_PATH: Final = "/v5/market/orderbook"
#: Largest ``limit`` of ``/v5/market/orderbook`` for spot and linear (levels per side).
MAX_SNAPSHOT_LIMIT: Final = 1000
#: 600 REST requests per 5 s per IP.
REST_REQUESTS_PER_5S: Final = 600
REST_REQUESTS_PER_MINUTE: Final = REST_REQUESTS_PER_5S * 12

#: Book depths of spot and linear: 1 (10 ms, snapshots only, re-pushed every 3 s with the
#: same ``u``), 50 (20 ms), 200 (100 ms), 1000 (200 ms).
BOOK_DEPTHS: Final = (1, 50, 200, 1000)
DEFAULT_DEPTH: Final = 200
#: Spot accepts at most 10 args per subscribe request; the same bound is used for linear.
MAX_ARGS_PER_REQUEST: Final = 10
#: Total length of the args subscribed on one connection.
MAX_ARGS_CHARS_PER_CONNECTION: Final = 21_000
#: Bybit cuts a connection that sends nothing for 10 minutes; it recommends a ping every 20 s.
PING_INTERVAL_S: Final = 20.0

_INT63: Final = MAX_INT - 1
_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


# --- URLs and outgoing messages -----------------------------------------------------------


#: The URL a connection opens: the endpoint itself (Bybit subscribes by message).
connect_url: Final = endpoint_url


def book_topic(symbol: str, depth: int = DEFAULT_DEPTH) -> str:
    if depth not in BOOK_DEPTHS:
        raise ValueError(f"book depth must be one of {BOOK_DEPTHS}, got {depth}")
    return f"orderbook.{depth}.{symbol.upper()}"


def trade_topic(symbol: str) -> str:
    return f"publicTrade.{symbol.upper()}"


def _topics(symbols: Sequence[str], depth: int) -> list[str]:
    if not symbols:
        raise ValueError("at least one symbol is required")
    unique = list(dict.fromkeys(s.upper() for s in symbols))
    return [t for s in unique for t in (book_topic(s, depth), trade_topic(s))]


def topic_chars(symbol: str, depth: int = DEFAULT_DEPTH) -> int:
    """Characters of the args one symbol subscribes (its book and trade topics), the unit
    of :data:`MAX_ARGS_CHARS_PER_CONNECTION`."""
    return sum(len(t) for t in _topics([symbol], depth))


def _requests(op: str, topics: list[str]) -> list[bytes]:
    """``op`` requests of at most :data:`MAX_ARGS_PER_REQUEST` args each."""
    if sum(len(t) for t in topics) > MAX_ARGS_CHARS_PER_CONNECTION:
        raise ValueError(
            f"args exceed {MAX_ARGS_CHARS_PER_CONNECTION} characters per connection: "
            "spread the symbols over more connections"
        )
    return [
        msgspec.json.encode(
            {"req_id": f"{op}-{n}", "op": op, "args": topics[i : i + MAX_ARGS_PER_REQUEST]}
        )
        for n, i in enumerate(range(0, len(topics), MAX_ARGS_PER_REQUEST), 1)
    ]


def subscribe_messages(symbols: Sequence[str], depth: int = DEFAULT_DEPTH) -> list[bytes]:
    """Subscribe requests for the book (``orderbook.{depth}``) and trades of ``symbols``,
    at most 10 args per request (the spot limit). Raises ValueError for no symbols, a depth
    Bybit does not offer, or more args than one connection takes."""
    return _requests("subscribe", _topics(symbols, depth))


def unsubscribe_messages(symbols: Sequence[str], depth: int = DEFAULT_DEPTH) -> list[bytes]:
    """Unsubscribe requests for the book and trades of ``symbols``."""
    return _requests("unsubscribe", _topics(symbols, depth))


def resubscribe_messages(symbol: str, depth: int = DEFAULT_DEPTH) -> list[bytes]:
    """Unsubscribe and subscribe the book of one symbol again: the venue then sends a fresh
    snapshot on this connection. Trades are left alone."""
    topic = [book_topic(symbol, depth)]
    return _requests("unsubscribe", topic) + _requests("subscribe", topic)


def ping_message(req_id: str = "ping") -> bytes:
    """The application-level keepalive ``{"req_id":..,"op":"ping"}``."""
    return msgspec.json.encode({"req_id": req_id, "op": "ping"})


def check_snapshot_limit(limit: int) -> None:
    """Raises ValueError unless ``/v5/market/orderbook`` serves ``limit`` levels per side
    (1..1000, spot and linear)."""
    check_snapshot_range(limit, MAX_SNAPSHOT_LIMIT)


def snapshot_url(rest_base: str, symbol: str, limit: int, venue: str) -> str:
    """``GET /v5/market/orderbook?category=<category>&symbol=<SYMBOL>&limit=<limit>``
    (:func:`check_snapshot_limit`)."""
    check_snapshot_limit(limit)
    query = urlencode({"category": _category(venue), "symbol": symbol.upper(), "limit": limit})
    return f"{rest_base.rstrip('/')}{SNAPSHOT_PATH}?{query}"


def snapshot_url_spot(rest_base: str, symbol: str, limit: int) -> str:
    return snapshot_url(rest_base, symbol, limit, SPOT)


def snapshot_url_linear(rest_base: str, symbol: str, limit: int) -> str:
    return snapshot_url(rest_base, symbol, limit, LINEAR)


# --- trade ids ----------------------------------------------------------------------------


def trade_id(text: str) -> int:
    """The gateway's integer id of a Bybit trade id ``i``, stable across connections.

    Spot sends decimal ids (``"2280000001739247417"``): their value, when below 2**63.
    Linear sends UUIDs (``"a9188a0a-82bc-50de-be60-03eedbe3cdd7"``): the 128-bit number of
    the hex digits, folded to 63 bits (high 64 bits XOR low 64 bits, top bit cleared), so
    that it fits every integer encoding subscribers use. A decimal id of 2**63 or more is
    folded the same way. Raises VenueContractError for anything else.
    """
    if text.isascii() and text.isdigit():
        value = int(text)
        if value <= _INT63:
            return value
    elif _UUID.fullmatch(text):
        value = int(text.replace("-", ""), 16)
    else:
        raise VenueContractError(f"trade id is neither decimal nor a UUID: {text!r}")
    return ((value >> 64) ^ value) & _INT63


# --- wire structs: one module-level decoder per message -----------------------------------


class _Frame(msgspec.Struct):
    """A topic push or a reply to a request: just enough to route it."""

    topic: str | None = None
    type: str | None = None
    ts: int | None = None
    #: The matching engine's time of the data (ms); ``ts`` is the push system's, per message.
    cts: int | None = None
    #: Empty when absent (msgspec cannot decode ``Raw | None``: it would expect null).
    data: msgspec.Raw = msgspec.Raw()
    op: str | None = None
    success: bool | None = None
    ret_msg: str | None = None
    req_id: str | int | None = None


class _BookData(msgspec.Struct):
    s: str
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]
    u: int
    seq: int | None = None


class _TradeData(msgspec.Struct):
    T: int
    s: str
    S: str
    v: str
    p: str
    i: str


class _CommandResp(msgspec.Struct):
    failTopics: list[str] = []
    successTopics: list[str] = []


class _RestEnvelope(msgspec.Struct):
    retCode: int
    retMsg: str = ""
    result: msgspec.Raw = msgspec.Raw()


class _RestBook(msgspec.Struct):
    s: str
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]
    u: int
    ts: int = 0
    seq: int | None = None


_frame_decoder: Final = msgspec.json.Decoder(_Frame)
_book_decoder: Final = msgspec.json.Decoder(_BookData)
_trades_decoder: Final = msgspec.json.Decoder(list[_TradeData])
_command_decoder: Final = msgspec.json.Decoder(_CommandResp)
_rest_decoder: Final = msgspec.json.Decoder(_RestEnvelope)
_rest_book_decoder: Final = msgspec.json.Decoder(_RestBook)


# --- parsing ------------------------------------------------------------------------------


def _book_symbol(topic: str) -> str:
    """The symbol of ``orderbook.{depth}.{SYMBOL}``."""
    parts = topic.split(".")
    if len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit()) or not parts[2]:
        raise VenueContractError(f"book topic is not 'orderbook.<depth>.<symbol>': {topic!r}")
    return parts[2]


def _book_event(
    venue: str, frame: _Frame, topic: str, recv_ns: int, conn_id: int
) -> list[VenueEvent]:
    symbol = _book_symbol(topic)
    d = decode_push(_book_decoder, frame.data, topic)
    if d.s != symbol:
        raise VenueContractError(f"{topic} push for symbol {d.s!r}")
    if not 0 <= d.u <= _INT63:
        raise VenueContractError(f"{topic} push with u={d.u}")
    bids = check_levels(d.b, NUMBERS, f"{symbol} bids")
    asks = check_levels(d.a, NUMBERS, f"{symbol} asks")
    if frame.type == "snapshot":
        return [
            DepthSnapshot(
                venue=venue,
                symbol=symbol,
                last_id=d.u,
                bids=bids,
                asks=asks,
                recv_ns=recv_ns,
                conn_id=conn_id,
                reset=d.u == 1,
                # The engine's time of the book orders two ``u == 1`` resets, and copies of
                # one reset on several connections share it (each push has a ``ts`` of its
                # own); ``seq`` would too, but whether it survives a service restart is not
                # documented. Without ``cts``: the push's ``ts``.
                venue_time_ms=frame.ts if frame.cts is None else frame.cts,
            )
        ]
    if frame.type == "delta":
        return [
            DepthDiff(
                venue=venue,
                symbol=symbol,
                first_id=d.u,
                last_id=d.u,
                prev_id=-1,
                bids=bids,
                asks=asks,
                event_ms=frame.ts or 0,
                recv_ns=recv_ns,
                conn_id=conn_id,
            )
        ]
    raise VenueContractError(f"{topic} push of type {frame.type!r}")


def _trade_events(
    venue: str, frame: _Frame, topic: str, recv_ns: int, conn_id: int
) -> list[VenueEvent]:
    items = decode_push(_trades_decoder, frame.data, topic)
    events: list[VenueEvent] = []
    for t in items:
        side = taker_side(t.S, "Buy", "Sell")  # ``S`` is the taker's side
        check_levels([(t.p, t.v)], NUMBERS, "trade")
        events.append(
            Trade(
                venue=venue,
                symbol=t.s,
                trade_id=trade_id(t.i),
                price=t.p,
                qty=t.v,
                side=side,
                trade_ms=t.T,
                recv_ns=recv_ns,
                conn_id=conn_id,
            )
        )
    return events


def _reply(venue: str, frame: _Frame, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    """A reply to a request: pongs give nothing, acks and errors a VenueNotice."""
    op = frame.op or ""
    req = "" if frame.req_id in (None, "") else f" {frame.req_id}"
    if frame.type == "COMMAND_RESP":  # option/spread acks: topics listed in data
        failed: list[str] = []
        if frame.data:
            failed = decode(_command_decoder, frame.data, "bad COMMAND_RESP data").failTopics
        if frame.success is False or failed:
            detail = f"{op or 'request'}{req} failed: {frame.ret_msg or ''} {failed}".rstrip()
            return [notice(venue, "error", detail, recv_ns, conn_id)]
        return [notice(venue, "ack", f"{op or 'request'}{req}", recv_ns, conn_id)]
    if op in ("ping", "pong"):
        if frame.success is False:
            return [notice(venue, "error", f"ping failed: {frame.ret_msg}", recv_ns, conn_id)]
        return []
    if frame.success is False:
        return [notice(venue, "error", f"{op}{req}: {frame.ret_msg}", recv_ns, conn_id)]
    if op in ("subscribe", "unsubscribe"):
        return [notice(venue, "ack", f"{op}{req}", recv_ns, conn_id)]
    return [notice(venue, "info", f"{op}{req}: {frame.ret_msg or ''}".rstrip(), recv_ns, conn_id)]


def parse(raw: bytes, recv_ns: int, conn_id: int, venue: str) -> list[VenueEvent]:
    """Events in one WebSocket frame of ``venue`` (:data:`SPOT` or :data:`LINEAR`).

    Book pushes become DepthSnapshot / DepthDiff, publicTrade pushes become Trade,
    subscribe replies become VenueNotice (``ack`` or ``error``); pongs and pushes of other
    topics (tickers, kline, liquidations) give an empty list. Raises VenueContractError for
    anything that is not a valid Bybit frame, and ValueError for an unknown ``venue``.
    """
    _category(venue)
    frame = decode(_frame_decoder, raw, "undecodable frame")
    topic = frame.topic
    if topic is not None:
        if topic.startswith("orderbook."):
            return _book_event(venue, frame, topic, recv_ns, conn_id)
        if topic.startswith("publicTrade."):
            return _trade_events(venue, frame, topic, recv_ns, conn_id)
        return []
    if frame.op is not None or frame.success is not None or frame.type == "COMMAND_RESP":
        return _reply(venue, frame, recv_ns, conn_id)
    raise VenueContractError("frame is neither a topic push nor a reply")


def parse_spot(raw: bytes, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    """:func:`parse` for a connection to a spot endpoint."""
    return parse(raw, recv_ns, conn_id, SPOT)


def parse_linear(raw: bytes, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    """:func:`parse` for a connection to a linear endpoint."""
    return parse(raw, recv_ns, conn_id, LINEAR)


def parse_snapshot(
    symbol: str, body: bytes, recv_ns: int, conn_id: int = -1, *, venue: str
) -> DepthSnapshot:
    """A REST ``/v5/market/orderbook`` response body as a snapshot of ``symbol`` on ``venue``;
    ``last_id`` is the response's ``u``."""
    _category(venue)
    env = decode(_rest_decoder, body, f"bad book snapshot for {symbol}")
    if env.retCode != 0:
        raise VenueContractError(f"book snapshot for {symbol}: retCode {env.retCode}: {env.retMsg}")
    if not env.result:
        raise VenueContractError(f"book snapshot for {symbol} without result")
    d = decode(_rest_book_decoder, env.result, f"bad book snapshot for {symbol}")
    if d.s.upper() != symbol.upper():
        raise VenueContractError(f"book snapshot for {symbol} holds {d.s!r}")
    if not 0 <= d.u <= _INT63:
        raise VenueContractError(f"book snapshot for {symbol} with u={d.u}")
    return rest_snapshot(venue, symbol, d.u, d.b, d.a, recv_ns, conn_id, NUMBERS)


def parse_snapshot_spot(symbol: str, body: bytes, recv_ns: int, conn_id: int = -1) -> DepthSnapshot:
    return parse_snapshot(symbol, body, recv_ns, conn_id, venue=SPOT)


def parse_snapshot_linear(
    symbol: str, body: bytes, recv_ns: int, conn_id: int = -1
) -> DepthSnapshot:
    return parse_snapshot(symbol, body, recv_ns, conn_id, venue=LINEAR)


# --- sequence rule ------------------------------------------------------------------------


class BybitRule(StatelessRule):
    """Bybit's link rule (a :class:`gateway.core.arbiter.LinkRule`): with ``u`` the update id of
    a delta and ``L`` the applied id, ``u <= L`` is stale, ``u == L + 1`` links, and
    ``u > L + 1`` is future (ids missing before it).

    Resets (``u == 1``) come as snapshots, which the arbiter handles; the rule keeps no
    state.
    """

    name = "bybit"
    #: ``u`` rises by one per message.
    max_id_jump = 10**6
    #: A connection's ``u`` goes down only at a ``u == 1`` reset snapshot.
    ids_fall_only_at_reset_snapshot = True

    def classify(self, diff: DepthDiff, applied_id: int) -> Link:
        u = diff.last_id
        if u <= applied_id:
            return Link.STALE
        if u == applied_id + 1:
            return Link.LINKS
        return Link.FUTURE

    def continues(self, diff: DepthDiff, last_id: int) -> bool:
        return self.classify(diff, last_id) is Link.LINKS


# --- recognising Bybit in captures (VenueAdapter.hosts, url_venue, frame_venue) -------------

#: The exchange: what a Bybit host or frame tells, which name no category.
EXCHANGE: Final = "bybit"
#: Every public category Bybit serves, each a venue ``bybit-<category>`` (own books and ids);
#: only :data:`VENUES` are read by the gateway.
PUBLIC_CATEGORIES: Final = ("spot", "linear", "inverse", "option", "spread")
#: Every venue :func:`url_venue` can name.
CATEGORY_VENUES: Final = tuple(f"{EXCHANGE}-{category}" for category in PUBLIC_CATEGORIES)
#: Hosts of Bybit's endpoints, its regional entities' included (exchange-protocols.md §7):
#: each serves every category, so a host names the exchange only.
HOSTS: Final = {
    host: EXCHANGE
    for host in ("bybit.com", "bybit.tr", "bybit.id", "bybit.kz", "bybitgeorgia.ge", "manepa.jp")
}
#: cryptofeed's feed id of Bybit (one feed for every category).
CRYPTOFEED_NAMES: Final = {"BYBIT": EXCHANGE}

_CATEGORY_PATH: Final = re.compile(r"/v5/public/(" + "|".join(PUBLIC_CATEGORIES) + r")(?:/|$)")
_TOPIC_SHAPE: Final = re.compile(
    rb'"topic"\s*:\s*"(?:orderbook|publicTrade|tickers|kline|liquidation|allLiquidation)\.'
)
_REPLY_SHAPE: Final = re.compile(rb'"op"\s*:\s*"(?:subscribe|unsubscribe|ping|pong)"')
_REPLY_FIELD_SHAPE: Final = re.compile(rb'"(?:ret_msg|conn_id)"\s*:')


def url_venue(url: str) -> str | None:
    """The venue a Bybit URL names: the category in a WebSocket path
    (``/v5/public/linear`` is ``bybit-linear``) or in a REST ``category=`` parameter; None
    when it names none."""
    parts = urlsplit(url)
    m = _CATEGORY_PATH.search(parts.path)
    category = m.group(1) if m else (parse_qs(parts.query).get("category") or [""])[0]
    return f"{EXCHANGE}-{category}" if category in PUBLIC_CATEGORIES else None


def frame_venue(head: bytes) -> str | None:
    """``bybit`` when ``head`` (a frame's first bytes) is a Bybit topic message
    (``orderbook.N.SYM``, ``publicTrade.SYM``, ...) or op reply; the category is not in the
    frame. None otherwise."""
    if _TOPIC_SHAPE.search(head) or (_REPLY_SHAPE.search(head) and _REPLY_FIELD_SHAPE.search(head)):
        return EXCHANGE
    return None
