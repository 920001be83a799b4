"""OKX v5 public: endpoints, subscribe messages, parsing of wire frames, the book checksum,
and the sequence rule that merges redundant connections (exchange-protocols.md §6, §8).

Pure: takes bytes, returns events; no I/O. Any frame that breaks the venue's contract
raises :class:`gateway.core.model.VenueContractError` and nothing else.

Book channels (``books``, ``books50-l2-tbt``, ``books-l2-tbt``) push ``action:"snapshot"``
then ``action:"update"`` frames; levels are ``[price, size, "0", orderCount]`` strings and a
size of ``"0"`` deletes the level. Prices and sizes are plain fixed-point decimal strings
(:data:`NUMBERS`: ``"8476.97"``, ``"3366"``, ``"0.0001"``), kept as the exact wire strings:
the checksum is computed over them.

Ids: every update carries ``prevSeqId`` (the ``seqId`` of the previous message) and
``seqId``, the same on every connection. A :class:`~gateway.core.model.DepthDiff` gets
``last_id = seqId``, ``prev_id = prevSeqId`` and a *synthetic* ``first_id = prevSeqId + 1``
(OKX ids are not contiguous; the field only orders the arbiter's reorder buffer). So a
keepalive (``prevSeqId == seqId``, no levels) has ``first_id = last_id + 1``, and a
maintenance reset (``seqId < prevSeqId``) has ``last_id < prev_id``. A snapshot has
``last_id = seqId``.

Recordings made before OKX introduced ``seqId``/``prevSeqId`` (the 2022 cryptofeed capture)
have no ids: then ``first_id = last_id = prev_id = -1``, and :class:`OkxRule` links every
update. Such a stream can only be followed from a single connection, and the checksum is
its only check.

Checksum: CRC32 of the top 25 levels per side, interleaved ``bid:size:ask:size:...``, as a
signed int32. Since OKX retired it (2026) the field is always 0; a checksum of 0 or an absent
one becomes ``checksum=None`` ("not provided").
"""

from __future__ import annotations

import enum
import re
import zlib
from collections import deque
from collections.abc import Mapping
from collections.abc import Sequence
from types import MappingProxyType
from typing import Final
from typing import assert_never
from urllib.parse import urlencode

import msgspec

from feeds.common import FIXED_POINT
from feeds.common import check_levels
from feeds.common import check_snapshot_range
from feeds.common import decode
from feeds.common import endpoint_url
from feeds.common import int_text
from feeds.common import notice
from feeds.common import rest_snapshot
from feeds.common import taker_side
from gateway.core.arbiter import Link
from gateway.core.book import L2Book
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level
from gateway.core.model import Trade
from gateway.core.model import VenueContractError
from gateway.core.model import VenueEvent
from gateway.core.model import VenueNotice

VENUE: Final = "okx"
#: How prices and sizes are written on the wire.
NUMBERS: Final = FIXED_POINT

#: Public WebSocket endpoints, every documented alternative (exchange-protocols.md §6):
#: global, EEA, US (secondary source) and the AWS host of older docs (unverified).
WS_ENDPOINTS: Final = (
    "wss://ws.okx.com:8443/ws/v5/public",
    "wss://wseea.okx.com:8443/ws/v5/public",
    "wss://wsus.okx.com:8443/ws/v5/public",
    "wss://wsaws.okx.com:8443/ws/v5/public",
)
#: Demo-trading public endpoints (global, EEA, US).
DEMO_WS_ENDPOINTS: Final = (
    "wss://wspap.okx.com:8443/ws/v5/public",
    "wss://wseeapap.okx.com:8443/ws/v5/public",
    "wss://wsuspap.okx.com:8443/ws/v5/public",
)
#: REST bases: the long-standing host and the one of the newest doc copy.
REST_ENDPOINTS: Final = ("https://www.okx.com", "https://openapi.okx.com")

#: Book channels with ``prevSeqId``/``seqId``. ``books``: 400 levels every 100 ms;
#: ``books50-l2-tbt`` (VIP5+) and ``books-l2-tbt`` (VIP6+) need a WS login.
BOOK_CHANNELS: Final = frozenset({"books", "books50-l2-tbt", "books-l2-tbt"})
CHANNEL: Final = "books"
TRADE_CHANNEL: Final = "trades"
_TRADE_CHANNELS: Final = frozenset({"trades", "trades-all"})

SNAPSHOT_PATH: Final = "/api/v5/market/books"
#: Largest ``sz`` of ``/api/v5/market/books`` (levels per side).
MAX_SNAPSHOT_LIMIT: Final = 400
#: The REST depth asked for unless configured: the largest, the depth ``books`` keeps.
DEFAULT_SNAPSHOT_LIMIT: Final = MAX_SNAPSHOT_LIMIT
#: 40 REST book requests per 2 s per IP.
REST_REQUESTS_PER_2S: Final = 40
REST_REQUESTS_PER_MINUTE: Final = REST_REQUESTS_PER_2S * 30
#: The venue's advice: fewer than 30 channels per connection when subscribing many books.
MAX_CHANNELS_PER_CONNECTION: Final = 29
#: 480 subscribe, unsubscribe and login requests per hour per connection.
SUBSCRIBE_REQUESTS_PER_HOUR: Final = 480
#: OKX limits the total size of a subscribe request's ``args`` to 64 KB.
MAX_ARGS_BYTES: Final = 64 * 1024
#: OKX closes a connection idle for 30 s: send ``ping`` more often than that.
PING_INTERVAL_S: Final = 20.0
#: Checksum depth per side.
CHECKSUM_DEPTH: Final = 25
#: The ``notice`` code sent 60 s before a maintenance disconnect.
SERVICE_UPGRADE_CODE: Final = "64008"

