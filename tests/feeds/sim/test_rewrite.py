"""Content faults (feeds.sim.rewrite) on every venue's real frames, read back with the
gateway's own parsers (or as JSON where the parser would rightly reject the frame)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from feeds import binance
from feeds import binance_usdm
from feeds import bybit
from feeds import coinbase
from feeds import kraken
from feeds import okx
from feeds.sim import binance_spot as sim_spot
from feeds.sim import binance_usdm as sim_usdm
from feeds.sim import bybit as sim_bybit
from feeds.sim import coinbase as sim_coinbase
from feeds.sim import kraken as sim_kraken
from feeds.sim import okx as sim_okx
from feeds.sim.book_process import SimTrade
from feeds.sim.faults import NUMBER_STYLES
from feeds.sim.faults import FrameFault
from feeds.sim.faults import NumberStyle
from feeds.sim.rewrite import ID_JUMP
from feeds.sim.rewrite import IdRestart
from feeds.sim.rewrite import WireShape
from feeds.sim.rewrite import rewrite_body
from feeds.sim.rewrite import rewrite_frame
from feeds.sim.rewrite import styled
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level

BIDS: tuple[Level, ...] = (("60000.10", "0.5"), ("59999.90", "0"))
ASKS: tuple[Level, ...] = (("60000.20", "1.25"), ("60000.50", "2"))
BINANCE_BIDS: tuple[Level, ...] = (
    ("60000.10000000", "0.50000000"),
    ("59999.90000000", "0.00000000"),
)
BINANCE_ASKS: tuple[Level, ...] = (
    ("60000.20000000", "1.25000000"),
    ("60000.50000000", "2.00000000"),
)


def _spot(first: int, last: int) -> bytes:
    return sim_spot.depth_frame("BTCUSDT", first, last, BINANCE_BIDS, BINANCE_ASKS, 1)


def _usdm(first: int, last: int) -> bytes:
    event = sim_usdm.UsdmEvent(
        "BTCUSDT", first, last, BINANCE_BIDS, BINANCE_ASKS, prev_id=first - 3
    )
    return sim_usdm.event_frame(event, 1)


def _okx(first: int, last: int) -> bytes:
    return sim_okx.book_frame("BTC-USDT", "update", BIDS, ASKS, 1, 0, first - 1, last)


def _bybit(first: int, last: int) -> bytes:
    topic = bybit.book_topic("BTCUSDT", 50)
    return sim_bybit.book_frame(topic, "delta", "BTCUSDT", BIDS, ASKS, last, first, 1)


def _kraken() -> bytes:
    return sim_kraken.book_frame("update", "BTC/USD", BIDS, ASKS, 0, "2026-01-01T00:00:00.000000Z")


def _coinbase() -> bytes:
    event = sim_coinbase.l2_event("update", "BTC-USD", BIDS, ASKS, "2026-01-01T00:00:00Z")
    head, tail = sim_coinbase.envelope_parts("l2_data", "2026-01-01T00:00:00Z", [event])
    return sim_coinbase.stamp(head, tail, 7)


#: venue: (stream shape, parse, frame of ids first..last)
SEQUENCED: dict[
    str, tuple[WireShape, Callable[[bytes], list[Any]], Callable[[int, int], bytes]]
] = {
    "binance-spot": (sim_spot.STREAM_SHAPE, lambda f: binance.parse(f, 0, 0), _spot),
    "binance-usdm": (sim_usdm.STREAM_SHAPE, lambda f: binance_usdm.parse(f, 0, 0), _usdm),
    "okx": (sim_okx.STREAM_SHAPE, lambda f: okx.parse(f, 0, 0), _okx),
    "bybit": (sim_bybit.STREAM_SHAPE, lambda f: bybit.parse_spot(f, 0, 0), _bybit),
}
#: venue: (stream shape, parse, a book frame)
EVERY_VENUE: dict[str, tuple[WireShape, Callable[[bytes], list[Any]], bytes]] = {
    **{name: (shape, parse, make(100, 104)) for name, (shape, parse, make) in SEQUENCED.items()},
    "kraken": (sim_kraken.STREAM_SHAPE, lambda f: kraken.parse(f, 0, 0), _kraken()),
    "coinbase": (sim_coinbase.STREAM_SHAPE, lambda f: coinbase.parse(f, 0, 0), _coinbase()),
}


def _diff(events: list[Any]) -> DepthDiff:
    [diff] = [e for e in events if isinstance(e, DepthDiff)]
    return diff


def _strings(value: Any) -> list[str]:
    """Every string and number of a decoded JSON value, as text, in order."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


