"""What the venue parser tests share: hypothesis strategies for the inputs a venue breaking
its contract could send (mutated real frames, arbitrary JSON values, numbers outside the
venues' decimal grammar), frame edits, the checks of the parser contract (events of the
expected types, or VenueContractError), and :class:`ParserContract`, one venue parser's
entry in tests/feeds/test_contract.py."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Final

from hypothesis import strategies as st

from gateway.core.model import ConnectionSequence
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Trade
from gateway.core.model import VenueContractError

#: Frames that are no venue's message: each adapter refuses them with VenueContractError.
NOT_FRAMES: Final = (b"", b"not json", b"[]", b'{"hello":1}')


def _mutate(frame: bytes, at: int, length: int, junk: bytes, how: str) -> bytes:
    at %= len(frame) + 1
    if how == "cut":
        return frame[:at]
    if how == "insert":
        return frame[:at] + junk + frame[at:]
    return frame[:at] + junk + frame[at + length % 16 :]


def mutated(seeds: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """A seed frame cut short, with junk inserted, or with a span replaced by junk."""
    return st.builds(
        _mutate,
        st.sampled_from(list(seeds)),
        st.integers(0, 10_000),
        st.integers(0, 10_000),
        st.binary(max_size=8),
        st.sampled_from(["cut", "insert", "replace"]),
    )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=10,
)


def replaced(frame: bytes, old: bytes, new: bytes) -> bytes:
    """``frame`` with the first ``old`` replaced by ``new``; ``old`` must be in it."""
    assert old in frame
    return frame.replace(old, new, 1)


def each_replaced(frame: bytes, old: bytes, news: Iterable[bytes]) -> list[bytes]:
    """``frame`` with the first ``old`` replaced by each of ``news`` in turn: one field of a
    frame spoilt in several ways."""
    return [replaced(frame, old, new) for new in news]


#: Spellings of a number that no venue sends for a price or a quantity: non-ASCII digits,
#: signs, underscores, spaces, NaN and infinities, exponent forms, stray points, leading
#: zeros, more digits than a decimal of the book can hold. Every venue refuses each one
#: in a price and in a quantity (tests/feeds/test_contract.py).
NOT_DECIMALS: Final = (
    "\uff15",  # fullwidth 5
    "\uff11.\uff15",
    "\u0663",  # Arabic-Indic 3
    "\u0661\u0662.\u0665",
    "\u06f3",  # Extended Arabic-Indic 3
    "\u0969",  # Devanagari 3
    "\U0001d7d3",  # mathematical bold 5
    "\u00b2",  # superscript 2
    "\u00bd",  # vulgar fraction one half
    "+3",
    "+0.5",
    "-3",
    "-0",
    "-1.5",
    "1_000",
    "1_000.5",
    "0.000_01",
    " 2.5 ",
    " 2.5",
    "2.5 ",
    "\t2.5",
    "2.5\n",
    "\u00a02.5",
    "2\u20095",
    "nan",
    "NaN",
    "-nan",
    "inf",
    "-inf",
    "Infinity",
    "infinity",
    "1e-07",
    "1E-7",
    "4.8E-7",
    "1e5",
    "2.5e+3",
    "0e0",
    "1e400",
    "",
    ".",
    ".5",
    "5.",
    "1.2.3",
    "1,5",
    "0x1F",
    "0b1",
    "01",
    "00.5",
    "1/2",
    "9" * 31,
    "1." + "0" * 31,
)


def bad_decimals(frame: bytes, decimal: bytes) -> list[bytes]:
    """``frame`` with its first ``decimal`` (a positive decimal as a JSON string, such as
    ``b'"1.5"'``) replaced by each spelling a venue must refuse where it sends a decimal
    string: each of :data:`NOT_DECIMALS`, the value signed, spaced, with an underscore, in
    exponent form and in fullwidth digits, and a JSON number where the string is due."""
    text = decimal.strip(b'"').decode()
    assert float(text) > 0, "a positive decimal: its negative must be out of range"
    own = (
        f"-{text}",
        f"+{text}",
        f" {text} ",
        f"{text[0]}_{text[1:]}0",
        f"{text}e0",
        format(float(text), "e"),
        text.translate(_FULLWIDTH),
    )
    spellings = (*NOT_DECIMALS, *own)
    return [replaced(frame, decimal, json.dumps(bad).encode()) for bad in spellings] + [
        replaced(frame, decimal, text.encode())
    ]


_FULLWIDTH: Final = {ord(digit): 0xFF10 + int(digit) for digit in "0123456789"}
_JSON_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)
#: Plain decimals as venues write them, to be spoilt by :data:`NON_DECIMALS`.
_DECIMALS: Final = st.from_regex(r"(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,8})?", fullmatch=True)
_SPACES: Final = st.sampled_from(" \t\n\r\x0b\x0c\u00a0\u2003\u3000")
#: Decimal digits other than ASCII ones: Arabic-Indic, fullwidth, Devanagari, ...
_NON_ASCII_DIGITS: Final = st.characters(categories=["Nd"], min_codepoint=128)


def _spoilt(text: str, how: str, at: int, junk: str) -> str:
    """``text`` (a plain decimal) made into a spelling outside every venue's grammar."""
    at %= len(text) + 1
    if how == "sign":
        return ("+" if at % 2 else "-") + text
    if how == "space":
        return text[:at] + junk + text[at:]
    if how == "underscore":
        return text[:at] + "_" + text[at:]
    if how == "digit":
        digits = [i for i, c in enumerate(text) if c.isdigit()]
        i = digits[at % len(digits)]
        return text[:i] + junk + text[i + 1 :]
    if how == "exponent":
        return f"{text}{'eE'[at % 2]}{'+-'[at // 2 % 2] if at % 3 else ''}{at}"
    if how == "leading zero":
        return "0" + text
    assert how == "point"
    return text + "." if "." not in text else text.replace(".", "..", 1)


