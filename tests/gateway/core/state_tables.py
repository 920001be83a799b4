"""Helpers for testing a state machine as a table (gateway.core.transitions).

A table is written as text, one row a line, ``STATE + EVENT -> NEW_STATE : ACTION ACTION``
(no action after the colon for none), and each row is driven through the real object by
a scenario: a setup that brings the object into the row's state, the input that causes
the row's event, and what that input must publish.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)
A = TypeVar("A", bound=enum.Enum)


def parse_table(
    text: str, states: type[S], events: type[E], actions: type[A]
) -> dict[tuple[S, E], tuple[S, tuple[A, ...]]]:
    rows: dict[tuple[S, E], tuple[S, tuple[A, ...]]] = {}
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        pair, _, outcome = line.partition("->")
        state, _, event = pair.partition("+")
        new_state, _, done = outcome.partition(":")
        key = (states[state.strip()], events[event.strip()])
        assert key not in rows, f"row written twice: {line}"
        rows[key] = (states[new_state.strip()], tuple(actions[a] for a in done.split()))
    return rows


def undefined_pairs(
    table: dict[tuple[S, E], Any], states: type[S], events: type[E]
) -> list[tuple[S, E]]:
    return [pair for pair in itertools.product(states, events) if pair not in table]


#: (setup, input causing the event, what it must publish)
Scenario = tuple[Callable[[], Any], Callable[[Any], list[Any]], list[Any]]


def drive_row(
    scenarios: dict[tuple[S, E], Scenario],
    table: dict[tuple[S, E], tuple[S, tuple[A, ...]]],
    pair: tuple[S, E],
    state_of: Callable[[Any], S],
) -> tuple[Any, list[Any], list[Any]]:
    """Drives the row ``pair``: asserts the state before and after; returns the object,
    what the input published and what the scenario says it must publish."""
    setup, act, published = scenarios[pair]
    obj = setup()
    assert state_of(obj) is pair[0], "the setup does not reach the row's state"
    out = act(obj)
    assert state_of(obj) is table[pair][0]
    return obj, out, published
