"""TradeDedup against its reference model (a set and a queue of the last ``capacity`` ids
taken), for any interleaving of connections, and the memory it keeps per symbol."""

from __future__ import annotations

import random
import tracemalloc
from collections import deque
from collections.abc import Callable
from collections.abc import Iterator

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from gateway.core.arbiter import TradeDedup
from gateway.core.model import Side
from gateway.core.model import Trade
from gateway.core.model import TradeOut

CAPACITY = 4096


def trade(trade_id: int, conn_id: int = 0) -> Trade:
    return Trade("binance", "BTCUSDT", trade_id, "1", "1", Side.BUY, 0, 0, conn_id)


class Reference:
    """The contract stated plainly: the ids of the last ``capacity`` trades taken."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.seen: set[int] = set()
        self.order: deque[int] = deque()
        self.accepted = 0

    def take(self, trade_id: int) -> bool:
        if trade_id in self.seen:
            return False
        self.seen.add(trade_id)
        self.order.append(trade_id)
        if len(self.order) > self.capacity:
            self.seen.discard(self.order.popleft())
        self.accepted += 1
        return True


def assert_matches_reference(capacity: int, arrivals: list[tuple[int, int]]) -> None:
    dedup, reference = TradeDedup(capacity), Reference(capacity)
    for n, (trade_id, conn_id) in enumerate(arrivals):
        taken = reference.take(trade_id)
        out = dedup.on_trade(trade(trade_id, conn_id))
        assert out == ([TradeOut(trade(trade_id, conn_id))] if taken else []), (n, trade_id)
    assert dedup.accepted == reference.accepted
    assert dedup.duplicates == len(arrivals) - reference.accepted
    assert dedup.remembered() == len(reference.seen)


#: A step of a venue's ids: the next id, a few ids on (trades no connection carries, or
#: sparse ids), or far ahead.
steps = st.one_of(st.just(1), st.integers(1, 30), st.integers(1, 2**40))


@st.composite
def interleaved(draw: st.DrawFn) -> list[tuple[int, int]]:
    """Increasing venue ids carried by 1-4 connections, each missing some and lagging by
    any amount: the connections' copies merged in any order, each connection's in its
    own order."""
    start = draw(st.integers(-(2**63), 2**63 - 1))
    ids: list[int] = []
    for step in draw(st.lists(steps, min_size=1, max_size=120)):
        start += step
        ids.append(start)
    streams = [
        [i for i in ids if draw(st.booleans()) or draw(st.booleans())]
        for _ in range(draw(st.integers(1, 4)))
    ]
    positions = [0] * len(streams)
    arrivals: list[tuple[int, int]] = []
    for pick in draw(st.lists(st.integers(0, len(streams) - 1), max_size=600)):
        if positions[pick] < len(streams[pick]):
            arrivals.append((streams[pick][positions[pick]], pick))
            positions[pick] += 1
    return arrivals


#: Ids in no order: repeats (small ranges), UUIDs folded to 63 bits, and ids outside
#: int64 (the core takes any int).
unordered = st.lists(
    st.tuples(
        st.one_of(
            st.integers(0, 12),
            st.integers(-5, 5),
            st.integers(0, 2**63 - 1),
            st.sampled_from([-(2**63), -(2**63) + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**70]),
        ),
        st.integers(0, 3),
    ),
    max_size=400,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 9), interleaved())
def test_increasing_ids_from_any_interleaving_of_connections_match_the_reference(
    capacity: int, arrivals: list[tuple[int, int]]
) -> None:
    assert_matches_reference(capacity, arrivals)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 9), unordered)
def test_ids_in_no_order_match_the_reference(
    capacity: int, arrivals: list[tuple[int, int]]
) -> None:
    assert_matches_reference(capacity, arrivals)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 9), interleaved(), unordered)
def test_increasing_ids_mixed_with_ids_in_no_order_match_the_reference(
    capacity: int, ordered: list[tuple[int, int]], others: list[tuple[int, int]]
) -> None:
    cut = len(ordered) // 2
    assert_matches_reference(capacity, ordered[:cut] + others + ordered[cut:])


def test_a_late_copy_is_a_duplicate_until_capacity_newer_trades_were_taken() -> None:
    dedup = TradeDedup(capacity=3)
    assert dedup.on_trade(trade(10, 0))
    assert dedup.on_trade(trade(12, 0))
    assert dedup.on_trade(trade(11, 1))  # a late first copy: the other connection lost it
    assert dedup.on_trade(trade(11, 0)) == [] and dedup.on_trade(trade(10, 1)) == []
    assert dedup.on_trade(trade(13, 0))  # 10 is now forgotten, 11 is not
    assert dedup.on_trade(trade(11, 2)) == []
    assert dedup.on_trade(trade(10, 2)) == [TradeOut(trade(10, 2))]
    assert (dedup.accepted, dedup.duplicates) == (5, 3)


def kept_bytes(make_ids: Callable[[], Iterator[int]], copies: int) -> int:
    """Bytes a dedup keeps once ``3 * CAPACITY`` trades went through it, each trade sent
    ``copies`` times, as tracemalloc measures them: its trades are made and dropped while
    tracing, so the ids it keeps alive count."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        dedup = TradeDedup(CAPACITY)
        ids = make_ids()
        for _ in range(3 * CAPACITY):
            trade_id = next(ids)
            for conn_id in range(copies):
                dedup.on_trade(trade(trade_id, conn_id))
        del ids
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        if not tracing:
            tracemalloc.stop()
    assert dedup.accepted == 3 * CAPACITY and dedup.remembered() == CAPACITY
    assert dedup.duplicates == (copies - 1) * 3 * CAPACITY
    return kept


def dense_ids() -> Iterator[int]:
    """Binance ``t``, OKX ``tradeId``, Kraken and Coinbase ``trade_id``: one id a trade."""
    trade_id = 3_400_000_000
    while True:
        trade_id += 1
        yield trade_id


def sparse_ids() -> Iterator[int]:
    """Bybit spot ``i``: increasing with gaps (1-22 apart in the recorded session)."""
    rng, trade_id = random.Random(7), 2_280_000_001_739_247_417
    while True:
        trade_id += rng.randint(1, 22)
        yield trade_id


def folded_uuids() -> Iterator[int]:
    """Bybit linear: UUIDs folded to 63 bits, in no order."""
    rng = random.Random(7)
    while True:
        yield rng.getrandbits(63)


def test_increasing_ids_take_a_few_bytes_an_id_at_capacity() -> None:
    """The ring of 8-byte ids and a flag byte: about 36 KiB a symbol, whatever the gaps
    between ids and however many connections carry them."""
    for make_ids in (dense_ids, sparse_ids):
        kept = kept_bytes(make_ids, copies=3)
        assert 9 * CAPACITY <= kept <= 11 * CAPACITY, (make_ids.__name__, kept)


def test_ids_in_no_order_take_a_set_at_capacity() -> None:
    """Ids in no order are remembered in a set and its queue besides the ring: the ring's
    36 KiB plus the set sized for its churn (512 KiB) and the ids it keeps alive."""
    kept = kept_bytes(folded_uuids, copies=2)
    assert 60 * CAPACITY <= kept <= 200 * CAPACITY, kept