_exact = msgspec.json.Decoder(float_hook=Decimal)


# --- ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("venue", SEQUENCED)
def test_mangle_moves_the_last_id_only_and_far_moves_every_id(venue: str) -> None:
    shape, parse, make = SEQUENCED[venue]
    true = _diff(parse(make(100, 104)))
    mangled = _diff(parse(rewrite_frame(make(100, 104), shape, FrameFault(ids="mangle"))))
    assert mangled.last_id == true.last_id + ID_JUMP
    assert mangled.prev_id == true.prev_id
    if true.first_id != true.last_id:  # Bybit: ``u`` is both
        assert mangled.first_id == true.first_id
    far = _diff(parse(rewrite_frame(make(100, 104), shape, FrameFault(ids="far"))))
    assert far.last_id == true.last_id + ID_JUMP
    assert far.first_id == true.first_id + ID_JUMP
    assert far.prev_id == (true.prev_id + ID_JUMP if true.prev_id >= 0 else true.prev_id)
    assert (far.bids, far.asks) == (true.bids, true.asks)


def test_an_okx_snapshot_keeps_its_minus_one_prev_seq_id_under_far_ids() -> None:
    frame = sim_okx.book_frame("BTC-USDT", "snapshot", BIDS, ASKS, 1, 0, -1, 104)
    far = msgspec.json.decode(rewrite_frame(frame, sim_okx.STREAM_SHAPE, FrameFault(ids="far")))
    assert far["data"][0]["prevSeqId"] == -1 and far["data"][0]["seqId"] == 104 + ID_JUMP


# --- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "style", "shown"),
    [
        ("2.5", "space", " 2.5 "),
        ("3", "plus", "+3"),
        ("1000", "underscore", "1_000"),
        ("2.5", "underscore", "0_2.5"),
        ("5", "fullwidth", "\uff15"),
        ("3", "arabic", "\u0663"),
    ],
)
def test_number_styles(text: str, style: NumberStyle, shown: str) -> None:
    assert styled(text, style) == shown


@pytest.mark.parametrize("style", NUMBER_STYLES)
@pytest.mark.parametrize("venue", EVERY_VENUE)
def test_numbers_render_exactly_one_price_or_quantity_off_the_decimal_grammar(
    venue: str, style: NumberStyle
) -> None:
    shape, _, frame = EVERY_VENUE[venue]
    for pick in (0.0, 0.5, 0.99):
        out = rewrite_frame(frame, shape, FrameFault(numbers=style, pick=pick))
        before, after = _strings(_exact.decode(frame)), _strings(_exact.decode(out))
        changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        assert len(changed) == 1, changed
        [(plain, odd)] = changed
        assert odd == styled(plain, style)


# --- crossing and oversize ------------------------------------------------------------------


@pytest.mark.parametrize("venue", EVERY_VENUE)
def test_cross_puts_a_bid_above_every_ask(venue: str) -> None:
    shape, parse, frame = EVERY_VENUE[venue]
    diff = _diff(parse(rewrite_frame(frame, shape, FrameFault(cross=True))))
    best_bid = max(Decimal(p) for p, q in diff.bids if Decimal(q) > 0)
    assert all(best_bid >= Decimal(p) for p, _ in diff.asks)
    assert len(diff.bids) == len(_diff(parse(frame)).bids) + 1


@pytest.mark.parametrize("venue", EVERY_VENUE)
def test_oversize_appends_deletions_of_far_asks(venue: str) -> None:
    shape, parse, frame = EVERY_VENUE[venue]
    true = _diff(parse(frame))
    diff = _diff(parse(rewrite_frame(frame, shape, FrameFault(oversize=1000))))
    assert diff.bids == true.bids and diff.asks[: len(true.asks)] == true.asks
    extra = diff.asks[len(true.asks) :]
    assert len(extra) == 1000 and all(Decimal(q) == 0 for _, q in extra)
    prices = [Decimal(p) for p, _ in extra]
    assert prices == sorted(set(prices)) and prices[0] > max(Decimal(p) for p, _ in true.asks)


