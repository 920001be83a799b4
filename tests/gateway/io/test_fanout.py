"""The fan-out server: encode once, same bytes to all, ordering, slow subscribers, limits."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Frame
from websockets.frames import Opcode

from gateway.core.book import L2Book
from gateway.core.model import STARTING_REASON
from gateway.core.model import Side
from gateway.core.model import SymbolState
from gateway.io import fanout as fanout_module
from gateway.io.fanout import Fanout
from gateway.io.fanout import build_frame
from gateway.wire.config import ServerConfig
from gateway.wire.protocol import GOING_AWAY_REASON
from gateway.wire.protocol import Bbo
from gateway.wire.protocol import Delta
from gateway.wire.protocol import Error
from gateway.wire.protocol import ErrorCode
from gateway.wire.protocol import Pong
from gateway.wire.protocol import ServerMessage
from gateway.wire.protocol import Snapshot
from gateway.wire.protocol import Status
from gateway.wire.protocol import StreamPosition
from gateway.wire.protocol import Subscribed
from gateway.wire.protocol import Symbols
from gateway.wire.protocol import TradeMsg
from gateway.wire.protocol import Unsubscribed
from gateway.wire.protocol import decode_server_message
from tests.harness import cancel_within
from tests.harness import tcp_connect
from tests.harness import wait_peer_closed
from tests.harness import wait_until

from .fanout_helpers import KEY
from .fanout_helpers import KEY2
from .fanout_helpers import FakeView
from .fanout_helpers import RawClient
from .fanout_helpers import close_of
from .fanout_helpers import flood_until
from .fanout_helpers import live_fanout
from .fanout_helpers import plain
from .fanout_helpers import serving
from .fanout_helpers import sub
from .fanout_helpers import trade

BIDS = [("100.00", "1"), ("99.50", "2"), ("99.00", "3")]
ASKS = [("100.50", "1"), ("101.00", "2")]


def apply(book: L2Book, msg: ServerMessage) -> None:
    if isinstance(msg, Snapshot):
        book.load(msg.bids, msg.asks)
    elif isinstance(msg, Delta):
        book.apply(msg.bids, msg.asks)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_build_frame_equals_websockets_serialization(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    for binary, opcode in ((False, Opcode.TEXT), (True, Opcode.BINARY)):
        expected = Frame(opcode, payload).serialize(mask=False, extensions=[])
        assert build_frame(payload, binary=binary) == expected


async def test_two_subscribers_get_identical_bytes_and_a_consistent_stream() -> None:
    view = FakeView()
    fanout = Fanout(view, ServerConfig(max_buffer_bytes=1 << 20))
    async with serving(fanout):
        a = await RawClient.connect(fanout.port)
        b = await RawClient.connect(fanout.port)
        async with a, b:
            for client in (a, b):
                await client.send(sub([KEY]))
                assert await client.message() == Subscribed([KEY], ["book"], fanout.instance)
                assert plain(await client.message()) == Status(
                    KEY, SymbolState.SYNCING, STARTING_REASON
                )
            # No book yet: the snapshot comes with the BookReset.
            fanout.publish(view.reset(KEY, BIDS, ASKS))
            deltas = [
                view.delta(KEY, bids=[("100.00", "0")]),
                view.delta(KEY, asks=[("100.25", "0.5")]),
                view.delta(KEY, bids=[("99.75", "4")], asks=[("101.00", "0.00")]),
            ]
            fanout.publish(deltas)
            frames = {}
            for name, client in (("a", a), ("b", b)):
                msgs: list[ServerMessage] = []
                raw: list[bytes] = []
                for _ in range(5):
                    _, payload, frame = await client.frame()
                    raw.append(frame)
                    msgs.append(decode_server_message(payload.decode()))
                frames[name] = raw
                snap = msgs[0]
                assert isinstance(snap, Snapshot)
                assert (snap.epoch, snap.seq, snap.id) == (1, 0, 1000)
                assert plain(msgs[1]) == Status(KEY, SymbolState.LIVE, "snapshot applied")
                assert [m.seq for m in msgs[2:] if isinstance(m, Delta)] == [1, 2, 3]
                book = L2Book()
                for msg in msgs:
                    apply(book, msg)
                assert book.normalized() == view.history[KEY, 1, 3]
            assert frames["a"] == frames["b"]
            assert fanout.stats.messages_sent >= 10
            assert fanout.stats.subscribers == 2


async def test_each_delta_is_encoded_once_per_format_in_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []
    real_json, real_msgpack = fanout_module._frame_json, fanout_module._frame_msgpack

    def count_json(msg: ServerMessage) -> bytes:
        built.append("json")
        return real_json(msg)

    def count_msgpack(msg: ServerMessage) -> bytes:
        built.append("msgpack")
        return real_msgpack(msg)

    monkeypatch.setattr(fanout_module, "_frame_json", count_json)
    monkeypatch.setattr(fanout_module, "_frame_msgpack", count_msgpack)

    view, fanout = live_fanout(BIDS, ASKS)
    async with serving(fanout), contextlib.AsyncExitStack() as open_clients:
        clients = [
            await open_clients.enter_async_context(await RawClient.connect(fanout.port))
            for _ in range(4)
        ]
        for i, client in enumerate(clients):
            await client.send(sub([KEY], format="msgpack" if i == 3 else "json"))
            for _ in range(3):
                await client.message()  # subscribed, status, snapshot
        built.clear()
        fanout.publish([view.delta(KEY, bids=[("99.00", "0")])])
        assert sorted(built) == ["json", "msgpack"]
        for client in clients:
            msg = await client.message()
            assert isinstance(msg, Delta) and msg.seq == 1
            assert msg.bids == (("99.00", "0"),)


async def test_late_joiner_gets_status_then_snapshot_at_the_current_seq() -> None:
    view, fanout = live_fanout(BIDS, ASKS)
    for i in range(5):
        fanout.publish([view.delta(KEY, bids=[(f"98.{i}0", "1")])])
    async with serving(fanout):
        late = await RawClient.connect(fanout.port)
        async with late:
            await late.send(sub([KEY], depth=2))
            assert isinstance(await late.message(), Subscribed)
            assert plain(await late.message()) == Status(KEY, SymbolState.LIVE, "snapshot applied")
            snap = await late.message()
            assert isinstance(snap, Snapshot)
            assert (snap.epoch, snap.seq, snap.id) == (1, 5, 1005)
            assert snap.bids == [("100.00", "1"), ("99.50", "2")]  # depth 2
            assert snap.asks == ASKS
            fanout.publish([view.delta(KEY, asks=[("100.50", "0")])])
            delta = await late.message()
            assert isinstance(delta, Delta)
            assert (delta.epoch, delta.seq) == (1, 6)


@pytest.mark.parametrize("then_gap", [True, False], ids=["then a gap", "no status"])
async def test_deltas_then_a_gap_in_one_publish_send_depth_groups_the_status_only(
    then_gap: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The book the deltas led to is gone when the publish reaches them (the same step
    found a gap): a depth group gets the status, then the resync's snapshot. Deltas with
    no book and no status taking the symbol out of live break the view's contract."""
    caplog.set_level("ERROR", logger="gateway.io.fanout")
    view, fanout = live_fanout(BIDS, ASKS)
    async with serving(fanout):
        client = await RawClient.connect(fanout.port)
        async with client:
            await client.send(sub([KEY], depth=2))
            for _ in range(3):
                await client.message()  # subscribed, status, snapshot
            delta = view.delta(KEY, bids=[("99.75", "1")])
            if then_gap:
                fanout.publish([delta, view.status(KEY, SymbolState.RESYNCING, "gap 7")])
            else:
                view.books.pop(KEY)
                fanout.publish([delta])
            errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
            if not then_gap:
                assert errors == [f"{KEY}: BookDelta published but the view has no book for it"]
                return
            assert errors == []
            assert plain(await client.message()) == Status(KEY, SymbolState.RESYNCING, "gap 7")
            fanout.publish(view.reset(KEY, BIDS, ASKS))
            snap = await client.message()
            assert isinstance(snap, Snapshot) and (snap.epoch, snap.seq) == (2, 0)
            assert snap.bids == BIDS[:2]


