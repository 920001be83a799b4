"""The venue registry: what the service and verify need of each supported venue's adapter.

Pure: the adapters' functions take input and return output; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import Final
from typing import Literal
from typing import Protocol

from feeds import binance
from feeds import binance_coinm
from feeds import binance_usdm
from feeds import bybit
from feeds import coinbase
from feeds import kraken
from feeds import okx
from gateway.core.arbiter import DEFAULT_ARBITER_LIMITS
from gateway.core.arbiter import ArbiterLimits
from gateway.core.arbiter import Checksum
from gateway.core.arbiter import LinkRule
from gateway.core.arbiter import SymbolArbiter
from gateway.core.limits import VenueLimits
from gateway.core.model import DepthSnapshot
from gateway.core.model import VenueEvent
from gateway.core.model import symbol_key
from gateway.core.replicated import ReplicatedBook
from gateway.core.sequenced import SequencedBook

#: Sequenced: the venue's ids are the same on every connection. Unsequenced: one replica per
#: connection, checked by checksum, the output following a leader (docs/architecture.md).
ArbitrationMode = Literal["sequenced", "unsequenced"]


def _no_messages(symbols: Sequence[str]) -> list[bytes]:
    return []


def _no_checksum(symbol: str) -> Checksum | None:
    return None


def _unit_weight(limit: int) -> int:
    return 1


def _no_venue(head: bytes) -> str | None:
    return None


def _one_stream(symbol: str) -> int:
    return 1


def _two_streams(symbol: str) -> int:
    return 2


#: The default cap of levels per side: twice the largest REST snapshot Binance serves
#: (5000), whose diff streams cover the whole book.
DEFAULT_MAX_LEVELS: Final = 10_000
#: The default cap of one WebSocket frame's bytes: the largest frames in recorded sessions
#: are far below it (Binance spot's depth diffs 63 KiB, OKX's 400-level snapshots 25 KiB,
#: Bybit's 200-level snapshots 9 KiB, Kraken's 1 KiB), and so is a frame of Binance's
#: 10,000 levels per side (about 650 KiB).
DEFAULT_MAX_FRAME_BYTES: Final = 1024 * 1024


@dataclass(frozen=True)
class VenueAdapter:
    """A venue's pure functions: URLs, messages, parsing, and how its stream is merged."""

    venue: str
    mode: ArbitrationMode
    #: The URL a connection opens for these symbols (streams in the URL, or the bare endpoint).
    stream_url: Callable[[str, Sequence[str]], str]
    parse: Callable[[bytes, int, int], list[VenueEvent]]
    #: Production endpoints, every alternative the venue documents.
    ws_endpoints: tuple[str, ...] = ()
    rest_endpoints: tuple[str, ...] = ()
    #: Venues whose trades come from another endpoint (Binance futures ``/market``): the
    #: trades endpoint of a book endpoint, and the URL a trades connection opens.
    trade_endpoint: Callable[[str], str] | None = None
    trade_stream_url: Callable[[str, Sequence[str]], str] | None = None
    #: Sent after every connect.
    subscribe_messages: Callable[[Sequence[str]], list[bytes]] = _no_messages
    #: Unsubscribe and subscribe one symbol again on one connection (a fresh snapshot).
    resubscribe_messages: Callable[[str], list[bytes]] | None = None
    #: The venue's application-level ping, where it needs one besides protocol pings.
    ping_message: bytes | None = None
    ping_interval_s: float = 20.0
    #: Outgoing messages per second the venue tolerates per connection ...
    max_messages_per_s: float = 4.0
    #: ... and per IP, every connection together, where it counts them so.
    max_messages_per_s_per_ip: float | None = None
    #: WebSocket connection attempts the venue allows per IP in ``connect_window_s``
    #: (``../shared/docs/exchange-protocols.md``); the venue's connections share this budget.
    connect_attempts_per_window: int = 300
    connect_window_s: float = 300.0
    #: Streams one connection may carry, in the venue's unit (streams, channels, argument
    #: characters), and what one symbol costs in it; None: no documented limit.
    max_streams_per_connection: int | None = None
    streams_per_symbol: Callable[[str], int] = _one_stream
    #: Subscribe and unsubscribe requests one connection may send per hour (OKX's 480);
    #: None: no documented limit.
    subscribe_requests_per_hour: int | None = None
    #: The name of the budgets the venue shares with other venues the exchange counts
    #: together (None: the venue's own); budgets are per group and source address.
    limit_group: str | None = None
    #: ``(weight, window_s)`` where the venue counts REST weight over a window other than
    #: a minute (then ``rest_weight_per_minute`` is not used).
    rest_limit: tuple[int, float] | None = None
    #: The venue sends a snapshot in band on every subscribe: a resync resubscribes, and
    #: REST snapshots (where ``snapshot_url`` is set) are used only when configured.
    in_band_snapshots: bool = False
    #: REST snapshots; None where the venue has no usable REST book.
    snapshot_url: Callable[[str, str, int], str] | None = None
    parse_snapshot: Callable[[str, bytes, int, int], DepthSnapshot] | None = None
    #: Where ``snapshot_url`` is set: raises ValueError, naming the depths the venue's REST
    #: serves, for a limit it refuses (``snapshot_url`` raises the same).
    check_snapshot_limit: Callable[[int], None] | None = None
    #: Where ``snapshot_url`` is set: the depth asked for unless ``venues[].snapshot_limit``
    #: is set, 1000 where the venue serves it, else its largest (OKX 400).
    default_snapshot_limit: int | None = None
    snapshot_weight: Callable[[int], int] = _unit_weight
    #: REST request-weight budget per minute per IP.
    rest_weight_per_minute: int = 1200
    #: URL paths of the venue's REST depth snapshots (to recognise them in captures).
    snapshot_paths: tuple[str, ...] = ()
    #: Sequenced venues: the rule that orders updates (one instance per symbol).
    link_rule: Callable[[], LinkRule] | None = None
    #: The venue's book checksum for a symbol, where it sends one.
    checksum: Callable[[str], Checksum | None] = _no_checksum
    #: The checksum at an instrument's announced precisions (price, qty), where the venue
    #: computes it on values rendered at those precisions (Kraken).
    checksum_at_precision: Callable[[int, int], Checksum] | None = None
    #: Unsequenced venues: replicas are truncated to the subscribed depth after every message.
    replica_depth: int | None = None
    #: Levels per side the venue's book holds as the gateway subscribes it (its snapshots'
    #: depth, which it maintains), or None where the stream covers the whole book; a cap
    #: below it would refuse the venue's own snapshots (README, ``venues[].max_levels``).
    venue_depth: int | None = None
    #: The default cap of each book's levels per side (``venues[].max_levels``): the venue's
    #: maintained depth with a safety margin; levels beyond it are pruned farthest first.
    max_levels: int = DEFAULT_MAX_LEVELS
    #: The default cap of one frame's bytes (``venues[].max_frame_bytes``): a larger frame
    #: is refused before it is read, let alone parsed.
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    #: The venue's own book may be crossed momentarily (documented by the venue, seen in
    #: its recorded sessions): a crossed book is then published and counted only. False:
    #: a crossed book is a venue fault, never published, rebuilt (docs/architecture.md).
    may_cross: bool = False
    # --- what identifies the venue in recorded captures (gateway.capture.venues asks) ---
    #: Hosts of the venue's WebSocket and REST endpoints, and the venue each names: a URL
    #: is a host's when its host is that name or a subdomain of it (the longest match wins).
    #: Where one host serves several venues it names their exchange (``bybit``); a host may
    #: name a market of the exchange that has no adapter (Bybit's inverse category), so that a
    #: capture of it is told apart.
    hosts: Mapping[str, str] = field(default_factory=dict)
    #: Where one host serves several venues: the venue a URL on ``hosts`` names by its path
    #: or query, None when it names none; and every name it can return.
    url_venue: Callable[[str], str | None] | None = None
    url_venues: tuple[str, ...] = ()
    #: The exchange the venue is a market of, where its hosts and frames name the exchange.
    exchange: str | None = None
    #: The venue whose wire format a frame's first bytes have (its exchange where the frame
    #: does not tell the market), or None when they are not the venue's. Adapters are asked
    #: in registry order, the first answer wins.
    frame_venue: Callable[[bytes], str | None] = _no_venue
    #: cryptofeed's feed ids (``NAME`` of ``NAME.ws.N.M``, a JSONL header's ``exchange``)
    #: and the venue each names.
    cryptofeed_names: Mapping[str, str] = field(default_factory=dict)
    #: The notice the venue sends before it closes connections (maintenance, shutdown), at
    #: a time in ns: a replay of the venue's capture sends it on request.
    notice_frame: Callable[[int], bytes] | None = None

    @property
    def limits(self) -> VenueLimits:
        """The venue's documented limits (docs/architecture.md, "Venue limits")."""
        weight, window_s = self.rest_limit or (self.rest_weight_per_minute, 60.0)
        return VenueLimits(
            group=self.limit_group or self.venue,
            connect_attempts_per_window=self.connect_attempts_per_window,
            connect_window_s=self.connect_window_s,
            messages_per_s=self.max_messages_per_s,
            max_streams_per_connection=self.max_streams_per_connection,
            rest_weight_per_window=weight,
            rest_window_s=window_s,
            messages_per_s_per_address=self.max_messages_per_s_per_ip,
            subscribe_requests_per_hour=self.subscribe_requests_per_hour,
        )

    def new_arbiter(
        self, symbol: str, limits: ArbiterLimits = DEFAULT_ARBITER_LIMITS
    ) -> SymbolArbiter:
        """``limits.max_levels`` None: the venue's default cap (:attr:`max_levels`)."""
        key = symbol_key(self.venue, symbol)
        if limits.max_levels is None:
            limits = replace(limits, max_levels=self.max_levels)
        if self.mode == "unsequenced":
            return ReplicatedBook(
                key,
                checksum=self.checksum(symbol),
                depth=self.replica_depth,
                max_levels=limits.max_levels,
                may_cross=self.may_cross,
            )
        if self.link_rule is None:
            raise ValueError(f"sequenced venue {self.venue} has no link rule")
        return SequencedBook(
            key, self.link_rule(), limits, checksum=self.checksum(symbol), may_cross=self.may_cross
        )