_PING: Final = b"ping"
_PONG: Final = b"pong"
_INT32: Final = 1 << 31
_UINT32: Final = 1 << 32


# --- URLs and outgoing messages -----------------------------------------------------------


#: The URL a connection opens: the endpoint itself (OKX subscribes by message).
connect_url: Final = endpoint_url


def _check_channel(channel: str) -> None:
    if channel not in BOOK_CHANNELS:
        raise ValueError(f"book channel must be one of {sorted(BOOK_CHANNELS)}, got {channel!r}")


def _requests(op: str, args: list[dict[str, str]]) -> list[bytes]:
    """``op`` requests carrying ``args``, split so that no request's args exceed 64 KB.

    Consecutive args of one symbol (``books`` and ``trades``) stay in the same request.
    """
    messages: list[bytes] = []
    chunk: list[dict[str, str]] = []
    size = 2  # the brackets of the args array
    for arg in args:
        arg_size = len(msgspec.json.encode(arg)) + 1  # and a comma
        if arg_size + 2 > MAX_ARGS_BYTES:
            raise ValueError(f"argument too large for one request: {arg!r}")
        if chunk and size + arg_size > MAX_ARGS_BYTES:
            same_symbol = chunk[-1]["instId"] == arg["instId"]
            carry = [chunk.pop()] if same_symbol and len(chunk) > 1 else []
            messages.append(msgspec.json.encode({"op": op, "args": chunk}))
            chunk = carry
            size = 2 + sum(len(msgspec.json.encode(a)) + 1 for a in chunk)
        chunk.append(arg)
        size += arg_size
    if chunk:
        messages.append(msgspec.json.encode({"op": op, "args": chunk}))
    return messages


def _channel_args(symbols: Sequence[str], channels: Sequence[str]) -> list[dict[str, str]]:
    if not symbols:
        raise ValueError("at least one symbol is required")
    unique = list(dict.fromkeys(symbols))
    return [{"channel": ch, "instId": symbol} for symbol in unique for ch in channels]


def subscribe_messages(symbols: Sequence[str], channel: str = CHANNEL) -> list[bytes]:
    """Subscribe requests for the book ``channel`` and trades of ``symbols``."""
    _check_channel(channel)
    return _requests("subscribe", _channel_args(symbols, (channel, TRADE_CHANNEL)))


def unsubscribe_messages(symbols: Sequence[str], channel: str = CHANNEL) -> list[bytes]:
    """Unsubscribe requests for the book ``channel`` and trades of ``symbols``."""
    _check_channel(channel)
    return _requests("unsubscribe", _channel_args(symbols, (channel, TRADE_CHANNEL)))


def resubscribe_messages(symbol: str, channel: str = CHANNEL) -> list[bytes]:
    """Unsubscribe and subscribe the book of one symbol again: the venue then sends a fresh
    snapshot on this connection. Trades are left alone."""
    _check_channel(channel)
    args = _channel_args([symbol], (channel,))
    return _requests("unsubscribe", args) + _requests("subscribe", args)


def ping_message() -> bytes:
    """The application-level keepalive: the text ``ping`` (the venue answers ``pong``)."""
    return _PING


def check_snapshot_limit(limit: int) -> None:
    """Raises ValueError unless ``/api/v5/market/books`` serves ``limit`` levels per side
    (1..400)."""
    check_snapshot_range(limit, MAX_SNAPSHOT_LIMIT)


def snapshot_url(rest_base: str, symbol: str, limit: int) -> str:
    """``GET /api/v5/market/books?instId=<symbol>&sz=<limit>`` (:func:`check_snapshot_limit`)."""
    check_snapshot_limit(limit)
    query = urlencode({"instId": symbol, "sz": limit})
    return f"{rest_base.rstrip('/')}{SNAPSHOT_PATH}?{query}"


# --- checksum -----------------------------------------------------------------------------


def checksum(bids: Sequence[Level], asks: Sequence[Level]) -> int:
    """OKX's checksum of a book given best first: CRC32 of ``bid0px:bid0sz:ask0px:ask0sz:...``
    over the top 25 levels per side (a side's missing levels are skipped), as a signed int32.

    The strings must be the venue's exact wire strings (``"3366"`` and ``"3366.0"`` differ).
    """
    parts: list[str] = []
    nb = min(len(bids), CHECKSUM_DEPTH)
    na = min(len(asks), CHECKSUM_DEPTH)
    for i in range(max(nb, na)):
        if i < nb:
            parts += bids[i]
        if i < na:
            parts += asks[i]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - _UINT32 if crc >= _INT32 else crc


