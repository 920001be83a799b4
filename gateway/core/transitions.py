"""Explicit state machines: a table of ``(state, event) -> (new state, actions)``.

As in h11's ``_state.py``: the code that handles an input works out which event happened;
the table alone decides the next state and what must be done. A pair missing from the
table is an event the machine does not allow in that state: a bug in the caller, raised
as :class:`UndefinedTransition`, never a venue error.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

State = TypeVar("State", bound=enum.Enum)
Event = TypeVar("Event", bound=enum.Enum)
Action = TypeVar("Action", bound=enum.Enum)

#: ``(state, event) -> (new state, actions in the order they are carried out)``.
Table = Mapping[tuple[State, Event], tuple[State, tuple[Action, ...]]]


class UndefinedTransition(RuntimeError):
    """An event the table does not define in the current state."""


def transition(
    machine: str, table: Table[State, Event, Action], state: State, event: Event
) -> tuple[State, tuple[Action, ...]]:
    """The new state and the actions of ``event`` in ``state``; raises UndefinedTransition."""
    try:
        return table[state, event]
    except KeyError:
        raise UndefinedTransition(
            f"{machine}: no transition for {event.name} in state {state.name}"
        ) from None
