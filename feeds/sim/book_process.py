"""A seeded synthetic L2 book process for one symbol, as a Binance spot venue would run it.

Pure: no I/O, no clock, no asyncio. Given ``(symbol, seed)`` and the same parameters, the
sequence of batches, trades and snapshots is identical on every run and platform (the RNG
is :class:`random.Random` seeded with a string, which does not depend on ``PYTHONHASHSEED``).

Model. Prices are held as integer ticks and quantities as integer units of 1e-8, so there is
no float rounding anywhere; the venue's strings are produced only at the edge, with 8
decimals as Binance prints them (``"61837.63000000"``). Each :meth:`BookProcess.step` is one
100 ms interval: a Poisson number of *actions*, each consuming exactly one venue update id:

- add / modify: a bid or ask near the touch (distance from the touch roughly exponential),
  or strictly inside the spread when the spread is wider than one tick, so the mid drifts;
- cancel: a level near the touch shrinks or disappears;
- trade: a market order eats the opposite touch, up to three levels, one trade per level.

After every action each side is kept between ``min_levels_per_side`` and
``max_levels_per_side`` levels: far levels are added when a side runs thin and the farthest
levels are removed (emitted as ``"0.00000000"``) when it grows past the cap, so memory is
bounded. Bids are only ever placed below the best ask and asks above the best bid, so the
book is never crossed.

A step returns the *net* level changes of its actions as one :class:`Batch` covering ids
``first_id..last_id`` with ``first_id == previous last_id + 1`` (Binance ``U``/``u``), or
None when no action happened (the venue then sends no diff for that interval).
"""

from __future__ import annotations

import math
import random
from decimal import Decimal
from decimal import InvalidOperation
from typing import Final

import msgspec
from sortedcontainers import SortedDict

from gateway.core.book import L2Book
from gateway.core.model import Level

#: Binance prints prices and quantities with 8 decimals.
E8: Final = 100_000_000
ZERO_QTY: Final = "0.00000000"

#: Largest number of levels one market order may sweep.
_MAX_SWEEP: Final = 3


def format_e8(value_e8: int) -> str:
    """``value_e8`` (units of 1e-8, non-negative) as the venue's 8-decimal string."""
    if value_e8 < 0:
        raise ValueError(f"negative value {value_e8}")
    whole, frac = divmod(value_e8, E8)
    return f"{whole}.{frac:08d}"


def parse_e8(text: str) -> int:
    """A decimal string with at most 8 decimals as an integer count of 1e-8 units."""
    try:
        value = Decimal(text) * E8
    except InvalidOperation:
        raise ValueError(f"not a decimal: {text!r}") from None
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} has more than 8 decimals")
    return int(value)


class SimTrade(msgspec.Struct, frozen=True, gc=False):
    """One trade: ``trade_id`` increases by one per trade of the symbol.

    ``buyer_is_maker`` is Binance ``m``: true when the aggressor sold.
    """

    trade_id: int
    price: str
    qty: str
    buyer_is_maker: bool


class RangeChange(msgspec.Struct, frozen=True, gc=False):
    """The net book change of venue update ids ``first_id..last_id`` (``U..u``).

    Levels are absolute ``(price, qty)`` strings, bids best (highest) first, asks best
    (lowest) first; a ``"0.00000000"`` quantity removes the level.
    """

    symbol: str
    first_id: int
    last_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


class Batch(RangeChange, frozen=True, gc=False):
    """The net change of one interval. ``trades`` are the trades of the interval in the
    order they happened, all before the book change they cause."""

    trades: tuple[SimTrade, ...]