#: Strings no venue sends as a price or a quantity: one of :data:`NOT_DECIMALS`, or a plain
#: decimal with a sign, a space (ASCII or not), an underscore, a non-ASCII digit, an
#: exponent, a leading zero, or a stray point.
NON_DECIMALS: Final = st.sampled_from(NOT_DECIMALS) | st.one_of(
    [
        st.builds(_spoilt, _DECIMALS, st.just(how), st.integers(0, 40), junk)
        for how, junk in (
            ("sign", st.just("")),
            ("space", _SPACES),
            ("underscore", st.just("")),
            ("digit", _NON_ASCII_DIGITS),
            ("exponent", st.just("")),
            ("leading zero", st.just("")),
            ("point", st.just("")),
        )
    ]
)


def number_json(text: str, json_numbers: bool) -> bytes:
    """``text`` as the JSON a venue would put in a number's place: a JSON string, or, for
    a venue that writes ``json_numbers``, the bare text when it is a JSON number."""
    if json_numbers and _JSON_NUMBER.fullmatch(text):
        return text.encode()
    return json.dumps(text).encode()


@dataclass(frozen=True)
class VenueNumbers:
    """A venue's number grammar, as tests/feeds/test_contract.py checks it.

    ``frame`` parses to one book event; ``price`` and ``qty`` are the JSON text of one of
    its prices and one of its quantities, each found once in ``frame``. ``real`` are the
    forms the venue really sends (its recorded sessions): accepted as a quantity, and as a
    price when positive, and kept exactly. ``refused`` adds the venue's own wrong forms to
    :data:`NOT_DECIMALS`. ``json_numbers``: the venue writes numbers as JSON numbers, not
    strings.
    """

    frame: bytes
    price: bytes
    qty: bytes
    real: Sequence[str]
    refused: Sequence[str] = ()
    json_numbers: bool = False

    def with_price(self, text: str) -> bytes:
        return replaced(self.frame, self.price, number_json(text, self.json_numbers))

    def with_qty(self, text: str) -> bytes:
        return replaced(self.frame, self.qty, number_json(text, self.json_numbers))


def with_value(frame: bytes, path: Sequence[str | int], value: object) -> bytes:
    """The JSON ``frame`` with the value at ``path`` (keys and list indexes) set to
    ``value``; non-finite floats are written as the NaN / Infinity literals."""
    document = json.loads(frame)
    target = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return json.dumps(document).encode()


def are_string_levels(value: object, fields: int = 2, exact: bool = True) -> bool:
    """True when ``value`` is a list of levels, each a list of ``fields`` strings (at least
    ``fields`` when not ``exact``): the only shape a string-level venue accepts."""
    return isinstance(value, list) and all(
        isinstance(level, list)
        and (len(level) == fields if exact else len(level) >= fields)
        and all(isinstance(x, str) for x in level)
        for level in value
    )


