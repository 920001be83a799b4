"""The connection plan: within each venue's stream limit, every symbol on ``redundancy``
distinct connections, balanced."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.limits import plan_connections
from gateway.core.limits import shard
from gateway.core.limits import symbols_per_connection
from gateway.wire.venues import ADAPTERS

symbol_lists = st.lists(
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=12),
    min_size=1,
    max_size=300,
    unique=True,
)


def _cost(symbol: str) -> int:
    return 1 + len(symbol) % 3


@given(
    symbols=symbol_lists,
    endpoints=st.integers(1, 4),
    per_endpoint=st.integers(1, 3),
    max_streams=st.integers(3, 2000) | st.none(),
)
def test_plan_keeps_within_the_limit_redundant_and_balanced(
    symbols: list[str], endpoints: int, per_endpoint: int, max_streams: int | None
) -> None:
    urls = [f"wss://e{i}.example" for i in range(endpoints)]
    plan = plan_connections(
        symbols,
        urls,
        connections_per_endpoint=per_endpoint,
        max_streams=max_streams,
        streams_of=_cost,
    )
    redundancy = endpoints * per_endpoint
    # No connection over the limit.
    if max_streams is not None:
        assert all(sum(_cost(s) for s in c.symbols) <= max_streams for c in plan)
    # Every symbol on `redundancy` distinct connections, one per slot.
    carriers: dict[str, set[int]] = {}
    for index, connection in enumerate(plan):
        for symbol in connection.symbols:
            carriers.setdefault(symbol, set()).add(index)
    assert set(carriers) == set(symbols)
    for symbol in symbols:
        assert len(carriers[symbol]) == redundancy
        assert {plan[i].slot for i in carriers[symbol]} == set(range(redundancy))
    # Balanced: group sizes differ by at most one; as few groups as the limit allows.
    sizes = {c.group: len(c.symbols) for c in plan}
    assert max(sizes.values()) - min(sizes.values()) <= 1
    per = symbols_per_connection(symbols, max_streams, _cost)
    assert len(sizes) == -(-len(symbols) // per)
    assert len(plan) == len(sizes) * redundancy
    # Each slot's connections go to one endpoint, and the slots cover every endpoint.
    assert Counter(c.endpoint for c in plan) == {url: len(sizes) * per_endpoint for url in urls}
    # The first slot's connections come first and cover every symbol.
    first = plan[: len(sizes)]
    assert {s for c in first for s in c.symbols} == set(symbols)


def test_two_hundred_binance_usdm_symbols_and_three_endpoints() -> None:
    adapter = ADAPTERS["binance-usdm"]
    symbols = [f"S{i}USDT" for i in range(401)]
    plan = plan_connections(
        symbols,
        ["wss://a", "wss://b", "wss://c"],
        max_streams=adapter.limits.max_streams_per_connection,
        streams_of=adapter.streams_per_symbol,
    )
    # 401 streams at 200 per connection: 3 groups, times 3 endpoints.
    assert len(plan) == 9
    assert sorted(len(c.symbols) for c in plan[:3]) == [133, 134, 134]


def test_bybit_shards_by_argument_characters() -> None:
    adapter = ADAPTERS["bybit-spot"]
    symbols = [f"COIN{i:04d}USDT" for i in range(1000)]
    limits = adapter.limits
    assert limits.max_streams_per_connection is not None
    plan = plan_connections(
        symbols,
        ["wss://a"],
        max_streams=limits.max_streams_per_connection,
        streams_of=adapter.streams_per_symbol,
    )
    assert len(plan) > 1
    for connection in plan:
        chars = sum(adapter.streams_per_symbol(s) for s in connection.symbols)
        assert chars <= limits.max_streams_per_connection
        # The venue's own message builder accepts the shard.
        assert adapter.subscribe_messages(list(connection.symbols))


def test_a_symbol_over_the_limit_alone_is_refused() -> None:
    with pytest.raises(ValueError, match="over the limit"):
        symbols_per_connection(["A"], 1, lambda symbol: 2)


def test_shard_refuses_an_empty_capacity() -> None:
    with pytest.raises(ValueError):
        shard(["A"], 0)
    assert shard([], 5) == []