async def test_reset_and_deltas_in_one_batch_do_not_duplicate_and_new_epoch_replaces() -> None:
    view = FakeView()
    fanout = Fanout(view)
    async with serving(fanout):
        client = await RawClient.connect(fanout.port)
        async with client:
            await client.send(sub([KEY]))
            await client.message()  # subscribed
            await client.message()  # status syncing
            batch = [*view.reset(KEY, BIDS, ASKS), view.delta(KEY, bids=[("99.90", "1")])]
            batch.append(view.delta(KEY, bids=[("99.80", "1")]))
            fanout.publish(batch)  # the snapshot already holds both deltas
            fanout.publish([view.delta(KEY, bids=[("99.70", "1")])])
            snap = await client.message()
            assert isinstance(snap, Snapshot) and (snap.epoch, snap.seq) == (1, 2)
            assert plain(await client.message()) == Status(
                KEY, SymbolState.LIVE, "snapshot applied"
            )
            delta = await client.message()
            assert isinstance(delta, Delta) and delta.seq == 3
            # Gap upstream: resyncing, then a new epoch starting from a snapshot.
            fanout.publish([view.status(KEY, SymbolState.RESYNCING, "ids missing")])
            assert plain(await client.message()) == Status(
                KEY, SymbolState.RESYNCING, "ids missing"
            )
            fanout.publish(view.reset(KEY, [("50.00", "1")], [("51.00", "1")]))
            snap = await client.message()
            assert isinstance(snap, Snapshot) and (snap.epoch, snap.seq) == (2, 0)
            assert snap.bids == [("50.00", "1")]


