"""Test helpers for the fan-out and the client: a fake service view, a fan-out serving on
loopback, a raw WebSocket client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import Self

import msgspec
from websockets.frames import Frame
from websockets.frames import Opcode

from gateway.core.book import L2Book
from gateway.core.model import BookDelta
from gateway.core.model import BookReset
from gateway.core.model import Level
from gateway.core.model import Side
from gateway.core.model import StatusChange
from gateway.core.model import SymbolState
from gateway.core.model import Trade
from gateway.core.model import TradeOut
from gateway.core.pipeline import BookState
from gateway.io.fanout import Fanout
from gateway.wire.config import ServerConfig
from gateway.wire.protocol import ServerMessage
from gateway.wire.protocol import Status
from gateway.wire.protocol import decode_server_message
from tests.harness import running
from tests.harness import started

KEY = "binance:BTCUSDT"
KEY2 = "binance:ETHUSDT"


@dataclass(slots=True)
class FakeBook:
    """One symbol's book in a :class:`FakeView` and where it stands."""

    book: L2Book
    epoch: int
    seq: int
    venue_id: int


class FakeView:
    """A service stand-in: books move only through the event builders below, so the view
    and the published events always agree (the BookView contract)."""

    def __init__(self, keys: tuple[str, ...] = (KEY, KEY2)) -> None:
        self.books: dict[str, FakeBook] = {}
        self.states = dict.fromkeys(keys, SymbolState.SYNCING)
        #: Every published book state, for checking what a client yields.
        self.history: dict[tuple[str, int, int], Any] = {}
        self.epochs: dict[str, int] = {}
        self.venue_ids: dict[str, int] = {}

    def book_state(self, key: str) -> BookState | None:
        entry = self.books.get(key)
        if entry is None:
            return None
        return BookState(entry.book, entry.epoch, entry.seq, entry.venue_id, self.states[key])

    def symbols(self) -> list[tuple[str, SymbolState]]:
        return list(self.states.items())

    def reset(
        self, key: str, bids: list[Level], asks: list[Level]
    ) -> list[BookReset | StatusChange]:
        epoch = self.epochs[key] = self.epochs.get(key, 0) + 1
        venue_id = self.venue_ids.get(key, 900) + 100
        book = L2Book()
        book.load(bids, asks)
        self.books[key] = FakeBook(book, epoch, 0, venue_id)
        self.venue_ids[key] = venue_id
        self.history[key, epoch, 0] = book.normalized()
        out: list[BookReset | StatusChange] = [BookReset(key, epoch, 0, venue_id, 0)]
        if self.states[key] is not SymbolState.LIVE:
            self.states[key] = SymbolState.LIVE
            out.append(StatusChange(key, SymbolState.LIVE, "snapshot applied"))
        return out

    def delta(
        self,
        key: str,
        bids: Sequence[Level] = (),
        asks: Sequence[Level] = (),
        *,
        recv_ns: int = 0,
        event_ms: int | None = None,
    ) -> BookDelta:
        entry = self.books[key]
        entry.book.apply(bids, asks)
        entry.seq += 1
        entry.venue_id += 1
        self.venue_ids[key] = entry.venue_id
        self.history[key, entry.epoch, entry.seq] = entry.book.normalized()
        return BookDelta(
            key, entry.epoch, entry.seq, entry.venue_id, tuple(bids), tuple(asks), recv_ns, event_ms
        )

    def status(self, key: str, state: SymbolState, reason: str) -> StatusChange:
        self.states[key] = state
        if state is SymbolState.RESYNCING:
            self.books.pop(key, None)
        return StatusChange(key, state, reason)


def live_fanout(bids: list[Level], asks: list[Level], **options: Any) -> tuple[FakeView, Fanout]:
    """A view whose ``KEY`` has a book (epoch 1, seq 0) and a Fanout that has published it;
    ``options`` are :class:`ServerConfig` fields and the Fanout's other keywords."""
    view = FakeView()
    server = {name: options.pop(name) for name in ServerConfig.__struct_fields__ if name in options}
    fanout = Fanout(view, ServerConfig(**server), **options)
    fanout.publish(view.reset(KEY, bids, asks))
    return view, fanout


