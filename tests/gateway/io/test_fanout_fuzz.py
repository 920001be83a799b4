"""The fan-out under arbitrary requests: only documented answers, and no other subscriber
disturbed.

Each example runs a real :class:`Fanout` on 127.0.0.1 with a live symbol and a syncing one,
a normal subscriber on one connection and a fuzzing client on another. The fuzzing client
sends an arbitrary sequence of requests (valid, out of range, wrong types, unknown ops,
huge integers, binary garbage, invalid UTF-8, oversize) while the book moves and the
syncing symbol gets its first snapshot (which is when a parked subscriber's request
values are used). Then:

* every message the fuzzing client gets is a documented server message, every ``error``
  has a documented code, and a close (if any) has a documented code that its requests
  explain (1009 after an oversize request, 1007 after invalid UTF-8); the connection's
  limits (subscriptions, request rate) are low enough to be reached;
* the normal subscriber's stream is seq-continuous up to the last published delta;
* nothing raised while serving (``subscriber_errors`` stays 0) and the server still runs.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck
from hypothesis import event
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from websockets.frames import Opcode

from gateway.core.model import SymbolState
from gateway.wire.protocol import MAX_DEPTH
from gateway.wire.protocol import CloseCode
from gateway.wire.protocol import Delta
from gateway.wire.protocol import Error
from gateway.wire.protocol import ErrorCode
from gateway.wire.protocol import Pong
from gateway.wire.protocol import ProtocolError
from gateway.wire.protocol import ServerMessage
from gateway.wire.protocol import Snapshot
from gateway.wire.protocol import Status
from gateway.wire.protocol import Subscribed
from gateway.wire.protocol import decode_server_message
from tests.harness import run_bounded

from .fanout_helpers import KEY
from .fanout_helpers import KEY2
from .fanout_helpers import RawClient
from .fanout_helpers import close_of
from .fanout_helpers import live_fanout
from .fanout_helpers import plain
from .fanout_helpers import serving

BIDS = [("100.00", "1"), ("99.50", "2"), ("99.00", "3")]
ASKS = [("100.50", "1"), ("101.00", "2")]
MAX_REQUEST_BYTES = 4096
END_ID = "end-of-requests"

#: One frame the fuzzing client sends: (opcode, payload).
FrameOut = tuple[Opcode, bytes]

HUGE_INTS = st.sampled_from(
    [2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**100, -(2**63) - 1, -1, 0]
)
INTS = st.one_of(st.integers(), HUGE_INTS, st.integers(min_value=1, max_value=MAX_DEPTH + 1))
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
SYMBOLS = st.one_of(
    st.sampled_from([KEY, KEY2, "nowhere:XYZ", "binance:" + "B" * 70, "", ":", "a:b:c"]),
    TEXT,
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), INTS, st.floats(allow_nan=False), TEXT),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


def _field(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value of the field's type (so that requests get past the type check and
    their values are used), sometimes any JSON value."""
    return st.one_of(values, values, values, JSON_VALUES)


SUBSCRIBE = st.fixed_dictionaries(
    {
        "op": st.just("subscribe"),
        "symbols": _field(st.lists(st.one_of(st.sampled_from([KEY, KEY2]), SYMBOLS), max_size=5)),
    },
    optional={
        "channels": _field(st.lists(st.sampled_from(["book", "bbo", "trade", "depth"]))),
        "depth": _field(st.one_of(st.none(), INTS)),
        "format": _field(st.sampled_from(["json", "msgpack", "xml", None])),
    },
)
OTHER_OPS = st.one_of(
    st.fixed_dictionaries({"op": st.just("unsubscribe"), "symbols": _field(st.lists(SYMBOLS))}),
    st.fixed_dictionaries({"op": st.just("resync"), "symbol": _field(SYMBOLS)}),
    st.fixed_dictionaries({"op": st.just("list")}, optional={"all": JSON_VALUES}),
    st.fixed_dictionaries({"op": st.just("ping")}, optional={"id": _field(INTS)}),
    st.fixed_dictionaries({"op": _field(TEXT)}),
    st.dictionaries(TEXT, JSON_VALUES, max_size=4),
)
#: Well-formed requests whose values are within the schema, or just beyond a bound.
WELL_FORMED = st.one_of(
    st.fixed_dictionaries(
        {
            "op": st.just("subscribe"),
            "symbols": st.lists(
                st.sampled_from([KEY, KEY2, "nowhere:XYZ"]), min_size=1, max_size=3
            ),
        },
        optional={
            "channels": st.lists(
                st.sampled_from(["book", "bbo", "trade"]), min_size=1, max_size=3, unique=True
            ),
            "depth": st.one_of(st.none(), st.integers(1, 3), HUGE_INTS),
            "format": st.sampled_from(["json", "msgpack"]),
        },
    ),
    st.fixed_dictionaries({"op": st.just("resync"), "symbol": st.sampled_from([KEY, KEY2])}),
    st.fixed_dictionaries(
        {
            "op": st.just("unsubscribe"),
            "symbols": st.lists(st.sampled_from([KEY, KEY2]), min_size=1),
        }
    ),
    st.just({"op": "list"}),
)


def _weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each drawn ``weight`` times in ``sum(weights)``."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


REQUEST_OBJECTS = _weighted((4, WELL_FORMED), (2, SUBSCRIBE), (2, OTHER_OPS), (1, JSON_VALUES))


def _as_frame(value: Any, msgpack: bool) -> FrameOut:
    if msgpack:
        try:
            return Opcode.BINARY, msgspec.msgpack.encode(value)
        except OverflowError:  # an int MessagePack cannot hold: send it as JSON
            pass
    return Opcode.TEXT, msgspec.json.encode(value)