class _VenueModule(Protocol):
    """The names every venue module of :mod:`feeds` exports the same way."""

    @property
    def REST_ENDPOINTS(self) -> tuple[str, ...]: ...
    @property
    def HOSTS(self) -> Mapping[str, str]: ...
    @property
    def CRYPTOFEED_NAMES(self) -> Mapping[str, str]: ...

    def frame_venue(self, head: bytes) -> str | None: ...


class _OneMarketModule(_VenueModule, Protocol):
    """A venue module of one market (one venue)."""

    @property
    def VENUE(self) -> str: ...
    @property
    def WS_ENDPOINTS(self) -> tuple[str, ...]: ...

    def parse(self, raw: bytes, recv_ns: int, conn_id: int) -> list[VenueEvent]: ...


class _RestSnapshotModule(_OneMarketModule, Protocol):
    """A venue module with REST depth snapshots."""

    @property
    def SNAPSHOT_PATH(self) -> str: ...
    @property
    def DEFAULT_SNAPSHOT_LIMIT(self) -> int: ...

    def check_snapshot_limit(self, limit: int) -> None: ...
    def snapshot_url(self, rest_base: str, symbol: str, limit: int) -> str: ...
    def parse_snapshot(
        self, symbol: str, body: bytes, recv_ns: int, conn_id: int = -1
    ) -> DepthSnapshot: ...


