"""The stats classes: which fields are exported, under what, and the fields' starting values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from gateway.core import stats as stats_module
from gateway.core.stats import SlotRenewals, Stat, SymbolStats, counter, exported, gauge

#: Every stats class the module declares.
STATS_CLASSES = tuple(
    c for c in vars(stats_module).values() if isinstance(c, type) and dataclasses.is_dataclass(c)
)


@dataclass
class _Example:
    kept: str = ""
    sent: int = counter("Messages sent.", metric="example_sent")
    waited_s: float = counter("Seconds waited.", metric="example_wait_seconds", initial=0.0)
    up: bool = gauge("1 while up.", metric="example_up", initial=False)
    queued: int = gauge("Messages queued.", metric="example_queued")


def test_exported_lists_the_counters_and_gauges_in_field_order_and_skips_the_rest() -> None:
    assert exported(_Example) == (
        Stat("example_sent", "sent", "Messages sent."),
        Stat("example_wait_seconds", "waited_s", "Seconds waited."),
        Stat("example_up", "up", "1 while up.", counter=False),
        Stat("example_queued", "queued", "Messages queued.", counter=False),
    )


def test_fields_start_at_their_initial_value_of_its_type() -> None:
    example = _Example()
    assert (example.sent, example.waited_s, example.up, example.queued) == (0, 0.0, False, 0)
    assert type(example.waited_s) is float and type(example.up) is bool
    example.sent += 2
    assert example.sent == 2 and _Example().sent == 0


@pytest.mark.parametrize("stats_class", STATS_CLASSES, ids=lambda c: c.__name__)
def test_every_stats_class_exports_numbers_with_a_help(stats_class: type) -> None:
    stats = stats_class(due={}) if stats_class is SlotRenewals else stats_class()
    stats_exported = exported(stats_class)
    assert stats_exported, "a stats class exports at least one counter"
    for stat in stats_exported:
        assert stat.help.endswith(".") and stat.name.islower()
        assert isinstance(getattr(stats, stat.attribute), int | float)


def test_no_metric_name_is_exported_twice() -> None:
    assert len(STATS_CLASSES) == 8
    names = [stat.name for cls in STATS_CLASSES for stat in exported(cls)]
    assert len(names) == len(set(names))


def test_a_symbols_connection_stats_are_made_on_first_use_and_kept() -> None:
    stats = SymbolStats()
    first = stats.conn(3)
    first.received += 1
    assert stats.conn(3) is first and stats.connections == {3: first}