REQUEST_FRAME = st.builds(_as_frame, REQUEST_OBJECTS, st.booleans())
FRAMES: st.SearchStrategy[FrameOut] = _weighted(
    (8, REQUEST_FRAME),
    (1, st.builds(lambda data: (Opcode.BINARY, data), st.binary(max_size=64))),
    (1, st.builds(lambda text: (Opcode.TEXT, text.encode()), TEXT)),
)
#: Frames after which the gateway closes the connection: sent last, if at all.
CLOSING_FRAMES: st.SearchStrategy[list[FrameOut]] = st.sampled_from(
    [
        [],
        [],
        [(Opcode.TEXT, b'{"op": "ping", "id": "\xff"}')],  # invalid UTF-8: 1007
        [(Opcode.TEXT, b"x" * (MAX_REQUEST_BYTES + 1))],  # oversize: 1009
        [(Opcode.BINARY, b"\x00" * (MAX_REQUEST_BYTES + 1))],
    ]
)


def _closes_explained_by(frames: list[FrameOut]) -> set[int]:
    """The close codes the fuzzing client's own frames can earn it."""
    codes: set[int] = set()
    for opcode, payload in frames:
        if len(payload) > MAX_REQUEST_BYTES:
            codes.add(CloseCode.MESSAGE_TOO_BIG)
        if opcode is Opcode.TEXT:
            try:
                payload.decode()
            except UnicodeDecodeError:
                codes.add(CloseCode.INVALID_DATA)
    return codes


async def _read_until_pong_or_close(client: RawClient) -> tuple[list[ServerMessage], int | None]:
    """Every message up to the end marker's ``pong``, or up to a close (its code)."""
    messages: list[ServerMessage] = []
    while True:
        opcode, payload, _ = await client.frame()
        if opcode == Opcode.CLOSE:
            return messages, close_of(payload)[0]
        if opcode not in (Opcode.TEXT, Opcode.BINARY):
            continue
        msg = decode_server_message(payload.decode() if opcode == Opcode.TEXT else payload)
        messages.append(msg)
        if msg == Pong(END_ID):
            return messages, None


async def _session(frames: list[FrameOut]) -> None:
    view, fanout = live_fanout(
        BIDS,
        ASKS,
        max_request_bytes=MAX_REQUEST_BYTES,
        ping_interval_s=None,
        # Low enough for the fuzzing client to reach them (error replies, not closes).
        max_subscriptions=1,
        request_burst=2,
        requests_per_s=1.0,
    )
    async with serving(fanout):
        normal = await RawClient.connect(fanout.port)
        fuzzer = await RawClient.connect(fanout.port)
        async with normal, fuzzer:
            await normal.send('{"op": "subscribe", "symbols": ["binance:BTCUSDT"]}')
            assert await normal.message() == Subscribed([KEY], ["book"], fanout.instance)
            assert plain(await normal.message()) == Status(
                KEY, SymbolState.LIVE, "snapshot applied"
            )
            assert isinstance(await normal.message(), Snapshot)

            open_for_writing = True
            for i, (opcode, payload) in enumerate(frames):
                if open_for_writing:
                    try:
                        await fuzzer.send_frame(opcode, payload)
                    except ConnectionError:
                        open_for_writing = False  # the gateway closed it (1009, 1007)
                fanout.publish([view.delta(KEY, bids=[(f"98.{i:02d}", "1")])])
                if i == len(frames) // 2:
                    # The syncing symbol's first book: parked subscribers get their snapshot.
                    fanout.publish(view.reset(KEY2, BIDS, ASKS))
            if KEY2 not in view.books:
                fanout.publish(view.reset(KEY2, BIDS, ASKS))
            if open_for_writing:
                with contextlib.suppress(ConnectionError):
                    await fuzzer.send(msgspec.json.encode({"op": "ping", "id": END_ID}).decode())

            messages, close_code = await _read_until_pong_or_close(fuzzer)
            for msg in messages:
                if isinstance(msg, Error):
                    assert msg.code in set(ErrorCode)
                    event(f"error {msg.code}")
            event(f"close {close_code}")
            if close_code is not None:
                assert close_code in _closes_explained_by(frames), (close_code, messages[-3:])

            seq = 0
            last = view.books[KEY].seq
            while seq < last:
                delta = await normal.message()
                assert isinstance(delta, Delta), delta
                assert delta.seq == seq + 1, "the normal subscriber's stream has a gap"
                seq = delta.seq
            assert fanout.stats.subscriber_errors == 0
            assert fanout.port  # still serving


@pytest.mark.timeout(150)
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.builds(list.__add__, st.lists(FRAMES, min_size=1, max_size=12), CLOSING_FRAMES))
@example(frames=[_as_frame({"op": "subscribe", "symbols": [KEY2], "depth": 2**63}, False)])
@example(frames=[_as_frame({"op": "subscribe", "symbols": [KEY], "depth": 2**63}, True)])
@example(
    frames=[
        _as_frame({"op": "subscribe", "symbols": [KEY], "format": "msgpack"}, False),
        _as_frame({"op": "ping", "id": 2**64}, False),
    ]
)
def test_arbitrary_requests_get_documented_answers_and_disturb_nobody(
    frames: list[FrameOut],
) -> None:
    run_bounded(lambda: _session(frames), timeout_s=15)  # a loop per example


def test_the_server_messages_decoder_refuses_what_is_not_documented() -> None:
    """The check above relies on it: an undocumented message type does not decode."""
    with pytest.raises(ProtocolError):
        decode_server_message('{"type": "surprise"}')
