"""What every venue adapter shares: decoding with the contract error, the venues' number
grammars and level checks, notices, trade sides, REST snapshots, the book events of
unsequenced venues, the connect URL of venues that subscribe by message.

Pure: takes input, returns output; no I/O. Every function raises
:class:`gateway.core.model.VenueContractError` for input that breaks a venue's contract and
nothing else. No venue owns this module; each adapter keeps its own wire structs and
module-level decoders and uses these helpers around them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from itertools import chain
from typing import Final
from typing import TypeVar

import msgspec

from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level
from gateway.core.model import Side
from gateway.core.model import VenueContractError
from gateway.core.model import VenueNotice

#: msgspec raises UnicodeDecodeError, not DecodeError, for invalid UTF-8 inside a string.
DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError)
#: Ids and counters are signed 64-bit downstream: a value must be below this.
MAX_INT: Final = 1 << 63

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)

T = TypeVar("T")


def decode(decoder: msgspec.json.Decoder[T], raw: bytes | msgspec.Raw, what: str) -> T:
    """``decoder.decode(raw)``; raises VenueContractError ``"<what>: <reason>"`` when
    ``raw`` is not the message the decoder reads."""
    try:
        return decoder.decode(raw)
    except DECODE_ERRORS as exc:
        raise VenueContractError(f"{what}: {exc}") from None


def decode_push(decoder: msgspec.json.Decoder[T], data: msgspec.Raw, what: str) -> T:
    """The ``data`` of a ``what`` push, decoded; raises VenueContractError
    ``"<what> push without data"`` when the push had none (an empty ``msgspec.Raw``) and
    ``"bad <what> data: <reason>"`` when it is not the message the decoder reads."""
    if not data:
        raise VenueContractError(f"{what} push without data")
    try:
        return decoder.decode(data)
    except DECODE_ERRORS as exc:
        raise VenueContractError(f"bad {what} data: {exc}") from None


class NumberGrammar:
    """How a venue writes a price or a quantity, as data: ``number`` is the regular
    expression of one non-negative number in the venue's wire grammar (compiled ASCII-only,
    always full-matched; it must not match a space). ``qty(text)`` matches such a number;
    ``price(text)`` also needs a non-zero digit before any exponent, so a zero price is
    refused with the grammar; :meth:`levels_ok` checks a whole side at once."""

    __slots__ = ("_side", "name", "price", "qty")

    def __init__(self, name: str, number: str) -> None:
        price = rf"(?=[0.]*[1-9])(?:{number})"
        self.name = name
        self.qty: Callable[[str], re.Match[str] | None] = re.compile(number, re.ASCII).fullmatch
        self.price: Callable[[str], re.Match[str] | None] = re.compile(price, re.ASCII).fullmatch
        self._side = re.compile(
            rf"{price} (?:{number})(?: {price} (?:{number}))*", re.ASCII
        ).fullmatch

    def levels_ok(self, levels: Sequence[tuple[str, str]]) -> bool:
        """True when every level is a ``(price, qty)`` pair of this grammar.

        One match over the strings joined by single spaces, which is faster than a match
        per string. The grammar has no spaces, so with exactly the ``2 * len(levels) - 1``
        joining spaces in the text each matched token is one of the strings, in its place."""
        if not levels:
            return True
        text = " ".join(chain.from_iterable(levels))
        return self._side(text) is not None and text.count(" ") == 2 * len(levels) - 1

    def __repr__(self) -> str:
        return f"NumberGrammar({self.name!r})"


#: Plain fixed-point decimal, the only form any supported venue sends for a price or a
#: quantity (``"0.00000000"``, ``"65000.1"``, ``"3366"``; Kraken's JSON numbers too): ASCII
#: digits with at most one ``.`` between digits, no superfluous leading zero, no sign,
#: exponent, space or underscore. At most 30 digits on each side of the point, so every
#: value is finite as the book's float key.
FIXED_POINT: Final = NumberGrammar(
    "fixed-point decimal", r"(?:0|[1-9][0-9]{0,29})(?:\.[0-9]{1,30})?"
)


def check_levels(
    levels: list[tuple[str, str]], numbers: NumberGrammar, what: str
) -> tuple[Level, ...]:
    """The levels as a tuple, after checking each is a pair of numbers in the venue's
    grammar ``numbers``: a positive price and a non-negative quantity. Raises
    VenueContractError ``"<what>: level is not a <grammar> pair ...: <price>, <qty>"``
    naming the first level that is not."""
    if not numbers.levels_ok(levels):
        # Some level fails its own match whenever the side fails (see levels_ok).
        price, qty = next(
            (p, q) for p, q in levels if numbers.price(p) is None or numbers.qty(q) is None
        )
        raise VenueContractError(
            f"{what}: level is not a {numbers.name} pair (positive price, "
            f"non-negative quantity): {price[:40]!r}, {qty[:40]!r}"
        )
    return tuple(levels)


def int_text(text: str, what: str) -> int:
    """A non-negative integer below 2**63 sent as a string (``ts``, ``tradeId``)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise VenueContractError(f"{what} is not a non-negative integer: {text[:40]!r}")
    value = int(text)
    if value >= MAX_INT:
        raise VenueContractError(f"{what} out of range: {text}")
    return value


