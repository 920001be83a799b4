"""Binance COIN-M futures, simulated: USD-M's simulated venue (:mod:`feeds.sim.binance_usdm`:
ids not contiguous, ``pu`` chain, engine half an interval ahead of the stream, the
``/public`` and ``/market`` paths, 200 streams and 10 messages per second per connection)
with COIN-M's names, for :class:`~feeds.sim.simulators.SimBinanceCoinm`.

Pure: no I/O, no clock, no asyncio. What differs from USD-M, and :mod:`feeds.binance_coinm`
parses back:

- Symbols are contracts (``BTCUSD_PERP``, ``BTCUSD_261225``); ``depthUpdate`` carries the
  contract's pair as ``ps`` after ``s``.
- REST ``GET /dapi/v1/depth?symbol=X&limit=N`` (the limits and weights of
  ``/fapi/v1/depth``), body ``{"lastUpdateId","symbol","pair","E","T","bids","asks"}``.
"""

from __future__ import annotations

from collections.abc import Mapping

from feeds import binance_coinm as coinm
from feeds.sim.binance_usdm import BinanceUsdmProtocol
from feeds.sim.book_process import BookProcess

__all__ = ["BinanceCoinmProtocol"]


class BinanceCoinmProtocol(BinanceUsdmProtocol):
    """Binance COIN-M futures streams and REST depth; see the module docstring.

    Args: as :class:`~feeds.sim.binance_usdm.BinanceUsdmProtocol`'s. Every symbol must be a
    COIN-M contract (:func:`feeds.binance_coinm.pair_of`).
    """

    name = "binance-coinm"
    rest_path = coinm.SNAPSHOT_PATH

    def attach(self, procs: Mapping[str, BookProcess]) -> None:
        self._pairs = {symbol: coinm.pair_of(symbol) for symbol in procs}
        super().attach(procs)

    def pair_of(self, symbol: str) -> str | None:
        return self._pairs[symbol]
