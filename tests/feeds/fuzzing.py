"""What the venue parser tests share: hypothesis strategies for the inputs a venue breaking
its contract could send (mutated real frames, arbitrary JSON values), frame edits, the
checks of the parser contract (events of the expected types, or VenueContractError), and
:class:`ParserContract`, one venue parser's entry in tests/feeds/test_contract.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Final

from hypothesis import strategies as st

from gateway.core.model import ConnectionSequence, DepthDiff, DepthSnapshot, VenueContractError

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


def bad_decimals(frame: bytes, decimal: bytes) -> list[bytes]:
    """``frame`` with its first ``decimal`` (a positive decimal as a JSON string, such as
    ``b'"1.5"'``) replaced by each spelling a venue must refuse where it sends a decimal
    string: not a number, negative, NaN, infinite, beyond float range, and a JSON number
    where the string is due."""
    text = decimal.strip(b'"')
    assert float(text) > 0, "a positive decimal: its negative must be out of range"
    spellings = (b"abc", b"-" + text, b"nan", b"NaN", b"inf", b"Infinity", b"1e400")
    return [replaced(frame, decimal, b'"' + bad + b'"') for bad in spellings] + [
        replaced(frame, decimal, text)
    ]


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
    mutated by hypothesis; ``snapshot(body)``, when given, parses a REST book body (a
    DepthSnapshot or VenueContractError) and gets the same inputs; ``bad_snapshots`` are
    bodies it must refuse with VenueContractError.
    """

    parse: Callable[[bytes, int, int], Sequence[object]]
    types: type | UnionType
    bad_frames: Sequence[bytes]
    seeds: Callable[[RealData], Sequence[bytes]]
    snapshot: Callable[[bytes], object] | None = None
    bad_snapshots: Sequence[bytes] = ()

    def check(self, raw: bytes) -> None:
        """``raw`` through the frame parser (and the snapshot parser): accepted with events
        of the contract's types, or refused with VenueContractError."""
        accepted(lambda: self.parse(raw, 1, 0), self.types)
        snapshot = self.snapshot
        if snapshot is not None:
            accepted(lambda: [snapshot(raw)], DepthSnapshot)