@pytest.mark.parametrize("venue", SEQUENCED)
def test_alter_changes_one_quantity_and_no_id(venue: str) -> None:
    shape, parse, make = SEQUENCED[venue]
    true = _diff(parse(make(100, 104)))
    for pick in (0.0, 0.5, 0.99):
        altered = _diff(
            parse(rewrite_frame(make(100, 104), shape, FrameFault(alter=True, pick=pick)))
        )
        assert (altered.first_id, altered.last_id, altered.prev_id) == (
            true.first_id,
            true.last_id,
            true.prev_id,
        )
        pairs = list(zip(true.bids + true.asks, altered.bids + altered.asks, strict=True))
        changed = [(a, b) for a, b in pairs if a != b]
        assert len(changed) == 1, changed
        [((price, qty), (price_after, qty_after))] = changed
        assert price_after == price and Decimal(qty_after) == Decimal(qty) + 1


def test_frames_without_the_shape_pass_unchanged() -> None:
    fault = FrameFault(ids="far", numbers="plus", cross=True, oversize=5)
    trade = sim_spot.trade_frame("BTCUSDT", SimTrade(1, "1.00000000", "1.00000000", True), 1)
    for frame in (b"pong", trade, b'{"result":null,"id":1}', b"[1,2]"):
        assert rewrite_frame(frame, sim_spot.STREAM_SHAPE, fault) is frame
    assert rewrite_frame(_spot(1, 2), sim_spot.STREAM_SHAPE, FrameFault()) == _spot(1, 2)


def test_oversize_body_adds_real_far_asks_to_a_rest_book() -> None:
    body = sim_spot.snapshot_body(104, BINANCE_BIDS, BINANCE_ASKS)
    snapshot = binance.parse_snapshot("BTCUSDT", rewrite_body(body, sim_spot.REST_SHAPE, 500), 0)
    assert isinstance(snapshot, DepthSnapshot) and snapshot.last_id == 104
    assert len(snapshot.asks) == len(BINANCE_ASKS) + 500
    assert all(Decimal(q) > 0 for _, q in snapshot.asks)
    assert rewrite_body(b"not json", sim_spot.REST_SHAPE, 5) == b"not json"


# --- restart --------------------------------------------------------------------------------


def test_a_restart_renumbers_frames_and_rest_books_from_its_first_id() -> None:
    restart = IdRestart(1000)
    first = _diff(
        binance.parse(restart.apply(_spot(7_000_001, 7_000_004), sim_spot.STREAM_SHAPE), 0, 0)
    )
    assert (first.first_id, first.last_id) == (1000, 1003)
    body = sim_spot.snapshot_body(7_000_006, BINANCE_BIDS, BINANCE_ASKS)
    renumbered = restart.apply(body, sim_spot.REST_SHAPE, "BTCUSDT")
    assert binance.parse_snapshot("BTCUSDT", renumbered, 0).last_id == 1005
    later = _diff(
        binance.parse(restart.apply(_spot(7_000_005, 7_000_009), sim_spot.STREAM_SHAPE), 0, 0)
    )
    assert (later.first_id, later.last_id) == (1004, 1008)
    other = sim_spot.depth_frame("ETHUSDT", 50, 51, BINANCE_BIDS, BINANCE_ASKS, 1)
    assert _diff(binance.parse(restart.apply(other, sim_spot.STREAM_SHAPE), 0, 0)).first_id == 1000


def test_a_restart_renumbers_each_id_space_apart() -> None:
    restart = IdRestart(1500)
    frame = restart.apply(_bybit(9_000_000, 18_521_300), sim_bybit.STREAM_SHAPE)
    data = msgspec.json.decode(frame)["data"]
    assert (data["seq"], data["u"]) == (1500, 1500)
    frame = restart.apply(_bybit(9_000_007, 18_521_301), sim_bybit.STREAM_SHAPE)
    data = msgspec.json.decode(frame)["data"]
    assert (data["seq"], data["u"]) == (1507, 1501)


