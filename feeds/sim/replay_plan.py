"""What the replay server sends, where and when: the pure core of :mod:`feeds.sim.replay`.

No asyncio, websockets or socket: records in, a :class:`ReplayPlan` out, and the few
time computations the server's send loop and REST hook need.

- Every ``ws`` record belongs to a recorded connection (``conn_id``). Connections are
  numbered in order of their first frame. With K endpoints given, recorded connection
  ``i`` replays on endpoint ``i mod K``; several connections landing on one endpoint are
  merged in recorded order. Without K (``endpoints=None``), each recorded connection gets
  an endpoint of its own (:func:`endpoint_layout`), but the companion connections a venue
  opens to one endpoint at once (Binance USD-M's ``/public`` and ``/market`` paths) share
  one. A capture of ONE recorded connection is fanned to every endpoint (the same frames;
  one endpoint without K). :attr:`ReplayPlan.connections_served` says which recorded
  connection went where.
- Times are ``offset_ns``: the frame's ``recv_ns`` minus the capture's FIRST frame's
  ``recv_ns`` (one clock for all endpoints, so the recorded order across connections and
  symbols is kept when the endpoints are read at the same pace). At speed ``X`` a frame is
  due ``offset_ns / X`` after the connection started; :func:`due_count` tells how many are
  due at once (a burst is sent without sleeping between frames). Speed ``None`` is
  ``max``: no schedule, the client's reading pace is the only limit.
- ``rest`` records become a :class:`RestIndex`: a request is matched by path and query
  (exact first, then same path and same ``symbol``/``instId``), and served the most recent
  response recorded at or before the replay time (the first one when none is yet). An
  inline snapshot (``capture:snapshot?symbol=X``, no URL recorded) is served at the
  venue's snapshot path given as ``snapshot_path``.
- Every record is also kept, in order, in the plan's :class:`ReplayBooks` (each frame names
  its record's index), which rebuilds the books at the replay's position. A record given as
  :class:`~feeds.sim.replay_book.Routed` keeps the venue its caller's router told; any
  other is told by the books' router (:mod:`gateway.capture.driver`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Final
from urllib.parse import parse_qsl
from urllib.parse import urlsplit

import msgspec

from feeds.sim.replay_book import ReplayBooks
from feeds.sim.replay_book import Routed
from gateway.capture import CaptureRecord
from gateway.capture import is_inline_snapshot

__all__ = [
    "SYMBOL_PARAMS",
    "RecordedConnection",
    "ReplayFrame",
    "ReplayPlan",
    "RestIndex",
    "build_plan",
    "due_count",
    "due_s",
    "endpoint_layout",
    "parse_speed",
]

#: Query parameters that name the instrument of a REST request, by venue.
SYMBOL_PARAMS: Final = ("symbol", "instId", "product_id", "pair", "category_symbol")


class ReplayFrame(msgspec.Struct, frozen=True, gc=False):
    """One frame to send: ``offset_ns`` after the capture's first frame, then ``recv_ns``
    as recorded (the replay time the frame stands for), and ``record``: its index in the
    plan's :class:`~feeds.sim.replay_book.ReplayBooks` (the replay's position once sent is
    ``record + 1``). ``route``: on an endpoint that serves recorded connections of several
    paths (Binance futures' ``/public`` and ``/market``), the first path segment of the
    frame's recorded connection, and only connections opened on that segment get it (as on
    the venue); empty elsewhere."""

    offset_ns: int
    recv_ns: int
    payload: bytes
    record: int = 0
    route: str = ""


def route_of(url_or_path: str) -> str:
    """The first segment of a URL's (or a request target's) path: ``public`` of
    ``ws://h/public/stream?streams=a``."""
    path = urlsplit(url_or_path).path if "://" in url_or_path else url_or_path.split("?")[0]
    return path.lstrip("/").split("/", 1)[0]


class _RestEntry(msgspec.Struct, frozen=True, gc=False):
    recv_ns: int
    payload: bytes


def _split(url: str, snapshot_path: str | None) -> tuple[str, tuple[tuple[str, str], ...]]:
    parts = urlsplit(url)
    path = parts.path
    if is_inline_snapshot(url) and snapshot_path is not None:
        path = snapshot_path
    query = tuple(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return path, query


def _symbol(query: Iterable[tuple[str, str]]) -> str | None:
    for name, value in query:
        if name in SYMBOL_PARAMS:
            return value
    return None


class RestIndex:
    """The recorded REST responses, looked up by request path + query and replay time."""

    def __init__(self) -> None:
        self._exact: dict[tuple[str, tuple[tuple[str, str], ...]], list[_RestEntry]] = {}
        self._by_symbol: dict[tuple[str, str | None], list[_RestEntry]] = {}

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._exact.values())

    def add(self, url: str, recv_ns: int, payload: bytes, snapshot_path: str | None) -> None:
        """Records one response; call in recorded (``recv_ns``) order."""
        path, query = _split(url, snapshot_path)
        entry = _RestEntry(recv_ns, payload)
        self._exact.setdefault((path, query), []).append(entry)
        self._by_symbol.setdefault((path, _symbol(query)), []).append(entry)

    def lookup(self, target: str, at_ns: int | None) -> bytes | None:
        """The response for the request ``target`` (``/path?query``) at replay time
        ``at_ns`` (None: before the first frame), or None when nothing matches."""
        path, query = _split(target, None)
        entries = self._exact.get((path, query))
        if entries is None:
            entries = self._by_symbol.get((path, _symbol(query)))
        if not entries:
            return None
        if at_ns is None:
            return entries[0].payload
        index = bisect.bisect_right(entries, at_ns, key=lambda e: e.recv_ns) - 1
        return entries[max(index, 0)].payload


