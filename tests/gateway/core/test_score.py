"""Endpoint scores, the replacement of the worst connection, its endpoint's rotation and
standby endpoints: pure, time injected."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.score import REPLACE_TRANSITIONS
from gateway.core.score import STANDBY_TRANSITIONS
from gateway.core.score import Replace
from gateway.core.score import ReplacementPolicy
from gateway.core.score import Scorer
from gateway.core.score import Standby
from gateway.core.score import StandbyAction
from gateway.core.score import StandbyPolicy
from gateway.core.score import Totals
from gateway.core.score import Window
from gateway.core.score import rotated_endpoint
from gateway.core.score import score
from gateway.core.score import window

from .state_tables import specify

SETTLED = Window(up=True, uptime_s=600.0, first_wins=50, duplicates=50, frames=100)


@pytest.mark.parametrize(
    ("better", "worse"),
    [
        (SETTLED, Window(up=False, uptime_s=0.0)),
        (SETTLED, Window(up=True, uptime_s=600.0, first_wins=10, duplicates=90, frames=100)),
        (
            Window(up=True, uptime_s=600.0, latency_s=0.005),
            Window(up=True, uptime_s=600.0, latency_s=0.2),
        ),
        (Window(up=True, uptime_s=600.0, lag_s=0.0), Window(up=True, uptime_s=600.0, lag_s=0.05)),
        (SETTLED, Window(up=True, uptime_s=5.0, first_wins=50, duplicates=50, frames=100)),
        (
            SETTLED,
            Window(up=True, uptime_s=600.0, first_wins=50, duplicates=50, frames=100, reconnects=2),
        ),
        (
            SETTLED,
            Window(up=True, uptime_s=600.0, first_wins=50, duplicates=50, frames=100, faults=1),
        ),
        (
            SETTLED,
            Window(up=True, uptime_s=600.0, first_wins=50, duplicates=50, frames=100, bad_frames=3),
        ),
    ],
)
def test_each_term_ranks_the_better_connection_higher(better: Window, worse: Window) -> None:
    assert score(better) > score(worse)


def test_the_formula_at_known_points() -> None:
    assert score(Window(up=False, uptime_s=1e6, first_wins=10)) == 0.0
    # Every term 1: won every race, no latency measured, settled, nothing wrong.
    assert score(Window(up=True, uptime_s=60.0, first_wins=10, frames=10)) == pytest.approx(1.0)
    # Half on arrival (no races) and on latency (the scale), settled, clean.
    half = Window(up=True, uptime_s=60.0, latency_s=0.05)
    assert score(half) == pytest.approx(0.4 * 0.5 + 0.3 * 0.5 + 0.15 + 0.15)


WINDOWS = st.builds(
    Window,
    up=st.booleans(),
    uptime_s=st.floats(0, 1e6),
    first_wins=st.integers(0, 10**6),
    duplicates=st.integers(0, 10**6),
    latency_s=st.none() | st.floats(-10, 100),
    lag_s=st.none() | st.floats(-1, 100),
    frames=st.integers(0, 10**6),
    bad_frames=st.integers(0, 10**6),
    faults=st.integers(0, 10**6),
    reconnects=st.integers(0, 1000),
)


@given(WINDOWS)
def test_the_score_is_between_0_and_1(w: Window) -> None:
    assert 0.0 <= score(w) <= 1.0


def test_windows_are_differences_and_the_latency_a_mean_over_the_interval() -> None:
    before = Totals(True, 10.0, first_wins=5, latency_sum_s=1.0, latency_count=10, frames=20)
    now = Totals(True, 11.0, first_wins=9, latency_sum_s=1.6, latency_count=13, frames=30)
    got = window(before, now)
    assert (got.first_wins, got.frames, got.uptime_s) == (4, 10, 11.0)
    assert got.latency_s == pytest.approx(0.2)
    assert window(now, now).latency_s is None


def test_the_scorer_smooths_and_forgets_closed_connections() -> None:
    scorer = Scorer(alpha=0.5)
    good = Totals(True, 600.0, first_wins=10, frames=10)
    first = scorer.evaluate({1: good, 2: Totals(False, 0.0)})
    assert first[1] == pytest.approx(1.0) and first[2] == 0.0
    second = scorer.evaluate({1: Totals(False, 0.0, first_wins=10, frames=10)})
    assert second == {1: pytest.approx(0.5)}


# --- replacement ----------------------------------------------------------------------------

REPLACE_SPEC = specify(
    "replace",
    REPLACE_TRANSITIONS,
    """
    CLEAR     WORST        SUSPECT   SUSPECT
    CLEAR     NONE_WORST   CLEAR     -
    SUSPECT   WORST        SUSPECT   SUSPECT
    SUSPECT   STILL_WORST  SUSPECT   -
    SUSPECT   NONE_WORST   CLEAR     CLEAR
    SUSPECT   HELD         COOLDOWN  REPLACE
    COOLDOWN  WORST        COOLDOWN  -
    COOLDOWN  NONE_WORST   COOLDOWN  -
    COOLDOWN  COOLED       CLEAR     -
    """,
)


# (time, scores of connections 1, 2, 3, the connection replaced, state after); margin 0.2,
# replaced after 5 s worst, cooldown 30 s.
REPLACE_ROWS = [
    (0.0, (0.9, 0.9, 0.9), None, Replace.CLEAR),
    (1.0, (0.9, 0.8, 0.5), None, Replace.SUSPECT),  # 3 worst by 0.3 from 1 s
    (4.0, (0.9, 0.8, 0.65), None, Replace.SUSPECT),  # 0.15: inside the hysteresis band
    (6.0, (0.9, 0.8, 0.5), 3, Replace.COOLDOWN),  # worst for 5 s: replaced
    (10.0, (0.9, 0.2, 0.9), None, Replace.COOLDOWN),  # cooldown: nobody replaced
    (37.0, (0.9, 0.2, 0.9), None, Replace.SUSPECT),  # cooled: 2 is suspect from 37 s
]


def test_replacement_with_hysteresis_and_cooldown() -> None:
    policy = ReplacementPolicy(margin=0.2, replace_after_s=5.0, cooldown_s=30.0)
    for now_s, scores, replaced, state in REPLACE_ROWS:
        got = policy.evaluate(dict(zip((1, 2, 3), scores, strict=True)), now_s)
        assert (got, policy.state) == (replaced, state), now_s
    # Inside the band (0.15 >= 0.1): still suspect; below it (0.05): cleared.
    assert policy.evaluate({1: 0.9, 2: 0.75, 3: 0.9}, 40.0) is None
    assert (policy.state, policy.suspect) == (Replace.SUSPECT, 2)
    assert policy.evaluate({1: 0.9, 2: 0.85, 3: 0.9}, 41.0) is None
    assert policy.state is Replace.CLEAR and policy.replaced == 1


def test_a_new_worst_restarts_the_clock_and_one_connection_is_never_replaced() -> None:
    policy = ReplacementPolicy(margin=0.2, replace_after_s=5.0, cooldown_s=30.0)
    assert policy.evaluate({1: 0.9, 2: 0.5}, 0.0) is None
    assert policy.evaluate({1: 0.4, 2: 0.9}, 4.0) is None and policy.suspect == 1
    assert policy.evaluate({1: 0.4, 2: 0.9}, 8.0) is None
    assert policy.evaluate({1: 0.4, 2: 0.9}, 9.0) == 1
    lone = ReplacementPolicy(margin=0.2, replace_after_s=0.0, cooldown_s=0.0)
    assert lone.evaluate({1: 0.0}, 0.0) is None and lone.evaluate({1: 0.0}, 100.0) is None


# --- standby --------------------------------------------------------------------------------

STANDBY_SPEC = specify(
    "standby",
    STANDBY_TRANSITIONS,
    """
    IDLE    PRIMARIES_SILENT   ACTIVE  CONNECT
    IDLE    PRIMARIES_HEALTHY  IDLE    -
    IDLE    UNSETTLED          IDLE    -
    ACTIVE  PRIMARIES_SILENT   ACTIVE  -
    ACTIVE  PRIMARIES_HEALTHY  IDLE    RELEASE
    ACTIVE  UNSETTLED          ACTIVE  -
    """,
)


ORDER = ("A", "B", "C", "S1", "S2")


@pytest.mark.parametrize(
    ("current", "busy", "moved_to"),
    [
        ("A", {"A", "B", "C"}, "S1"),  # the next free one after A
        ("C", {"A", "B", "C"}, "S1"),
        ("A", {"A", "B", "C", "S1"}, "S2"),  # S1 is connected: skipped
        ("S2", {"S2", "B", "C", "S1"}, "A"),  # cyclically
        ("B", {"B", "C", "S1", "S2"}, "A"),
        ("A", set(ORDER), None),  # every other one is busy: stays
        ("A", {"B", "C", "S1", "S2"}, None),  # its own endpoint is not a move
        ("X", {"A"}, "B"),  # an endpoint no longer listed: the first free one
    ],
)
def test_a_replaced_connection_rotates_to_the_next_free_endpoint(
    current: str, busy: set[str], moved_to: str | None
) -> None:
    assert rotated_endpoint(ORDER, current, busy) == moved_to
    assert rotated_endpoint((current,), current, set()) is None


def test_every_standby_pair_is_defined() -> None:
    assert STANDBY_SPEC.undefined() == []


# (time, last frame of primaries 1 and 2, action, state after); standby after 3 s of
# silence of every primary, released after a primary received for 10 s.
STANDBY_ROWS = [
    (0.0, (None, None), None, Standby.IDLE),  # just started: not silent yet
    (2.0, (1.5, 2.0), None, Standby.IDLE),
    (4.0, (1.5, 2.0), None, Standby.IDLE),  # silent 2.5 s and 2 s: not yet 3 s
    (5.0, (1.5, 2.0), StandbyAction.CONNECT, Standby.ACTIVE),  # both silent for 3 s
    (20.0, (1.5, 2.0), None, Standby.ACTIVE),
    (21.0, (1.5, 21.0), None, Standby.ACTIVE),  # primary 2 back: receiving since 21 s
    (30.0, (1.5, 29.9), None, Standby.ACTIVE),
    (31.0, (1.5, 30.9), StandbyAction.RELEASE, Standby.IDLE),  # 10 s receiving
    (32.0, (1.5, 31.9), None, Standby.IDLE),
]


def test_standby_connects_when_every_primary_is_silent_and_is_released_after_recovery() -> None:
    policy = StandbyPolicy(standby_after_s=3.0, release_after_s=10.0)
    for now_s, lasts, action, state in STANDBY_ROWS:
        got = policy.evaluate(dict(zip((1, 2), lasts, strict=True)), now_s)
        assert (got, policy.state) == (action, state), now_s
    assert policy.activations == 1


def test_primaries_that_never_received_are_silent_from_when_first_heard_of() -> None:
    policy = StandbyPolicy(standby_after_s=3.0, release_after_s=10.0)
    assert policy.evaluate({1: None}, 10.0) is None
    assert policy.evaluate({1: None}, 13.0) is StandbyAction.CONNECT
    # A replacement (a new conn id) is heard of now: not silent at once.
    assert policy.evaluate({2: None}, 14.0) is None and policy.state is Standby.ACTIVE
