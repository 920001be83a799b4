"""The subscriber protocol: codecs, refusal of bad input, the committed schema."""

from __future__ import annotations

import ast
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from gateway.core.model import Side
from gateway.core.model import SymbolState
from gateway.wire import protocol as p
from tests.markdown import CODE
from tests.markdown import table_rows

KEY = "binance:BTCUSDT"

SERVER_MESSAGES: list[p.ServerMessage] = [
    p.Snapshot(KEY, 3, 0, 1000, [("100.10", "1.5"), ("100.00", "2")], [("100.20", "0.1")]),
    p.Snapshot(KEY, 1, 7, 5, [], []),
    p.Delta(KEY, 3, 1, 1001, (("100.10", "0"),), (("100.30", "4.00000000"),)),
    p.Status(KEY, SymbolState.RESYNCING, "ids missing on every connection"),
    p.TradeMsg(KEY, 42, "100.15", "0.25", Side.SELL, 1_700_000_000_123),
    p.Bbo(KEY, 3, 1, ("100.10", "1.5"), None),
    p.Bbo(KEY, 3, 2, None, ("100.20", "0.1")),
    p.Subscribed([KEY, "okx:BTC-USDT-SWAP"], ["book", "bbo"]),
    p.Subscribed([KEY], ["trade"], "gw-1", [], [KEY], {KEY: p.StreamPosition(5, 2)}),
    p.Unsubscribed([KEY]),
    p.Symbols(
        [p.SymbolInfo(KEY, SymbolState.LIVE), p.SymbolInfo("kraken:BTC/USD", SymbolState.STALE)]
    ),
    p.Pong(7),
    p.Pong("abc"),
    p.Pong(),
    p.Error(p.ErrorCode.UNKNOWN_SYMBOL, "unknown symbol(s): x:Y", "x:Y"),
    p.Error(p.ErrorCode.BAD_REQUEST, "malformed JSON"),
]

REQUESTS: list[p.Request] = [
    p.Subscribe([KEY]),
    p.Subscribe([KEY, "kraken:BTC/USD"], ["book", "trade", "bbo"], 10, "msgpack"),
    p.Unsubscribe([KEY]),
    p.Resync(KEY),
    p.ListSymbols(),
    p.Ping(1),
    p.Ping("x"),
]


@pytest.mark.parametrize("msg", SERVER_MESSAGES, ids=lambda m: type(m).__name__)
def test_server_messages_round_trip_in_both_formats(msg: p.ServerMessage) -> None:
    as_json = p.encode(msg, "json")
    assert as_json == p.encode_json(msg)
    assert p.decode_server_message(as_json.decode()) == msg
    as_msgpack = p.encode(msg, "msgpack")
    assert as_msgpack == p.encode_msgpack(msg)
    assert p.decode_server_message(as_msgpack) == msg


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: type(r).__name__)
def test_requests_round_trip_in_both_formats(req: p.Request) -> None:
    assert p.decode_request(p.encode(req, "json")) == req
    assert p.decode_request(p.encode(req, "json").decode()) == req
    assert p.decode_request(p.encode(req, "msgpack"), msgpack=True) == req


def test_wire_shape_is_tagged_and_keeps_decimal_strings() -> None:
    delta = p.Delta(KEY, 2, 9, 77, (("0.00001000", "0"),), ())
    assert msgspec.json.decode(p.encode_json(delta)) == {
        "type": "delta",
        "symbol": KEY,
        "epoch": 2,
        "seq": 9,
        "id": 77,
        "bids": [["0.00001000", "0"]],
        "asks": [],
    }
    assert msgspec.msgpack.decode(p.encode_msgpack(delta))["type"] == "delta"
    assert p.decode_request('{"op": "subscribe", "symbols": ["binance:BTCUSDT"]}') == p.Subscribe(
        [KEY], ["book"], None, None
    )
    assert p.decode_request('{"op":"list"}') == p.ListSymbols()


