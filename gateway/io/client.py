"""Client for Python strategies: consistent L2 books from the gateway.

::

    async with GatewayClient("ws://127.0.0.1:8765/", ["binance:BTCUSDT"]) as client:
        async for update in client:
            if update.book is not None and update.state is SymbolState.LIVE:
                best_bid = update.book.best_bid()

The client subscribes to the ``book`` channel of its symbols and hands each symbol's
snapshots and deltas to its :class:`~gateway.core.subscriber.SubscribedBook`, which keeps
the :class:`~gateway.core.book.L2Book` and checks that every delta follows the previous
message (same epoch, seq + 1); on a gap the book is discarded, the gateway is asked for a
``resync`` and nothing is yielded for that symbol but a status until the fresh snapshot
is in. When the connection drops it reconnects with capped exponential backoff and
subscribes again; each symbol then restarts from a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from gateway.core.backoff import Backoff
from gateway.core.book import L2Book
from gateway.core.model import SymbolState
from gateway.core.subscriber import SubscribedBook, SubscriberAction
from gateway.wire.protocol import (
    Delta,
    Error,
    ErrorCode,
    ProtocolError,
    Resync,
    Snapshot,
    Status,
    Subscribe,
    Subscribed,
    WireFormat,
    decode_server_message,
    encode_json,
)

log = logging.getLogger(__name__)

UpdateKind = Literal["snapshot", "delta", "status"]


class GatewayError(Exception):
    """The gateway refused the subscription (unknown symbol, bad request, too many
    subscriptions): not retried."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclasses.dataclass(frozen=True, slots=True)
class BookUpdate:
    """One symbol's state after a message.

    ``book`` is the symbol's live :class:`L2Book`, consistent with the gateway's stream at
    ``(epoch, seq)``; it is mutated in place by the next updates, so copy what must be
    kept. ``book`` is None when the client holds no consistent book for the symbol: before
    the first snapshot, after a seq gap (a resync is under way) or after the connection was
    lost (reconnecting). ``state`` is the gateway's state of the symbol (``stale`` also
    while the client is disconnected); ``venue_id`` is the venue's last update id the book
    reflects. A ``delta`` update's ``seq`` is always the previous update's ``seq`` + 1.
    """

    symbol: str
    kind: UpdateKind
    epoch: int
    seq: int
    venue_id: int
    state: SymbolState
    reason: str
    book: L2Book | None


@dataclasses.dataclass(slots=True)
class ClientStats:
    connects: int = 0
    disconnects: int = 0
    snapshots: int = 0
    deltas: int = 0
    gaps: int = 0
    bad_messages: int = 0


def _update(symbol: str, sym: SubscribedBook, kind: UpdateKind) -> BookUpdate:
    return BookUpdate(
        symbol,
        kind,
        sym.epoch,
        sym.seq,
        sym.venue_id,
        sym.status,
        sym.reason,
        sym.book if sym.synced else None,
    )


