"""ClientSession fed what a later gateway may send: new enum values and a new message type,
as hand-written frames in JSON and MessagePack (``docs/protocol.md``, Unknown values)."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

from gateway.core.model import Side
from gateway.core.model import SymbolState
from gateway.wire.client_session import BookEvent
from gateway.wire.client_session import ClientSession
from gateway.wire.client_session import Event
from gateway.wire.client_session import GatewayError
from gateway.wire.client_session import StatusEvent
from gateway.wire.client_session import Step
from gateway.wire.client_session import TradeEvent
from gateway.wire.protocol import UnknownValue

KEY = "binance:BTCUSDT"
TRADE: dict[str, Any] = {
    "type": "trade", "symbol": KEY, "id": 7, "price": "100.5", "qty": "0.2", "ts_ms": 5,
    "epoch": 3, "seq": 1,
}  # fmt: skip


def frame(msg: dict[str, Any], msgpack: bool) -> str | bytes:
    return msgspec.msgpack.encode(msg) if msgpack else msgspec.json.encode(msg).decode()


def live_session(msgpack: bool) -> ClientSession:
    """Subscribed to the book and trades of KEY, its book live at epoch 1 seq 0."""
    session = ClientSession([KEY], ["book", "trade"], wire_format="msgpack" if msgpack else "json")
    for msg in (
        {"type": "subscribed", "symbols": [KEY], "channels": ["book", "trade"]},
        {"type": "status", "symbol": KEY, "state": "live", "reason": ""},
        {"type": "snapshot", "symbol": KEY, "epoch": 1, "seq": 0, "id": 10,
         "bids": [["100", "1"]], "asks": [["101", "1"]]},
    ):  # fmt: skip
        session.on_data(frame(msg, msgpack), 1)
    return session


def delta(seq: int) -> dict[str, Any]:
    return {"type": "delta", "symbol": KEY, "epoch": 1, "seq": seq, "id": 10 + seq,
            "bids": [["100", str(seq)]], "asks": []}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Case:
    """A later gateway's message, and what the live session makes of it: its events
    (``recv_ns`` 0), the counters it moves, the causes of its warnings."""

    msg: dict[str, Any]
    events: list[Event]
    counts: dict[str, int]
    warnings: list[str]


CASES = {
    "status with an unknown state": Case(
        {
            "type": "status",
            "symbol": KEY,
            "state": "halted",
            "reason": "venue halt",
            "since_ns": 9,
        },
        [StatusEvent(KEY, UnknownValue("halted"), "venue halt", 0)],
        {"unknown_states": 1, "statuses": 1},
        ["unknown state"],
    ),
    "trade with an unknown side": Case(
        {**TRADE, "side": "auction"},
        [TradeEvent(KEY, 7, "100.5", "0.2", UnknownValue("auction"), 5, 0, epoch=3, seq=1)],
        {"unknown_sides": 1, "trades": 1},
        ["unknown side"],
    ),
    "error with an unknown code": Case(
        {"type": "error", "code": "entitlement_expired", "message": "renew", "symbol": KEY},
        [],
        {"unknown_error_codes": 1},
        ["error entitlement_expired"],
    ),
    "message of an unknown type": Case(
        {"type": "funding", "symbol": KEY, "rate": "0.0001"},
        [],
        {"unknown_messages": 1},
        ["unknown type"],
    ),
    "known type, known values, a field added": Case(
        {**TRADE, "side": "buy", "venue_side_code": 1},
        [TradeEvent(KEY, 7, "100.5", "0.2", Side.BUY, 5, 0, epoch=3, seq=1)],
        {"trades": 1},
        [],
    ),
}
COUNTERS = ("unknown_states", "unknown_sides", "unknown_error_codes", "unknown_messages")


def without_recv_ns(events: list[Event]) -> list[Event]:
    return [msgspec.structs.replace(event, recv_ns=0) for event in events]


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_later_gateways_message_is_read_not_refused(case: Case, msgpack: bool) -> None:
    session = live_session(msgpack)
    before = dataclasses.asdict(session.stats)
    step = session.on_data(frame(case.msg, msgpack), 2)
    assert without_recv_ns(step.events) == case.events
    assert [cause for cause, _ in step.warnings] == case.warnings
    moved = {
        name: value - before[name]
        for name, value in dataclasses.asdict(session.stats).items()
        if value != before[name]
    }
    assert moved == case.counts
    assert session.stats.bad_messages == 0
    assert not step.requests
    assert session.book(KEY) is not None, "the book goes on: its seqs are still checked"


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
def test_an_unknown_state_is_never_live_until_a_known_one_comes(msgpack: bool) -> None:
    session = live_session(msgpack)
    halted = {"type": "status", "symbol": KEY, "state": "halted", "reason": "venue halt"}
    session.on_data(frame(halted, msgpack), 2)
    assert session.status(KEY) == (UnknownValue("halted"), "venue halt")
    (event,) = session.on_data(frame(delta(1), msgpack), 3).events
    assert isinstance(event, BookEvent) and event.seq == 1
    assert event.state == UnknownValue("halted")
    assert str(event.state) == "unknown (halted)"
    # The same unknown state again is no change; a known one ends it.
    assert session.on_data(frame(halted, msgpack), 4).events == []
    live = {"type": "status", "symbol": KEY, "state": "live", "reason": ""}
    assert without_recv_ns(session.on_data(frame(live, msgpack), 5).events) == [
        StatusEvent(KEY, SymbolState.LIVE, "", 0)
    ]
    (event,) = session.on_data(frame(delta(2), msgpack), 6).events
    assert isinstance(event, BookEvent) and event.state is SymbolState.LIVE


def test_an_unknown_type_or_value_is_logged_once_and_counted_every_time() -> None:
    session = live_session(False)
    funding = frame({"type": "funding", "symbol": KEY}, False)
    halted = frame({"type": "status", "symbol": KEY, "state": "halted", "reason": ""}, False)
    steps: list[Step] = [session.on_data(data, 2) for data in (funding, halted, funding, halted)]
    assert [len(step.warnings) for step in steps] == [1, 1, 0, 0]
    (_, line), (_, state_line) = steps[0].warnings + steps[1].warnings
    assert "'funding'" in line and "'halted'" in state_line
    assert (session.stats.unknown_messages, session.stats.unknown_states) == (2, 2)
    many = [frame({"type": f"later{i}"}, False) for i in range(100)]
    warned = sum(len(session.on_data(data, 3).warnings) for data in many)
    assert warned < 64 and session.stats.unknown_messages == 102, "the memory is bounded"


def test_an_unknown_type_is_cut_to_its_bound_and_a_malformed_known_type_is_still_bad() -> None:
    session = live_session(False)
    session.on_data(frame({"type": "x" * 10_000}, False), 2)
    assert session.stats.unknown_messages == 1
    for bad in (
        '{"type": "status", "symbol": 3, "state": "live", "reason": ""}',
        '{"type": 7}',
        '{"no_type": 1}',
        "[1, 2]",
    ):
        assert session.on_data(bad, 3).warnings[0][0] == "undecodable"
    assert session.stats.bad_messages == 4


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
def test_an_unknown_error_code_answering_the_subscribe_refuses_it(msgpack: bool) -> None:
    session = ClientSession([KEY], wire_format="msgpack" if msgpack else "json")
    session.subscribe_request()
    refused = {"type": "error", "code": "entitlement_expired", "message": "renew", "symbol": None}
    with pytest.raises(GatewayError) as caught:
        session.on_data(frame(refused, msgpack), 1)
    assert caught.value.code == "entitlement_expired"
    assert session.stats.unknown_error_codes == 1