BAD_JSON = [
    (b"", "malformed JSON"),
    (b"{", "malformed JSON"),
    (b"\xff\xfe", "malformed JSON"),
    (b'{"op":"subscribe","symbols":["a:b"]} x', "malformed JSON"),
    (b"[]", ("object",)),
    (b'"subscribe"', ("object",)),
    (b"{}", ("missing", "op")),
    (b'{"op":"frobnicate"}', ("frobnicate", "$.op")),
    (b'{"op":1}', ("str",)),
    (b'{"op":"subscribe"}', ("missing", "symbols")),
    (b'{"op":"subscribe","symbols":[]}', ("length", ">= 1")),
    (b'{"op":"subscribe","symbols":"binance:BTCUSDT"}', ("array", "str")),
    (b'{"op":"subscribe","symbols":["BTCUSDT"]}', ("$.symbols[0]",)),
    (b'{"op":"subscribe","symbols":["binance:"]}', ("$.symbols[0]",)),
    (b'{"op":"subscribe","symbols":[":BTC"]}', ("$.symbols[0]",)),
    (b'{"op":"subscribe","symbols":["a:b:c"]}', ("$.symbols[0]",)),
    (b'{"op":"subscribe","symbols":["bin ance:BTC"]}', ("$.symbols[0]",)),
    (b'{"op":"subscribe","symbols":[7]}', ("str", "int")),
    (b'{"op":"subscribe","symbols":["a:b"],"channels":["depth"]}', ("$.channels[0]",)),
    (b'{"op":"subscribe","symbols":["a:b"],"channels":[]}', ("length", ">= 1")),
    (b'{"op":"subscribe","symbols":["a:b"],"depth":0}', (">= 1", "int", "$.depth")),
    (b'{"op":"subscribe","symbols":["a:b"],"depth":"10"}', ("$.depth",)),
    (b'{"op":"subscribe","symbols":["a:b"],"depth":1.5}', ("$.depth",)),
    (b'{"op":"subscribe","symbols":["a:b"],"format":"xml"}', ("$.format",)),
    (b'{"op":"subscribe","symbols":["a:b"],"color":"red"}', ("unknown", "color")),
    (b'{"op":"unsubscribe"}', ("missing", "symbols")),
    (b'{"op":"resync"}', ("missing", "symbol")),
    (b'{"op":"resync","symbol":["a:b"]}', ("$.symbol",)),
    (b'{"op":"resync","symbol":"nocolon"}', ("$.symbol",)),
    (b'{"op":"list","all":true}', ("unknown", "all")),
    (b'{"op":"ping","id":[1]}', ("$.id",)),
    # Every value is bounded: huge integers, deep snapshots, long strings, long lists.
    (b'{"op":"subscribe","symbols":["a:b"],"depth":9223372036854775808}', ("<= 5000", "$.depth")),
    (b'{"op":"subscribe","symbols":["a:b"],"depth":5001}', ("<= 5000", "$.depth")),
    (b'{"op":"subscribe","symbols":["a:b"],"depth":1e400}', ("$.depth",)),
    (
        b'{"op":"subscribe","symbols":["a:b"],"channels":["book","bbo","trade","book"]}',
        ("length <= 3", "$.channels"),
    ),
    (b'{"op":"ping","id":18446744073709551616}', ("$.id",)),
    (b'{"op":"ping","id":-9223372036854775809}', ("$.id",)),
    (b'{"op":"ping","id":"' + b"x" * 65 + b'"}', ("length <= 64", "$.id")),
]


@pytest.mark.parametrize(("data", "expected"), BAD_JSON)
def test_bad_json_requests_raise_protocol_error(
    data: bytes, expected: str | tuple[str, ...]
) -> None:
    """The error says what is wrong and where: our own wording verbatim; a decoder's error
    by its content (the field, the path, the expected type), not its library's layout."""
    with pytest.raises(p.ProtocolError) as info:
        p.decode_request(data)
    words = (expected,) if isinstance(expected, str) else expected
    assert all(word in str(info.value) for word in words), str(info.value)
    assert info.value.code is p.ErrorCode.BAD_REQUEST
    assert isinstance(info.value, ValueError)


