"""docs/protocol.schema.json checked against what a running gateway sends: every message
of every type, in JSON and in MessagePack (decoded to plain values), validates against the
schema's ``server_message``; every request sent here against its ``client_request``."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from jsonschema import Draft202012Validator
from websockets.frames import Opcode

from gateway.core.model import SymbolState
from gateway.wire.protocol import SCHEMA_PATH
from gateway.wire.protocol import ErrorCode

from .fanout_helpers import KEY
from .fanout_helpers import KEY2
from .fanout_helpers import RawClient
from .fanout_helpers import live_fanout
from .fanout_helpers import serving
from .fanout_helpers import trade

SCHEMA = json.loads(SCHEMA_PATH.read_text())
SERVER = Draft202012Validator({"$defs": SCHEMA["$defs"], **SCHEMA["properties"]["server_message"]})
CLIENT = Draft202012Validator({"$defs": SCHEMA["$defs"], **SCHEMA["properties"]["client_request"]})
EVERY_TYPE = set(SCHEMA["properties"]["server_message"]["discriminator"]["mapping"])


class _Session:
    """A raw connection in one wire format: requests validated and sent, every message
    received kept as plain decoded values."""

    def __init__(self, client: RawClient, msgpack: bool) -> None:
        self.client = client
        self.msgpack = msgpack
        self.received: list[Any] = []

    async def send(self, request: dict[str, Any]) -> None:
        CLIENT.validate(request)
        if self.msgpack:
            await self.client.send_frame(Opcode.BINARY, msgspec.msgpack.encode(request))
        else:
            await self.client.send(json.dumps(request))

    async def until_pong(self, ping_id: str) -> None:
        """Read (and keep) every message up to the ``pong`` of a ping sent now."""
        await self.send({"op": "ping", "id": ping_id})
        while True:
            opcode, payload, _ = await self.client.frame()
            if opcode == Opcode.TEXT:
                assert not self.msgpack, "after format msgpack, binary frames only"
                message = json.loads(payload)
            elif opcode == Opcode.BINARY:
                assert self.msgpack
                message = msgspec.msgpack.decode(payload)
            else:
                continue
            self.received.append(message)
            if message == {"type": "pong", "id": ping_id}:
                return


@pytest.mark.parametrize("wire_format", ["json", "msgpack"])
async def test_every_message_a_gateway_sends_validates_against_the_schema(wire_format: str) -> None:
    msgpack = wire_format == "msgpack"

    view, fanout = live_fanout([("100.00", "1"), ("99.50", "2")], [("100.50", "1")])
    async with serving(fanout), await RawClient.connect(fanout.port) as client:
        session = _Session(client, msgpack)
        await session.send(
            {
                "op": "subscribe",
                "symbols": [KEY],
                "channels": ["book", "bbo", "trade"],
                "format": wire_format,
            }
        )
        await session.send({"op": "subscribe", "symbols": [KEY2], "depth": 1})
        await session.until_pong("subscribed")
        fanout.publish(view.reset(KEY2, [("10.00", "1")], [("11.00", "2")]))
        fanout.publish(
            [
                view.delta(KEY, bids=[("100.10", "3")], asks=[("100.50", "0")]),
                trade(KEY, 42),
                view.delta(KEY2, bids=[("10.50", "1")]),
            ]
        )
        fanout.publish([view.status(KEY2, SymbolState.RESYNCING, "ids missing")])
        await session.send({"op": "list"})
        await session.send({"op": "ping", "id": 7})
        await session.send({"op": "ping"})
        await session.send({"op": "resync", "symbol": KEY})
        await session.send({"op": "resync", "symbol": "binance:NOTHERE"})
        await session.send({"op": "subscribe", "symbols": ["nowhere:X"]})
        await client.send('{"op": "subscribe", "symbols": "not a list"}')
        await session.send({"op": "unsubscribe", "symbols": [KEY, KEY2]})
        recover_trades = {KEY: {"epoch": fanout.trade_epoch, "seq": 0}}
        await session.send(
            {
                "op": "subscribe",
                "symbols": [KEY],
                "channels": ["trade"],
                "recover_trades": recover_trades,
            }
        )
        await session.until_pong("end")
    for message in session.received:
        SERVER.validate(message)
    assert {m["type"] for m in session.received} == EVERY_TYPE
    codes = {m["code"] for m in session.received if m["type"] == "error"}
    assert codes == {
        ErrorCode.NOT_SUBSCRIBED,
        ErrorCode.UNKNOWN_SYMBOL,
        ErrorCode.BAD_REQUEST,
    }
    snapshots = [m for m in session.received if m["type"] == "snapshot"]
    assert len(snapshots) == 3  # KEY, KEY2 at depth 1, KEY's resync
    assert any(m["type"] == "delta" and m["symbol"] == KEY2 for m in session.received)
    trades = [m for m in session.received if m["type"] == "trade"]
    assert [(m["seq"], m.get("recovered")) for m in trades] == [(1, None), (1, True)]
    assert any(
        m["type"] == "subscribed" and m["recovered_trades"] == [KEY] for m in session.received
    )


def test_the_schema_refuses_what_the_gateway_must_not_send() -> None:
    """The validation above can fail: a delta without its seq, a level of three strings,
    an unknown type."""
    delta = {"type": "delta", "symbol": KEY, "epoch": 1, "seq": 2, "id": 3, "bids": [], "asks": []}
    SERVER.validate(delta)
    for bad in (
        {k: v for k, v in delta.items() if k != "seq"},
        {**delta, "bids": [["1", "2", "3"]]},
        {**delta, "type": "deltas"},
    ):
        assert not SERVER.is_valid(bad)


def test_the_schema_lists_only_the_values_this_gateway_sends() -> None:
    """Clients read any string in these fields (a later gateway's values); the schema,
    what this gateway sends, still holds them to the known ones."""
    status = {"type": "status", "symbol": KEY, "reason": ""}
    assert SERVER.is_valid({**status, "state": SymbolState.LIVE.value})
    assert not SERVER.is_valid({**status, "state": "halted"})
    error = {"type": "error", "message": "no", "symbol": None}
    assert SERVER.is_valid({**error, "code": ErrorCode.RATE_LIMITED.value})
    assert not SERVER.is_valid({**error, "code": "entitlement_expired"})
    trade = {"type": "trade", "symbol": KEY, "id": 1, "price": "1", "qty": "1", "ts_ms": 1}
    assert SERVER.is_valid({**trade, "side": "sell"})
    assert not SERVER.is_valid({**trade, "side": "auction"})
    listed = {"type": "symbols", "symbols": [{"symbol": KEY, "state": "halted"}]}
    assert not SERVER.is_valid(listed)
    assert not SERVER.is_valid({"type": "funding"})