def book_checksum(book: L2Book) -> int:
    """:func:`checksum` of the top 25 levels of an L2Book (which keeps the wire strings)."""
    return checksum(book.bids(CHECKSUM_DEPTH), book.asks(CHECKSUM_DEPTH))


# --- wire structs: one module-level decoder per message -----------------------------------


class _Arg(msgspec.Struct):
    channel: str
    instId: str = ""


class _Frame(msgspec.Struct):
    """A push (``arg`` + ``data``) or an event reply (``event``): just enough to route it."""

    arg: _Arg | None = None
    action: str | None = None
    #: Empty when absent (msgspec cannot decode ``Raw | None``: it would expect null).
    data: msgspec.Raw = msgspec.Raw()
    event: str | None = None
    code: str | int | None = None
    msg: str | None = None


class _BookData(msgspec.Struct):
    asks: list[tuple[str, ...]]
    bids: list[tuple[str, ...]]
    ts: str
    checksum: int | None = None
    prevSeqId: int | None = None
    seqId: int | None = None


class _TradeData(msgspec.Struct):
    tradeId: str
    px: str
    sz: str
    side: str
    ts: str
    instId: str = ""


class _RestEnvelope(msgspec.Struct):
    code: str
    msg: str = ""
    data: msgspec.Raw = msgspec.Raw()


class _RestBook(msgspec.Struct):
    asks: list[tuple[str, ...]]
    bids: list[tuple[str, ...]]
    ts: str = ""
    seqId: int | None = None


_frame_decoder: Final = msgspec.json.Decoder(_Frame)
_books_decoder: Final = msgspec.json.Decoder(list[_BookData])
_trades_decoder: Final = msgspec.json.Decoder(list[_TradeData])
_rest_decoder: Final = msgspec.json.Decoder(_RestEnvelope)
_rest_books_decoder: Final = msgspec.json.Decoder(list[_RestBook])


# --- parsing ------------------------------------------------------------------------------


def _pairs(raw: list[tuple[str, ...]], what: str) -> list[tuple[str, str]]:
    """``(price, size)`` of each ``[price, size, "0", count]`` level, not yet checked."""
    pairs: list[tuple[str, str]] = []
    for level in raw:
        if len(level) < 2:
            raise VenueContractError(f"{what}: level has fewer than 2 fields: {level!r}")
        pairs.append((level[0], level[1]))
    return pairs


def _levels(raw: list[tuple[str, ...]], what: str) -> tuple[Level, ...]:
    """``(price, size)`` of each ``[price, size, "0", count]`` level, checked numeric."""
    return check_levels(_pairs(raw, what), NUMBERS, what)


def _checksum_field(value: int | None) -> int | None:
    """The wire checksum as a signed int32; None when absent or 0 ("not provided")."""
    if value is None or value == 0:
        return None
    if -_INT32 <= value < _INT32:
        return value
    if _INT32 <= value < _UINT32:  # sent unsigned: same CRC
        return value - _UINT32
    raise VenueContractError(f"checksum out of the 32-bit range: {value}")


def _book_events(
    symbol: str, action: str | None, data: msgspec.Raw, recv_ns: int, conn_id: int
) -> list[VenueEvent]:
    if not symbol:
        raise VenueContractError("book push without instId")
    if action not in ("snapshot", "update"):
        raise VenueContractError(f"book push with action {action!r}")
    items = decode(_books_decoder, data, f"bad book data for {symbol}")
    if not items:
        raise VenueContractError(f"book push for {symbol} without data")
    events: list[VenueEvent] = []
    for d in items:
        bids = _levels(d.bids, f"{symbol} bids")
        asks = _levels(d.asks, f"{symbol} asks")
        crc = _checksum_field(d.checksum)
        ts = int_text(d.ts, "ts")
        seq, prev = d.seqId, d.prevSeqId
        if action == "snapshot":
            if seq is not None and seq < 0:
                raise VenueContractError(f"snapshot of {symbol} with seqId {seq}")
            events.append(
                DepthSnapshot(
                    venue=VENUE,
                    symbol=symbol,
                    last_id=-1 if seq is None else seq,
                    bids=bids,
                    asks=asks,
                    recv_ns=recv_ns,
                    conn_id=conn_id,
                    checksum=crc,
                )
            )
            continue
        if seq is None and prev is None:
            first = last = prev_id = -1  # a feed from before seqId existed
        elif seq is None or prev is None:
            raise VenueContractError(f"update of {symbol} with only one of seqId/prevSeqId")
        elif seq < 0 or prev < 0:
            raise VenueContractError(f"update of {symbol} with prevSeqId {prev}, seqId {seq}")
        else:
            first, last, prev_id = prev + 1, seq, prev
        events.append(
            DepthDiff(
                venue=VENUE,
                symbol=symbol,
                first_id=first,
                last_id=last,
                prev_id=prev_id,
                bids=bids,
                asks=asks,
                event_ms=ts,
                recv_ns=recv_ns,
                conn_id=conn_id,
                checksum=crc,
            )
        )
    return events


