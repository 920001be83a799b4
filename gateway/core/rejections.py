"""Which configured symbols a venue's error names. Pure: no I/O.

A venue that does not know a symbol says so in an error reply to the subscribe request
(Coinbase ``unknown product_ids ['DOGE-USD']``, Bybit ``Invalid topic:
orderbook.50.DOGEUSDT``) or in the reason it closes the connection with (Binance ``Invalid
stream name (unknown symbol): dogeusdt@depth@100ms``). The symbol is read from the text as
a whole token (letters, digits, ``-``, ``_``, ``/``), compared without case, so that
``BTC-USD`` never matches inside ``BTC-USDT``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final

_TOKEN_SPLIT: Final = re.compile(r"[^A-Za-z0-9/_-]+")


def named_symbols(detail: str, symbols: Collection[str]) -> list[str]:
    """The symbols of ``symbols`` that ``detail`` names as a token, in ``symbols``' order."""
    tokens = {token.upper() for token in _TOKEN_SPLIT.split(detail) if token}
    return [symbol for symbol in symbols if symbol.upper() in tokens]
