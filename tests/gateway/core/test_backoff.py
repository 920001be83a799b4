"""The backoff's delays, and the reconnect policy's health table and resets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.backoff import HEALTH_TRANSITIONS
from gateway.core.backoff import Backoff
from gateway.core.backoff import Health
from gateway.core.backoff import ReconnectPolicy

from .state_tables import specify


def test_delays_grow_exponentially_up_to_the_cap_with_jitter_inside() -> None:
    backoff = Backoff(0.1, 2.0, random.Random(7))
    ceilings = []
    for _ in range(12):
        ceiling = backoff.ceiling_s()
        delay = backoff.next_delay_s()
        assert 0.0 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert ceilings[5:] == [2.0] * 7


def test_reset_starts_over_and_long_outages_do_not_overflow() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(1))
    for _ in range(5000):
        backoff.next_delay_s()
    assert backoff.ceiling_s() == 30.0
    backoff.reset()
    assert backoff.ceiling_s() == 0.5


def test_jitter_is_seeded_and_spreads_connections() -> None:
    a = [Backoff(1.0, 8.0, random.Random(1)).next_delay_s() for _ in range(3)]
    b = [Backoff(1.0, 8.0, random.Random(2)).next_delay_s() for _ in range(3)]
    assert a == [Backoff(1.0, 8.0, random.Random(1)).next_delay_s()] * 3
    assert a[0] != b[0]


@pytest.mark.parametrize(("initial", "cap"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_bad_parameters(initial: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, cap)


# --- ReconnectPolicy: the backoff resets only after a healthy stretch --------------------------

HEALTH_SPEC = specify(
    "health",
    HEALTH_TRANSITIONS,
    """
    DOWN     CONNECTED      UP       -
    DOWN     ENDED          DOWN     BACK_OFF
    UP       FRAME          UP       -
    UP       SETTLED_FRAME  HEALTHY  RESET_BACKOFF
    UP       ENDED          DOWN     BACK_OFF
    UP       RENEWED        DOWN     BACK_OFF
    HEALTHY  FRAME          HEALTHY  -
    HEALTHY  SETTLED_FRAME  HEALTHY  -
    HEALTHY  ENDED          DOWN     BACK_OFF
    HEALTHY  RENEWED        DOWN     AT_ONCE
    """,
)


def _policy(healthy_after_s: float = 10.0) -> ReconnectPolicy:
    return ReconnectPolicy(Backoff(0.1, 10.0, random.Random(3)), healthy_after_s)


def test_an_endpoint_that_sends_a_frame_and_closes_backs_off_like_a_refusing_one() -> None:
    flapping, refusing = _policy(), _policy()
    now_s = 0.0
    for _ in range(20):
        ceiling_s = flapping.backoff.ceiling_s()
        flapping.connected(now_s)
        flapping.received(now_s + 0.001)
        delay_s = flapping.ended()
        assert 0.0 <= delay_s <= ceiling_s
        assert refusing.ended() >= 0.0
        now_s += 0.002 + delay_s
    assert flapping.backoff.failures == refusing.backoff.failures == 20
    assert flapping.backoff.ceiling_s() == 10.0, "the delays reached the cap"
    assert flapping.state is Health.DOWN


def test_the_backoff_resets_once_the_connection_received_for_healthy_after_s() -> None:
    policy = _policy(healthy_after_s=10.0)
    for _ in range(6):
        policy.ended()
    policy.connected(100.0)
    policy.received(109.9)
    assert (policy.state, policy.backoff.failures) == (Health.UP, 6)
    policy.received(110.0)
    assert policy.state is Health.HEALTHY and policy.backoff.failures == 0
    # A healthy connection's next failure starts from initial_s again.
    assert policy.ended() <= 0.1
    assert policy.backoff.failures == 1


def test_only_a_healthy_connection_is_renewed_at_once() -> None:
    policy = _policy(healthy_after_s=10.0)
    policy.connected(0.0)
    policy.received(20.0)
    assert policy.ended(renew=True) == 0.0
    assert policy.backoff.failures == 0
    # A reconnect notice right after every connect is a flapping endpoint: it backs off.
    policy.connected(30.0)
    policy.received(30.1)
    policy.ended(renew=True)
    assert policy.backoff.failures == 1


def test_healthy_after_zero_resets_on_the_first_frame() -> None:
    policy = _policy(healthy_after_s=0.0)
    policy.ended()
    policy.connected(5.0)
    policy.received(5.0)
    assert policy.state is Health.HEALTHY and policy.backoff.failures == 0
    with pytest.raises(ValueError):
        _policy(healthy_after_s=-1.0)


@given(
    st.lists(
        st.tuples(st.floats(0.0, 30.0), st.integers(0, 3), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_the_backoff_is_reset_only_by_a_frame_healthy_after_s_past_the_connect(
    sessions: list[tuple[float, int, bool]],
) -> None:
    """Each session: connected, frames spread over ``lasted_s``, ended (or renewed). The
    failures count rises by one per session and falls to zero only when a frame came
    ``healthy_after_s`` after its connect."""
    policy = _policy(healthy_after_s=10.0)
    now_s = 0.0
    for lasted_s, frames, renew in sessions:
        before = policy.backoff.failures
        policy.connected(now_s)
        for i in range(frames):
            policy.received(now_s + lasted_s * (i + 1) / frames)
        # The last frame's time as the policy sees it: the connect's time plus lasted_s.
        healthy = frames > 0 and (now_s + lasted_s) - now_s >= 10.0
        delay_s = policy.ended(renew=renew)
        if healthy and renew:
            assert delay_s == 0.0 and policy.backoff.failures == 0
        else:
            assert policy.backoff.failures == (1 if healthy else before + 1)
        now_s += lasted_s + delay_s