def _trade_events(symbol: str, data: msgspec.Raw, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    items = decode(_trades_decoder, data, "bad trade data")
    events: list[VenueEvent] = []
    for t in items:
        side = taker_side(t.side)  # OKX ``side`` is the taker's side
        check_levels([(t.px, t.sz)], NUMBERS, "trade")
        events.append(
            Trade(
                venue=VENUE,
                symbol=t.instId or symbol,
                trade_id=int_text(t.tradeId, "tradeId"),
                price=t.px,
                qty=t.sz,
                side=side,
                trade_ms=int_text(t.ts, "ts"),
                recv_ns=recv_ns,
                conn_id=conn_id,
            )
        )
    return events


def _notice(frame: _Frame, recv_ns: int, conn_id: int) -> VenueNotice:
    event = frame.event or ""
    code = "" if frame.code is None else str(frame.code)
    arg = f" {frame.arg.channel} {frame.arg.instId}".rstrip() if frame.arg is not None else ""
    reconnect = False
    if event in ("subscribe", "unsubscribe", "login"):
        kind, detail = "ack", f"{event}{arg}"
    elif event == "error" or event.endswith("-error"):
        kind, detail = "error", f"code {code}: {frame.msg}"
    elif event == "notice":
        kind, detail = "notice", f"code {code}: {frame.msg}"
        reconnect = code == SERVICE_UPGRADE_CODE
    else:
        kind, detail = "info", f"{event}{arg}"
    return notice(VENUE, kind, detail, recv_ns, conn_id, reconnect=reconnect)


def parse(raw: bytes, recv_ns: int, conn_id: int) -> list[VenueEvent]:
    """Events in one WebSocket frame.

    Book pushes become DepthSnapshot / DepthDiff, trades become Trade, event replies
    (subscribe acks, errors, the 64008 service-upgrade notice, which asks to reconnect)
    become VenueNotice. ``pong`` and pushes of other channels (tickers, books5, ...) give an
    empty list. Raises VenueContractError for anything that is not a valid OKX frame.
    """
    if raw == _PONG:
        return []
    frame = decode(_frame_decoder, raw, "undecodable frame")
    if frame.event is not None:
        return [_notice(frame, recv_ns, conn_id)]
    arg = frame.arg
    if arg is None:
        raise VenueContractError("frame is neither a push nor an event")
    if arg.channel in BOOK_CHANNELS:
        if not frame.data:
            raise VenueContractError(f"{arg.channel} push without data")
        return _book_events(arg.instId, frame.action, frame.data, recv_ns, conn_id)
    if arg.channel in _TRADE_CHANNELS:
        if not frame.data:
            raise VenueContractError(f"{arg.channel} push without data")
        return _trade_events(arg.instId, frame.data, recv_ns, conn_id)
    return []


def parse_snapshot(symbol: str, body: bytes, recv_ns: int, conn_id: int = -1) -> DepthSnapshot:
    """A REST ``/api/v5/market/books`` response body as a snapshot of ``symbol``.

    ``last_id`` is ``data[0].seqId`` where the venue sends it (the 2026 procedure), else -1:
    a snapshot without seqId cannot be linked to a sequenced stream.
    """
    env = decode(_rest_decoder, body, f"bad book snapshot for {symbol}")
    if env.code != "0":
        raise VenueContractError(f"book snapshot for {symbol}: code {env.code}: {env.msg}")
    if not env.data:
        raise VenueContractError(f"book snapshot for {symbol} without data")
    items = decode(_rest_books_decoder, env.data, f"bad book snapshot for {symbol}")
    if not items:
        raise VenueContractError(f"book snapshot for {symbol} with empty data")
    d = items[0]
    if d.seqId is not None and d.seqId < 0:
        raise VenueContractError(f"book snapshot for {symbol} with seqId {d.seqId}")
    last_id = -1 if d.seqId is None else d.seqId
    bids, asks = _pairs(d.bids, "snapshot bids"), _pairs(d.asks, "snapshot asks")
    return rest_snapshot(VENUE, symbol, last_id, bids, asks, recv_ns, conn_id, NUMBERS)


# --- sequence rule ------------------------------------------------------------------------

#: How long after a reset a copy of an update from before it is still recognised.
STRAGGLER_WINDOW_NS: Final = 10_000_000_000
#: How many recent linked ``(prevSeqId, seqId)`` pairs are remembered for that.
STRAGGLER_MEMORY: Final = 4096
#: Later than any receive time: a connection that has not crossed to a waiting reset.
_NEVER: Final = 1 << 63


class RuleState(enum.Enum):
    """Where an :class:`OkxRule` stands."""

    #: Following one sequence: no reset waits.
    FOLLOWING = "following"
    #: A reset arrived before the ids it follows and waits for them.
    RESET_WAITING = "reset waiting"


class RuleEvent(enum.Enum):
    """What an input is to an :class:`OkxRule` (:meth:`OkxRule.event`), with
    ``p = prevSeqId``, ``s = seqId`` and ``L`` the applied id. A reset is ``s < p``."""

    #: An update without ids (``s == -1``): a feed from before seqId existed.
    UNSEQUENCED = "unsequenced"
    #: A copy of a pair that linked before the last reset, inside the straggler window.
    STRAGGLER = "straggler"
    #: Received by its connection before its copy of the last reset that linked (before
    #: the reset linked, by a connection with no copy of it then): of the sequence before it.
    OLD_SEQUENCE = "old sequence"
    #: Not a reset, ``p == L`` (an ordinary update, or the keepalive ``p == s == L``).
    LINKS = "links"
    #: Not a reset, ``p < L < s``: it covers the applied id.
    COVERS = "covers"
    #: Not a reset, ``p > L``: ids are missing before it.
    FUTURE = "future"
    #: Not a reset, ``p < L`` and ``s <= L``: every id is applied.
    STALE = "stale"
    #: A reset with ``p == L``.
    RESET_LINKS = "reset links"
    #: A reset with ``p > L``: it arrived before the ids it follows.
    RESET_EARLY = "reset early"
    #: A reset with ``p < L``.
    RESET_STALE = "reset stale"
    #: The waiting reset again, now with ``p == L``.
    WAITING_RESET_LINKS = "waiting reset links"
    #: The waiting reset again, ``p > L``, inside the straggler window since it first came.
    WAITING_RESET_EARLY = "waiting reset early"
    #: The waiting reset again, after the book went past it or after the window.
    WAITING_RESET_PASSED = "waiting reset passed"
    #: From a connection that sent the waiting reset (it is in the new sequence): ``p == L``.
    CROSSED_LINKS = "crossed links"
    #: From a connection that sent the waiting reset: ``p > L``.
    CROSSED_FUTURE = "crossed future"
    #: From a connection that sent the waiting reset: ``p < L``.
    CROSSED_STALE = "crossed stale"
    #: The arbiter loaded a snapshot (:meth:`OkxRule.on_snapshot`).
    SNAPSHOT = "snapshot"


class RuleAction(enum.Enum):
    """What a transition does to the rule's memory, in the order the table lists them."""

    #: Remember the pair as linked since the last reset.
    REMEMBER = "remember"
    #: A reset linked: the pairs linked before it, and the reset itself, are stragglers
    #: for ``straggler_window_ns``; no reset waits any more.
    RESET = "reset"
    #: Hold the reset as the waiting one; its connection has crossed to the new sequence.
    WAIT = "wait"
    #: One more connection sent the waiting reset: it has crossed too.
    CROSS = "cross"
    #: Forget the waiting reset: its copies are stragglers for ``straggler_window_ns``.
    RETIRE = "retire"
    #: Count one straggler.
    COUNT_STRAGGLER = "count straggler"


class RuleStateError(Exception):
    """An event the rule's state cannot have: a bug in the rule, never venue input."""


#: The link of each update event: the classification, which changes nothing.
LINK_OF: Final[Mapping[RuleEvent, Link]] = MappingProxyType(
    {
        RuleEvent.UNSEQUENCED: Link.LINKS,
        RuleEvent.STRAGGLER: Link.STALE,
        RuleEvent.OLD_SEQUENCE: Link.STALE,
        RuleEvent.LINKS: Link.LINKS,
        RuleEvent.COVERS: Link.LINKS,
        RuleEvent.FUTURE: Link.FUTURE,
        RuleEvent.STALE: Link.STALE,
        RuleEvent.RESET_LINKS: Link.LINKS,
        RuleEvent.RESET_EARLY: Link.FUTURE,
        RuleEvent.RESET_STALE: Link.STALE,
        RuleEvent.WAITING_RESET_LINKS: Link.LINKS,
        RuleEvent.WAITING_RESET_EARLY: Link.FUTURE,
        RuleEvent.WAITING_RESET_PASSED: Link.STALE,
        RuleEvent.CROSSED_LINKS: Link.LINKS,
        RuleEvent.CROSSED_FUTURE: Link.FUTURE,
        RuleEvent.CROSSED_STALE: Link.STALE,
    }
)

#: A transition's next state and actions.
Step = tuple[RuleState, tuple[RuleAction, ...]]

_FOLLOWING: Final = RuleState.FOLLOWING
_WAITING: Final = RuleState.RESET_WAITING
_E: Final = RuleEvent
_A: Final = RuleAction

#: Events that keep either state and act the same in both.
_EITHER_STATE: Final[Mapping[RuleEvent, tuple[RuleAction, ...]]] = {
    _E.UNSEQUENCED: (),
    _E.STRAGGLER: (_A.COUNT_STRAGGLER,),
    _E.OLD_SEQUENCE: (_A.COUNT_STRAGGLER,),
    _E.LINKS: (_A.REMEMBER,),
    _E.COVERS: (_A.REMEMBER,),
    _E.FUTURE: (),
    _E.STALE: (),
    _E.RESET_STALE: (),
}

#: The state change: ``(state, event) -> (next state, actions in order)``. A pair that is
#: not here cannot happen (:meth:`OkxRule.event` gives the ``WAITING_*`` and ``CROSSED_*``
#: events only while a reset waits): :func:`transition` raises RuleStateError for it.
TRANSITIONS: Final[Mapping[tuple[RuleState, RuleEvent], Step]] = MappingProxyType(
    {
        **{
            (state, event): (state, actions)
            for state in RuleState
            for event, actions in _EITHER_STATE.items()
        },
        (_FOLLOWING, _E.RESET_LINKS): (_FOLLOWING, (_A.RESET,)),
        (_FOLLOWING, _E.RESET_EARLY): (_WAITING, (_A.WAIT,)),
        (_FOLLOWING, _E.SNAPSHOT): (_FOLLOWING, ()),
        (_WAITING, _E.RESET_LINKS): (_FOLLOWING, (_A.RESET,)),
        # A newer reset from a connection that has not crossed replaces the waiting one.
        (_WAITING, _E.RESET_EARLY): (_WAITING, (_A.WAIT,)),
        (_WAITING, _E.WAITING_RESET_LINKS): (_FOLLOWING, (_A.RESET,)),
        (_WAITING, _E.WAITING_RESET_EARLY): (_WAITING, (_A.CROSS,)),
        (_WAITING, _E.WAITING_RESET_PASSED): (_FOLLOWING, (_A.RETIRE, _A.COUNT_STRAGGLER)),
        # The crossed connection linked in the new sequence: the book is past the reset.
        (_WAITING, _E.CROSSED_LINKS): (_FOLLOWING, (_A.RETIRE, _A.REMEMBER)),
        (_WAITING, _E.CROSSED_FUTURE): (_WAITING, ()),
        (_WAITING, _E.CROSSED_STALE): (_WAITING, ()),
        # The snapshot is of the sequence after the waiting reset.
        (_WAITING, _E.SNAPSHOT): (_FOLLOWING, (_A.RETIRE,)),
    }
)


def transition(state: RuleState, event: RuleEvent) -> Step:
    """The next state and the actions of ``event`` in ``state``; raises RuleStateError for a
    pair that cannot happen."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise RuleStateError(f"no transition from {state.name} on {event.name}") from None


class OkxRule:
    """OKX's link rule (a :class:`gateway.core.arbiter.LinkRule`); one instance per symbol.

    With ``p = prevSeqId``, ``s = seqId`` and ``L`` the applied id:

    - ``p == L`` links: an ordinary update, the keepalive ``p == s == L`` (no levels) and
      the maintenance reset ``s < p`` (after which the arbiter's applied id is ``s``);
    - ``s <= L`` and ``p < L``: stale (a copy another connection delivered first);
    - ``p > L``: future (ids missing before it);
    - ``p < L < s``: links. Levels are absolute, so an update covering ``L`` is applied
      whole; the REST procedure needs it (the first update kept after a REST snapshot has
      ``prevSeqId <= snapshot.seqId < seqId``).

    Resets, remembered so that redundant connections do not turn them into gaps:

    - after a reset links, the ``(p, s)`` pairs that linked before it, and the reset
      itself, are copies that slower connections may still deliver: for
      ``straggler_window_ns`` after the reset those exact pairs are stale, never future
      (the late copy of reset 15→3 arriving when ``L = 3`` would otherwise look like a gap),
      unless the connection received it after its own copy of the reset: it is then of
      the new sequence, where the same pair is new (ids climbing back through the old ones);
    - a reset that arrives before the ids it follows (``p > L``) is future and waits
      (state ``RESET_WAITING``). The connection that sent it continues in the new sequence,
      so until the reset links, an update of that connection received after its copy of the
      reset (one received before it, classified later from the arbiter's buffer, is of the
      old sequence and classified as usual) links only with ``p == L``
      (and that proves the book is past the reset, which is then forgotten), and is
      otherwise future or stale (stale copies come again from the slower connections, after
      their copy of the reset);
    - a reset still waiting when the arbiter loads a snapshot (:meth:`on_snapshot`) is
      forgotten; so is one whose copy comes again without linking (``p < L``: the book
      went past it; or ``p > L`` more than ``straggler_window_ns`` after its first copy).
      That copy, and later ones within ``straggler_window_ns``, are stale. A copy that
      links (``p == L``) applies the reset, however long it waited;
    - once a reset linked, the book applied everything before it: an update a connection
      received before its own copy of that reset is of the older sequence, stale, however
      its ids compare with the new ones (a keepalive ``p == s`` with the reset's ``p``,
      buffered behind the reset, would otherwise wait as future for ids that never come).
      The copies known are the one that linked, those that came before it linked (while
      it waited, or dropped while another reset waited), and any later one; a connection
      that had delivered none when it linked had not reached it, so what it received
      before then is stale too, unless it had crossed another reset waiting then (it is
      past this one since a time not known). :meth:`past_reset` names the connections
      past it (the arbiter does not hold them behind it).

    Updates without ids (``s == -1``, feeds from before seqId existed) always link: such a
    stream can only be followed from one connection, checked by its checksum.

    The rule is a state machine: :meth:`event` tells what an update is (it changes
    nothing), :data:`LINK_OF` gives its link, and :data:`TRANSITIONS` the state change and
    the actions on the memory. :meth:`classify`, the LinkRule call, does the three.
    """

    name = "okx"
    #: seqIds rise by a varying step per update.
    max_id_jump = 10**8
    #: A reset comes as an update whose ids go back (``seqId < prevSeqId``).
    ids_fall_only_at_reset_snapshot = False

    def __init__(
        self,
        *,
        straggler_window_ns: int = STRAGGLER_WINDOW_NS,
        memory: int = STRAGGLER_MEMORY,
    ) -> None:
        if straggler_window_ns < 0 or memory < 1:
            raise ValueError("straggler_window_ns must be >= 0 and memory >= 1")
        self.straggler_window_ns = straggler_window_ns
        self._memory = memory
        self.state = RuleState.FOLLOWING
        #: Pairs that linked since the last reset, newest last.
        self._recent: deque[tuple[int, int]] = deque(maxlen=memory)
        #: Pairs that linked before the last reset, and the reset itself; recognised as
        #: stale until ``_old_until_ns``.
        self._old: set[tuple[int, int]] = set()
        self._old_until_ns = 0
        #: In RESET_WAITING: the waiting reset, when it came, the connections that sent it.
        self._waiting: tuple[int, int] | None = None
        self._waiting_ns = 0
        #: The connections that sent it, each with when its copy came: what a connection
        #: received before its copy (the arbiter may classify it later, from its buffer)
        #: is of the sequence before the reset.
        self._crossed: dict[int, int] = {}
        #: The latest receive time seen.
        self._now_ns = 0
        #: The last reset that linked, and the connections that delivered their copy of it
        #: since, each with when: what they received after it is of the new sequence.
        self._reset_pair: tuple[int, int] | None = None
        self._past_reset: dict[int, int] = {}
        #: The latest receive time seen when that reset linked, and the connections that
        #: had crossed another reset waiting then (past it since a time not known).
        self._reset_ns = 0
        self._past_unknown: frozenset[int] = frozenset()
        #: Copies of resets not linked yet (``s < p``), per pair the connections that
        #: delivered one, each with when (buffered, or dropped while another reset waited):
        #: once that reset links, they are past it. The oldest pairs go beyond ``memory``.
        self._reset_copies: dict[tuple[int, int], dict[int, int]] = {}
        #: Resets applied.
        self.resets = 0
        #: Copies of updates from before a reset, recognised as stale.
        self.stragglers = 0

    def event(self, diff: DepthDiff, applied_id: int) -> RuleEvent:
        """What ``diff`` is to the rule in its state, at applied id ``applied_id``."""
        prev, seq = diff.prev_id, diff.last_id
        if seq < 0:
            return RuleEvent.UNSEQUENCED
        pair = (prev, seq)
        if self._reset_pair is not None and self._before_reset(diff):
            return RuleEvent.OLD_SEQUENCE
        if (
            self._old
            and pair in self._old
            and diff.recv_ns <= self._old_until_ns
            and diff.recv_ns <= self._past_reset.get(diff.conn_id, _NEVER)
        ):
            return RuleEvent.STRAGGLER
        if self.state is RuleState.RESET_WAITING:
            if pair == self._waiting:
                if prev == applied_id:
                    return RuleEvent.WAITING_RESET_LINKS
                now_ns = max(self._now_ns, diff.recv_ns)
                if prev > applied_id and now_ns - self._waiting_ns <= self.straggler_window_ns:
                    return RuleEvent.WAITING_RESET_EARLY
                return RuleEvent.WAITING_RESET_PASSED
            if diff.recv_ns >= self._crossed.get(diff.conn_id, _NEVER):
                if prev == applied_id:
                    return RuleEvent.CROSSED_LINKS
                return RuleEvent.CROSSED_FUTURE if prev > applied_id else RuleEvent.CROSSED_STALE
        if seq < prev:
            if prev == applied_id:
                return RuleEvent.RESET_LINKS
            return RuleEvent.RESET_EARLY if prev > applied_id else RuleEvent.RESET_STALE
        if prev == applied_id:
            return RuleEvent.LINKS
        if prev > applied_id:
            return RuleEvent.FUTURE
        return RuleEvent.STALE if seq <= applied_id else RuleEvent.COVERS

    def _before_reset(self, diff: DepthDiff) -> bool:
        """True when ``diff`` was received by its connection before its copy of the last
        reset that linked (with no copy then: before the reset linked)."""
        conn_id = diff.conn_id
        if conn_id in self._past_unknown:
            return False
        return diff.recv_ns < self._past_reset.get(conn_id, self._reset_ns)

    def classify(self, diff: DepthDiff, applied_id: int) -> Link:
        event = self.event(diff, applied_id)
        link = LINK_OF[event]
        state, actions = transition(self.state, event)
        if event is not RuleEvent.UNSEQUENCED:
            self._observe(diff)
        self._act(actions, (diff.prev_id, diff.last_id), diff.conn_id, diff.recv_ns)
        self.state = state
        return link

    def continues(self, diff: DepthDiff, last_id: int) -> bool:
        """A connection's own stream chains by ``prevSeqId`` (keepalives and resets too);
        updates without ids are taken as they come, as :meth:`classify` takes them."""
        return diff.prev_id == last_id or diff.last_id < 0

    def past_reset(self) -> frozenset[int]:
        """The connections that delivered their copy of the last reset that linked (or
        crossed a later one waiting then): they are past it, whenever it linked."""
        return frozenset(self._past_reset.keys() | self._past_unknown)

    def observe(self, diff: DepthDiff) -> None:
        """``diff`` is dropped unclassified, its connection behind a reset: a copy of a
        reset among it (one ahead of the book: the connection lost those before it) is
        noted like one classified, so that the connection is past it once it links."""
        if diff.last_id >= 0:
            self._observe(diff)

    def on_snapshot(self, snap: DepthSnapshot) -> None:
        """The arbiter loaded ``snap``: a reset still waiting for its ids is history (the
        snapshot is of the sequence after it), so its copies are stale from now on."""
        state, actions = transition(self.state, RuleEvent.SNAPSHOT)
        self._act(actions, (-1, snap.last_id), snap.conn_id, snap.recv_ns)
        self.state = state

    def _observe(self, diff: DepthDiff) -> None:
        """Keep the clock, note a connection delivering its copy of the last reset, and drop
        the stragglers once one of them comes after the window (a later retirement may
        extend the window: expired pairs must not come back)."""
        if diff.recv_ns > self._now_ns:
            self._now_ns = diff.recv_ns
        pair = (diff.prev_id, diff.last_id)
        if pair == self._reset_pair:
            self._past_reset.setdefault(diff.conn_id, diff.recv_ns)
        elif diff.last_id < diff.prev_id and pair not in self._old:
            copies = self._reset_copies.setdefault(pair, {})
            copies.setdefault(diff.conn_id, diff.recv_ns)
            if len(self._reset_copies) > self._memory:
                del self._reset_copies[next(iter(self._reset_copies))]
        if (diff.prev_id, diff.last_id) in self._old and diff.recv_ns > self._old_until_ns:
            self._old.clear()

    def _act(
        self, actions: tuple[RuleAction, ...], pair: tuple[int, int], conn_id: int, recv_ns: int
    ) -> None:
        for action in actions:
            if action is RuleAction.REMEMBER:
                self._recent.append(pair)
            elif action is RuleAction.RESET:
                self.resets += 1
                # Stragglers of an earlier reset still in their window stay stragglers (a
                # slower connection may not have delivered that reset yet), within the
                # memory's bound.
                keep = recv_ns <= self._old_until_ns and len(self._old) <= self._memory
                self._old = (self._old if keep else set()) | set(self._recent)
                self._old.add(pair)
                self._old_until_ns = recv_ns + self.straggler_window_ns
                self._recent.clear()
                # The connections whose copy of the reset came before it linked (buffered
                # while it waited, or dropped while another did). Had another reset waited,
                # those that crossed it are past this one too.
                copies = self._reset_copies.pop(pair, {})
                self._past_unknown = frozenset(self._crossed.keys() - copies.keys() - {conn_id})
                self._past_reset = {**copies, conn_id: min(recv_ns, copies.get(conn_id, recv_ns))}
                self._reset_pair, self._reset_ns = pair, self._now_ns
                self._waiting = None
                self._crossed = {}
            elif action is RuleAction.WAIT:
                self._waiting = pair
                self._waiting_ns = recv_ns
                self._crossed = {conn_id: recv_ns}
            elif action is RuleAction.CROSS:
                self._crossed.setdefault(conn_id, recv_ns)
            elif action is RuleAction.RETIRE:
                if self._waiting is not None:
                    self._old.add(self._waiting)
                    self._old_until_ns = max(self._old_until_ns, recv_ns + self.straggler_window_ns)
                self._waiting = None
                self._crossed = {}
            elif action is RuleAction.COUNT_STRAGGLER:
                self.stragglers += 1
            else:
                assert_never(action)


# --- recognising OKX in captures (VenueAdapter.hosts, frame_venue, notice_frame) ------------

#: Hosts of OKX's endpoints (``okex.com``: the name before the rebranding).
HOSTS: Final = {"okx.com": VENUE, "okex.com": VENUE}
#: cryptofeed's feed ids of OKX.
CRYPTOFEED_NAMES: Final = {"OKX": VENUE, "OKEX": VENUE}
_ARG_SHAPE: Final = re.compile(rb'"arg"\s*:\s*\{\s*"channel"\s*:')


def frame_venue(head: bytes) -> str | None:
    """``okx`` when ``head`` (a frame's first bytes) has OKX's ``"arg":{"channel":..}``."""
    return VENUE if _ARG_SHAPE.search(head) else None


def notice_frame(now_ns: int) -> bytes:
    """OKX's service-upgrade notice (code 64008): reconnect within 60 s. Sent by replays and
    simulators, so its ``connId`` is ``sim``."""
    return (
        b'{"event":"notice","code":"%s","msg":"The connection will soon be closed for a '
        b'service upgrade. Please reconnect.","connId":"sim"}' % SERVICE_UPGRADE_CODE.encode()
    )
