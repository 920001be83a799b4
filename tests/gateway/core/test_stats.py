"""The stats classes: which fields are exported, under what (counts by key with their
label), and the fields' starting values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from gateway.core import stats as stats_module
from gateway.core.stats import CAPTURE_DROPPED
from gateway.core.stats import FanoutStats
from gateway.core.stats import FetcherStats
from gateway.core.stats import SlotRenewals
from gateway.core.stats import Stat
from gateway.core.stats import SymbolStats
from gateway.core.stats import counter
from gateway.core.stats import counter_by
from gateway.core.stats import exported
from gateway.core.stats import gauge

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
    closes: dict[int, int] = counter_by("Closes sent.", metric="example_closes", label="code")


def test_exported_lists_the_counters_and_gauges_in_field_order_and_skips_the_rest() -> None:
    assert exported(_Example) == (
        Stat("example_sent", "sent", "Messages sent."),
        Stat("example_wait_seconds", "waited_s", "Seconds waited."),
        Stat("example_up", "up", "1 while up.", counter=False),
        Stat("example_queued", "queued", "Messages queued.", counter=False),
        Stat("example_closes", "closes", "Closes sent.", label="code"),
    )


def test_fields_start_at_their_initial_value_of_its_type() -> None:
    example = _Example()
    assert (example.sent, example.waited_s, example.up, example.queued) == (0, 0.0, False, 0)
    assert type(example.waited_s) is float and type(example.up) is bool
    example.sent += 2
    assert example.sent == 2 and _Example().sent == 0


def test_counts_by_key_start_empty_and_are_not_shared_between_objects() -> None:
    example = _Example()
    assert example.closes == {}
    example.closes[1009] = 1
    assert _Example().closes == {} and example.closes == {1009: 1}


def test_the_counts_by_key_are_exported_as_counters_labelled_by_their_key() -> None:
    keyed = {
        (cls.__name__, stat.attribute, stat.name, stat.label)
        for cls in STATS_CLASSES
        for stat in exported(cls)
        if stat.label is not None
    }
    assert keyed == {
        ("FetcherStats", "by_base", "snapshots_fetched_by_base", "base"),
        ("SlotRenewals", "due", "slot_renewals_due", "cause"),
        ("FanoutStats", "closes_sent", "fanout_closes_sent", "code"),
        ("FanoutStats", "http_refused", "fanout_http_refused", "status"),
    }
    assert all(s.counter for cls in STATS_CLASSES for s in exported(cls) if s.label)
    # Each instance starts with its own empty counts.
    assert SlotRenewals().due == {} and SlotRenewals().due is not SlotRenewals().due
    assert FanoutStats().closes_sent == {} and FetcherStats().by_base == {}


@pytest.mark.parametrize("stats_class", STATS_CLASSES, ids=lambda c: c.__name__)
def test_every_stats_class_exports_numbers_with_a_help(stats_class: type) -> None:
    stats = stats_class()
    stats_exported = exported(stats_class)
    assert stats_exported, "a stats class exports at least one counter"
    for stat in stats_exported:
        assert stat.help.endswith(".") and stat.name.islower()
        value = getattr(stats, stat.attribute)
        if stat.label is None:
            assert isinstance(value, int | float)
        else:
            # A label name of the exposition, and counts (none yet) by key.
            assert stat.label.isidentifier() and stat.label.islower()
            assert isinstance(value, dict)


#: The fields of the stats classes not exported on /metrics, each with the reason.
NOT_EXPORTED: dict[str, str] = {
    "ConnectionStats.last_error": "text: the views' and the symbol status's reason",
    "ConnectionStats.connected_since_s": "a monotonic clock reading, for uptimes",
    "FetcherStats.max_in_flight": "the high-water mark of snapshot_requests_in_flight",
    "FetcherStats.last_error": "text: logged with the failure",
    "SymbolStats.connections": "exported as the SymbolConnectionStats families",
    "CaptureStats.failed": "text: the error that stopped the capture, logged",
    "CaptureStats.dropped_on_record": "exported in their sum, capture_dropped (CAPTURE_DROPPED)",
    "CaptureStats.dropped_on_write": "exported in their sum, capture_dropped (CAPTURE_DROPPED)",
}


def test_every_field_of_every_stats_class_is_exported_unless_listed_with_a_reason() -> None:
    kept = {
        f"{cls.__name__}.{field.name}" for cls in STATS_CLASSES for field in dataclasses.fields(cls)
    }
    exported_fields = {
        f"{cls.__name__}.{stat.attribute}" for cls in STATS_CLASSES for stat in exported(cls)
    }
    assert kept - exported_fields == NOT_EXPORTED.keys(), "export it, or list it with a reason"
    assert all(reason for reason in NOT_EXPORTED.values())


def test_no_metric_name_is_exported_twice() -> None:
    assert len(STATS_CLASSES) == 10
    names = [stat.name for cls in STATS_CLASSES for stat in exported(cls)]
    names.append(CAPTURE_DROPPED.name)
    assert len(names) == len(set(names))


def test_a_symbols_connection_stats_are_made_on_first_use_and_kept() -> None:
    stats = SymbolStats()
    first = stats.conn(3)
    first.received += 1
    assert stats.conn(3) is first and stats.connections == {3: first}