def iso_ms(text: str, what: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 time with a zone (``...Z``; digits
    beyond microseconds are dropped)."""
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise VenueContractError(f"{what}: time without a zone: {text[:40]!r}")
        return (moment - _EPOCH) // _MS
    except (ValueError, OverflowError):
        raise VenueContractError(f"{what}: not an ISO 8601 time: {text[:40]!r}") from None


def taker_side(side: str, buy: str = "buy", sell: str = "sell") -> Side:
    """The Side of a trade whose wire ``side`` names the taker's side, spelt ``buy`` and
    ``sell`` on the venue."""
    if side == buy:
        return Side.BUY
    if side == sell:
        return Side.SELL
    raise VenueContractError(f"trade side {side!r}")


def notice(
    venue: str, kind: str, detail: str, recv_ns: int, conn_id: int, *, reconnect: bool = False
) -> VenueNotice:
    """A VenueNotice of ``venue``: ``kind`` is ``ack``, ``error``, ``info``, ``notice``,
    ``shutdown`` or ``status``; ``reconnect`` when the venue asks for a new connection."""
    return VenueNotice(
        venue=venue,
        kind=kind,
        detail=detail,
        reconnect=reconnect,
        recv_ns=recv_ns,
        conn_id=conn_id,
    )


def endpoint_url(endpoint: str, symbols: Sequence[str]) -> str:
    """The URL a connection opens on a venue that subscribes by message, not by URL: the
    endpoint itself, whatever the symbols."""
    return endpoint


def unique_symbols(symbols: Sequence[str], what: str = "symbols") -> list[str]:
    """``symbols`` without repeats, in order; raises ValueError for none or for one string
    passed where a sequence belongs."""
    if isinstance(symbols, str):
        raise ValueError(f"symbols must be a sequence of {what}, not one string")
    unique = list(dict.fromkeys(symbols))
    if not unique:
        raise ValueError("at least one symbol is required")
    return unique


def check_snapshot_range(limit: int, largest: int) -> None:
    """Raises ValueError unless ``1 <= limit <= largest``: the check of a REST depth that
    serves any number of levels up to its largest."""
    if not 1 <= limit <= largest:
        raise ValueError(f"snapshot limit must be 1..{largest}, got {limit}")


def rest_snapshot(
    venue: str,
    symbol: str,
    last_id: int,
    bids: list[tuple[str, str]],
    asks: list[tuple[str, str]],
    recv_ns: int,
    conn_id: int,
    numbers: NumberGrammar,
) -> DepthSnapshot:
    """A REST depth response of ``symbol`` (upper-cased) as a DepthSnapshot at ``last_id``,
    its levels checked in the venue's grammar ``numbers``."""
    return DepthSnapshot(
        venue=venue,
        symbol=symbol.upper(),
        last_id=last_id,
        bids=check_levels(bids, numbers, "snapshot bids"),
        asks=check_levels(asks, numbers, "snapshot asks"),
        recv_ns=recv_ns,
        conn_id=conn_id,
    )


def unsequenced_snapshot(
    venue: str,
    symbol: str,
    bids: tuple[Level, ...],
    asks: tuple[Level, ...],
    recv_ns: int,
    conn_id: int,
    checksum: int | None = None,
) -> DepthSnapshot:
    """An in-band snapshot of a venue without book ids (Kraken, Coinbase): ``last_id`` -1,
    the levels already checked."""
    return DepthSnapshot(
        venue=venue,
        symbol=symbol,
        last_id=-1,
        bids=bids,
        asks=asks,
        recv_ns=recv_ns,
        conn_id=conn_id,
        checksum=checksum,
    )


def unsequenced_diff(
    venue: str,
    symbol: str,
    bids: tuple[Level, ...],
    asks: tuple[Level, ...],
    event_ms: int,
    recv_ns: int,
    conn_id: int,
    checksum: int | None = None,
) -> DepthDiff:
    """An update of a venue without book ids (Kraken, Coinbase): ``first_id``, ``last_id``
    and ``prev_id`` -1, the levels already checked."""
    return DepthDiff(
        venue=venue,
        symbol=symbol,
        first_id=-1,
        last_id=-1,
        prev_id=-1,
        bids=bids,
        asks=asks,
        event_ms=event_ms,
        recv_ns=recv_ns,
        conn_id=conn_id,
        checksum=checksum,
    )