def check_events(events: Sequence[object], types: type | UnionType) -> None:
    """Every event is one of ``types``; every level of a book event has a positive price
    and a non-negative quantity, and connection sequences are non-negative (what the
    adapters check)."""
    for event in events:
        assert isinstance(event, types)
        if isinstance(event, DepthDiff | DepthSnapshot):
            for price, qty in event.bids + event.asks:
                assert float(price) > 0 and float(qty) >= 0
        elif isinstance(event, ConnectionSequence):
            assert event.seq >= 0


def accepted(parse: Callable[[], Sequence[object]], types: type | UnionType) -> bool:
    """True when ``parse()`` returns events, each checked with :func:`check_events`; False
    when it raises VenueContractError. Any other exception propagates (it is a bug)."""
    try:
        events = parse()
    except VenueContractError:
        return False
    check_events(events, types)
    return True


def first_of_each_kind(
    frames: Iterable[bytes], kind: Callable[[bytes], object], per_kind: int = 3
) -> list[bytes]:
    """Up to ``per_kind`` frames of each ``kind(frame)``, in order; frames over 4000 bytes
    (whole-book snapshots) are left out: they are too big to mutate quickly."""
    counts: dict[object, int] = {}
    chosen: list[bytes] = []
    for frame in frames:
        if len(frame) > 4000:
            continue
        key = kind(frame)
        if counts.get(key, 0) < per_kind:
            counts[key] = counts.get(key, 0) + 1
            chosen.append(frame)
    return chosen


#: ``real_data(relpath) -> Path`` (the fixture of tests/conftest.py).
RealData = Callable[[str], Path]


@dataclass(frozen=True)
class ParserContract:
    """One frame parser of a venue adapter, as tests/feeds/test_contract.py checks it.

    ``parse(raw, recv_ns, conn_id)`` returns events of ``types`` or raises
    VenueContractError; ``bad_frames`` must raise it; ``seeds(real_data)`` are the frames
    mutated by hypothesis, and the frames whose prices and quantities are replaced by
    :data:`NON_DECIMALS`; ``numbers`` is the venue's number grammar; ``snapshot(body)``,
    when given, parses a REST book body (a DepthSnapshot or VenueContractError) and gets
    the same inputs; ``bad_snapshots`` are bodies it must refuse with VenueContractError.
    """

    parse: Callable[[bytes, int, int], Sequence[object]]
    types: type | UnionType
    bad_frames: Sequence[bytes]
    seeds: Callable[[RealData], Sequence[bytes]]
    numbers: VenueNumbers
    snapshot: Callable[[bytes], object] | None = None
    bad_snapshots: Sequence[bytes] = ()

    def check(self, raw: bytes) -> None:
        """``raw`` through the frame parser (and the snapshot parser): accepted with events
        of the contract's types, or refused with VenueContractError."""
        accepted(lambda: self.parse(raw, 1, 0), self.types)
        snapshot = self.snapshot
        if snapshot is not None:
            accepted(lambda: [snapshot(raw)], DepthSnapshot)


def event_numbers(events: Iterable[object]) -> set[str]:
    """Every price and quantity of ``events``: their book levels and trades."""
    numbers: set[str] = set()
    for event in events:
        if isinstance(event, DepthDiff | DepthSnapshot):
            for level in event.bids + event.asks:
                numbers.update(level)
        elif isinstance(event, Trade):
            numbers.update((event.price, event.qty))
    return numbers


def with_number(frame: bytes, number: str, text: str, json_numbers: bool) -> bytes | None:
    """``frame`` with every occurrence of ``number`` (a price or quantity of its events,
    a JSON string, or for ``json_numbers`` a bare JSON number) as a whole value replaced by
    ``text`` (:func:`number_json`); None when ``number`` is not found."""
    if json_numbers:
        pattern = re.compile(rb"(?<=[:\[,\s])" + re.escape(number.encode()) + rb"(?=[\s,\]}])")
    else:
        pattern = re.compile(re.escape(json.dumps(number).encode()))
    replacement = number_json(text, json_numbers)
    spoilt, count = pattern.subn(lambda _: replacement, frame)
    return spoilt if count else None
