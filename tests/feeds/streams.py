"""Strategies the venue property tests share: how redundant connections deliver the copies
of one venue stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st

T = TypeVar("T")
Ex = TypeVar("Ex")


class Draw(Protocol):
    """A composite strategy's ``draw``, or ``st.data()``'s ``.draw``."""

    def __call__(self, strategy: st.SearchStrategy[Ex], label: Any = ...) -> Ex: ...


def interleaved(draw: Draw, copies: Sequence[Sequence[T]]) -> list[tuple[int, T]]:
    """Every connection's copy (``copies[c]``, each non-empty) as ``(c, item)`` in one
    arbitrary interleaving that keeps each connection's order (its stream is in order);
    every connection's first item comes first, in connection order (its subscription was
    answered before anything else is delivered)."""
    schedule: list[tuple[int, T]] = [(c, copy[0]) for c, copy in enumerate(copies)]
    cursors = [1] * len(copies)
    while True:
        left = [c for c, copy in enumerate(copies) if cursors[c] < len(copy)]
        if not left:
            return schedule
        c = draw(st.sampled_from(left))
        schedule.append((c, copies[c][cursors[c]]))
        cursors[c] += 1