async def start_serving(
    tasks: asyncio.TaskGroup, fanout: Fanout, port: int = 0
) -> asyncio.Task[None]:
    """Start ``fanout.serve`` on loopback ``port`` (0: any) in ``tasks``; returns its task
    once it listens (for tests that stop and restart the server)."""
    return await started(tasks, lambda ready: fanout.serve("127.0.0.1", port, ready))


@contextlib.asynccontextmanager
async def serving(fanout: Fanout) -> AsyncIterator[Fanout]:
    """``fanout`` serving on an ephemeral loopback port for the block's duration."""
    async with running(lambda ready: fanout.serve("127.0.0.1", 0, ready)):
        yield fanout


def sub(symbols: list[str], **fields: object) -> str:
    """A ``subscribe`` request as JSON text, with any further ``fields``."""
    return msgspec.json.encode({"op": "subscribe", "symbols": symbols, **fields}).decode()


def trade(
    key: str, trade_id: int, price: str = "100.5", qty: str = "0.1", recv_ns: int = 0
) -> TradeOut:
    venue, _, symbol = key.partition(":")
    return TradeOut(
        Trade(venue, symbol, trade_id, price, qty, Side.BUY, 1_700_000_000_000, recv_ns, 0)
    )


def levels(n: int, start: float, step: float, qty: str = "1.00000000") -> list[Level]:
    return [(f"{start + i * step:.2f}", qty) for i in range(n)]


async def flood_until(fanout: Fanout, view: FakeView, done: Callable[[], bool]) -> int:
    """Publish big deltas until ``done()``, yielding to the loop every 10 (so that the
    transports write); returns how many were published."""
    wide = levels(60, 10.0, 0.01)
    for n in range(50_000):
        if done():
            return n
        qty = f"{n % 7 + 1}.00000000"
        fanout.publish([view.delta(KEY, bids=[(p, qty) for p, _ in wide])])
        if n % 10 == 0:
            await asyncio.sleep(0)
    raise AssertionError("the flood never reached its goal")


class RawClient:
    """A WebSocket client over a bare socket: sees the exact frame bytes the server sent,
    and reads only when told to (a slow subscriber). ``async with client:`` closes it when
    the block ends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, rcvbuf_bytes: int | None = None) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf_bytes is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        except BaseException:
            sock.close()
            raise
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        client = cls(reader, writer)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            await client.close()
            raise AssertionError(f"handshake refused: {head!r}")
        return client

    async def send(self, text: str) -> None:
        await self.send_frame(Opcode.TEXT, text.encode())

    async def send_frame(self, opcode: Opcode, payload: bytes) -> None:
        """One masked frame, the payload as given (a text frame need not be UTF-8)."""
        self.writer.write(Frame(opcode, payload).serialize(mask=True))
        await self.writer.drain()

    async def frame(self) -> tuple[int, bytes, bytes]:
        """Next frame: ``(opcode, payload, raw bytes as received)``."""
        head = await self.reader.readexactly(2)
        length = head[1] & 0x7F
        assert not head[1] & 0x80, "server frames are unmasked"
        ext = b""
        if length == 126:
            ext = await self.reader.readexactly(2)
            length = struct.unpack("!H", ext)[0]
        elif length == 127:
            ext = await self.reader.readexactly(8)
            length = struct.unpack("!Q", ext)[0]
        payload = await self.reader.readexactly(length)
        return head[0] & 0x0F, payload, head + ext + payload

    async def message(self) -> ServerMessage:
        """Next data message, decoded (control frames skipped); AssertionError on close."""
        while True:
            opcode, payload, _ = await self.frame()
            if opcode == Opcode.TEXT:
                return decode_server_message(payload.decode())
            if opcode == Opcode.BINARY:
                return decode_server_message(payload)
            if opcode == Opcode.CLOSE:
                raise AssertionError(f"closed: {close_of(payload)}")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def close_of(payload: bytes) -> tuple[int, str]:
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


def plain(msg: ServerMessage) -> ServerMessage:
    """``msg`` with a ``status``'s ``since_ns`` (a wall-clock reading) left out, to compare
    the rest exactly."""
    return msgspec.structs.replace(msg, since_ns=0) if isinstance(msg, Status) else msg
