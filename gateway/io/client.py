"""Client for Python strategies: consistent books, top of book and trades from the gateway.

::

    async def main() -> None:
        urls = ["ws://127.0.0.1:8765/", "ws://127.0.0.1:8766/"]  # tried in order
        async with GatewayClient(urls, ["binance:BTCUSDT"], channels=["book", "trade"]) as client:
            async for event in client:
                match event:
                    case BookEvent(book=book):
                        print(book.best_bid(), book.best_ask(), book.spread())
                    case TradeEvent(price=price, qty=qty, side=side):
                        print("trade", side, qty, "@", price)
                    case StatusEvent(state=state, reason=reason):
                        print("status", state, reason)

    asyncio.run(main())

The client subscribes its symbols to its channels (``book``, ``bbo``, ``trade``) and
yields typed events (:mod:`gateway.wire.client_session`, its pure core, says what each
means): :class:`BookEvent` after each snapshot or delta applied, with the symbol's
:class:`Book`; :class:`BboEvent`; :class:`TradeEvent`; :class:`StatusEvent` when a
symbol's state or reason changes; :class:`RecoveryEvent` after a reconnection, per book
and trade stream kept; :class:`RetryEvent` when a request refused as ``rate_limited`` is
to be sent again. Every event carries ``recv_ns``, the wall clock when its message
arrived; deltas, bbo and trades also the gateway's ``gateway_recv_ns``,
``gateway_send_ns`` and the venue's ``event_ms`` (see ``docs/protocol.md``, latency
fields).

Books: every delta must follow the previous message (same epoch, seq + 1); on a gap the
book is discarded, the gateway asked for a ``resync``, and the symbol is ``resyncing``
(no book events) until the fresh snapshot. :meth:`GatewayClient.position` is the
``(epoch, seq)`` of the symbol's last book message applied, kept across reconnections.

Tokens: with ``token`` (the gateway's ``server.token``) every connection sends
``Authorization: Bearer TOKEN``. A URL may still carry one as ``?token=TOKEN``: it is taken
out of the URL and sent as the header too (``token`` wins over it), so that no URL the
client keeps, logs or raises (:attr:`GatewayClient.urls`, :attr:`GatewayClient.url`) holds
a token. A URL's ``user:password@`` is used to connect and shown as ``user:***@``.

Connections: ``urls`` are tried in order, the first that accepts is used. When the
connection is lost, or every URL failed, the client waits a capped exponential backoff
(full jitter; reset once a gateway acknowledges the subscription) and tries them in order
again; every symbol is ``stale`` meanwhile. Its reason tells a stop of the gateway (a
restart or a deploy: it sent every symbol ``stale``, ``the gateway is stopping``, then
closed with 1001 and that reason) from a fault: :data:`GATEWAY_STOPPED` for the former
(counted in ``stats.gateway_stops``), ``gateway connection lost: ...`` otherwise. A connect
the gateway closes at once because it is stopping (while it drains its subscribers) is its
stop too: logged at INFO, counted in ``stats.gateway_stops``, the next URL tried. A
restarted gateway is a new instance: its books restart from snapshots. With ``recover``
(the default; full-depth books only) each live book is kept and the next connection asks
the gateway for the deltas it missed: a :class:`RecoveryEvent` per book says whether it
was recovered (its book events go on from where they stopped) or not (it restarts from a
snapshot). Trade streams likewise:
the trades missed while away follow (``recovered`` trade events), each once and in order,
or a :class:`RecoveryEvent` with ``channel`` ``"trade"`` and ``recovered`` false says they
are lost. ``ws://``, ``wss://`` and ``unix:/path/to.sock`` (the gateway's
``server.unix_path``) URLs are accepted.

Rate limits: a ``resync`` (or the ``subscribe``) the gateway refuses as ``rate_limited``
is sent again after a capped, jittered backoff (``retry_initial_s``, ``retry_max_s``),
announced by a :class:`RetryEvent`; the client waits for it while reading.

The event queue holds at most the events of one message, or one status per symbol after a
disconnection: it is emptied before the next message is read, so a slow consumer slows the
reading (the gateway then conflates, see ``docs/protocol.md``) and never grows memory here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple
from typing import Self

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect
from websockets.asyncio.client import unix_connect
from websockets.exceptions import ConnectionClosed
from websockets.exceptions import InvalidHandshake

from gateway.core.backoff import Backoff
from gateway.core.model import Level
from gateway.core.model import Side
from gateway.core.model import SymbolState
from gateway.io.logs import LimitedLog
from gateway.io.logs import redact_secrets
from gateway.wire.client_session import GATEWAY_STOPPED
from gateway.wire.client_session import BboEvent
from gateway.wire.client_session import Book
from gateway.wire.client_session import BookEvent
from gateway.wire.client_session import ClientSession
from gateway.wire.client_session import ClientState
from gateway.wire.client_session import ClientStats
from gateway.wire.client_session import Event
from gateway.wire.client_session import GatewayError
from gateway.wire.client_session import RecoveryEvent
from gateway.wire.client_session import RetryEvent
from gateway.wire.client_session import StatusEvent
from gateway.wire.client_session import Step
from gateway.wire.client_session import TradeEvent
from gateway.wire.client_session import disconnect_reason
from gateway.wire.protocol import Channel
from gateway.wire.protocol import UnknownValue
from gateway.wire.protocol import WireFormat
from gateway.wire.protocol import encode_json
from gateway.wire.tokens import Secret
from gateway.wire.tokens import bearer_headers
from gateway.wire.tokens import redact
from gateway.wire.tokens import redacted_repr
from gateway.wire.tokens import split_token

__all__ = [
    "GATEWAY_STOPPED",
    "BboEvent",
    "Book",
    "BookEvent",
    "Channel",
    "ClientState",
    "ClientStats",
    "Event",
    "GatewayClient",
    "GatewayError",
    "Level",
    "RecoveryEvent",
    "RetryEvent",
    "Side",
    "StatusEvent",
    "SymbolState",
    "TradeEvent",
    "UnknownValue",
    "connect_gateway",
    "next_step",
    "subscribe",
]

log = logging.getLogger(__name__)
# websockets logs request lines and headers at DEBUG: the token must not go with them.
redact_secrets(log, logging.getLogger("websockets.client"))

#: The scheme of a gateway's Unix domain socket: ``unix:/path/to.sock`` (a query may
#: follow).
UNIX_SCHEME = "unix:"
#: URL schemes the client connects to.
URL_SCHEMES = ("ws://", "wss://", UNIX_SCHEME)


def _closed_reason(exc: ConnectionClosed) -> str:
    """:func:`disconnect_reason` of a connection that ended with ``exc``."""
    received = exc.rcvd
    return disconnect_reason(
        None if received is None else received.code,
        "" if received is None else received.reason,
        str(exc),
    )


@redacted_repr
class _Target(NamedTuple):
    """A gateway URL as the client connects to it, shows it, and the token it sends (a
    :class:`Secret`: the ``repr`` shows neither it nor the URL's password)."""

    url: str
    shown: str
    token: str | None


def _checked_urls(urls: str | Sequence[str], token: str | None) -> list[_Target]:
    """Each URL of ``urls`` (the first of repeats) without its token, shown without its
    password too, with the token to send to it (``token``, else the URL's own); raises
    ValueError, naming no secret, for a URL the client cannot use."""
    checked: dict[str, _Target] = {}
    for given in [urls] if isinstance(urls, str) else urls:
        url, url_token = split_token(given)
        shown = redact(url)
        if not url.startswith(URL_SCHEMES):
            raise ValueError(f"gateway URL {shown!r}: expected one of {', '.join(URL_SCHEMES)}")
        if url.startswith(UNIX_SCHEME) and not url[len(UNIX_SCHEME) :].partition("?")[0]:
            raise ValueError(f"gateway URL {shown!r}: expected unix:/path/to.sock")
        sent = url_token if token is None else token
        checked.setdefault(url, _Target(url, shown, None if sent is None else Secret(sent)))
    if not checked:
        raise ValueError("at least one gateway URL")
    return list(checked.values())


def connect_gateway(url: str, *, token: str | None = None, **options: Any) -> connect:
    """A WebSocket connection to a gateway URL (await it, or ``async with``): ``ws://`` and
    ``wss://`` over TCP; ``unix:PATH[?QUERY]`` over the Unix socket at ``PATH``, the
    handshake asking for ``/[?QUERY]``. ``token`` (else a ``?token=`` of the URL, taken
    out of it) is sent as ``Authorization: Bearer``. ``options`` are websockets'
    ``connect``'s; ``additional_headers``, when given, a mapping."""
    url, url_token = split_token(url)
    headers = bearer_headers(url_token if token is None else token)
    if headers:
        options["additional_headers"] = {**options.get("additional_headers", {}), **headers}
    if url.startswith(UNIX_SCHEME):
        path, mark, query = url[len(UNIX_SCHEME) :].partition("?")
        return unix_connect(path, f"ws://localhost/{mark}{query}", **options)
    return connect(url, **options)


async def next_step(
    ws: ClientConnection,
    session: ClientSession,
    clock_ns: Callable[[], int],
    monotonic_ns: Callable[[], int],
) -> tuple[Step, str | bytes | None]:
    """The session's next step on ``ws`` and the message it is of: the next message
    received (stamped ``clock_ns()``), or, when a ``rate_limited`` retry falls due first
    (on ``monotonic_ns``), :meth:`ClientSession.on_timer`'s step and None. The caller
    sends the step's requests. Raises ConnectionClosed when the connection ends."""
    due_ns = session.next_retry_ns()
    timeout_s = None
    if due_ns is not None:
        now_ns = monotonic_ns()
        if due_ns <= now_ns:
            return session.on_timer(now_ns), None
        timeout_s = (due_ns - now_ns) / 1e9
    try:
        # Cancelling recv() loses nothing: the message is read on the next call.
        async with asyncio.timeout(timeout_s):
            data = await ws.recv()
    except TimeoutError:  # a retry is due
        return session.on_timer(monotonic_ns()), None
    return session.on_data(data, clock_ns(), monotonic_ns()), data


class GatewayClient:
    """``symbols`` on ``channels`` from the first gateway of ``urls`` that accepts, as an
    async iterator of events. One consumer at a time; use ``async with`` (or
    :meth:`aclose`).

    Args:
        urls: a gateway's WebSocket URL (``ws://127.0.0.1:8765/``, or
            ``unix:/path/to.sock`` for its Unix socket, ``server.unix_path``) or a list of
            them, tried in order.
        symbols: symbol keys (``venue:SYMBOL``).
        token: the gateway's ``server.token``, sent as ``Authorization: Bearer`` to every
            URL (a URL's own ``?token=`` is sent where this is None).
        channels: any of ``book``, ``bbo``, ``trade`` [``book``].
        depth: the book's levels per side; None (default) for the full book. With a
            depth the book is the full book's top N after every event, on the depth's own
            seq stream (``docs/protocol.md``, Depth).
        wire_format: ``json`` or ``msgpack``.
        recover: keep live books (full-depth only) and trade streams across a lost
            connection and ask the next gateway connection for what they missed.
        reconnect: reconnect after the connection is lost or every URL refused; when
            False the iteration ends after the connection is lost, and a failed first
            round of connects raises the last URL's error.
        backoff_initial_s / backoff_max_s: delay ceiling between rounds of connects,
            doubled per failed round up to the cap, full jitter
            (:class:`gateway.core.backoff.Backoff`); reset once the gateway acknowledges
            a subscription.
        open_timeout_s: connect + handshake timeout, per URL.
        max_message_bytes: largest message accepted (snapshots of deep books are large).
        retry_initial_s / retry_max_s: delay ceiling before a request refused as
            ``rate_limited`` is sent again, doubled per refusal up to the cap, full jitter.
        clock_ns: the wall clock stamped on events as ``recv_ns``.
        monotonic_ns: the clock the retries are timed on.
        rng: the retries' jitter (tests pass a seeded one).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        symbols: Sequence[str],
        *,
        token: str | None = None,
        channels: Sequence[Channel] = ("book",),
        depth: int | None = None,
        wire_format: WireFormat = "json",
        recover: bool = True,
        reconnect: bool = True,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        open_timeout_s: float = 5.0,
        max_message_bytes: int = 64 * 1024 * 1024,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 2.0,
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        rng: random.Random | None = None,
    ) -> None:
        self._targets = _checked_urls(urls, token)
        #: The gateway URLs, tried in order, without any token or password.
        self.urls = [target.shown for target in self._targets]
        self.session = ClientSession(
            symbols, channels, depth, wire_format, recover, retry_initial_s, retry_max_s, rng
        )
        self.reconnect = reconnect
        self.open_timeout_s = open_timeout_s
        self.max_message_bytes = max_message_bytes
        #: The URL of the current connection (without any token or password); None while
        #: disconnected.
        self.url: str | None = None
        self._clock_ns = clock_ns
        self._monotonic_ns = monotonic_ns
        self._ws: ClientConnection | None = None
        self._queue: deque[Event] = deque()
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self._log = LimitedLog(log)
        self._lost = False
        self._closed = False

    @property
    def symbols(self) -> list[str]:
        return self.session.symbols

    @property
    def stats(self) -> ClientStats:
        return self.session.stats

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection; the iteration ends."""
        self._closed = True
        ws, self._ws = self._ws, None
        self.url = None
        if ws is not None:
            await ws.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise StopAsyncIteration
            ws = self._ws
            if ws is None:
                if self._lost and not self.reconnect:
                    self._closed = True
                    raise StopAsyncIteration
                await self._connect()
                continue
            try:
                step, _ = await next_step(ws, self.session, self._clock_ns, self._monotonic_ns)
            except ConnectionClosed as exc:
                self._on_lost(_closed_reason(exc))
                continue
            await self._act(ws, step)

    async def reconnect_now(self) -> None:
        """Drop the current connection and connect again at once, trying the URLs in
        order from the first (e.g. to go back to the preferred gateway). With ``recover``
        the books are kept and the gateway is asked for what they missed: a
        :class:`RecoveryEvent` per book says whether they were recovered."""
        ws = self._ws
        if ws is None or self._closed:
            return
        self._on_lost("reconnecting on request")
        self._lost = False  # asked for: no backoff before the next attempt
        await ws.close()

    def book(self, symbol: str) -> Book | None:
        """The symbol's consistent book, or None (before its first snapshot, during a
        resync, while disconnected, without the ``book`` channel)."""
        return self.session.book(symbol)

    def position(self, symbol: str) -> tuple[int, int] | None:
        """``(epoch, seq)`` of the last book message applied for the symbol, kept across
        gaps and reconnections; None before its first snapshot."""
        return self.session.position(symbol)

    # --- connection -------------------------------------------------------------------------

    async def _connect(self) -> None:
        """One round over the URLs, in order, until one accepts; a backoff delay before
        each round but the very first."""
        wait = self._lost
        while not self._closed:
            if wait:
                await asyncio.sleep(self._backoff.next_delay_s())
            wait = True
            failure: Exception | None = None
            for target in self._targets:
                url = target.shown
                try:
                    ws = await self._open(target)
                except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
                    failure = exc
                    if isinstance(exc, ConnectionClosed) and _closed_reason(exc) == GATEWAY_STOPPED:
                        # Closed at once by a gateway that is stopping: a restart, no fault.
                        self.stats.gateway_stops += 1
                        log.info("gateway %s: %s", url, GATEWAY_STOPPED)
                    else:
                        self._log.warning(
                            ("connect", url), "gateway %s: connect failed: %s", url, exc
                        )
                    continue
                if self._closed:  # aclose() while connecting
                    await ws.close()
                    return
                self._ws, self.url = ws, url
                self.stats.connects += 1
                log.info("connected to gateway %s", url)
                return
            if not self.reconnect and failure is not None:
                raise failure

    async def _open(self, target: _Target) -> ClientConnection:
        """A connection to ``target`` with the subscription sent."""
        ws = await connect_gateway(
            target.url,
            token=target.token,
            compression=None,
            open_timeout=self.open_timeout_s,
            max_size=self.max_message_bytes,
        )
        # Closed right away (e.g. 1013, too many subscribers): ConnectionClosed, next URL.
        await ws.send(encode_json(self.session.subscribe_request()).decode())
        return ws

    def _on_lost(self, reason: str) -> None:
        """The connection ended: logged at INFO when the gateway stopped (a restart is no
        fault), else as a warning."""
        self._ws = None
        self.url = None
        if self._closed:
            return
        self._lost = True
        log.log(logging.INFO if reason == GATEWAY_STOPPED else logging.WARNING, "%s", reason)
        self._queue.extend(self.session.on_disconnected(reason, self._clock_ns()).events)

    async def _act(self, ws: ClientConnection, step: Step) -> None:
        for cause, warning in step.warnings:
            self._log.warning(cause, "gateway %s: %s", self.url, warning)
        if step.subscribed:
            self._backoff.reset()
        # A closed connection is reported by the next recv(); reconnecting resyncs all.
        for request in step.requests:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(encode_json(request).decode())
        self._queue.extend(step.events)


async def subscribe(
    urls: str | Sequence[str], symbols: Sequence[str], **options: Any
) -> AsyncIterator[Event]:
    """``async for event in subscribe(urls, symbols)``: a :class:`GatewayClient`
    (``options`` are its keyword arguments) closed when the iteration stops."""
    async with GatewayClient(urls, symbols, **options) as client:
        async for event in client:
            yield event
