"""The make-before-break renewal machine, as a table, and the venue's renewal slot."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.renewal import AGE_JITTER
from gateway.core.renewal import RENEWAL_TRANSITIONS
from gateway.core.renewal import CloseConnection
from gateway.core.renewal import Command
from gateway.core.renewal import OpenReplacement
from gateway.core.renewal import Renewal
from gateway.core.renewal import RenewalEvent
from gateway.core.renewal import VenueRenewals
from gateway.core.renewal import renewal_age_s

from .state_tables import specify

RENEWAL_SPEC = specify(
    "renewal",
    RENEWAL_TRANSITIONS,
    """
    STEADY       DUE           QUEUED       ASK_SLOT
    STEADY       OLD_DOWN      STEADY       -
    QUEUED       DUE           QUEUED       -
    QUEUED       SLOT_GRANTED  CATCHING_UP  OPEN_REPLACEMENT
    QUEUED       OLD_DOWN      STEADY       LEAVE_QUEUE
    CATCHING_UP  DUE           CATCHING_UP  -
    CATCHING_UP  CAUGHT_UP     STEADY       CLOSE_OLD RELEASE_SLOT
    CATCHING_UP  TIMED_OUT     STEADY       CLOSE_OLD RELEASE_SLOT
    CATCHING_UP  OLD_DOWN      STEADY       CLOSE_OLD RELEASE_SLOT
    STEADY       STOP          STOPPED      -
    QUEUED       STOP          STOPPED      -
    CATCHING_UP  STOP          STOPPED      -
    STOPPED      DUE           STOPPED      -
    STOPPED      CAUGHT_UP     STOPPED      -
    STOPPED      TIMED_OUT     STOPPED      -
    STOPPED      OLD_DOWN      STOPPED      -
    """,
)


def venue(slots: int = 3) -> VenueRenewals:
    renewals = VenueRenewals()
    for slot in range(slots):
        renewals.add(slot, 100 + slot)
    return renewals


def open_replacement(renewals: VenueRenewals, commands: list[Command], conn_id: int) -> int:
    """The shell's part: open the replacement the commands ask for."""
    (command,) = commands
    assert isinstance(command, OpenReplacement)
    renewals.opened(command.slot, conn_id)
    return command.slot


# (what happens, the slot's state after, commands) for slot 0, served by conn 100.
ROWS = [
    ("due", Renewal.CATCHING_UP, [OpenReplacement(0)]),
    ("due twice", Renewal.CATCHING_UP, []),
    ("caught up", Renewal.STEADY, [CloseConnection(0, 100, 200, RenewalEvent.CAUGHT_UP)]),
    ("timed out", Renewal.STEADY, [CloseConnection(0, 100, 200, RenewalEvent.TIMED_OUT)]),
    ("old down", Renewal.STEADY, [CloseConnection(0, 100, 200, RenewalEvent.OLD_DOWN)]),
    ("replacement down", Renewal.CATCHING_UP, []),
    ("stale timeout", Renewal.CATCHING_UP, []),
]


@pytest.mark.parametrize(("what", "state", "commands"), ROWS)
def test_one_slot(what: str, state: Renewal, commands: list[object]) -> None:
    renewals = venue()
    got = renewals.due(100, "age")
    if what != "due":
        open_replacement(renewals, got, 200)
        got = {
            "due twice": lambda: renewals.due(100, "notice"),
            "caught up": lambda: renewals.caught_up(200),
            "timed out": lambda: renewals.timed_out(0, 200),
            "old down": lambda: renewals.down(100),
            "replacement down": lambda: renewals.down(200),
            "stale timeout": lambda: renewals.timed_out(0, 999),
        }[what]()
    assert renewals.state(0) is state and got == commands
    if state is Renewal.STEADY:
        assert renewals.serving(0) == 200 and renewals.slot_of(100) is None
        assert renewals.holder is None


def test_one_renewal_of_a_venue_at_a_time_the_others_wait_in_line() -> None:
    renewals = venue()
    open_replacement(renewals, renewals.due(100, "age"), 200)
    assert renewals.due(101, "notice") == [] and renewals.due(102, "age") == []
    assert [renewals.state(s) for s in range(3)] == [
        Renewal.CATCHING_UP,
        Renewal.QUEUED,
        Renewal.QUEUED,
    ]
    # A replacement's own notice is not a renewal of its slot.
    assert renewals.due(200, "notice") == []
    closed = renewals.caught_up(200)
    assert closed == [CloseConnection(0, 100, 200, RenewalEvent.CAUGHT_UP), OpenReplacement(1)]
    renewals.opened(1, 201)
    # Slot 2's old connection goes down while it waits: it leaves the line.
    assert renewals.down(102) == [] and renewals.state(2) is Renewal.STEADY
    assert renewals.caught_up(201) == [CloseConnection(1, 101, 201, RenewalEvent.CAUGHT_UP)]
    assert renewals.holder is None
    assert renewals.stats(1).due == {"notice": 1} and renewals.stats(0).caught_up == 1