def test_the_largest_values_allowed_are_accepted() -> None:
    keys = [f"v:S{i}" for i in range(p.MAX_SYMBOLS_PER_REQUEST)]
    big = p.Subscribe(keys, ["book", "bbo", "trade"], p.MAX_DEPTH, "msgpack")
    assert p.decode_request(p.encode_json(big)) == big
    for ping_id in (2**63 - 1, -(2**63), "x" * p.MAX_PING_ID_LENGTH):
        assert p.decode_request(p.encode_json(p.Ping(ping_id))) == p.Ping(ping_id)
        assert p.decode_request(p.encode_msgpack(p.Ping(ping_id)), msgpack=True) == p.Ping(ping_id)


def test_too_many_symbols_and_too_long_keys_are_refused() -> None:
    many = [f"v:S{i}" for i in range(p.MAX_SYMBOLS_PER_REQUEST + 1)]
    with pytest.raises(p.ProtocolError, match="length <= "):
        p.decode_request(p.encode_json(p.Subscribe(many)))
    with pytest.raises(p.ProtocolError, match="length <= 64"):
        p.decode_request(p.encode_json(p.Resync("v:" + "S" * 70)))


def test_bad_msgpack_requests_raise_protocol_error() -> None:
    with pytest.raises(p.ProtocolError, match="malformed MessagePack"):
        p.decode_request(b"\xc1", msgpack=True)
    with pytest.raises(p.ProtocolError, match="must be binary"):
        p.decode_request('{"op":"list"}', msgpack=True)
    with pytest.raises(p.ProtocolError, match=r"at `\$.op`"):
        p.decode_request(msgspec.msgpack.encode({"op": "nope"}), msgpack=True)
    # Invalid UTF-8 inside a string: msgspec raises UnicodeDecodeError, mapped here.
    bad_utf8 = msgspec.msgpack.encode({"op": "resync", "symbol": "a:b"}).replace(b"a:b", b"a:\x80")
    with pytest.raises(p.ProtocolError, match="malformed MessagePack"):
        p.decode_request(bad_utf8, msgpack=True)
    bad_pong = msgspec.msgpack.encode({"type": "pong", "id": "zz"}).replace(b"zz", b"\x80z")
    with pytest.raises(p.ProtocolError, match="malformed"):
        p.decode_server_message(bad_pong)


