"""The limits a simulated venue enforces, as the venue does, and their counters. Pure: time
is ``now_ns``.

:class:`SimLimits` says what a venue allows: connection attempts per window per source
address, client messages per second per connection, streams (subscriptions) per
connection, REST requests per window; and how it says no (the status of a refused
handshake or request, the ban of an address that keeps going, the close code and reason of
a connection over its limits). :class:`VenueLimiter` applies them and counts every refusal
in :class:`LimitStats`, so a test can assert that a client crossed no limit
(``stats.violations == 0``). Every venue's defaults are in :data:`VENUE_LIMITS`, from
``../shared/docs/exchange-protocols.md``, the design notes beside the checkout
(docs/faults.md, "Venue limits", lists them).

Attempts and REST requests are counted in sliding windows (times of the last ``limit``
admitted ones per source address). A refusal answers with ``Retry-After`` (the seconds
until the window admits again); where the venue bans (``ban_s``), the next attempt or
request before that time is answered with the ban status for ``ban_s`` seconds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import Final

import msgspec

from feeds import binance
from feeds import binance_usdm
from feeds import bybit
from feeds import okx
from feeds.sim.connection import CloseConnection
from feeds.sim.connection import ConnState
from feeds.sim.connection import RestAnswer

_SECOND_NS: Final = 1_000_000_000
#: The source address of every REST request (the simulator serves loopback only).
REST_SOURCE: Final = "loopback"
#: The WebSocket close code of a policy violation.
POLICY_VIOLATION: Final = 1008


@dataclass(frozen=True)
class SimLimits:
    """What a simulated venue allows and how it refuses; None: not limited."""

    #: Connection attempts (handshakes) per ``connect_window_s`` per source address.
    connect_attempts: int | None = None
    connect_window_s: float = 300.0
    #: The HTTP status of a handshake over the limit.
    connect_status: int = 429
    #: Client messages per second per connection, or per source address, every connection
    #: together, where ``messages_per_address`` (Coinbase).
    messages_per_s: int | None = None
    messages_per_address: bool = False
    #: Streams (subscriptions) per connection; counted in characters of the subscription
    #: keys where ``streams_in_chars`` (Bybit's limit on a connection's args).
    max_streams: int | None = None
    streams_in_chars: bool = False
    #: REST requests per ``rest_window_s`` per source address (venues that weigh their
    #: requests count the weight themselves and only report refusals here).
    rest_requests: int | None = None
    rest_window_s: float = 60.0
    #: The HTTP status of a REST request over the limit.
    rest_status: int = 429
    #: An address that keeps going after a refusal is banned this long; None: no ban.
    ban_s: float | None = None
    #: The HTTP status of a banned address's handshakes and requests.
    ban_status: int = 418
    #: How a connection over its message rate or stream limit is closed.
    close_code: int = POLICY_VIOLATION
    messages_reason: str = "Too many requests"
    streams_reason: str = "Too many streams"

    def scaled(self, factor: float) -> SimLimits:
        """These limits with every window and ban ``factor`` times as long (counts kept)."""
        return replace(
            self,
            connect_window_s=self.connect_window_s * factor,
            rest_window_s=self.rest_window_s * factor,
            ban_s=None if self.ban_s is None else self.ban_s * factor,
        )


#: Binance futures (USD-M, COIN-M): 10 messages/s, 200 streams; attempts and bans as
#: spot's (the futures docs name none).
_BINANCE_FUTURES: Final = SimLimits(
    connect_attempts=300,
    connect_window_s=300.0,
    messages_per_s=binance_usdm.MAX_MESSAGES_PER_S,
    max_streams=binance_usdm.MAX_STREAMS_PER_CONNECTION,
    ban_s=120.0,
)

#: Each simulated venue's limits (``../shared/docs/exchange-protocols.md``; docs/faults.md
#: lists them).
VENUE_LIMITS: Final[dict[str, SimLimits]] = {
    # 300 attempts / 5 min / IP, 5 messages/s, 1024 streams, 429 then 418 (2 min and up).
    "binance-spot": replace(
        _BINANCE_FUTURES, messages_per_s=5, max_streams=binance.MAX_STREAMS_PER_CONNECTION
    ),
    "binance-usdm": _BINANCE_FUTURES,
    "binance-coinm": _BINANCE_FUTURES,
    # 3 connection requests/s/IP; REST books 40 requests / 2 s / IP.
    "okx": SimLimits(
        connect_attempts=3,
        connect_window_s=1.0,
        rest_requests=okx.REST_REQUESTS_PER_2S,
        rest_window_s=2.0,
        close_code=4004,
        messages_reason="Requests too frequent",
    ),
    # 500 connections / 5 min / domain; 21,000 characters of args per connection; REST
    # 600 / 5 s per IP, 403 "access too frequent", then stop for 10 minutes.
    "bybit": SimLimits(
        connect_attempts=500,
        connect_window_s=300.0,
        max_streams=bybit.MAX_ARGS_CHARS_PER_CONNECTION,
        streams_in_chars=True,
        streams_reason="args exceed the characters allowed per connection",
        rest_requests=bybit.REST_REQUESTS_PER_5S,
        rest_window_s=5.0,
        rest_status=403,
        ban_s=600.0,
        ban_status=403,
    ),
    # No documented limits; a flood of messages is refused ("Exceeded msg rate").
    "kraken": SimLimits(messages_reason="Exceeded msg rate"),
    # 8 connections/s/IP; 8 unauthenticated messages/s/IP; REST 10 requests/s/IP.
    "coinbase": SimLimits(
        connect_attempts=8,
        connect_window_s=1.0,
        messages_per_s=8,
        messages_per_address=True,
        rest_requests=10,
        rest_window_s=1.0,
    ),
}


class LimitStats(msgspec.Struct):
    """Refusals by kind, since start."""

    #: Handshakes refused over the attempt limit, and refused while banned.
    connects_refused: int = 0
    connects_banned: int = 0
    #: Connections closed over their message rate, over their stream limit.
    message_closes: int = 0
    stream_closes: int = 0
    #: REST requests refused over the limit, and refused while banned.
    rest_refused: int = 0
    rest_banned: int = 0
    #: Addresses banned (each ban counted once).
    bans: int = 0

    @property
    def violations(self) -> int:
        """Every refusal: 0 when no client crossed a limit."""
        return (
            self.connects_refused
            + self.connects_banned
            + self.message_closes
            + self.stream_closes
            + self.rest_refused
            + self.rest_banned
        )


@dataclass
class _Window:
    """Admissions of one source address in a sliding window, and its refusal state."""

    times_ns: deque[int]
    #: Until when the last refusal asked the client to wait; a request before it is
    #: "keeping going" (banned where the venue bans).
    retry_until_ns: int = 0
    banned_until_ns: int = 0


@dataclass
class VenueLimiter:
    """Applies :class:`SimLimits`; see the module docstring."""

    limits: SimLimits
    stats: LimitStats = field(default_factory=LimitStats)
    _connects: dict[str, _Window] = field(default_factory=dict)
    _rest: dict[str, _Window] = field(default_factory=dict)
    _messages: dict[str, deque[int]] = field(default_factory=dict)

    # --- connection attempts ------------------------------------------------------------------

    def admit_connection(self, source: str, now_ns: int) -> RestAnswer | None:
        """None: the handshake from ``source`` goes ahead; else the HTTP refusal."""
        limits = self.limits
        refusal = self._admit(
            self._connects,
            source,
            now_ns,
            limits.connect_attempts,
            limits.connect_window_s,
        )
        if refusal is None:
            return None
        banned, retry_s = refusal
        if banned:
            self.stats.connects_banned += 1
            return _refusal(limits.ban_status, "IP banned", retry_s)
        self.stats.connects_refused += 1
        return _refusal(limits.connect_status, "Too many connection attempts", retry_s)

    # --- per connection -----------------------------------------------------------------------

    def client_message(self, state: ConnState, now_ns: int) -> None:
        """Counts one client message; raises CloseConnection over the rate."""
        limit = self.limits.messages_per_s
        if limit is None:
            return
        # Per address, or per connection (the key of the connection's own window).
        key = str(state.extra.get("source", "")) if self.limits.messages_per_address else ""
        windows = self._messages
        if not self.limits.messages_per_address:
            own = state.extra.get("limit_windows")
            if not isinstance(own, dict):
                own = state.extra["limit_windows"] = {}
            windows = own
        recent = windows.get(key)
        if recent is None:
            recent = windows[key] = deque(maxlen=limit + 1)
        recent.append(now_ns)
        while recent[0] <= now_ns - _SECOND_NS:
            recent.popleft()
        if len(recent) > limit:
            self.stats.message_closes += 1
            raise CloseConnection(self.limits.close_code, self.limits.messages_reason)

    def streams(self, state: ConnState, count: int | None = None) -> None:
        """Raises CloseConnection when the connection carries more streams than allowed
        (``count``; default its subscriptions)."""
        limit = self.limits.max_streams
        if count is not None:
            carried = count
        elif self.limits.streams_in_chars:
            carried = sum(len(key) for key in state.subs)
        else:
            carried = len(state.subs)
        if limit is not None and carried > limit:
            self.stats.stream_closes += 1
            raise CloseConnection(
                self.limits.close_code, f"{self.limits.streams_reason}: {carried} > {limit}"
            )

    # --- REST ---------------------------------------------------------------------------------

    def admit_rest(self, source: str, now_ns: int) -> tuple[int, float] | None:
        """None: the request goes ahead (counted where the venue counts requests); else
        ``(status, retry_after_s)`` of the refusal."""
        limits = self.limits
        refusal = self._admit(
            self._rest, source, now_ns, limits.rest_requests, limits.rest_window_s
        )
        if refusal is None:
            return None
        banned, retry_s = refusal
        if banned:
            self.stats.rest_banned += 1
            return limits.ban_status, retry_s
        self.stats.rest_refused += 1
        return limits.rest_status, retry_s

    def rest_refused(self, source: str, retry_after_s: float, now_ns: int) -> None:
        """The venue itself refused a request (its own weight count): counted, and a
        request before ``retry_after_s`` passed is keeping going."""
        self.stats.rest_refused += 1
        window = self._window(self._rest, source, None)
        window.retry_until_ns = max(window.retry_until_ns, now_ns + int(retry_after_s * 1e9))

    # --- internals ----------------------------------------------------------------------------

    @staticmethod
    def _window(windows: dict[str, _Window], source: str, limit: int | None) -> _Window:
        window = windows.get(source)
        if window is None:
            window = windows[source] = _Window(deque(maxlen=limit))
        return window

    def _admit(
        self,
        windows: dict[str, _Window],
        source: str,
        now_ns: int,
        limit: int | None,
        window_s: float,
    ) -> tuple[bool, float] | None:
        """None: admitted (and counted); else ``(banned, retry_after_s)``."""
        window = self._window(windows, source, limit)
        if now_ns < window.banned_until_ns:
            return True, (window.banned_until_ns - now_ns) / 1e9
        ban_s = self.limits.ban_s
        if ban_s is not None and now_ns < window.retry_until_ns:
            # Kept going after a refusal: banned.
            self.stats.bans += 1
            window.banned_until_ns = now_ns + int(ban_s * 1e9)
            return True, ban_s
        if limit is None:
            return None
        times = window.times_ns
        window_ns = int(window_s * 1e9)
        if len(times) >= limit and times[0] > now_ns - window_ns:
            retry_ns = times[0] + window_ns - now_ns
            window.retry_until_ns = now_ns + retry_ns
            return False, retry_ns / 1e9
        times.append(now_ns)
        return None


def rest_refusal(status: int, retry_after_s: float) -> RestAnswer:
    """A REST request refused with ``status`` (``Retry-After`` set)."""
    return _refusal(status, "Too many requests", retry_after_s)


def _refusal(status: int, message: str, retry_after_s: float) -> RestAnswer:
    body = msgspec.json.encode({"code": status, "msg": message})
    return RestAnswer(status, body, (("Retry-After", retry_after_header(retry_after_s)),))


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up (at least 1)."""
    return str(max(1, int(-(-seconds // 1))))