def test_after_a_restart_okx_says_seq_id_below_prev_seq_id_once_then_chains() -> None:
    restart = IdRestart(1500)
    first = _diff(okx.parse(restart.apply(_okx(300, 305), sim_okx.STREAM_SHAPE), 0, 0))
    assert (first.prev_id, first.last_id) == (299, 1500)  # OKX's sequence reset
    later = _diff(okx.parse(restart.apply(_okx(306, 310), sim_okx.STREAM_SHAPE), 0, 0))
    assert (later.prev_id, later.last_id) == (1500, 1505)


def test_a_second_restart_links_okx_to_the_last_id_the_first_rendered() -> None:
    # OKX announces its reset by seqId < prevSeqId, prevSeqId being the last seqId sent:
    # after a second restart that is the first restart's numbering, not the true id.
    first = IdRestart(1500)
    before = _diff(okx.parse(first.apply(_okx(300, 305), sim_okx.STREAM_SHAPE), 0, 0))
    last = _diff(okx.parse(first.apply(_okx(306, 310), sim_okx.STREAM_SHAPE), 0, 0))
    assert (before.last_id, last.last_id) == (1500, 1505)
    second = IdRestart(1200, before=first)
    reset = _diff(okx.parse(second.apply(_okx(311, 315), sim_okx.STREAM_SHAPE), 0, 0))
    assert (reset.prev_id, reset.last_id) == (1505, 1200)
    later = _diff(okx.parse(second.apply(_okx(316, 320), sim_okx.STREAM_SHAPE), 0, 0))
    assert (later.prev_id, later.last_id) == (1200, 1205)


def test_a_restart_leaves_venues_without_ids_alone() -> None:
    restart = IdRestart(1000)
    assert restart.apply(_kraken(), sim_kraken.STREAM_SHAPE) is not None
    assert restart.apply(_kraken(), sim_kraken.STREAM_SHAPE) == _kraken()
    assert restart.apply(b"pong", sim_spot.STREAM_SHAPE) == b"pong"


def test_an_altered_rest_book_changes_the_best_bid_quantity_only() -> None:
    body = sim_spot.snapshot_body(104, BINANCE_BIDS, BINANCE_ASKS)
    true = binance.parse_snapshot("BTCUSDT", body, 0)
    altered = binance.parse_snapshot(
        "BTCUSDT", rewrite_body(body, sim_spot.REST_SHAPE, 0, alter=True), 0
    )
    assert isinstance(true, DepthSnapshot) and isinstance(altered, DepthSnapshot)
    assert altered.last_id == true.last_id and altered.asks == true.asks
    assert altered.bids[1:] == true.bids[1:]
    assert Decimal(altered.bids[0][1]) == Decimal(true.bids[0][1]) + 1


#: Kraken's own rendering of a deletion and of its smallest lot: JSON numbers in fixed point.
KRAKEN_TINY_BIDS: tuple[Level, ...] = (("60000.1", "0.00000001"), ("59999.9", "0.00000000"))
KRAKEN_TINY_ASKS: tuple[Level, ...] = (("60000.2", "1.25000000"), ("60000.5", "0.00000000"))


@pytest.mark.parametrize(
    "fault",
    [
        FrameFault(cross=True),
        FrameFault(oversize=3),
        FrameFault(alter=True, pick=0.6),
        FrameFault(numbers="plus", pick=0.6),
    ],
    ids=["cross", "oversize", "alter", "numbers"],
)
def test_a_rewrite_keeps_the_text_of_every_number_it_does_not_change(fault: FrameFault) -> None:
    # Kraken refuses a JSON number in exponent form; a rewritten frame must carry only the
    # fault, not a deletion re-rendered as 0E-8.
    frame = sim_kraken.book_frame("update", "BTC/USD", KRAKEN_TINY_BIDS, KRAKEN_TINY_ASKS, 0, "t")
    out = rewrite_frame(frame, sim_kraken.STREAM_SHAPE, fault)
    assert b"E-" not in out and b"e-" not in out, out
    assert out.count(b'"qty":0.00000000') >= 1 and b'"qty":0.00000001' in out, out
