"""``GET /metrics``: the gateway's counters in Prometheus' text format, read at scrape time.

:class:`GatewayCollector` is a prometheus_client custom collector. It keeps no metric of its
own and nothing on the receive path touches it: each scrape reads the stats objects the
components keep anyway (connections, venue pipelines, symbol arbiters, trade dedup, REST
fetchers, the venue runtimes, the fan-out, descriptor exhaustion, the capture writer) and
builds the metric families afresh; the text is prometheus_client's exposition
(:func:`prometheus_client.generate_latest`).
``docs/metrics.md`` lists every name.

What is exported, under which name and help, is declared where the counter is: the fields of
the stats classes in :mod:`gateway.core.stats` (:func:`~gateway.core.stats.exported` reads
them), counts by key as a family with a label for the key. Only values kept by objects
that are not stats classes (the score policies, the trade dedup, the arbiter's pending
updates) are listed here, as :class:`Stat` tables.
docs/metrics.md has a row per name (a test holds the two together).
"""

from __future__ import annotations

import http
import math
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Final
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client import GCCollector
from prometheus_client import PlatformCollector
from prometheus_client import ProcessCollector
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.core import StateSetMetricFamily
from prometheus_client.registry import Collector

from gateway.core.histogram import Histogram
from gateway.core.model import SymbolState
from gateway.core.stats import CAPTURE_DROPPED
from gateway.core.stats import CaptureStats
from gateway.core.stats import ConnectionStats
from gateway.core.stats import FanoutStats
from gateway.core.stats import FdExhaustionStats
from gateway.core.stats import FetcherStats
from gateway.core.stats import SlotRenewals
from gateway.core.stats import Stat
from gateway.core.stats import SymbolConnectionStats
from gateway.core.stats import SymbolStats
from gateway.core.stats import VenueRuntimeStats
from gateway.core.stats import VenueStats
from gateway.core.stats import exported
from gateway.io.health import HttpAnswer
from gateway.io.logs import FD_EXHAUSTION

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from gateway.io.capture_writer import CaptureWriter
    from gateway.io.fanout import Fanout
    from gateway.io.venue_runtime import VenueRuntime

#: Every name the gateway exports starts with it.
PREFIX: Final = "mdgateway_"
#: The text format 0.0.4, which every Prometheus reads; the gateway's names (plain
#: ``[a-z_]``) make generate_latest's output exactly that format.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class MetricsSource(Protocol):
    """What the metrics are read from at each scrape (the :class:`~gateway.io.service.Service`)."""

    @property
    def venues(self) -> Sequence[VenueRuntime]: ...
    @property
    def fanout(self) -> Fanout: ...
    @property
    def capture(self) -> CaptureWriter | None: ...


#: The ``connection`` label of REST snapshot bodies (counted as bad frames of no connection).
REST_CONNECTION: Final = "rest"


# --- the tables ------------------------------------------------------------------------------

# The exported fields of the stats classes; labels: see where each is collected.
VENUE_STATS: Final = exported(VenueStats)
VENUE_RUNTIME_STATS: Final = exported(VenueRuntimeStats)
FETCHER_STATS: Final = exported(FetcherStats)
CONNECTION_STATS: Final = exported(ConnectionStats)
SLOT_RENEWAL_STATS: Final = exported(SlotRenewals)
SYMBOL_STATS: Final = exported(SymbolStats)
SYMBOL_CONNECTION_STATS: Final = exported(SymbolConnectionStats)
FANOUT_STATS: Final = exported(FanoutStats)
FD_EXHAUSTION_STATS: Final = exported(FdExhaustionStats)
#: With the capture's drops, summed over its two threads' counters.
CAPTURE_STATS: Final = (*exported(CaptureStats), CAPTURE_DROPPED)

# Attributes of objects that are not stats classes: one line per exported value.

#: gateway.core.score.ReplacementPolicy; labels venue.
REPLACEMENT_STATS: Final = (
    Stat("venue_connection_replacements", "replaced", "Worst-scored connections replaced."),
)

#: gateway.core.score.StandbyPolicy (venues with standby endpoints); labels venue.
STANDBY_STATS: Final = (
    Stat("venue_standby_activations", "activations", "Times the standby endpoints connected."),
)

#: The symbol's arbiter (gateway.core.arbiter.SymbolArbiter); labels venue, symbol.
ARBITER_GAUGES: Final = (
    Stat("symbol_pending_updates", "pending", "Updates waiting for missing ids.", counter=False),
)

#: gateway.core.arbiter.TradeDedup; labels venue, symbol.
TRADE_STATS: Final = (
    Stat("trades", "accepted", "Trades published (first copy)."),
    Stat("trade_duplicates", "duplicates", "Trade copies dropped."),
)

# --- the collector --------------------------------------------------------------------------

#: One object's label values, and the object.
Row = tuple[Sequence[str], object]


def families(stats: Sequence[Stat], labels: Sequence[str], rows: Iterable[Row]) -> list[Metric]:
    """One family per :class:`Stat`, with one sample per row; a stat with a ``label``
    (counts by key) has that label too, and one sample per row and key."""
    built: list[CounterMetricFamily | GaugeMetricFamily] = []
    for stat in stats:
        family_labels = labels if stat.label is None else (*labels, stat.label)
        kind = CounterMetricFamily if stat.counter else GaugeMetricFamily
        built.append(kind(PREFIX + stat.name, stat.help, labels=family_labels))
    for values, obj in rows:
        for family, stat in zip(built, stats, strict=True):
            value = getattr(obj, stat.attribute)
            if stat.label is None:
                family.add_metric(values, float(value))
                continue
            for key, count in value.items():
                # An IntEnum key (a close code, an HTTP status) prints as its number.
                family.add_metric((*values, str(key)), float(count))
    return list(built)


