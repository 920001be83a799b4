"""Hypothesis strategies shared by the venue parser tests: mutated real frames and
arbitrary JSON values, the inputs a venue breaking its contract could send."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st


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
