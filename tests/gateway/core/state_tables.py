"""Transition tables written as text, for the table tests of the cores' state machines.

One row a line: ``STATE  EVENT  NEW_STATE  ACTION ACTION ...`` (member names; ``-`` for no
action). The expected table of a test is the machine's specification, read at a glance:
each machine's test module writes its :class:`Spec` beside the scenarios that drive it, and
``test_transition_tables`` checks every table against its spec.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import NamedTuple
from typing import TypeVar

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)
A = TypeVar("A", bound=enum.Enum)


def parse_table(
    text: str, states: type[S], events: type[E], actions: type[A]
) -> dict[tuple[S, E], tuple[S, tuple[A, ...]]]:
    table: dict[tuple[S, E], tuple[S, tuple[A, ...]]] = {}
    for line in text.strip().splitlines():
        state, event, new_state, *names = line.split()
        key = (states[state], events[event])
        assert key not in table, f"row given twice: {line}"
        done = tuple(actions[name] for name in names if name != "-")
        table[key] = (states[new_state], done)
    return table


class Spec(NamedTuple):
    """A state machine's specification: the name the machine gives
    :func:`~gateway.core.transitions.transition` (or its own error), its table, its enums
    and the table it must be."""

    machine: str
    table: Mapping[tuple[Any, Any], tuple[Any, tuple[Any, ...]]]
    states: type[enum.Enum]
    events: type[enum.Enum]
    expected: dict[tuple[Any, Any], tuple[Any, tuple[Any, ...]]]

    def undefined(self) -> list[tuple[Any, Any]]:
        return undefined_pairs(self.expected, self.states, self.events)


def specify(
    machine: str, table: Mapping[tuple[Any, Any], tuple[Any, tuple[Any, ...]]], text: str
) -> Spec:
    """The spec of ``table``, written as ``text`` in the names of the table's own enums."""
    (state, event), _ = next(iter(table.items()))
    action = next(action for _, actions in table.values() for action in actions)
    states, events = type(state), type(event)
    return Spec(machine, table, states, events, parse_table(text, states, events, type(action)))


def undefined_pairs(
    table: Mapping[tuple[S, E], object], states: type[S], events: type[E]
) -> list[tuple[S, E]]:
    """Every (state, event) the table does not hold, in declaration order."""
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