def _with_unknown_fields(value: object) -> object:
    """``value`` as plain values, with a field added to every struct in it."""
    if isinstance(value, msgspec.Struct):
        plain = msgspec.to_builtins(value)
        for name in value.__struct_fields__:
            if name in plain:  # omitted defaults stay omitted
                plain[name] = _with_unknown_fields(getattr(value, name))
        return {**plain, "added_later": {"x": [1]}}
    if isinstance(value, dict):
        return {key: _with_unknown_fields(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_with_unknown_fields(item) for item in value]
    return msgspec.to_builtins(value)


@pytest.mark.parametrize("msg", SERVER_MESSAGES, ids=lambda m: type(m).__name__)
def test_server_messages_with_fields_added_by_a_later_gateway_still_decode(
    msg: p.ServerMessage,
) -> None:
    later = _with_unknown_fields(msg)
    assert p.decode_server_message(msgspec.json.encode(later).decode()) == msg
    assert p.decode_server_message(msgspec.msgpack.encode(later)) == msg


def _struct_types(node: object) -> Iterator[msgspec.inspect.StructType]:
    """Every struct type in a msgspec type description, nested ones included."""
    if isinstance(node, msgspec.inspect.StructType):
        yield node
    if isinstance(node, msgspec.Struct):
        for name in node.__struct_fields__:
            yield from _struct_types(getattr(node, name))
    elif isinstance(node, tuple):
        for item in node:
            yield from _struct_types(item)


def test_gateway_messages_ignore_unknown_fields_and_requests_refuse_them() -> None:
    server = list(_struct_types(msgspec.inspect.type_info(p.ServerMessage)))
    assert {p.Subscribed, p.StreamPosition, p.SymbolInfo} <= {t.cls for t in server}
    assert [t.cls for t in server if t.forbid_unknown_fields] == []
    requests = list(_struct_types(msgspec.inspect.type_info(p.Request)))
    assert p.RecoverFrom in {t.cls for t in requests}
    assert all(t.forbid_unknown_fields for t in requests)


def test_bad_server_messages_raise_protocol_error() -> None:
    with pytest.raises(p.ProtocolError, match="malformed"):
        p.decode_server_message("{")
    with pytest.raises(p.ProtocolError, match="invalid gateway message"):
        p.decode_server_message('{"type":"delta","symbol":"a:b"}')
    with pytest.raises(p.ProtocolError, match="invalid gateway message"):
        p.decode_server_message(msgspec.msgpack.encode({"type": "bogus"}))


@pytest.mark.parametrize(
    ("qty", "zero"),
    [("0", True), ("0.00000000", True), ("0E-8", True), ("1", False), ("0.001", False)],
)
def test_zero_quantity(qty: str, zero: bool) -> None:
    assert p.is_zero_qty(qty) is zero


def _meaning(node: object) -> object:
    """A schema with each description's white space folded: msgspec versions differ in how
    they lay out a docstring, never in its words."""
    if isinstance(node, dict):
        return {
            key: " ".join(value.split())
            if key == "description" and isinstance(value, str)
            else _meaning(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_meaning(item) for item in node]
    return node


def test_committed_schema_is_up_to_date() -> None:
    committed = msgspec.json.decode(p.SCHEMA_PATH.read_bytes())
    generated = msgspec.json.decode(p.schema_json())
    assert _meaning(committed) == _meaning(generated), (
        "docs/protocol.schema.json is stale: run `python -m gateway.wire.protocol --write-schema`"
    )


def test_schema_comparison_sees_a_changed_word() -> None:
    generated = msgspec.json.decode(p.schema_json())
    reflowed = _meaning(generated)
    assert _meaning(msgspec.json.decode(msgspec.json.encode(reflowed))) == reflowed
    changed = msgspec.json.decode(p.schema_json().replace(b"seq", b"sequence", 1))
    assert _meaning(changed) != reflowed


def test_schema_covers_every_message_and_cli_prints_it() -> None:
    doc = msgspec.json.decode(p.schema_json())
    mapping = doc["properties"]["server_message"]["discriminator"]["mapping"]
    assert set(mapping) == {
        "snapshot",
        "delta",
        "status",
        "trade",
        "bbo",
        "subscribed",
        "unsubscribed",
        "symbols",
        "pong",
        "error",
    }
    ops = doc["properties"]["client_request"]["discriminator"]["mapping"]
    assert set(ops) == {"subscribe", "unsubscribe", "resync", "list", "ping"}
    out = subprocess.run(
        [sys.executable, "-m", "gateway.wire.protocol", "--schema"],
        check=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parents[3],
    ).stdout
    assert out == p.schema_json()


def test_protocol_module_is_pure() -> None:
    tree = ast.parse(Path(p.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "websockets", "socket", "uvloop", "selectors"}


PROTOCOL_DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"


def test_the_error_codes_and_close_codes_are_the_documented_ones() -> None:
    doc = PROTOCOL_DOC.read_text()
    errors = {row[0] for row in table_rows(doc, "| code | when |")}
    assert errors == {f"`{error}`" for error in p.ErrorCode}
    closes = {int(row[0]) for row in table_rows(doc, "| code | reason | when |")}
    # 1000 is the client's own normal closure, documented beside the gateway's codes.
    assert closes == {1000} | {int(close) for close in p.CloseCode}


def tagged_structs(union: object) -> dict[str, tuple[str, ...]]:
    """Each struct of a tagged union by its tag, with its fields."""
    return {
        str(struct.__struct_config__.tag): struct.__struct_fields__
        for struct in typing.get_args(union)
    }


@pytest.mark.parametrize(
    ("header", "union"),
    [("| op | fields | reply |", p.Request), ("| type | fields |", p.ServerMessage)],
    ids=["requests", "messages"],
)
def test_every_request_and_message_is_documented_with_every_field(
    header: str, union: object
) -> None:
    rows = {row[0].strip("`"): row[1] for row in table_rows(PROTOCOL_DOC.read_text(), header)}
    structs = tagged_structs(union)
    assert rows.keys() == structs.keys()
    for tag, fields in structs.items():
        # A field is named alone, or with a value (`recovered: true`).
        documented = {span.partition(":")[0] for span in CODE.findall(rows[tag])}
        assert set(fields) - documented == set(), tag
