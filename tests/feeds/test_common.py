"""The adapters' common helpers: decoding with the contract error, level and number checks,
notices, trade sides, REST snapshots, the book events of unsequenced venues, the connect URL
of venues that subscribe by message."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import example
from hypothesis import given
from hypothesis import strategies as st

from feeds import common
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Side
from gateway.core.model import VenueContractError
from gateway.core.model import VenueNotice

from .fuzzing import NON_DECIMALS


class _Message(msgspec.Struct):
    id: int
    name: str


_decoder = msgspec.json.Decoder(_Message)


def test_decode_gives_the_message_or_the_contract_error() -> None:
    assert common.decode(_decoder, b'{"id":1,"name":"a"}', "bad message") == _Message(1, "a")
    assert common.decode(_decoder, msgspec.Raw(b'{"id":2,"name":"b"}'), "x") == _Message(2, "b")
    for raw in (b"", b"[]", b'{"id":"1","name":"a"}', b'{"id":1,"name":"\xff"}'):
        with pytest.raises(VenueContractError, match=r"^bad message: "):
            common.decode(_decoder, raw, "bad message")


def test_decode_push_refuses_an_absent_or_wrong_payload() -> None:
    raw = msgspec.Raw(b'{"id":3,"name":"c"}')
    assert common.decode_push(_decoder, raw, "book") == _Message(3, "c")
    with pytest.raises(VenueContractError, match=r"^book push without data$"):
        common.decode_push(_decoder, msgspec.Raw(), "book")
    for bad in (b"[]", b'{"id":"1","name":"a"}', b'{"id":1,"name":"\xff"}'):
        with pytest.raises(VenueContractError, match=r"^bad book data: "):
            common.decode_push(_decoder, msgspec.Raw(bad), "book")


@pytest.mark.parametrize(
    "level",
    [
        ("x", "1"),
        ("1", "x"),
        ("0", "1"),
        ("0.000", "1"),
        ("-1", "1"),
        ("1", "-1"),
        ("inf", "1"),
        ("1", "nan"),
        ("+3", "1"),
        ("1", "1_000"),
        (" 2.5 ", "1"),
        ("\uff15", "1"),
        ("1", "\u0663"),
        ("1e-07", "1"),
        ("1", "5."),
        ("01", "1"),
    ],
)
def test_check_levels_refuses_what_is_not_a_book_level(level: tuple[str, str]) -> None:
    with pytest.raises(VenueContractError, match=r"^bids: level is not a fixed-point decimal"):
        common.check_levels([("1.5", "2"), level], common.FIXED_POINT, "bids")


def test_check_levels_keeps_the_wire_strings() -> None:
    levels = [("1.50", "0"), ("2", "0.00000001"), ("0.5", "0.00000000")]
    assert common.check_levels(levels, common.FIXED_POINT, "asks") == tuple(levels)
    assert common.check_levels([], common.FIXED_POINT, "asks") == ()


@pytest.mark.parametrize(
    ("text", "qty", "price"),
    [
        ("0", True, False),
        ("0.00000000", True, False),
        ("0.5", True, True),
        ("65000.1", True, True),
        ("10", True, True),
        ("9" * 30 + "." + "9" * 30, True, True),
        ("9" * 31, False, False),
        ("1." + "0" * 31, False, False),
        ("00", False, False),
        ("1.", False, False),
        (".5", False, False),
        ("1e5", False, False),
        ("1\n", False, False),
    ],
)
def test_fixed_point_grammar(text: str, qty: bool, price: bool) -> None:
    assert (common.FIXED_POINT.qty(text) is not None) is qty
    assert (common.FIXED_POINT.price(text) is not None) is price


_DECIMALS = st.from_regex(r"(?:0|[1-9][0-9]{0,3})(?:\.[0-9]{1,3})?", fullmatch=True)
_LEVEL_TEXT = st.one_of(_DECIMALS, st.sampled_from(["0", "0.0", "1", ""]), NON_DECIMALS)


@st.composite
def _regrouped(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Levels whose strings, joined by spaces, read as a valid side: the tokens of valid
    levels regrouped into strings that may hold spaces of their own."""
    tokens = draw(st.lists(st.sampled_from(["1", "2.5", "0"]), min_size=2, max_size=8))
    strings: list[str] = []
    for token in tokens:
        # len(): with the list itself left of `and`, mypy types the draw as a list draw.
        if len(strings) > 0 and draw(st.booleans()):
            strings[-1] += " " + token
        else:
            strings.append(token)
    if len(strings) % 2:
        strings.append("3")
    return list(zip(strings[::2], strings[1::2], strict=True))


