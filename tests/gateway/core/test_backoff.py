from __future__ import annotations

import random

import pytest

from gateway.core.backoff import Backoff


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