class _BinanceModule(_RestSnapshotModule, Protocol):
    """A Binance market's module: streams named in the URL, snapshots weighted by limit."""

    def stream_url(self, endpoint: str, symbols: Sequence[str]) -> str: ...
    def snapshot_weight(self, limit: int) -> int: ...


def _venue(
    feed: _VenueModule,
    venue: str,
    mode: ArbitrationMode,
    stream_url: Callable[[str, Sequence[str]], str],
    parse: Callable[[bytes, int, int], list[VenueEvent]],
    ws_endpoints: tuple[str, ...],
) -> VenueAdapter:
    """The adapter of one market of a venue module: what differs by market given, the rest
    of what every module names the same way read from it; everything else at its default,
    for :func:`dataclasses.replace` to set."""
    return VenueAdapter(
        venue=venue,
        mode=mode,
        stream_url=stream_url,
        parse=parse,
        ws_endpoints=ws_endpoints,
        rest_endpoints=feed.REST_ENDPOINTS,
        hosts=feed.HOSTS,
        frame_venue=feed.frame_venue,
        cryptofeed_names=feed.CRYPTOFEED_NAMES,
    )


def _one_market(
    feed: _OneMarketModule,
    mode: ArbitrationMode,
    stream_url: Callable[[str, Sequence[str]], str],
) -> VenueAdapter:
    """The adapter of a one-market venue module, as :func:`_venue`."""
    return _venue(feed, feed.VENUE, mode, stream_url, feed.parse, feed.WS_ENDPOINTS)