EVENTS = st.lists(
    st.tuples(st.sampled_from(["due", "caught_up", "timed_out", "down"]), st.integers(0, 3)),
    max_size=60,
)


def event(renewals: VenueRenewals, what: str, slot: int) -> list[Command]:
    """The event ``what`` of ``slot``'s serving connection (or its replacement)."""
    serving, replacement = renewals.serving(slot), renewals.replacement(slot)
    if what == "due":
        return renewals.due(serving, "age")
    if what == "caught_up":
        return [] if replacement is None else renewals.caught_up(replacement)
    if what == "timed_out":
        return [] if replacement is None else renewals.timed_out(slot, replacement)
    return renewals.down(serving)


@given(EVENTS)
def test_never_two_renewals_of_a_venue_and_the_old_closes_only_after(
    events: list[tuple[str, int]],
) -> None:
    renewals = venue(4)
    next_id = iter(range(1000, 2000))
    replaced: dict[int, int] = {}  # old conn id -> its replacement
    for what, slot in events:
        commands = event(renewals, what, slot)
        for command in commands:
            if isinstance(command, OpenReplacement):
                conn_id = next(next_id)
                replaced[renewals.serving(command.slot)] = conn_id
                renewals.opened(command.slot, conn_id)
            else:
                # Closed only for its own replacement, which now serves the slot.
                assert replaced.pop(command.conn_id) == command.replacement
                assert renewals.serving(command.slot) == command.replacement
                assert (
                    command.outcome.name
                    == {
                        "caught_up": "CAUGHT_UP",
                        "timed_out": "TIMED_OUT",
                        "down": "OLD_DOWN",
                    }[what]
                )
        catching_up = [s for s in renewals.slots if renewals.state(s) is Renewal.CATCHING_UP]
        assert len(catching_up) <= 1
        assert catching_up == ([] if renewals.holder is None else [renewals.holder])


def test_renewal_ages_are_drawn_from_the_last_share_before_the_limit() -> None:
    assert renewal_age_s(1000.0, 0.0) == 1000.0
    assert renewal_age_s(1000.0, 0.5) == pytest.approx(1000.0 * (1 - AGE_JITTER / 2))
    assert renewal_age_s(1000.0, 0.999) > 1000.0 * (1 - AGE_JITTER)
    with pytest.raises(ValueError, match="jitter"):
        renewal_age_s(1000.0, 1.0)


def test_a_removed_slot_gives_its_connections_and_passes_the_renewal_slot_on() -> None:
    renewals = venue()
    open_replacement(renewals, renewals.due(100, "age"), 200)
    renewals.due(101, "age")
    assert renewals.remove(0) == ([100, 200], [OpenReplacement(1)])
    assert renewals.holder == 1 and renewals.slot_of(200) is None
    assert renewals.remove(2) == ([102], []) and renewals.slots == [1]


def test_a_stop_in_any_state_ends_every_renewal_and_nothing_follows_it() -> None:
    renewals = venue(4)
    open_replacement(renewals, renewals.due(100, "age"), 200)
    assert renewals.due(101, "notice") == []
    assert [renewals.state(s) for s in range(4)] == [
        Renewal.CATCHING_UP,
        Renewal.QUEUED,
        Renewal.STEADY,
        Renewal.STEADY,
    ]
    renewals.stop()
    assert all(renewals.state(s) is Renewal.STOPPED for s in range(4))
    assert renewals.holder is None
    # The stop's own events: the old connections fall, the replacement catches up.
    assert renewals.down(100) == [] and renewals.down(101) == []
    assert renewals.caught_up(200) == [] and renewals.timed_out(0, 200) == []
    assert renewals.due(102, "age") == [] and renewals.down(103) == []
    # Nothing was promoted or counted: slot 0 is still served by its old connection.
    assert renewals.serving(0) == 100 and renewals.replacement(0) == 200
    assert all(renewals.stats(s).caught_up + renewals.stats(s).old_down == 0 for s in range(4))
    # A slot added after the stop (a standby connecting) is stopped too; a removal passes
    # no renewal slot on.
    renewals.add(4, 104)
    assert renewals.state(4) is Renewal.STOPPED and renewals.due(104, "age") == []
    assert renewals.remove(0) == ([100, 200], []) and renewals.holder is None
    renewals.stop()
    assert renewals.stopped


@given(EVENTS, EVENTS)
def test_after_a_stop_no_event_yields_a_command(
    before: list[tuple[str, int]], after: list[tuple[str, int]]
) -> None:
    renewals = venue(4)
    next_id = iter(range(1000, 2000))
    for events in (before, after):
        for what, slot in events:
            commands = event(renewals, what, slot)
            if renewals.stopped:
                assert commands == []
            for command in commands:
                if isinstance(command, OpenReplacement):
                    renewals.opened(command.slot, next(next_id))
        renewals.stop()
        assert all(renewals.state(s) is Renewal.STOPPED for s in renewals.slots)