class BookProcess:
    """The seeded book of one symbol; see the module docstring for the model.

    Args:
        symbol: venue symbol, e.g. ``"BTCUSDT"`` (kept as given, upper-cased).
        seed: RNG seed; with the same symbol and parameters the output is identical.
        mid: initial mid price.
        tick: price tick as a decimal string with at most 8 decimals.
        lot: quantity step as a decimal string with at most 8 decimals.
        levels_per_side: initial levels per side.
        min_levels_per_side: a thinner side is refilled with far levels.
        max_levels_per_side: the farthest levels beyond this cap are removed.
        actions_per_step: Poisson mean of actions (update ids) per step.
        trade_prob: probability that an action is a market order.
        cancel_prob: probability that an action is a cancel.
        max_qty: the largest quantity one add places, as a decimal string.
    """

    __slots__ = (
        "_actions_per_step",
        "_ask_changes",
        "_asks",
        "_bid_changes",
        "_bids",
        "_book",
        "_cancel_prob",
        "_last_id",
        "_last_trade_id",
        "_lot_e8",
        "_max_levels",
        "_max_lots",
        "_min_levels",
        "_rng",
        "_tick_e8",
        "_trade_prob",
        "symbol",
    )

    def __init__(
        self,
        symbol: str,
        seed: int,
        mid: float = 60_000.0,
        tick: str = "0.01",
        *,
        lot: str = "0.00001",
        levels_per_side: int = 100,
        min_levels_per_side: int = 20,
        max_levels_per_side: int = 250,
        actions_per_step: float = 8.0,
        trade_prob: float = 0.08,
        cancel_prob: float = 0.35,
        max_qty: str = "2",
    ) -> None:
        if not 1 <= min_levels_per_side <= levels_per_side <= max_levels_per_side:
            raise ValueError("need 1 <= min_levels_per_side <= levels_per_side <= max_levels")
        if actions_per_step <= 0.0 or not 0.0 <= trade_prob + cancel_prob <= 1.0:
            raise ValueError("actions_per_step must be > 0 and trade_prob + cancel_prob <= 1")
        self.symbol = symbol.upper()
        self._tick_e8 = parse_e8(tick)
        self._lot_e8 = parse_e8(lot)
        if self._tick_e8 <= 0 or self._lot_e8 <= 0:
            raise ValueError("tick and lot must be positive")
        self._max_lots = max(1, parse_e8(max_qty) // self._lot_e8)
        self._min_levels = min_levels_per_side
        self._max_levels = max_levels_per_side
        self._actions_per_step = actions_per_step
        self._trade_prob = trade_prob
        self._cancel_prob = cancel_prob
        self._rng = random.Random(f"binance-spot:{self.symbol}:{seed}")
        # Sides: integer ticks -> quantity in 1e-8 units, ascending; the best bid is last.
        self._bids: SortedDict = SortedDict()
        self._asks: SortedDict = SortedDict()
        self._bid_changes: dict[int, int] = {}
        self._ask_changes: dict[int, int] = {}
        # Ids in the range of today's BTCUSDT and past 2**32, so readers need 64-bit ints.
        self._last_id = self._rng.randrange(5_000_000_000, 9_000_000_000)
        self._last_trade_id = self._rng.randrange(3_000_000_000, 4_000_000_000)
        self._book = L2Book()
        self._seed_book(mid, levels_per_side)

    # --- public reading -------------------------------------------------------------------

    @property
    def last_id(self) -> int:
        """The venue update id the current book reflects (REST ``lastUpdateId``)."""
        return self._last_id

    @property
    def last_trade_id(self) -> int:
        """The id of the latest trade (the initial value when none happened yet)."""
        return self._last_trade_id

    @property
    def book(self) -> L2Book:
        """The true book as of :attr:`last_id`. Read only: callers must not mutate it."""
        return self._book

    def snapshot(self, limit: int = 100) -> tuple[int, list[Level], list[Level]]:
        """``(last_id, bids, asks)``: the top ``limit`` levels per side, best first."""
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        return self._last_id, self._book.bids(limit), self._book.asks(limit)

    # --- the process ----------------------------------------------------------------------

    def step(self) -> Batch | None:
        """Run one interval; its net change as a Batch, or None when nothing happened."""
        n_actions = self._poisson(self._actions_per_step)
        if n_actions == 0:
            return None
        self._bid_changes = {}
        self._ask_changes = {}
        trades: list[SimTrade] = []
        for _ in range(n_actions):
            self._act(trades)
        first_id = self._last_id + 1
        self._last_id += n_actions
        bids = tuple(
            (self._price(p), format_e8(q))
            for p, q in sorted(self._bid_changes.items(), reverse=True)
        )
        asks = tuple((self._price(p), format_e8(q)) for p, q in sorted(self._ask_changes.items()))
        self._book.apply(bids, asks)
        return Batch(
            symbol=self.symbol,
            first_id=first_id,
            last_id=self._last_id,
            bids=bids,
            asks=asks,
            trades=tuple(trades),
        )

    # --- internals ------------------------------------------------------------------------

    def _seed_book(self, mid: float, levels: int) -> None:
        mid_ticks = int(Decimal(repr(mid)) * E8) // self._tick_e8
        if mid_ticks < 2 * levels:
            raise ValueError(f"mid {mid} is too close to zero for {levels} levels of tick")
        bid = mid_ticks
        ask = mid_ticks + 1 + (1 if self._rng.random() < 0.2 else 0)
        for _ in range(levels):
            self._bids[bid] = self._random_qty()
            self._asks[ask] = self._random_qty()
            bid -= 1 + self._gap()
            ask += 1 + self._gap()
            if bid < 1:
                break
        self._book.load(
            [(self._price(p), format_e8(q)) for p, q in self._bids.items()],
            [(self._price(p), format_e8(q)) for p, q in self._asks.items()],
        )

    def _act(self, trades: list[SimTrade]) -> None:
        """One action; it always changes at least one level, so its id is never empty."""
        r = self._rng.random()
        is_bid = self._rng.random() < 0.5
        if r < self._trade_prob:
            changed = self._trade(is_bid, trades)
        elif r < self._trade_prob + self._cancel_prob:
            changed = self._cancel(is_bid)
        else:
            changed = False
        if not changed:
            self._add(is_bid)
        self._keep_bounds(True)
        self._keep_bounds(False)

    def _trade(self, buy: bool, trades: list[SimTrade]) -> bool:
        """A market order: a buy eats asks from the best up, a sell eats bids down."""
        remaining = max(self._lot_e8, self._random_qty() // 2 // self._lot_e8 * self._lot_e8)
        side = self._asks if buy else self._bids
        changed = False
        for _ in range(_MAX_SWEEP):
            if len(side) <= 1:
                break  # never empty a side
            price: int = side.keys()[0] if buy else side.keys()[-1]
            available = side[price]
            take = min(remaining, available)
            self._last_trade_id += 1
            trades.append(
                SimTrade(
                    trade_id=self._last_trade_id,
                    price=self._price(price),
                    qty=format_e8(take),
                    buyer_is_maker=not buy,
                )
            )
            self._set(not buy, price, available - take)
            changed = True
            remaining -= take
            if remaining == 0:
                break
        return changed

    def _cancel(self, is_bid: bool) -> bool:
        side = self._bids if is_bid else self._asks
        prices = self._near_touch(is_bid, 12)
        index = min(int(self._rng.expovariate(1 / 4)), len(prices) - 1)
        price = prices[index]
        qty = side[price]
        if len(side) > self._min_levels and (self._rng.random() < 0.5 or qty <= self._lot_e8):
            self._set(is_bid, price, 0)
            return True
        if qty > self._lot_e8:
            keep = self._rng.randint(1, qty // self._lot_e8 - 1)
            self._set(is_bid, price, keep * self._lot_e8)
            return True
        return False

    def _add(self, is_bid: bool) -> None:
        best_bid: int = self._bids.keys()[-1]
        best_ask: int = self._asks.keys()[0]
        spread = best_ask - best_bid
        inside_prob = 0.0 if spread <= 1 else min(0.8, 0.25 * (spread - 1))
        if self._rng.random() < inside_prob:
            price = self._rng.randint(best_bid + 1, best_ask - 1)
        else:
            distance = int(self._rng.expovariate(1 / 6))
            price = best_bid - distance if is_bid else best_ask + distance
            if price < 1:
                price = best_bid if is_bid else best_ask
        side = self._bids if is_bid else self._asks
        existing = side.get(price, 0)
        qty = self._random_qty()
        if existing and self._rng.random() < 0.5:
            qty += existing
        self._set(is_bid, price, qty)

    def _keep_bounds(self, is_bid: bool) -> None:
        side = self._bids if is_bid else self._asks
        while len(side) < self._min_levels:
            if is_bid:
                price = side.keys()[0] - 1 - self._gap()
                if price < 1:
                    break
            else:
                price = side.keys()[-1] + 1 + self._gap()
            self._set(is_bid, price, self._random_qty())
        excess = len(side) - self._max_levels
        if excess > 0:
            far: list[int] = list(side.keys()[:excess] if is_bid else side.keys()[-excess:])
            for price in far:
                self._set(is_bid, price, 0)

    def _near_touch(self, is_bid: bool, count: int) -> list[int]:
        """Up to ``count`` prices of a side, best first."""
        keys = (self._bids if is_bid else self._asks).keys()
        return list(reversed(keys[-count:])) if is_bid else list(keys[:count])

    def _set(self, is_bid: bool, price: int, qty_e8: int) -> None:
        side = self._bids if is_bid else self._asks
        if qty_e8 > 0:
            side[price] = qty_e8
        else:
            side.pop(price, None)
        (self._bid_changes if is_bid else self._ask_changes)[price] = qty_e8

    def _price(self, ticks: int) -> str:
        return format_e8(ticks * self._tick_e8)

    def _random_qty(self) -> int:
        """Log-uniform between one lot and ``max_qty``: many small orders, a few big ones."""
        lots = int(math.exp(self._rng.uniform(0.0, math.log(self._max_lots))))
        return max(1, min(lots, self._max_lots)) * self._lot_e8

    def _gap(self) -> int:
        """Extra empty ticks between neighbouring far levels."""
        return int(self._rng.expovariate(1 / 1.5))

    def _poisson(self, mean: float) -> int:
        # Knuth's method: fine for the small means used here.
        limit = math.exp(-mean)
        k = 0
        p = self._rng.random()
        while p > limit:
            k += 1
            p *= self._rng.random()
        return k