def _rest_snapshots(
    adapter: VenueAdapter, feed: _RestSnapshotModule, weight_per_minute: int
) -> VenueAdapter:
    """``adapter`` with the module's REST depth snapshots, the depths they may ask for, under
    a weight budget."""
    return replace(
        adapter,
        snapshot_url=feed.snapshot_url,
        parse_snapshot=feed.parse_snapshot,
        check_snapshot_limit=feed.check_snapshot_limit,
        default_snapshot_limit=feed.DEFAULT_SNAPSHOT_LIMIT,
        rest_weight_per_minute=weight_per_minute,
        snapshot_paths=(feed.SNAPSHOT_PATH,),
    )


def _binance(
    feed: _BinanceModule, link_rule: Callable[[], LinkRule], weight_per_minute: int
) -> VenueAdapter:
    """A Binance market: streams named in the URL, REST snapshots weighted by their limit,
    and the exchange's shutdown notice."""
    adapter = _one_market(feed, "sequenced", feed.stream_url)
    return replace(
        _rest_snapshots(adapter, feed, weight_per_minute),
        snapshot_weight=feed.snapshot_weight,
        link_rule=link_rule,
        notice_frame=binance.notice_frame,
    )


class _BinanceFuturesModule(_BinanceModule, Protocol):
    """A Binance futures market's module: trades on a market endpoint of their own."""

    @property
    def REST_WEIGHT_PER_MINUTE(self) -> int: ...
    @property
    def MAX_STREAMS_PER_CONNECTION(self) -> int: ...

    def market_stream_url(self, endpoint: str, symbols: Sequence[str]) -> str: ...


def _binance_futures(feed: _BinanceFuturesModule) -> VenueAdapter:
    """A Binance futures market (USD-M, COIN-M): depth diffs from ``/public``, trades
    (aggTrade) from ``/market`` on connections of their own, the ``pu`` chain."""
    return replace(
        _binance(feed, binance_usdm.BinanceFuturesRule, feed.REST_WEIGHT_PER_MINUTE),
        trade_endpoint=lambda endpoint: endpoint.removesuffix("/public") + "/market",
        trade_stream_url=feed.market_stream_url,
        max_messages_per_s=8.0,  # the futures markets disconnect above 10 per second
        # The futures docs give no attempt limit: spot's 300 per 5 minutes is assumed.
        connect_attempts_per_window=300,
        # Depth on /public, trades on /market connections of their own: one stream each.
        max_streams_per_connection=feed.MAX_STREAMS_PER_CONNECTION,
    )


