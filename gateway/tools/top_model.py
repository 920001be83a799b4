"""What ``mdgateway top`` shows, from what a gateway serves: no network here.

Inputs, as the shell (:mod:`gateway.tools.top`) fetched them: the ``/metrics`` text
(parsed with prometheus_client's text parser; names in ``docs/metrics.md``), the
``/healthz`` document, the subscribers of ``/subscribers`` (:func:`subscriber_rows`;
None where the gateway has no such route), and the top of each book with its status from
the WebSocket (``bbo`` channel). :func:`top_frame` turns a :class:`Reading` into the frame
drawn (:func:`gateway.tools.view.frame`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import msgspec
from prometheus_client.parser import text_string_to_metric_families
from rich.console import RenderableType
from rich.text import Text

from gateway.core.histogram import quantile
from gateway.core.model import Level
from gateway.core.model import SymbolState
from gateway.io.fanout import SubscriberStats
from gateway.tools.view import BookRow
from gateway.tools.view import EndpointRow
from gateway.tools.view import books_data
from gateway.tools.view import endpoints_data
from gateway.tools.view import frame
from gateway.tools.view import size
from gateway.tools.view import subscribers_data
from gateway.wire.client_session import ClientState
from gateway.wire.protocol import members
from gateway.wire.protocol import typed_value

Labels = tuple[tuple[str, str], ...]
#: Sample name → labels (sorted pairs) → value.
Samples = dict[str, dict[Labels, float]]

LATENCY = "mdgateway_connection_event_latency_seconds"


class NotAGateway(ValueError):
    """The document is not what an mdgateway gateway serves."""


def parse_metrics(text: str) -> Samples:
    """Every sample of a ``/metrics`` text by name and labels. Raises :class:`NotAGateway`
    when the text is not Prometheus' format or holds no ``mdgateway_`` metric."""
    samples: Samples = defaultdict(dict)
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    except ValueError as exc:
        raise NotAGateway(f"/metrics is not in Prometheus' text format: {exc}") from None
    if not any(name.startswith("mdgateway_") for name in samples):
        raise NotAGateway("/metrics holds no mdgateway_ metric")
    return dict(samples)


_STATES = members(SymbolState)


def _symbol_entry(entry: object) -> bool:
    """A symbol and its state: any string, a later gateway's states too (shown as
    unknown)."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("symbol"), str)
        and isinstance(entry.get("state"), str)
    )


def check_health(document: object) -> Mapping[str, Any]:
    """The ``/healthz`` document, checked to be a gateway's (a protocol version, and its
    symbols with their states); else :class:`NotAGateway`."""
    if (
        not isinstance(document, dict)
        or "protocol_version" not in document
        or not isinstance(document.get("symbols"), list)
        or not all(_symbol_entry(entry) for entry in document["symbols"])
        or not all(_symbol_entry(entry) for entry in document.get("not_live", []))
    ):
        raise NotAGateway("/healthz is not a gateway's health document")
    return document


@dataclasses.dataclass(frozen=True, slots=True)
class Top:
    """A symbol's top of book and status from the WebSocket (None: not received)."""

    state: ClientState | None = None
    reason: str = ""
    bid: Level | None = None
    ask: Level | None = None
    position: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Reading:
    """One look at a gateway. ``error``: what went wrong fetching it (shown in the header,
    the rest being the last values read)."""

    url: str
    metrics: Samples
    health: Mapping[str, Any]
    subscribers: Sequence[SubscriberStats] | None = None
    tops: Mapping[str, Top] = dataclasses.field(default_factory=dict)
    error: str | None = None
    clock: str = ""


