"""The simulators' number and time formatting."""

from __future__ import annotations

import pytest

from feeds.sim.numbers import decimals
from feeds.sim.numbers import fixed
from feeds.sim.numbers import iso_time
from feeds.sim.numbers import trim


def test_fixed_cuts_only_zeros() -> None:
    assert fixed("1.50000000", 2) == "1.50"
    assert fixed("65000.00000000", 0) == "65000"
    assert fixed("0.5", 3) == "0.500"
    with pytest.raises(ValueError, match="more than 2 significant decimals"):
        fixed("1.55500000", 2)


def test_trim_drops_trailing_zeros_and_keeps_zero() -> None:
    assert trim("2.50000000") == "2.5"
    assert trim("0.00000000") == "0"
    assert trim("100") == "100"
    assert trim("10.0") == "10"


def test_decimals_of_a_tick() -> None:
    assert [decimals(t) for t in ("0.01", "1", "0.500")] == [2, 0, 1]


def test_iso_time_has_microseconds_and_z() -> None:
    assert iso_time(1_675_974_770_714_964_123) == "2023-02-09T20:32:50.714964Z"
