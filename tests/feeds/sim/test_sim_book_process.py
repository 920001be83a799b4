"""The seeded book process: determinism, id contiguity, uncrossed and bounded books."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from feeds.sim.book_process import ZERO_QTY
from feeds.sim.book_process import Batch
from feeds.sim.book_process import BookProcess
from feeds.sim.book_process import format_e8
from feeds.sim.book_process import parse_e8
from gateway.core.book import L2Book

DECIMAL_8 = re.compile(r"^\d+\.\d{8}$")


def run_steps(process: BookProcess, steps: int) -> list[Batch]:
    return [batch for _ in range(steps) if (batch := process.step()) is not None]


def test_same_seed_same_output_and_other_seed_differs() -> None:
    a = BookProcess("BTCUSDT", seed=7)
    b = BookProcess("BTCUSDT", seed=7)
    assert a.snapshot(5000) == b.snapshot(5000)
    assert run_steps(a, 300) == run_steps(b, 300)
    assert a.snapshot(5000) == b.snapshot(5000)
    other = BookProcess("BTCUSDT", seed=8)
    assert other.snapshot(5000) != BookProcess("BTCUSDT", seed=7).snapshot(5000)
    assert BookProcess("ETHUSDT", seed=7, mid=3000.0).last_id != a.last_id


def test_determinism_does_not_depend_on_hash_seed() -> None:
    code = (
        "from feeds.sim.book_process import BookProcess;"
        "p = BookProcess('BTCUSDT', 3);"
        "[p.step() for _ in range(50)];"
        "print(p.last_id, p.last_trade_id, p.snapshot(3))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": hash_seed},
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_initial_book_is_realistic() -> None:
    process = BookProcess("BTCUSDT", seed=1, mid=61837.63, levels_per_side=150)
    last_id, bids, asks = process.snapshot(5000)
    assert last_id == process.last_id > 2**32
    assert len(bids) == len(asks) == 150
    assert float(bids[0][0]) < float(asks[0][0])
    assert abs(float(bids[0][0]) - 61837.63) < 0.05
    assert [float(p) for p, _ in bids] == sorted((float(p) for p, _ in bids), reverse=True)
    assert [float(p) for p, _ in asks] == sorted(float(p) for p, _ in asks)
    for price, qty in bids + asks:
        assert DECIMAL_8.match(price) and DECIMAL_8.match(qty)
        assert parse_e8(price) % parse_e8("0.01") == 0
        assert parse_e8(qty) > 0
    top_ids, top_bids, top_asks = process.snapshot(10)
    assert (top_ids, top_bids, top_asks) == (last_id, bids[:10], asks[:10])


def test_batches_replay_to_the_true_book() -> None:
    """Contiguous ids; every batch changes something; trades hit the opposite side; the
    initial snapshot plus every batch is the true book; never crossed; bounded."""
    process = BookProcess("BTCUSDT", seed=11, max_levels_per_side=150)
    last_id, bids, asks = process.snapshot(5000)
    replica = L2Book()
    replica.load(bids, asks)
    last_trade_id = process.last_trade_id
    n_trades = 0
    for _ in range(3000):
        batch = process.step()
        if batch is None:
            continue
        assert batch.first_id == last_id + 1
        assert batch.last_id >= batch.first_id
        assert batch.bids or batch.asks
        assert list(batch.bids) == sorted(batch.bids, key=lambda lv: -float(lv[0]))
        assert list(batch.asks) == sorted(batch.asks, key=lambda lv: float(lv[0]))
        for trade in batch.trades:
            n_trades += 1
            assert trade.trade_id == last_trade_id + 1
            last_trade_id = trade.trade_id
            # A market order eats levels resting before the step or placed during it.
            resting = replica.bids() if trade.buyer_is_maker else replica.asks()
            placed = batch.bids if trade.buyer_is_maker else batch.asks
            assert trade.price in {price for price, _ in resting + list(placed)}
            assert float(trade.qty) > 0.0
        for price, qty in batch.bids + batch.asks:
            assert DECIMAL_8.match(price) and DECIMAL_8.match(qty)
        replica.apply(batch.bids, batch.asks)
        last_id = batch.last_id
        book = process.book
        assert not book.is_crossed()
        assert 20 <= book.bid_count <= 150 and 20 <= book.ask_count <= 150
    assert process.last_id == last_id
    assert process.last_trade_id == last_trade_id
    assert n_trades > 100
    assert replica.normalized() == process.book.normalized()


def test_far_levels_are_pruned_with_zero_quantities() -> None:
    process = BookProcess("BTCUSDT", seed=5, levels_per_side=40, max_levels_per_side=40)
    removals = [
        level
        for batch in run_steps(process, 500)
        for level in batch.bids + batch.asks
        if level[1] == ZERO_QTY
    ]
    assert removals
    assert process.book.bid_count <= 40 and process.book.ask_count <= 40


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**31),
    actions=st.floats(min_value=0.5, max_value=40.0),
    trade_prob=st.floats(min_value=0.0, max_value=0.5),
    max_levels=st.integers(min_value=20, max_value=120),
)
def test_invariants_hold_for_any_parameters(
    seed: int, actions: float, trade_prob: float, max_levels: int
) -> None:
    process = BookProcess(
        "XYZUSDT",
        seed,
        mid=25.0,
        tick="0.001",
        levels_per_side=20,
        min_levels_per_side=5,
        max_levels_per_side=max_levels,
        actions_per_step=actions,
        trade_prob=trade_prob,
    )
    last_id = process.last_id
    for batch in run_steps(process, 150):
        assert batch.first_id == last_id + 1
        last_id = batch.last_id
        assert not process.book.is_crossed()
        assert 1 <= process.book.bid_count <= max_levels
        assert 1 <= process.book.ask_count <= max_levels


def test_e8_helpers_and_bad_parameters() -> None:
    assert format_e8(6183763000000) == "61837.63000000"
    assert format_e8(0) == ZERO_QTY
    assert parse_e8("61837.63") == 6183763000000
    with pytest.raises(ValueError):
        parse_e8("0.000000001")
    with pytest.raises(ValueError):
        parse_e8("abc")
    with pytest.raises(ValueError):
        BookProcess("BTCUSDT", 1, levels_per_side=10, max_levels_per_side=5)
    with pytest.raises(ValueError):
        BookProcess("BTCUSDT", 1, tick="0")
    with pytest.raises(ValueError):
        BookProcess("BTCUSDT", 1, mid=0.5)


def test_pure_modules_import_no_io() -> None:
    code = (
        "import sys, feeds.sim.book_process, feeds.sim.binance_spot;"
        "print(sorted(m for m in ('asyncio', 'websockets', 'socket') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