def _bybit(
    venue: str,
    parse: Callable[[bytes, int, int], list[VenueEvent]],
    parse_snapshot: Callable[[str, bytes, int, int], DepthSnapshot],
) -> VenueAdapter:
    """One Bybit category (spot, linear): its own endpoint, topics and sequence."""
    adapter = _venue(bybit, venue, "sequenced", bybit.connect_url, parse, bybit.WS_ENDPOINTS[venue])
    return replace(
        adapter,
        subscribe_messages=bybit.subscribe_messages,
        resubscribe_messages=bybit.resubscribe_messages,
        ping_message=bybit.ping_message(),
        ping_interval_s=bybit.PING_INTERVAL_S,
        # Whether the REST book's u is the WS topic's u is undocumented: resyncs resubscribe.
        parse_snapshot=parse_snapshot,
        snapshot_paths=(bybit.SNAPSHOT_PATH,),
        link_rule=bybit.BybitRule,
        # 500 connections per 5 minutes per WebSocket domain, which spot and linear share
        # (one budget: ``limit_group``).
        connect_attempts_per_window=500,
        connect_window_s=300.0,
        limit_group=bybit.EXCHANGE,
        max_streams_per_connection=bybit.MAX_ARGS_CHARS_PER_CONNECTION,
        streams_per_symbol=bybit.topic_chars,
        rest_limit=(bybit.REST_REQUESTS_PER_5S, 5.0),
        url_venue=bybit.url_venue,
        url_venues=bybit.CATEGORY_VENUES,
        exchange=bybit.EXCHANGE,
        venue_depth=bybit.DEFAULT_DEPTH,
        # Twice the deepest topic, so that captures of any depth (history files) verify.
        max_levels=2 * max(bybit.BOOK_DEPTHS),
    )


#: Coinbase's level2 is the full book (tens of thousands of levels per side in recorded
#: sessions of BTC-USD): a cap far above it, which bounds memory all the same.
COINBASE_MAX_LEVELS: Final = 100_000
#: Coinbase Advanced Trade sends the full book as one frame: 5 MB for BTC-USD (about
#: 45,000 levels) in recorded sessions; a frame of 100,000 levels per side is about 22 MB.
COINBASE_MAX_FRAME_BYTES: Final = 32 * 1024 * 1024
#: Coinbase Exchange's full-book snapshots: 1.1 MB in recorded sessions.
COINBASE_EXCHANGE_MAX_FRAME_BYTES: Final = 16 * 1024 * 1024