@given(st.lists(st.tuples(_LEVEL_TEXT, _LEVEL_TEXT), max_size=4) | _regrouped())
@example([("1 2", "3 4")])
def test_a_side_passes_exactly_when_each_level_does(levels: list[tuple[str, str]]) -> None:
    grammar = common.FIXED_POINT
    each = all(grammar.price(p) is not None and grammar.qty(q) is not None for p, q in levels)
    assert grammar.levels_ok(levels) is each
    if each:
        assert common.check_levels(levels, grammar, "bids") == tuple(levels)
    else:
        with pytest.raises(VenueContractError, match=r"^bids: level is not a fixed-point"):
            common.check_levels(levels, grammar, "bids")


def test_a_grammar_with_an_exponent_finds_a_zero_price_too() -> None:
    grammar = common.NumberGrammar("exponent", r"\d+(?:\.\d+)?(?:e-?\d+)?")
    assert grammar.price("1e-5") and grammar.price("0.5e3") and grammar.qty("0e5")
    assert grammar.price("0e5") is None and grammar.price("0.0") is None
    assert grammar.qty("\uff15") is None and grammar.price("\u0663") is None  # \d is ASCII


def test_int_text() -> None:
    assert common.int_text("0", "id") == 0
    assert common.int_text(str(common.MAX_INT - 1), "id") == common.MAX_INT - 1
    for text in ("", "-1", "1.5", " 1", "\uff11", str(common.MAX_INT), "9" * 30):
        with pytest.raises(VenueContractError, match=r"^id "):
            common.int_text(text, "id")


def test_iso_ms() -> None:
    assert common.iso_ms("1970-01-01T00:00:01.5Z", "t") == 1500
    assert common.iso_ms("2026-08-09T21:05:48.506659391Z", "t") == 1786309548506
    for text in ("soon", "2026-08-09T21:05:48", "2026-13-01T00:00:00Z"):
        with pytest.raises(VenueContractError, match=r"^t: "):
            common.iso_ms(text, "t")


def test_taker_side() -> None:
    assert common.taker_side("buy") is Side.BUY
    assert common.taker_side("sell") is Side.SELL
    assert common.taker_side("Sell", "Buy", "Sell") is Side.SELL
    # A venue that names the maker's side: the taker is on the other one.
    assert common.taker_side("buy", buy="sell", sell="buy") is Side.SELL
    for side in ("Buy", "short", ""):
        with pytest.raises(VenueContractError, match=r"^trade side "):
            common.taker_side(side)


def test_notice() -> None:
    assert common.notice("v", "ack", "subscribe", 5, 2) == VenueNotice(
        "v", "ack", "subscribe", False, 5, 2
    )
    assert common.notice("v", "shutdown", "bye", 5, 2, reconnect=True).reconnect


def test_unique_symbols() -> None:
    assert common.unique_symbols(["B", "A", "B"]) == ["B", "A"]
    with pytest.raises(ValueError, match="at least one"):
        common.unique_symbols([])
    with pytest.raises(ValueError, match="sequence of product ids"):
        common.unique_symbols("BTC-USD", "product ids")


def test_rest_snapshot() -> None:
    numbers = common.FIXED_POINT
    snap = common.rest_snapshot("v", "btcusdt", 7, [("1", "2")], [("3", "4")], 9, -1, numbers)
    assert snap == DepthSnapshot("v", "BTCUSDT", 7, (("1", "2"),), (("3", "4"),), 9, -1)
    with pytest.raises(VenueContractError, match=r"^snapshot asks: "):
        common.rest_snapshot("v", "X", 7, [], [("3", "-4")], 9, -1, numbers)


def test_unsequenced_book_events_have_no_ids() -> None:
    bids, asks = (("1", "2"),), (("3", "0"),)
    snap = common.unsequenced_snapshot("v", "X", bids, asks, 9, 2)
    assert snap == DepthSnapshot("v", "X", -1, bids, asks, 9, 2, None)
    assert common.unsequenced_snapshot("v", "X", bids, (), 9, 2, 77).checksum == 77
    diff = common.unsequenced_diff("v", "X", bids, asks, 1234, 9, 2, 77)
    assert diff == DepthDiff("v", "X", -1, -1, -1, bids, asks, 1234, 9, 2, 77)
    assert common.unsequenced_diff("v", "X", (), asks, 1234, 9, 2).checksum is None


def test_endpoint_url_is_the_endpoint_whatever_the_symbols() -> None:
    assert common.endpoint_url("wss://host/ws", ["A", "B"]) == "wss://host/ws"