async def test_channels_formats_requests_and_errors() -> None:
    view, fanout = live_fanout(BIDS, ASKS, clock_ns=lambda: 5)
    async with serving(fanout), connect(f"ws://127.0.0.1:{fanout.port}/") as ws:
        # Bad requests get an error and the connection keeps working.
        await ws.send("{not json")
        err = decode_server_message(await ws.recv())
        assert isinstance(err, Error) and err.typed_code is ErrorCode.BAD_REQUEST
        assert "malformed JSON" in err.message
        await ws.send(sub(["nowhere:XYZ", KEY]))
        err = decode_server_message(await ws.recv())
        assert isinstance(err, Error) and err.typed_code is ErrorCode.UNKNOWN_SYMBOL
        assert err.symbol == "nowhere:XYZ"
        await ws.send('{"op":"resync","symbol":"binance:BTCUSDT"}')
        err = decode_server_message(await ws.recv())
        assert isinstance(err, Error) and err.typed_code is ErrorCode.NOT_SUBSCRIBED
        await ws.send('{"op":"subscribe","symbols":["binance:BTCUSDT"],"depth":-1}')
        err = decode_server_message(await ws.recv())
        assert isinstance(err, Error) and "$.depth" in err.message
        assert fanout.stats.bad_requests == 4
        assert fanout.subscriber_stats()[0].bad_requests == 4

        await ws.send('{"op":"ping","id":17}')
        assert decode_server_message(await ws.recv()) == Pong(17)
        await ws.send('{"op":"list"}')
        listed = decode_server_message(await ws.recv())
        assert isinstance(listed, Symbols)
        assert {(s.symbol, s.state) for s in listed.symbols} == {
            (KEY, SymbolState.LIVE),
            (KEY2, SymbolState.SYNCING),
        }

        # MessagePack for the whole connection from the reply on; bbo and trades.
        await ws.send(sub([KEY], channels=["bbo", "trade"], format="msgpack"))
        replies = [decode_server_message(await ws.recv()) for _ in range(3)]
        assert replies[0] == Subscribed(
            [KEY],
            ["bbo", "trade"],
            fanout.instance,
            trade_positions={KEY: StreamPosition(fanout.trade_epoch, 0)},  # no trade yet
        )
        assert plain(replies[1]) == Status(KEY, SymbolState.LIVE, "snapshot applied")
        assert replies[2] == Bbo(KEY, 1, 0, ("100.00", "1"), ("100.50", "1"))
        fanout.publish([view.delta(KEY, bids=[("10.00", "1")])])  # top unchanged: no bbo
        fanout.publish([view.delta(KEY, asks=[("100.40", "2")]), trade(KEY, 77)])
        raw = await ws.recv()
        assert isinstance(raw, bytes)  # binary frame
        tm = decode_server_message(raw)
        assert tm == TradeMsg(
            KEY, 77, "100.5", "0.1", Side.BUY, 1_700_000_000_000, 0, 5, fanout.trade_epoch, 1
        )
        bbo = decode_server_message(await ws.recv())
        assert bbo == Bbo(KEY, 1, 2, ("100.00", "1"), ("100.40", "2"), None, 0, 5)

        # Resync of a subscribed book re-sends its snapshot.
        await ws.send(sub([KEY2]))
        await ws.send('{"op":"resync","symbol":"binance:BTCUSDT"}')
        assert isinstance(decode_server_message(await ws.recv()), Subscribed)
        assert plain(decode_server_message(await ws.recv())) == Status(
            KEY2, SymbolState.SYNCING, STARTING_REASON
        )
        err = decode_server_message(await ws.recv())
        assert isinstance(err, Error) and err.typed_code is ErrorCode.NOT_SUBSCRIBED  # bbo only
        await ws.send(sub([KEY]))
        await ws.recv()
        await ws.recv()
        snap = decode_server_message(await ws.recv())
        assert isinstance(snap, Snapshot) and snap.seq == 2
        await ws.send('{"op":"resync","symbol":"binance:BTCUSDT"}')
        snap = decode_server_message(await ws.recv())
        assert isinstance(snap, Snapshot) and snap.seq == 2

        await ws.send('{"op":"unsubscribe","symbols":["binance:BTCUSDT","binance:ETHUSDT"]}')
        assert decode_server_message(await ws.recv()) == Unsubscribed([KEY, KEY2])
        fanout.publish([view.delta(KEY, asks=[("100.30", "2")]), trade(KEY, 78)])
        await ws.send('{"op":"ping"}')
        assert decode_server_message(await ws.recv()) == Pong(None)  # nothing before it