ADAPTERS: dict[str, VenueAdapter] = {
    "binance": replace(
        _binance(binance, binance.BinanceSpotRule, 6000),
        max_messages_per_s=4.0,  # Binance disconnects above 5 per second
        connect_attempts_per_window=300,  # per 5 minutes per IP, the default window
        # A depth and a trade stream per symbol, 1024 streams per connection.
        max_streams_per_connection=binance.MAX_STREAMS_PER_CONNECTION,
        streams_per_symbol=_two_streams,
    ),
    "binance-usdm": _binance_futures(binance_usdm),
    "binance-coinm": _binance_futures(binance_coinm),
    bybit.SPOT: _bybit(bybit.SPOT, bybit.parse_spot, bybit.parse_snapshot_spot),
    bybit.LINEAR: _bybit(bybit.LINEAR, bybit.parse_linear, bybit.parse_snapshot_linear),
    "okx": replace(
        # Resyncs resubscribe for an in-band snapshot; the REST procedure (books with seqId)
        # is used where a venue config lists REST bases.
        _rest_snapshots(
            _one_market(okx, "sequenced", okx.connect_url), okx, okx.REST_REQUESTS_PER_MINUTE
        ),
        in_band_snapshots=True,
        subscribe_messages=okx.subscribe_messages,
        resubscribe_messages=okx.resubscribe_messages,
        ping_message=okx.ping_message(),
        ping_interval_s=okx.PING_INTERVAL_S,
        # 480 subscribe requests per hour per connection; pings are sent well below this.
        max_messages_per_s=2.0,
        connect_attempts_per_window=3,  # connection requests per second per IP
        connect_window_s=1.0,
        # The venue's advice: fewer than 30 channels per connection (a book and trades each).
        max_streams_per_connection=okx.MAX_CHANNELS_PER_CONNECTION,
        streams_per_symbol=_two_streams,
        subscribe_requests_per_hour=okx.SUBSCRIBE_REQUESTS_PER_HOUR,
        rest_limit=(okx.REST_REQUESTS_PER_2S, 2.0),
        link_rule=okx.OkxRule,
        checksum=lambda symbol: okx.book_checksum,
        notice_frame=okx.notice_frame,
        venue_depth=okx.MAX_SNAPSHOT_LIMIT,  # ``books``: 400 levels, kept by the venue
        max_levels=1000,
    ),
    "kraken": replace(
        _one_market(kraken, "unsequenced", kraken.connect_url),
        subscribe_messages=lambda symbols: [
            kraken.instrument_message(),
            *kraken.subscribe_messages(symbols),
        ],
        resubscribe_messages=kraken.resubscribe_messages,
        ping_message=kraken.ping_message(),
        ping_interval_s=kraken.PING_INTERVAL_S,
        max_messages_per_s=2.0,
        # Not in the venue's current docs; its older WebSocket docs name about 150
        # connection attempts per rolling 10 minutes per IP (a 10-minute ban above).
        connect_attempts_per_window=150,
        connect_window_s=600.0,
        # The wire's own digits until the instrument channel announces the precisions.
        checksum=lambda symbol: kraken.book_checksum,
        checksum_at_precision=kraken.checksum_function,
        replica_depth=kraken.DEFAULT_DEPTH,
        venue_depth=kraken.DEFAULT_DEPTH,
        # Twice the deepest subscription, so that captures of any depth verify.
        max_levels=2 * max(kraken.DEPTHS),
    ),
    "coinbase": replace(
        _one_market(coinbase, "unsequenced", coinbase.connect_url),
        subscribe_messages=coinbase.subscribe_messages,
        resubscribe_messages=coinbase.resubscribe_messages,
        # Coinbase's 8 messages per second are per IP, shared by every connection.
        max_messages_per_s=2.0,
        max_messages_per_s_per_ip=8.0,
        max_levels=COINBASE_MAX_LEVELS,
        max_frame_bytes=COINBASE_MAX_FRAME_BYTES,
        # 8 connections per second per IP (the stricter of the two pages that disagree).
        connect_attempts_per_window=8,
        connect_window_s=1.0,
        rest_limit=(10, 1.0),  # public REST: 10 requests per second per IP
    ),
    "coinbase-exchange": VenueAdapter(
        venue=coinbase.EXCHANGE_VENUE,
        mode="unsequenced",
        stream_url=coinbase.connect_url,
        parse=coinbase.parse_exchange,
        ws_endpoints=coinbase.EXCHANGE_WS_ENDPOINTS,
        subscribe_messages=coinbase.exchange_subscribe_messages,
        max_messages_per_s=2.0,
        max_messages_per_s_per_ip=100.0,  # client messages per second per IP
        connect_attempts_per_window=8,  # connection requests per second per IP (burst 20)
        connect_window_s=1.0,
        rest_limit=(10, 1.0),  # public REST: 10 requests per second per IP
        hosts=coinbase.HOSTS,
        frame_venue=coinbase.frame_venue,
        max_levels=COINBASE_MAX_LEVELS,
        max_frame_bytes=COINBASE_EXCHANGE_MAX_FRAME_BYTES,
    ),
}


def adapter_for(venue: str) -> VenueAdapter:
    try:
        return ADAPTERS[venue]
    except KeyError:
        raise ValueError(f"venue {venue!r} is not supported") from None