@dataclass(frozen=True)
class RecordedConnection:
    """One recorded connection with frames, and the endpoints that replay it."""

    conn_id: int
    #: The URL it was opened to, ``""`` when the capture did not record it.
    url: str
    endpoints: tuple[int, ...]
    frames: int


def endpoint_layout(urls: Sequence[str]) -> list[int]:
    """The endpoint of each recorded connection (given by URL, in order of first frame)
    when each gets its own: the ``n``-th connection to a host and path shares the endpoint
    of the ``n``-th connection to the same host with another path (one endpoint the venue
    serves on several paths), and is alone otherwise. Unrecorded URLs are alone."""
    endpoint_of: dict[tuple[str, int], int] = {}
    seen: dict[tuple[str, str], int] = {}
    layout: list[int] = []
    for url in urls:
        if not url:
            layout.append(len(endpoint_of))
            endpoint_of[(f"#{len(layout)}", 0)] = layout[-1]
            continue
        parts = urlsplit(url)
        host = f"{parts.scheme}://{parts.netloc}"
        ordinal = seen.get((host, parts.path), 0)
        seen[(host, parts.path)] = ordinal + 1
        layout.append(endpoint_of.setdefault((host, ordinal), len(endpoint_of)))
    return layout


@dataclass(frozen=True)
class ReplayPlan:
    """Per endpoint, the frames in send order; the REST responses; the capture's span."""

    endpoints: list[list[ReplayFrame]]
    rest: RestIndex
    #: Recorded connections with at least one frame.
    connections: int
    first_ns: int
    last_ns: int
    #: Which recorded connection each endpoint replays, in order of first frame.
    connections_served: tuple[RecordedConnection, ...] = ()
    #: Every record, to rebuild the books at the replay's position.
    books: ReplayBooks = field(default_factory=ReplayBooks)

    @property
    def duration_ns(self) -> int:
        return self.last_ns - self.first_ns


def build_plan(
    records: Iterable[CaptureRecord | Routed],
    endpoints: int | None,
    snapshot_path: str | None = None,
    default_venue: str | None = None,
) -> ReplayPlan:
    """The plan of ``records`` (in recorded order) on ``endpoints`` endpoints (None: one
    per recorded connection, :func:`endpoint_layout`); a record given with its venue
    (:class:`Routed`) keeps it, and frames of others whose venue the capture does not tell
    are ``default_venue``'s (:class:`ReplayBooks`)."""
    if endpoints is not None and endpoints < 1:
        raise ValueError("endpoints must be >= 1")
    order: dict[int, int] = {}
    urls: dict[int, str] = {}
    frames: list[tuple[int, int, CaptureRecord]] = []
    rest = RestIndex()
    books = ReplayBooks(default_venue)
    for item in records:
        index = books.add(item)
        record = item.record if isinstance(item, Routed) else item
        if record.kind == "ws":
            number = order.setdefault(record.conn_id, len(order))
            urls.setdefault(record.conn_id, record.url)
            frames.append((number, index, record))
        elif record.kind == "connect":
            urls[record.conn_id] = record.url
        elif record.kind == "rest":
            rest.add(record.url, record.recv_ns, record.payload, snapshot_path)
    fan_out = len(order) == 1
    if fan_out or endpoints is not None:
        count = endpoints or 1
        layout = [number % count for number in range(len(order))]
    else:
        layout = endpoint_layout([urls[conn_id] for conn_id in order])
        count = max(layout, default=0) + 1
    first_ns = frames[0][2].recv_ns if frames else 0
    last_ns = first_ns
    per_endpoint: list[list[ReplayFrame]] = [[] for _ in range(count)]
    counts = [0] * len(order)
    routes = [route_of(urls[conn_id]) for conn_id in order]
    routed: set[int] = set()
    if not fan_out:
        for endpoint in range(count):
            paths = {routes[n] for n in range(len(order)) if layout[n] == endpoint}
            if len(paths) > 1:
                routed.add(endpoint)
    for number, index, record in frames:
        # A clock stepping back in the capture never reorders: offsets only grow.
        last_ns = max(last_ns, record.recv_ns)
        route = routes[number] if layout[number] in routed else ""
        frame = ReplayFrame(last_ns - first_ns, record.recv_ns, record.payload, index, route)
        per_endpoint[layout[number]].append(frame)
        counts[number] += 1
    if fan_out:
        per_endpoint = [per_endpoint[0]] * count  # one list, shared: identical frames
    served = tuple(
        RecordedConnection(
            conn_id,
            urls[conn_id],
            tuple(range(count)) if fan_out else (layout[number],),
            counts[number],
        )
        for conn_id, number in order.items()
    )
    return ReplayPlan(per_endpoint, rest, len(order), first_ns, last_ns, served, books)


def parse_speed(text: str) -> float | None:
    """``"max"`` → None; otherwise a positive finite factor."""
    if text.strip().lower() == "max":
        return None
    speed = float(text)
    if not (math.isfinite(speed) and speed > 0.0):
        raise ValueError(f"speed must be a positive number or 'max', not {text!r}")
    return speed


def due_s(offset_ns: int, speed: float | None) -> float:
    """Seconds after the connection's start when a frame at ``offset_ns`` is due."""
    if speed is None:
        return 0.0
    return offset_ns / 1e9 / speed


def due_count(
    frames: Sequence[ReplayFrame], start: int, elapsed_s: float, speed: float | None
) -> int:
    """How many frames from ``frames[start]`` on are due ``elapsed_s`` after the start: all
    of a burst at once, so the sender sleeps only when the next frame is not due yet."""
    if speed is None:
        return len(frames) - start
    limit_ns = elapsed_s * speed * 1e9
    end = bisect.bisect_right(frames, limit_ns, lo=start, key=lambda f: f.offset_ns)
    return end - start