def _by(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """``name``'s values summed by the labels ``keys``."""
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for labels, value in samples.get(name, {}).items():
        as_dict = dict(labels)
        out[tuple(as_dict.get(key, "") for key in keys)] += value
    return out


def _count(values: Mapping[tuple[str, ...], float], key: tuple[str, ...]) -> int | None:
    value = values.get(key)
    return None if value is None else int(value)


def _latency(samples: Samples, venue: str, conn: str, q: float) -> float | None:
    buckets: list[tuple[float, float]] = []
    for labels, value in samples.get(f"{LATENCY}_bucket", {}).items():
        as_dict = dict(labels)
        if as_dict.get("venue") == venue and as_dict.get("connection") == conn:
            buckets.append((float(as_dict["le"]), value))
    buckets.sort()
    return quantile(buckets, q) if buckets and math.isinf(buckets[-1][0]) else None


def endpoint_rows(samples: Samples) -> list[EndpointRow]:
    """One row per ``mdgateway_connection_info`` series, in connection order."""
    up = _by(samples, "mdgateway_connection_up", "venue", "connection")
    frames = _by(samples, "mdgateway_connection_frames_total", "venue", "connection")
    reconnects = _by(samples, "mdgateway_connection_reconnects_total", "venue", "connection")
    failed = _by(samples, "mdgateway_connection_failed_attempts_total", "venue", "connection")
    bad = _by(samples, "mdgateway_connection_bad_frames_total", "venue", "connection")
    wins = _by(samples, "mdgateway_symbol_connection_first_wins_total", "venue", "connection")
    dups = _by(samples, "mdgateway_symbol_connection_duplicates_total", "venue", "connection")
    info = _by(samples, "mdgateway_connection_info", "venue", "connection", "endpoint", "role")
    rows = []
    for venue, conn, endpoint, role in info:
        key = (venue, conn)
        rows.append(
            EndpointRow(
                conn,
                venue if role in ("book", "") else f"{venue} ({role})",
                endpoint,
                up.get(key, 0.0) == 1.0,
                frames=_count(frames, key),
                first_wins=_count(wins, key) or 0,
                duplicates=_count(dups, key) or 0,
                reconnects=_count(reconnects, key),
                failed_attempts=_count(failed, key),
                bad_frames=_count(bad, key) or 0,  # a series only once one was bad
                latency_p50_s=_latency(samples, venue, conn, 0.5),
                latency_p99_s=_latency(samples, venue, conn, 0.99),
            )
        )
    rows.sort(key=lambda row: int(row.conn) if row.conn.isdigit() else math.inf)
    return rows


def book_rows(
    samples: Samples, health: Mapping[str, Any], tops: Mapping[str, Top]
) -> list[BookRow]:
    """One row per symbol of ``/healthz``, in its order: the state the WebSocket last told
    (else ``/healthz``'s), the top of book, and the symbol's counters."""
    reasons = {entry["symbol"]: entry.get("reason", "") for entry in health.get("not_live", [])}
    updates = _by(samples, "mdgateway_symbol_updates_total", "venue", "symbol")
    dups = _by(samples, "mdgateway_symbol_duplicates_total", "venue", "symbol")
    gaps = _by(samples, "mdgateway_symbol_gaps_total", "venue", "symbol")
    resyncs = _by(samples, "mdgateway_symbol_resyncs_total", "venue", "symbol")
    rows = []
    for entry in health.get("symbols", []):
        key = str(entry["symbol"])
        top = tops.get(key, Top())
        state = top.state if top.state is not None else typed_value(_STATES, entry["state"])
        reason = top.reason if top.state is not None else reasons.get(key, "")
        venue, _, symbol = key.partition(":")
        labels = (venue, symbol)
        rows.append(
            BookRow(
                key,
                state,
                top.bid,
                top.ask,
                position=top.position,
                updates=_count(updates, labels),
                duplicates=_count(dups, labels),
                gaps=_count(gaps, labels),
                resyncs=_count(resyncs, labels),
                reason=reason if reason and state is not SymbolState.LIVE else None,
            )
        )
    return rows


def subscriber_rows(documents: object) -> list[SubscriberStats]:
    """The subscribers of a ``/subscribers`` document's list, most behind first. Raises
    :class:`NotAGateway` when it is not that list."""
    try:
        rows = msgspec.convert(documents, list[SubscriberStats])
    except msgspec.ValidationError as exc:
        raise NotAGateway(f"/subscribers: {exc}") from None
    rows.sort(key=lambda row: (not row.behind, -row.buffered_bytes, row.id))
    return rows


def header(reading: Reading) -> Text:
    """The first line: URL, health, symbols live, subscribers, the error of the last read
    (if any), the time, then the fan-out's totals (cut first on a narrow screen)."""
    samples, health = reading.metrics, reading.health
    fanout = {name: samples.get(f"mdgateway_fanout_{name}", {}).get((), 0.0) for name in (
        "subscribers", "messages_sent_total", "sent_bytes_total", "dropped_messages_total",
        "conflations_total", "slow_disconnects_total",
    )}  # fmt: skip
    status = str(health.get("status", "?"))
    line = Text(f"mdgateway top  {reading.url}  ", style="bold")
    line.append(status, style="green" if status == "ok" else "red")
    line.append(
        f"  live {health.get('live', '?')}/{health.get('total', '?')}"
        f"  subscribers {int(fanout['subscribers'])}"
    )
    if reading.error:
        line.append(f"  {reading.error}", style="bold red")
    if reading.clock:
        line.append(f"  {reading.clock}")
    line.append(
        f"  sent {int(fanout['messages_sent_total'])} msgs {size(int(fanout['sent_bytes_total']))}"
        f"  dropped {int(fanout['dropped_messages_total'])}"
        f"  conflations {int(fanout['conflations_total'])}"
        f"  slow closes {int(fanout['slow_disconnects_total'])}"
    )
    return line


def top_frame(reading: Reading, width: int, height: int) -> RenderableType:
    """The whole view of ``reading`` in ``width`` x ``height`` cells: header, books,
    endpoints, subscribers (the last when the gateway serves ``/subscribers``)."""
    tables = [
        books_data(book_rows(reading.metrics, reading.health, reading.tops)),
        endpoints_data(endpoint_rows(reading.metrics)),
    ]
    if reading.subscribers is not None:
        tables.append(subscribers_data(reading.subscribers))
    return frame(header(reading), tables, width, height)