def histogram_buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [
        ("+Inf" if math.isinf(bound) else repr(bound), float(count))
        for bound, count in histogram.cumulative()
    ]


class GatewayCollector(Collector):
    """Reads the service's stats at each scrape; see the module docstring."""

    def __init__(self, service: MetricsSource) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        service = self._service
        venues = service.venues
        yield from families(VENUE_STATS, ("venue",), [((v.cfg.venue,), v.stats) for v in venues])
        yield from families(
            VENUE_RUNTIME_STATS, ("venue",), [((v.cfg.venue,), v.runtime_stats) for v in venues]
        )
        fetchers = [((v.cfg.venue,), v.fetcher.stats) for v in venues if v.fetcher is not None]
        yield from families(FETCHER_STATS, ("venue",), fetchers)
        yield from self._connections()
        yield from families(
            SLOT_RENEWAL_STATS,
            ("venue", "slot"),
            [
                ((v.cfg.venue, str(slot)), v.renewals.stats(slot))
                for v in venues
                for slot in v.renewals.slots
            ],
        )
        yield from families(
            REPLACEMENT_STATS, ("venue",), [((v.cfg.venue,), v.replacement) for v in venues]
        )
        standby = [((v.cfg.venue,), v.standby) for v in venues if v.standby is not None]
        yield from families(STANDBY_STATS, ("venue",), standby)
        yield from self._symbols()
        yield from families(FANOUT_STATS, (), [((), service.fanout.stats)])
        # The process's: its one FdExhaustion serves every server and connection.
        yield from families(FD_EXHAUSTION_STATS, (), [((), FD_EXHAUSTION.stats)])
        capture = service.capture
        yield from families(CAPTURE_STATS, (), [] if capture is None else [((), capture.stats)])

    def _connections(self) -> Iterator[Metric]:
        venues = self._service.venues
        labels = ("venue", "connection")
        yield from families(
            CONNECTION_STATS,
            labels,
            [
                ((v.cfg.venue, str(c.conn_id)), c.stats)
                for v in venues
                for c in v.connections.values()
            ],
        )
        info = GaugeMetricFamily(
            PREFIX + "connection_info",
            "1 per upstream connection: its endpoint, role (book, trade or standby) and slot.",
            labels=(*labels, "endpoint", "role", "slot"),
        )
        bad = CounterMetricFamily(
            PREFIX + "connection_bad_frames",
            "Frames the venue's parser rejected, per connection (REST bodies: connection=rest).",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            PREFIX + "connection_event_latency_seconds",
            "Venue event time to receive time of book updates that carry an event time.",
            labels=labels,
        )
        for v in venues:
            venue = v.cfg.venue
            for conn_id, c in v.connections.items():
                spec = v.slots[c.slot]
                role = "trade" if spec.trades_only else "standby" if spec.standby else "book"
                info.add_metric((venue, str(conn_id), c.endpoint, role, str(c.slot)), 1.0)
            for conn_id, count in v.bad_frames_by_conn.items():
                connection = REST_CONNECTION if conn_id < 0 else str(conn_id)
                bad.add_metric((venue, connection), float(count))
            for conn_id, histogram in v.pipeline.event_latency_by_conn.items():
                latency.add_metric(
                    (venue, str(conn_id)), histogram_buckets(histogram), histogram.sum
                )
        yield from (info, bad, latency)

    def _symbols(self) -> Iterator[Metric]:
        books = [
            (v.cfg.venue, key.partition(":")[2], book)
            for v in self._service.venues
            for key, book in v.books.items()
        ]
        labels = ("venue", "symbol")
        yield from families(SYMBOL_STATS, labels, [((v, s), b.stats) for v, s, b in books])
        yield from families(ARBITER_GAUGES, labels, [((v, s), b) for v, s, b in books])
        state = StateSetMetricFamily(
            PREFIX + "symbol_state", "The symbol's state: 1 for the one it is in.", labels=labels
        )
        for venue, symbol, book in books:
            state.add_metric((venue, symbol), {s.value: book.state == s for s in SymbolState})
        yield state
        yield from families(
            SYMBOL_CONNECTION_STATS,
            (*labels, "connection"),
            [
                ((venue, symbol, str(conn_id)), stats)
                for venue, symbol, book in books
                for conn_id, stats in book.stats.connections.items()
            ],
        )
        trades = [
            ((v.cfg.venue, key.partition(":")[2]), dedup)
            for v in self._service.venues
            for key, dedup in v.pipeline.trades.items()
        ]
        yield from families(TRADE_STATS, labels, trades)


def metrics_registry(service: MetricsSource) -> CollectorRegistry:
    """A registry of the service's metrics, with prometheus_client's process, platform and
    garbage-collector collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(service))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_answer(registry: CollectorRegistry) -> HttpAnswer:
    """The ``/metrics`` answer: the registry in the text exposition format."""
    return HttpAnswer(http.HTTPStatus.OK, CONTENT_TYPE, generate_latest(registry))
