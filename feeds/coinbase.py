"""Coinbase: the Advanced Trade WebSocket (``level2``, venue ``coinbase``) and the legacy
Exchange feed (``level2``/``level2_batch``/``level2_50``, venue ``coinbase-exchange``):
endpoints, subscribe messages and parsing of wire frames (exchange-protocols.md §3, §4).

Pure: takes bytes, returns events; no I/O. Any frame that breaks the venue's contract
raises :class:`gateway.core.model.VenueContractError` and nothing else.

Neither feed has book ids shared across connections (an unsequenced venue), and neither
has a checksum. Every :class:`~gateway.core.model.DepthSnapshot` has ``last_id = -1``,
every :class:`~gateway.core.model.DepthDiff` ``first_id = last_id = prev_id = -1`` and
``checksum = None``. Levels are the wire's strings in plain fixed-point decimal
(:data:`NUMBERS`: ``"65106.54"``, ``"0.00012"``, both feeds); quantities are absolute and
``"0"`` deletes the level. Within a message the levels of one side keep their wire order
(one price may appear twice: apply in order, the last wins).

Advanced Trade: ``sequence_num`` is a counter of the **connection**, shared by every channel
(heartbeats, acks, trades, ``l2_data``). Every message that carries one first yields a
:class:`~gateway.core.model.ConnectionSequence`, before the message's other events, so that a
jump (lost messages: every replica on that connection is suspect) is seen before a snapshot
in the same message repairs a book. ``event_ms`` of a diff is the envelope ``timestamp``.

Trades: both feeds' ``side`` is the **maker's** side (documented for the Exchange ``match``;
for Advanced Trade ``market_trades`` the recorded session shows it: every trade at the best
ask is labelled ``SELL``), so :class:`~gateway.core.model.Trade` gets the opposite side, the
aggressor's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import msgspec

from feeds.common import FIXED_POINT
from feeds.common import MAX_INT
from feeds.common import check_levels
from feeds.common import decode
from feeds.common import endpoint_url
from feeds.common import int_text
from feeds.common import iso_ms
from feeds.common import notice
from feeds.common import taker_side
from feeds.common import unique_symbols
from feeds.common import unsequenced_diff
from feeds.common import unsequenced_snapshot
from gateway.core.model import ConnectionSequence
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level
from gateway.core.model import Trade
from gateway.core.model import VenueContractError
from gateway.core.model import VenueEvent

VENUE: Final = "coinbase"
EXCHANGE_VENUE: Final = "coinbase-exchange"
#: How prices and sizes are written on the wire (Advanced Trade and Exchange alike).
NUMBERS: Final = FIXED_POINT

#: Advanced Trade market-data endpoint (exchange-protocols.md §3). It is the only one: the
#: documented failover is a second connection to the same host.
WS_ENDPOINTS: Final = ("wss://advanced-trade-ws.coinbase.com",)
#: Advanced Trade user-order endpoint: heartbeats, user and futures_balance_summary only,
#: NOT market data.
USER_WS_ENDPOINT: Final = "wss://advanced-trade-ws-user.coinbase.com"
REST_ENDPOINTS: Final = ("https://api.coinbase.com",)
#: Public REST book (``?product_id=...&limit=...``); it has no sequence, so it cannot be
#: spliced with the stream: resyncs resubscribe for an in-band snapshot.
PRODUCT_BOOK_PATH: Final = "/api/v3/brokerage/market/product_book"

#: Legacy Exchange feed endpoints (§4): public, direct (authenticated), sandbox.
EXCHANGE_WS_ENDPOINTS: Final = ("wss://ws-feed.exchange.coinbase.com",)
EXCHANGE_DIRECT_WS_ENDPOINTS: Final = ("wss://ws-direct.exchange.coinbase.com",)
EXCHANGE_SANDBOX_WS_ENDPOINTS: Final = (
    "wss://ws-feed-public.sandbox.exchange.coinbase.com",
    "wss://ws-direct.sandbox.exchange.coinbase.com",
)

LEVEL2_CHANNEL: Final = "level2"
TRADES_CHANNEL: Final = "market_trades"
HEARTBEATS_CHANNEL: Final = "heartbeats"
#: Channels subscribed on every connection, one per message (the venue's rule).
CHANNELS: Final = (LEVEL2_CHANNEL, TRADES_CHANNEL, HEARTBEATS_CHANNEL)
#: Unauthenticated client messages per second per IP on Advanced Trade (the Exchange feed
#: allows 100: ``gateway.wire.venues``).
MAX_MESSAGES_PER_S: Final = 8.0
#: The venue disconnects a connection that has not subscribed within this time.
SUBSCRIBE_WITHIN_S: Final = 5.0

#: Exchange level2 channels that need no authentication (``level2_50`` is an alias).
EXCHANGE_BOOK_CHANNELS: Final = frozenset({"level2_batch", "level2_50"})


# --- URLs and outgoing messages -----------------------------------------------------------


#: The URL a connection opens: the endpoint itself (Coinbase subscribes by message).
connect_url: Final = endpoint_url


def _products(symbols: Sequence[str]) -> list[str]:
    return unique_symbols(symbols, "product ids")


def _request(kind: str, channel: str, products: list[str]) -> bytes:
    return msgspec.json.encode({"type": kind, "product_ids": products, "channel": channel})


def subscribe_messages(symbols: Sequence[str]) -> list[bytes]:
    """Subscribe requests, one channel per message: ``level2``, ``market_trades`` and
    ``heartbeats`` (which keeps quiet subscriptions open) for ``symbols``."""
    products = _products(symbols)
    return [_request("subscribe", channel, products) for channel in CHANNELS]


def unsubscribe_messages(symbols: Sequence[str]) -> list[bytes]:
    """Unsubscribe requests for the channels of :func:`subscribe_messages`."""
    products = _products(symbols)
    return [_request("unsubscribe", channel, products) for channel in CHANNELS]


def resubscribe_messages(symbol: str) -> list[bytes]:
    """Unsubscribe and subscribe ``level2`` of one product again: the venue then sends a
    fresh ``snapshot`` event on this connection. Trades and heartbeats are left alone."""
    products = _products([symbol])
    return [
        _request("unsubscribe", LEVEL2_CHANNEL, products),
        _request("subscribe", LEVEL2_CHANNEL, products),
    ]


def exchange_subscribe_messages(
    symbols: Sequence[str], channel: str = "level2_batch"
) -> list[bytes]:
    """The Exchange feed's subscribe request: the book ``channel``, ``matches`` and
    ``heartbeat`` for ``symbols`` (one message; this feed takes a channel list)."""
    if channel not in EXCHANGE_BOOK_CHANNELS:
        raise ValueError(f"channel must be one of {sorted(EXCHANGE_BOOK_CHANNELS)}")
    products = _products(symbols)
    message = {
        "type": "subscribe",
        "product_ids": products,
        "channels": [channel, "matches", "heartbeat"],
    }
    return [msgspec.json.encode(message)]


# --- shared helpers -----------------------------------------------------------------------


def _trade(
    venue: str,
    symbol: str,
    trade_id: int,
    price: str,
    size: str,
    maker_side: str,
    time: str,
    recv_ns: int,
    conn_id: int,
) -> Trade:
    if not symbol:
        raise VenueContractError("trade without product_id")
    check_levels([(price, size)], NUMBERS, "trade")
    return Trade(
        venue=venue,
        symbol=symbol,
        trade_id=trade_id,
        price=price,
        qty=size,
        # The maker's side, in either case: the taker is on the other side.
        side=taker_side(maker_side.lower(), buy="sell", sell="buy"),
        trade_ms=iso_ms(time, "trade time"),
        recv_ns=recv_ns,
        conn_id=conn_id,
    )


# --- Advanced Trade: wire structs ---------------------------------------------------------


class _Envelope(msgspec.Struct):
    channel: str | None = None
    timestamp: str = ""
    sequence_num: int | None = None
    #: Empty when absent (msgspec cannot decode ``Raw | None``: it would expect null).
    events: msgspec.Raw = msgspec.Raw()
    #: Error replies: ``{"type": "error", "message": ...}``.
    type: str | None = None
    message: str | None = None


class _L2Update(msgspec.Struct):
    side: str
    price_level: str
    new_quantity: str


class _L2Event(msgspec.Struct):
    type: str
    product_id: str
    updates: list[_L2Update] = []


class _MarketTrade(msgspec.Struct):
    trade_id: str
    product_id: str
    price: str
    size: str
    side: str
    time: str


class _TradesEvent(msgspec.Struct):
    type: str = ""
    trades: list[_MarketTrade] = []


_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)
_l2_decoder: Final = msgspec.json.Decoder(list[_L2Event])
_trades_decoder: Final = msgspec.json.Decoder(list[_TradesEvent])


# --- Advanced Trade: parsing --------------------------------------------------------------


def _l2_events(
    env: _Envelope, recv_ns: int, conn_id: int, out: list[VenueEvent]
) -> list[VenueEvent]:
    items = decode(_l2_decoder, env.events, "bad l2_data events")
    event_ms = -1
    for e in items:
        if not e.product_id:
            raise VenueContractError("l2_data event without product_id")
        bids: list[tuple[str, str]] = []
        asks: list[tuple[str, str]] = []
        for u in e.updates:
            if u.side == "bid":
                bids.append((u.price_level, u.new_quantity))
            elif u.side == "offer":
                asks.append((u.price_level, u.new_quantity))
            else:
                raise VenueContractError(f"{e.product_id}: l2_data side {u.side!r}")
        bid_levels = check_levels(bids, NUMBERS, f"{e.product_id} bids")
        ask_levels = check_levels(asks, NUMBERS, f"{e.product_id} offers")
        if e.type == "snapshot":
            out.append(
                unsequenced_snapshot(VENUE, e.product_id, bid_levels, ask_levels, recv_ns, conn_id)
            )
        elif e.type == "update":
            if event_ms < 0:
                event_ms = iso_ms(env.timestamp, "timestamp")
            out.append(
                unsequenced_diff(
                    VENUE, e.product_id, bid_levels, ask_levels, event_ms, recv_ns, conn_id
                )
            )
        else:
            raise VenueContractError(f"{e.product_id}: l2_data event type {e.type!r}")
    return out


def _trade_events(
    env: _Envelope, recv_ns: int, conn_id: int, out: list[VenueEvent]
) -> list[VenueEvent]:
    items = decode(_trades_decoder, env.events, "bad market_trades events")
    # Both the snapshot (recent trades) and updates: trades are deduplicated by id.
    for e in items:
        for t in e.trades:
            trade_id = int_text(t.trade_id, "trade_id")
            out.append(
                _trade(
                    VENUE, t.product_id, trade_id, t.price, t.size, t.side, t.time, recv_ns, conn_id
                )
            )
    return out


def parse(raw: bytes, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    """Events in one Advanced Trade WebSocket frame.

    Every message with a ``sequence_num`` first yields a ConnectionSequence. Then
    ``l2_data`` events become DepthSnapshot / DepthDiff, ``market_trades`` become Trade,
    ``subscriptions`` an ``ack`` VenueNotice and error replies an ``error`` VenueNotice;
    ``heartbeats`` and other channels (ticker, candles, ...) nothing more.
    Raises VenueContractError for anything that is not a valid Advanced Trade frame.
    """
    env = decode(_envelope_decoder, raw, "undecodable frame")
    channel = env.channel
    if channel is None:
        if env.type == "error":
            return [notice(VENUE, "error", env.message or "", recv_ns, conn_id)]
        raise VenueContractError("frame is neither a channel message nor an error")
    seq = env.sequence_num
    if seq is None:
        raise VenueContractError(f"{channel} message without sequence_num")
    if not 0 <= seq < MAX_INT:
        raise VenueContractError(f"sequence_num out of range: {seq}")
    out: list[VenueEvent] = [ConnectionSequence(VENUE, seq, recv_ns, conn_id)]
    if channel in ("l2_data", "market_trades"):
        if not env.events:
            raise VenueContractError(f"{channel} message without events")
        if channel == "l2_data":
            return _l2_events(env, recv_ns, conn_id, out)
        return _trade_events(env, recv_ns, conn_id, out)
    if channel == "subscriptions":
        detail = bytes(env.events).decode("utf-8", "replace")[:200] if env.events else ""
        out.append(notice(VENUE, "ack", f"subscriptions {detail}".rstrip(), recv_ns, conn_id))
    return out


# --- legacy Exchange feed -----------------------------------------------------------------


class _ExKind(msgspec.Struct):
    type: str
    message: str | None = None
    reason: str | None = None


class _ExSnapshot(msgspec.Struct):
    product_id: str
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


class _ExL2Update(msgspec.Struct):
    product_id: str
    changes: list[tuple[str, str, str]]
    time: str = ""


class _ExMatch(msgspec.Struct):
    trade_id: int
    product_id: str
    price: str
    size: str
    side: str
    time: str


_ex_kind_decoder: Final = msgspec.json.Decoder(_ExKind)
_ex_snapshot_decoder: Final = msgspec.json.Decoder(_ExSnapshot)
_ex_l2update_decoder: Final = msgspec.json.Decoder(_ExL2Update)
_ex_match_decoder: Final = msgspec.json.Decoder(_ExMatch)


def _ex_snapshot(raw: bytes, recv_ns: int, conn_id: int) -> DepthSnapshot:
    s = decode(_ex_snapshot_decoder, raw, "bad snapshot")
    if not s.product_id:
        raise VenueContractError("snapshot without product_id")
    return unsequenced_snapshot(
        EXCHANGE_VENUE,
        s.product_id,
        check_levels(s.bids, NUMBERS, f"{s.product_id} bids"),
        check_levels(s.asks, NUMBERS, f"{s.product_id} asks"),
        recv_ns,
        conn_id,
    )


def _ex_l2update(raw: bytes, recv_ns: int, conn_id: int) -> DepthDiff:
    u = decode(_ex_l2update_decoder, raw, "bad l2update")
    if not u.product_id:
        raise VenueContractError("l2update without product_id")
    bids: list[Level] = []
    asks: list[Level] = []
    for side, price, size in u.changes:
        if side == "buy":
            bids.append((price, size))
        elif side == "sell":
            asks.append((price, size))
        else:
            raise VenueContractError(f"{u.product_id}: l2update side {side!r}")
    return unsequenced_diff(
        EXCHANGE_VENUE,
        u.product_id,
        check_levels(bids, NUMBERS, f"{u.product_id} bids"),
        check_levels(asks, NUMBERS, f"{u.product_id} asks"),
        iso_ms(u.time, "time") if u.time else 0,
        recv_ns,
        conn_id,
    )


def _ex_match(raw: bytes, recv_ns: int, conn_id: int) -> Trade:
    m = decode(_ex_match_decoder, raw, "bad match")
    if not 0 <= m.trade_id < MAX_INT:
        raise VenueContractError(f"trade_id out of range: {m.trade_id}")
    return _trade(
        EXCHANGE_VENUE, m.product_id, m.trade_id, m.price, m.size, m.side, m.time, recv_ns, conn_id
    )


def parse_exchange(raw: bytes, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    """Events in one legacy Exchange feed frame (venue ``coinbase-exchange``).

    ``snapshot`` becomes DepthSnapshot, ``l2update`` DepthDiff (``changes`` of
    ``[buy|sell, price, size]``), ``match`` and ``last_match`` Trade, ``subscriptions`` an
    ``ack`` and ``error`` an ``error`` VenueNotice; heartbeats, tickers and other types give
    an empty list. Raises VenueContractError for anything else.
    """
    kind = decode(_ex_kind_decoder, raw, "undecodable frame")
    t = kind.type
    if t == "l2update":
        return [_ex_l2update(raw, recv_ns, conn_id)]
    if t == "snapshot":
        return [_ex_snapshot(raw, recv_ns, conn_id)]
    if t in ("match", "last_match"):
        return [_ex_match(raw, recv_ns, conn_id)]
    if t == "subscriptions":
        return [notice(EXCHANGE_VENUE, "ack", "subscriptions", recv_ns, conn_id)]
    if t == "error":
        detail = f"{kind.message}: {kind.reason}" if kind.reason else f"{kind.message}"
        return [notice(EXCHANGE_VENUE, "error", detail, recv_ns, conn_id)]
    return []


# --- recognising Coinbase in captures (VenueAdapter.hosts, frame_venue) ---------------------

#: Hosts of both venues: the Exchange's (ws-feed, formerly Pro) are under ``coinbase.com``.
HOSTS: Final = {
    "exchange.coinbase.com": EXCHANGE_VENUE,
    "pro.coinbase.com": EXCHANGE_VENUE,
    "coinbase.com": VENUE,
}
#: cryptofeed's feed id of Coinbase (Advanced Trade).
CRYPTOFEED_NAMES: Final = {"COINBASE": VENUE}
_CHANNEL_SHAPE: Final = re.compile(rb'"channel"\s*:\s*"')
_SEQUENCE_NUM_SHAPE: Final = re.compile(rb'"sequence_num"\s*:')
_EXCHANGE_TYPE_SHAPE: Final = re.compile(
    rb'"type"\s*:\s*"(?:snapshot|l2update|match|last_match|ticker|heartbeat|received|open|'
    rb'done|change|activate)"'
)
_PRODUCT_ID_SHAPE: Final = re.compile(rb'"product_id"\s*:')
_SUBSCRIPTIONS_SHAPE: Final = re.compile(rb'"type"\s*:\s*"subscriptions"')
_CHANNELS_SHAPE: Final = re.compile(rb'"channels"\s*:')


def frame_venue(head: bytes) -> str | None:
    """The venue of ``head`` (a frame's first bytes): a ``channel`` with a ``sequence_num``
    is Advanced Trade (``coinbase``); a ws-feed ``type`` (``l2update``, ``snapshot``, ...)
    with a ``product_id``, or ``subscriptions`` with ``channels``, is the Exchange
    (``coinbase-exchange``); None otherwise. Advanced Trade events carry ``type`` and
    ``product_id`` too: it is told first."""
    if _CHANNEL_SHAPE.search(head) and _SEQUENCE_NUM_SHAPE.search(head):
        return VENUE
    if (_EXCHANGE_TYPE_SHAPE.search(head) and _PRODUCT_ID_SHAPE.search(head)) or (
        _SUBSCRIPTIONS_SHAPE.search(head) and _CHANNELS_SHAPE.search(head)
    ):
        return EXCHANGE_VENUE
    return None
