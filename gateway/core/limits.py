"""A venue's limits and the connection plan that keeps within them. Pure.

:class:`VenueLimits` is what a venue allows one source address (connection attempts per
window, REST weight per window) and one connection (client messages per second, streams).
:func:`plan_connections` shards a venue's symbols over connection groups so that no
connection carries more streams than the venue allows, and opens every group on each
redundant slot (endpoint x ``connections_per_endpoint``):

* every connection carries at most ``max_streams`` streams (a symbol costs
  ``streams_of(symbol)``);
* every symbol is carried by exactly ``redundancy`` connections, one per slot, so by
  ``redundancy`` distinct connections;
* the groups' symbol counts differ by at most one, and there are as few groups as the limit
  allows: ``ceil(len(symbols) / per_connection)``.

The plan lists the first slot's connections of every group first: a budget that admits
only some connections at once brings every symbol up before any symbol's copies.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class VenueLimits:
    """What a venue allows, as the gateway budgets it (docs/architecture.md, "Venue limits").

    ``group`` names the budget the venue shares with others counted together by the venue
    (Bybit's spot and linear count connections per WebSocket domain): budgets are kept per
    ``(group, source address)``.
    """

    group: str
    #: Connection attempts per ``connect_window_s`` per source address.
    connect_attempts_per_window: int
    connect_window_s: float
    #: Client messages per second per connection.
    messages_per_s: float
    #: Streams (the venue's unit: streams, channels, argument characters) per connection;
    #: None: the venue documents no limit (one group carries every symbol).
    max_streams_per_connection: int | None
    #: REST request weight per ``rest_window_s`` per source address.
    rest_weight_per_window: int
    rest_window_s: float = 60.0
    #: Client messages per second per source address, every connection together, where
    #: the venue counts them so (Coinbase); None: per connection only.
    messages_per_s_per_address: float | None = None
    #: Subscribe and unsubscribe requests per hour per connection (OKX); None: unlimited.
    subscribe_requests_per_hour: int | None = None


@dataclass(frozen=True)
class PlannedConnection:
    """One connection of a plan: which symbols it carries, where."""

    endpoint: str
    #: The redundant slot (0 .. redundancy - 1): an endpoint and its n-th connection.
    slot: int
    #: The shard of symbols (0 .. groups - 1).
    group: int
    symbols: tuple[str, ...]


def symbols_per_connection(
    symbols: Sequence[str], max_streams: int | None, streams_of: Callable[[str], int]
) -> int:
    """How many symbols one connection carries: as many of the costliest as fit in
    ``max_streams`` (every symbol when there is no limit). Raises ValueError when one
    symbol alone exceeds the limit."""
    if not symbols:
        return 1
    if max_streams is None:
        return len(symbols)
    costliest = max(streams_of(symbol) for symbol in symbols)
    if costliest > max_streams:
        raise ValueError(f"one symbol needs {costliest} streams, over the limit {max_streams}")
    return max(1, max_streams // max(1, costliest))


def shard(symbols: Sequence[str], per_connection: int) -> list[tuple[str, ...]]:
    """``symbols`` in as few contiguous groups of at most ``per_connection`` as possible,
    their sizes differing by at most one."""
    if per_connection < 1:
        raise ValueError("per_connection >= 1")
    if not symbols:
        return []
    groups = -(-len(symbols) // per_connection)
    size, extra = divmod(len(symbols), groups)
    out: list[tuple[str, ...]] = []
    start = 0
    for index in range(groups):
        end = start + size + (1 if index < extra else 0)
        out.append(tuple(symbols[start:end]))
        start = end
    return out


def plan_connections(
    symbols: Sequence[str],
    endpoints: Sequence[str],
    *,
    connections_per_endpoint: int = 1,
    max_streams: int | None,
    streams_of: Callable[[str], int],
) -> list[PlannedConnection]:
    """The connections of one venue: see the module docstring. Redundancy is
    ``len(endpoints) * connections_per_endpoint``."""
    if connections_per_endpoint < 1:
        raise ValueError("connections_per_endpoint >= 1")
    groups = shard(symbols, symbols_per_connection(symbols, max_streams, streams_of))
    slots = [e for e in endpoints for _ in range(connections_per_endpoint)]
    return [
        PlannedConnection(endpoint, slot, group, group_symbols)
        for slot, endpoint in enumerate(slots)
        for group, group_symbols in enumerate(groups)
    ]