class GatewayClient:
    """Books of ``symbols`` from the gateway at ``url``, as an async iterator of
    :class:`BookUpdate`. One consumer at a time; use ``async with`` (or :meth:`aclose`).

    Args:
        url: the gateway's WebSocket URL, e.g. ``ws://127.0.0.1:8765/``.
        symbols: symbol keys (``venue:SYMBOL``).
        depth: snapshot depth per side; None (default) for the full book. With a depth,
            deltas still carry every change, so levels deeper than the snapshot are known
            only once a delta touched them: use None where the whole book must be exact.
        wire_format: ``json`` or ``msgpack``.
        reconnect: reconnect after the connection is lost or refused; when False the
            iteration ends after the connection is lost (a failed first connect raises).
        backoff_initial_s / backoff_max_s: reconnect delay ceiling, doubled per failed
            attempt up to the cap, full jitter (:class:`gateway.core.backoff.Backoff`); reset once
            the gateway acknowledges a subscription.
        open_timeout_s: connect + handshake timeout.
        max_message_bytes: largest message accepted (snapshots of deep books are large).
    """

    def __init__(
        self,
        url: str,
        symbols: Sequence[str],
        *,
        depth: int | None = None,
        wire_format: WireFormat = "json",
        reconnect: bool = True,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        open_timeout_s: float = 5.0,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if not symbols:
            raise ValueError("at least one symbol")
        self.url = url
        self.symbols = list(dict.fromkeys(symbols))
        self.depth = depth
        self.wire_format: WireFormat = wire_format
        self.reconnect = reconnect
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.open_timeout_s = open_timeout_s
        self.max_message_bytes = max_message_bytes
        self.stats = ClientStats()
        self._books = {symbol: SubscribedBook() for symbol in self.symbols}
        self._ws: ClientConnection | None = None
        self._queue: deque[BookUpdate] = deque()
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self._lost = False
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection; the iteration ends."""
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> BookUpdate:
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
                data = await ws.recv()
            except ConnectionClosed as exc:
                self._on_lost(f"gateway connection lost: {exc}")
                continue
            update = await self._on_message(ws, data)
            if update is not None:
                return update

    def book(self, symbol: str) -> L2Book | None:
        """The symbol's consistent book, or None (see :class:`BookUpdate`)."""
        sym = self._books[symbol]
        return sym.book if sym.synced else None

    # --- connection -------------------------------------------------------------------------

    async def _connect(self) -> None:
        retry = self._lost
        while not self._closed:
            if retry:
                await asyncio.sleep(self._backoff.next_delay_s())
            retry = True
            try:
                ws = await connect(
                    self.url,
                    compression=None,
                    open_timeout=self.open_timeout_s,
                    max_size=self.max_message_bytes,
                )
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                if not self.reconnect:
                    raise
                log.warning("gateway %s: connect failed (%s); retrying", self.url, exc)
                continue
            request = Subscribe(self.symbols, ["book"], self.depth, self.wire_format)
            try:
                await ws.send(encode_json(request).decode())
            except ConnectionClosed:
                if not self.reconnect:
                    raise
                continue  # closed right away (e.g. 1013, too many subscribers): retry later
            self._ws = ws
            self.stats.connects += 1
            log.info("connected to gateway %s", self.url)
            return

    def _on_lost(self, reason: str) -> None:
        """Every book is void until its next snapshot: tell the consumer."""
        self._ws = None
        if self._closed:
            return
        self._lost = True
        self.stats.disconnects += 1
        log.warning("%s", reason)
        for symbol, sym in self._books.items():
            sym.on_disconnected(reason)
            self._queue.append(_update(symbol, sym, "status"))

    # --- messages ---------------------------------------------------------------------------

    async def _on_message(self, ws: ClientConnection, data: str | bytes) -> BookUpdate | None:
        try:
            msg = decode_server_message(data)
        except ProtocolError as exc:
            self.stats.bad_messages += 1
            log.warning("gateway %s: undecodable message: %s", self.url, exc)
            return None
        if isinstance(msg, Delta | Snapshot | Status):
            sym = self._books.get(msg.symbol)
            if sym is None:
                return None
            if isinstance(msg, Delta):
                return await self._on_delta(ws, sym, msg)
            if isinstance(msg, Snapshot):
                return self._on_snapshot(sym, msg)
            sym.on_status(msg.state, msg.reason)
            return _update(msg.symbol, sym, "status")
        if isinstance(msg, Subscribed):
            self._backoff.reset()
        elif isinstance(msg, Error):
            if msg.code in (
                ErrorCode.UNKNOWN_SYMBOL,
                ErrorCode.BAD_REQUEST,
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
            ):
                raise GatewayError(msg.code, msg.message)
            log.warning("gateway %s: error %s: %s", self.url, msg.code, msg.message)
        return None

    def _on_snapshot(self, sym: SubscribedBook, msg: Snapshot) -> BookUpdate | None:
        actions = sym.on_snapshot(msg.epoch, msg.seq, msg.id, msg.bids, msg.asks)
        if SubscriberAction.BAD_LEVEL in actions:
            self.stats.bad_messages += 1
            log.warning("%s: %s; book void", msg.symbol, sym.problem)
            return None
        self.stats.snapshots += 1
        return _update(msg.symbol, sym, "snapshot")

    async def _on_delta(
        self, ws: ClientConnection, sym: SubscribedBook, msg: Delta
    ) -> BookUpdate | None:
        actions = sym.on_delta(msg.epoch, msg.seq, msg.id, msg.bids, msg.asks)
        if SubscriberAction.BOOK_UPDATED in actions:
            self.stats.deltas += 1
            return _update(msg.symbol, sym, "delta")
        if SubscriberAction.GAP in actions:
            self.stats.gaps += 1
        if SubscriberAction.BAD_LEVEL in actions:
            self.stats.bad_messages += 1
        if SubscriberAction.ASK_RESYNC not in actions:
            return None  # waiting for a snapshot: this delta is in it or before it
        log.warning("%s: %s; resync requested", msg.symbol, sym.problem)
        # A closed connection is reported by the next recv(); reconnecting resyncs all.
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode_json(Resync(msg.symbol)).decode())
        return _update(msg.symbol, sym, "status")


async def subscribe_books(
    url: str, symbols: Sequence[str], **options: Any
) -> AsyncIterator[BookUpdate]:
    """``async for update in subscribe_books(url, symbols)``: a :class:`GatewayClient`
    (``options`` are its keyword arguments) closed when the iteration stops."""
    async with GatewayClient(url, symbols, **options) as client:
        async for update in client:
            yield update