async def test_healthz_over_http_on_the_same_port() -> None:
    _view, fanout = live_fanout(BIDS, ASKS)
    async with serving(fanout):
        reader, writer = await asyncio.open_connection("127.0.0.1", fanout.port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            response = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Type: application/json" in head
    doc = msgspec.json.decode(body)
    assert doc["subscribers"] == 0
    assert {"symbol": KEY, "state": "live"} in doc["symbols"]


async def test_max_subscribers_refuses_with_1013() -> None:
    fanout = Fanout(FakeView(), ServerConfig(max_subscribers=1))
    async with serving(fanout):
        url = f"ws://127.0.0.1:{fanout.port}/"
        async with connect(url) as first:
            await first.send('{"op":"ping","id":1}')
            await first.recv()
            async with connect(url) as second:
                with pytest.raises(ConnectionClosedError) as info:
                    await second.recv()
                assert info.value.rcvd is not None
                assert info.value.rcvd.code == 1013
                assert "too many subscribers" in info.value.rcvd.reason
            assert fanout.stats.rejected == 1
            await first.send('{"op":"ping","id":2}')
            assert decode_server_message(await first.recv()) == Pong(2)


async def _read_book(client: RawClient, view: FakeView, until_seq: int) -> tuple[L2Book, int]:
    """Read a subscriber's stream, checking seq continuity, until it reaches ``until_seq``;
    returns its book and how many snapshots it got."""
    book = L2Book()
    seq = -1
    snapshots = 0
    while seq < until_seq:
        msg = await client.message()
        if isinstance(msg, Snapshot):
            snapshots += 1
            book.load(msg.bids, msg.asks)
            seq = msg.seq
        elif isinstance(msg, Delta):
            assert msg.seq == seq + 1, "a delta that does not follow"
            book.apply(msg.bids, msg.asks)
            seq = msg.seq
        if seq >= 0:
            assert book.normalized() == view.history[KEY, 1, seq]
    return book, snapshots


@pytest.mark.async_timeout_s(40)
async def test_slow_subscriber_is_conflated_and_does_not_slow_the_fast_one() -> None:
    view = FakeView()
    fanout = Fanout(
        view,
        ServerConfig(max_buffer_bytes=32 * 1024, max_conflations=5, max_behind_s=30),
        clock_s=lambda: 0.0,  # frozen: the deadline never passes
    )
    fanout.publish(view.reset(KEY, BIDS, ASKS))
    async with serving(fanout), connect(f"ws://127.0.0.1:{fanout.port}/") as fast:
        slow = await RawClient.connect(fanout.port, rcvbuf_bytes=4096)
        async with slow:
            await slow.send(sub([KEY]))
            await fast.send(sub([KEY]))
            for _ in range(3):
                await fast.recv()  # subscribed, status, snapshot
            await wait_until(fanout.changes, lambda: fanout.stats.subscribers == 2)
            await wait_until(fanout.changes, lambda: fanout.stats.messages_sent >= 6)

            async def read_fast() -> int:
                seq = 0
                while seq < view.books[KEY].seq or not fanout.stats.conflations:
                    msg = decode_server_message(await fast.recv())
                    assert isinstance(msg, Delta) and msg.seq == seq + 1
                    seq = msg.seq
                return seq

            async with asyncio.TaskGroup() as tasks:
                reader = tasks.create_task(read_fast())
                await flood_until(fanout, view, lambda: fanout.stats.conflations >= 1)
            fast_seq = reader.result()
            assert fast_seq == view.books[KEY].seq  # the fast one got every delta
            stats = {s.id: s for s in fanout.subscriber_stats()}
            slow_stats = next(s for s in stats.values() if s.conflations)
            assert slow_stats.behind and slow_stats.dropped >= 1

            # The slow reader catches up: deltas, then a fresh snapshot, then live again.
            fanout.publish([view.delta(KEY, asks=[("100.50", "0")])])
            last = view.books[KEY].seq
            book, snapshots = await _read_book(slow, view, last)
            assert snapshots == 2  # the initial one and the conflation
            assert book.normalized() == view.history[KEY, 1, last]
            await wait_until(fanout.changes, lambda: not fanout.subscriber_stats()[-1].behind)
            fanout.publish([view.delta(KEY, asks=[("100.60", "1")])])
            msg = await slow.message()
            assert isinstance(msg, Delta) and msg.seq == last + 1
            assert fanout.stats.slow_disconnects == 0


@pytest.mark.parametrize("rule", ["conflations", "deadline"])
@pytest.mark.async_timeout_s(40)
async def test_slow_subscriber_is_disconnected_with_1008(rule: str) -> None:
    view = FakeView()
    now_s = 100.0  # the policy's clock, driven here

    if rule == "conflations":
        server = ServerConfig(max_buffer_bytes=16 * 1024, max_conflations=0, max_behind_s=60.0)
    else:
        server = ServerConfig(max_buffer_bytes=16 * 1024, max_conflations=100, max_behind_s=5.0)
    fanout = Fanout(view, server, close_timeout_s=30, clock_s=lambda: now_s)
    fanout.publish(view.reset(KEY, BIDS, ASKS))
    async with serving(fanout):
        slow = await RawClient.connect(fanout.port, rcvbuf_bytes=4096)
        async with slow:
            await slow.send(sub([KEY]))
            await wait_until(fanout.changes, lambda: fanout.stats.messages_sent >= 3)
            # Make it fall behind: the count rule disconnects it at once.
            await flood_until(fanout, view, lambda: fanout.stats.conflations >= 1)
            if rule == "deadline":
                assert fanout.stats.slow_disconnects == 0
                now_s += 5.0  # behind for exactly max_behind_s: still allowed
                fanout.check_behind()
                assert fanout.stats.slow_disconnects == 0
                now_s += 0.01
                fanout.check_behind()
            assert fanout.stats.slow_disconnects == 1
            while True:
                opcode, payload, _ = await slow.frame()
                if opcode == Opcode.CLOSE:
                    break
            code, reason = close_of(payload)
            assert code == 1008
            assert reason.startswith("subscriber too slow")
        await wait_until(fanout.changes, lambda: fanout.stats.subscribers == 0)


async def test_serve_stops_cleanly_on_cancel() -> None:
    fanout = Fanout(FakeView())
    ready = asyncio.Event()
    task = asyncio.create_task(fanout.serve("127.0.0.1", 0, ready))
    await ready.wait()
    async with connect(f"ws://127.0.0.1:{fanout.port}/") as ws:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()
        with pytest.raises(Exception, match="1001"):
            await ws.recv()
    with pytest.raises(RuntimeError):
        _ = fanout.port


async def test_serve_cancelled_closes_connections_just_made_and_in_their_handshake() -> None:
    fanout = Fanout(FakeView())
    ready = asyncio.Event()
    task = asyncio.create_task(fanout.serve("127.0.0.1", 0, ready))
    await ready.wait()
    port = fanout.port
    silent = tcp_connect(port)  # never sends its request
    async with connect(f"ws://127.0.0.1:{port}/"):  # accepted after the silent one
        late = tcp_connect(port)  # seen by the loop in the turn the server stops
        await cancel_within(task, 5.0)  # a handshake's open timeout is 10 s
    await wait_peer_closed(silent)
    await wait_peer_closed(late)


# --- isolation: one subscriber's failure is its own ----------------------------------------


async def test_a_subscriber_failing_in_publish_is_closed_with_1011_and_nobody_else_notices(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A trade id beyond 64 bits encodes in JSON but not in MessagePack: serving the
    msgpack subscriber raises inside ``publish``. Only that subscriber is closed."""
    caplog.set_level("INFO", logger="gateway.io.fanout")
    view, fanout = live_fanout(BIDS, ASKS, clock_ns=lambda: 5)
    async with serving(fanout):
        packed = await RawClient.connect(fanout.port)
        plain = await RawClient.connect(fanout.port)
        async with packed, plain:
            await packed.send(sub([KEY], channels=["book", "trade"], format="msgpack"))
            await plain.send(sub([KEY], channels=["book", "trade"]))
            for client in (packed, plain):
                for _ in range(3):
                    await client.message()  # subscribed, status, snapshot
            fanout.publish([trade(KEY, 2**64), view.delta(KEY, bids=[("99.90", "1")])])
            assert await plain.message() == TradeMsg(
                KEY,
                2**64,
                "100.5",
                "0.1",
                Side.BUY,
                1_700_000_000_000,
                0,
                5,
                fanout.trade_epoch,
                1,
            )
            delta = await plain.message()
            assert isinstance(delta, Delta) and delta.seq == 1
            opcode, payload, _ = await packed.frame()
            assert opcode == Opcode.CLOSE  # nothing written after the failure
            assert close_of(payload) == (1011, "internal error")
            await packed.close()
            await wait_until(fanout.changes, lambda: fanout.stats.subscribers == 1)
            assert fanout.stats.subscriber_errors == 1
            assert fanout.stats.closes_sent == {1011: 1}
            fanout.publish([view.delta(KEY, asks=[("100.40", "1")])])
            delta = await plain.message()
            assert isinstance(delta, Delta) and delta.seq == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "internal error, closing it with 1011" in errors[0].getMessage()
    assert "OverflowError" in errors[0].getMessage()  # the traceback is in the line
    assert any(
        "closed by the gateway with 1011 (internal error)" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("state", ["live", "syncing"])
async def test_a_depth_beyond_the_limit_is_refused_and_the_symbol_serves_on(state: str) -> None:
    """Tracker issue 8: a depth of 2**63 once reached ``L2Book.bids`` inside ``publish``."""
    view, fanout = live_fanout(BIDS, ASKS)
    key = KEY if state == "live" else KEY2
    async with serving(fanout):
        bad = await RawClient.connect(fanout.port)
        good = await RawClient.connect(fanout.port)
        async with bad, good:
            await bad.send(sub([key], depth=2**63))
            err = await bad.message()
            assert isinstance(err, Error) and err.typed_code is ErrorCode.BAD_REQUEST
            assert "$.depth" in err.message and "<= 5000" in err.message
            await good.send(sub([key], depth=5000))
            assert isinstance(await good.message(), Subscribed)
            await good.message()  # status
            if state == "syncing":
                fanout.publish(view.reset(KEY2, BIDS, ASKS))
            snap = await good.message()
            assert isinstance(snap, Snapshot) and snap.bids == BIDS
            await bad.send('{"op":"ping","id":1}')
            assert await bad.message() == Pong(1)  # refused, not closed
            assert fanout.stats.subscriber_errors == 0


async def test_an_oversize_request_is_closed_with_1009_counted_and_logged_as_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="gateway.io.fanout")
    _view, fanout = live_fanout(BIDS, ASKS, max_request_bytes=1024)
    async with serving(fanout):
        client = await RawClient.connect(fanout.port)
        async with client:
            await client.send("x" * 1025)
            opcode, payload, _ = await client.frame()
            assert opcode == Opcode.CLOSE
            code, reason = close_of(payload)
            assert code == 1009 and "1024" in reason
        await wait_until(fanout.changes, lambda: fanout.stats.subscribers == 0)
        assert fanout.stats.closes_sent == {1009: 1}
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        "closed with 1009" in line and r.levelname == "WARNING"
        for line, r in zip(lines, caplog.records, strict=True)
    )
    assert any("gone: closed by the gateway with 1009" in line for line in lines)
    assert not any("1006" in line for line in lines)


async def test_refused_connections_are_logged_at_a_limited_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", logger="gateway.io.fanout")
    fanout = Fanout(FakeView(), ServerConfig(max_subscribers=0))
    async with serving(fanout):
        for _ in range(8):
            async with connect(f"ws://127.0.0.1:{fanout.port}/") as ws:
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == 1013
        assert fanout.stats.rejected == 8
        assert fanout.stats.closes_sent == {1013: 8}
    refused = [r for r in caplog.records if "refused subscriber" in r.getMessage()]
    assert len(refused) == 5  # LogLimiter's burst per cause; the other 3 are counted


async def test_max_subscriptions_per_connection() -> None:
    _view, fanout = live_fanout(BIDS, ASKS, max_subscriptions=1)
    async with serving(fanout), connect(f"ws://127.0.0.1:{fanout.port}/") as ws:
        await ws.send(sub([KEY], channels=["book", "bbo", "trade"]))
        for _ in range(4):
            await ws.recv()  # subscribed, status, snapshot, bbo
        await ws.send(sub([KEY2]))
        err = decode_server_message(await ws.recv())
        assert isinstance(err, Error) and err.typed_code is ErrorCode.TOO_MANY_SUBSCRIPTIONS
        assert "limit of 1" in err.message
        await ws.send(sub([KEY]))  # already subscribed: no more symbols
        assert decode_server_message(await ws.recv()) == Subscribed(
            [KEY], ["book"], fanout.instance
        )
        await ws.recv()
        await ws.recv()
        await ws.send('{"op":"unsubscribe","symbols":["binance:BTCUSDT"]}')
        assert decode_server_message(await ws.recv()) == Unsubscribed([KEY])
        await ws.send(sub([KEY2]))
        assert decode_server_message(await ws.recv()) == Subscribed(
            [KEY2], ["book"], fanout.instance
        )


async def test_a_status_says_since_when_the_symbol_is_in_its_state() -> None:
    now_ns = [1_000]
    view = FakeView()
    fanout = Fanout(view, clock_ns=lambda: now_ns[0])
    async with serving(fanout):
        client = await RawClient.connect(fanout.port)
        async with client:
            await client.send(sub([KEY]))
            assert isinstance(await client.message(), Subscribed)
            first = await client.message()
            # Still in its first state: since the fan-out started.
            assert first == Status(KEY, SymbolState.SYNCING, STARTING_REASON, 1_000)
            now_ns[0] = 5_000
            fanout.publish([view.status(KEY, SymbolState.STALE, "every upstream down")])
            assert await client.message() == Status(
                KEY, SymbolState.STALE, "every upstream down", 5_000
            )
            # A new reason in the same state keeps the time the state began.
            now_ns[0] = 9_000
            fanout.publish([view.status(KEY, SymbolState.STALE, "still down")])
            assert await client.message() == Status(KEY, SymbolState.STALE, "still down", 5_000)
            doc = msgspec.json.decode(fanout.http_routes["/healthz"]().body)
            (entry,) = [e for e in doc["not_live"] if e["symbol"] == KEY]
            assert entry == {
                "symbol": KEY,
                "state": "stale",
                "reason": "still down",
                "since_ns": 5_000,
            }


@pytest.mark.async_timeout_s(10)
async def test_a_stop_refuses_new_connections_and_cancelled_aborts_the_subscribers_left() -> None:
    view = FakeView()
    fanout = Fanout(view)
    async with serving(fanout), await RawClient.connect(fanout.port) as silent:
        await wait_until(fanout.changes, lambda: len(fanout.subscriber_stats()) == 1)
        # A drain far beyond the test's bound: only the cancellation ends it.
        stop = asyncio.create_task(fanout.stop(drain_s=60.0))
        await wait_until(fanout.changes, lambda: fanout.stopping)
        async with await RawClient.connect(fanout.port) as late:
            opcode, payload, _ = await late.frame()
            assert opcode == Opcode.CLOSE and close_of(payload) == (1001, GOING_AWAY_REASON)
        stop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stop
        # The silent subscriber got the close frame, then its connection was aborted.
        opcode, payload, _ = await silent.frame()
        assert opcode == Opcode.CLOSE and close_of(payload) == (1001, GOING_AWAY_REASON)
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            await silent.frame()
        await wait_until(fanout.changes, lambda: not fanout.subscriber_stats())
