"""receive_path: what one upstream frame costs between the socket and the book.

Per frame the loop does what ``gateway.core.pipeline.VenuePipeline.receive_frame`` does, without the
socket and the fan-out: ``feeds.binance.parse``, dispatch of the event to its symbol's
arbiter (``isinstance`` + ``event.key`` lookup), ``SequencedBook.on_diff`` (which applies
accepted updates to its ``L2Book``). The arbiter is loaded with the capture's REST snapshot
first, as it needs.

Variants, on the same depth frames:

(a) one copy of the stream;
(b) three redundant copies, interleaved (per venue update the three copies come in a seeded
    random order of connections), every copy fully parsed; the arbiter drops the duplicates;
(c) the same three copies, with duplicates recognised from the raw bytes before any decode:
    a prototype (below, not in the gateway) reads the ``"u":`` last update id with
    ``bytes.find`` + ``int()`` and skips a frame whose ``u`` is at or below the arbiter's
    applied id. This checks a performance target: duplicates recognised from the raw
    bytes (reading the id costs under 0.5 µs) before any full decode.

Shares of time come from one extra instrumented run per variant (``perf_counter_ns`` around
each stage, book time from an ``L2Book`` subclass that times ``apply`` and ``is_crossed``);
they are approximate (the timer calls cost ~50 ns each) and sum to 100 %.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from bench.common import KEY
from bench.common import DepthData
from bench.common import Timing
from bench.common import load_depth_data
from bench.common import measure
from feeds import binance
from feeds.binance import BinanceSpotRule
from gateway.core.book import BeforeImage
from gateway.core.book import L2Book
from gateway.core.book import Pruned
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import Level
from gateway.core.sequenced import SequencedBook

TITLE = "receive_path: feeds.binance.parse + SequencedBook.on_diff per upstream frame"

N_COPIES = 3
_U_KEY = b'"u":'


# --- the prototype: read the id from the raw bytes ----------------------------------------


def peek_last_id(raw: bytes) -> int:
    """The ``"u"`` (last update id) of a Binance depth frame read from its bytes, or -1.

    Looks only at the first 256 bytes (``u`` comes right after ``e``, ``E``, ``s``, ``U``).
    """
    i = raw.find(_U_KEY, 0, 256)
    if i < 0:
        return -1
    j = raw.find(b",", i + 4, i + 32)
    try:
        return int(raw[i + 4 : j])
    except ValueError:
        return -1


# --- state --------------------------------------------------------------------------------

Copy = tuple[int, bytes, int]  # (conn_id, raw frame, recv_ns)


class _TimedBook(L2Book):
    """An L2Book that adds the time spent in its hot methods to ``ns``."""

    __slots__ = ("ns",)

    def __init__(self) -> None:
        super().__init__()
        self.ns = 0

    def apply(self, bids: Any, asks: Any, before: BeforeImage | None = None) -> Pruned | None:
        t0 = time.perf_counter_ns()
        try:
            return super().apply(bids, asks, before)
        finally:
            self.ns += time.perf_counter_ns() - t0

    def is_crossed(self) -> bool:
        t0 = time.perf_counter_ns()
        crossed = super().is_crossed()
        self.ns += time.perf_counter_ns() - t0
        return crossed


def _arbiter(snapshot: DepthSnapshot, conns: int, timed: bool = False) -> SequencedBook:
    book = SequencedBook(KEY, BinanceSpotRule())
    if timed:
        book.book = _TimedBook()
    for conn in range(conns):
        book.on_connection(conn, True, 0)
    book.on_snapshot(snapshot, 0)
    return book


def _copies(data: DepthData, n_copies: int, seed: int = 1) -> list[Copy]:
    """Every frame ``n_copies`` times, each copy a distinct bytes object from its own
    connection, the copies of one update in a seeded random order."""
    rng = random.Random(seed)
    out: list[Copy] = []
    conns = list(range(n_copies))
    for recv_ns, raw in data.frames:
        if n_copies == 1:
            out.append((0, raw, recv_ns))
            continue
        rng.shuffle(conns)
        for offset, conn in enumerate(conns):
            out.append((conn, bytes(bytearray(raw)), recv_ns + 1000 * offset))
    return out


State = tuple[SequencedBook, list[Copy]]


# --- the three receive loops ----------------------------------------------------------------


def _fresh_arbiter(snapshot: DepthSnapshot, conns: int, copies: list[Copy]) -> State:
    """The state one timed run starts from: a fresh arbiter and the frames to feed it."""
    return (_arbiter(snapshot, conns), copies)


def _all_parsed(state: State) -> None:
    arbiter, copies = state
    books = {KEY: arbiter}
    parse = binance.parse
    for conn, raw, recv_ns in copies:
        for event in parse(raw, recv_ns, conn):
            if isinstance(event, DepthDiff):
                book = books.get(event.key)
                if book is not None:
                    book.on_diff(event, recv_ns)


def _prefiltered(state: State) -> None:
    arbiter, copies = state
    books = {KEY: arbiter}
    parse = binance.parse
    for conn, raw, recv_ns in copies:
        if 0 <= peek_last_id(raw) <= arbiter.applied_id:
            continue  # a copy of an update already applied: never decoded
        for event in parse(raw, recv_ns, conn):
            if isinstance(event, DepthDiff):
                book = books.get(event.key)
                if book is not None:
                    book.on_diff(event, recv_ns)


def _instrumented(state: State, prefilter: bool) -> dict[str, int]:
    """One run of the same loop with every stage timed; also counts what happened."""
    arbiter, copies = state
    book = arbiter.book
    assert isinstance(book, _TimedBook)
    books = {KEY: arbiter}
    parse = binance.parse
    clock = time.perf_counter_ns
    ns = {"peek": 0, "parse": 0, "dispatch": 0, "on_diff": 0}
    parsed = skipped = 0
    for conn, raw, recv_ns in copies:
        if prefilter:
            t0 = clock()
            u = peek_last_id(raw)
            skip = 0 <= u <= arbiter.applied_id
            ns["peek"] += clock() - t0
            if skip:
                skipped += 1
                continue
        t0 = clock()
        events = parse(raw, recv_ns, conn)
        t1 = clock()
        ns["parse"] += t1 - t0
        parsed += 1
        for event in events:
            t1 = clock()
            if isinstance(event, DepthDiff):
                target = books.get(event.key)
                t2 = clock()
                ns["dispatch"] += t2 - t1
                if target is not None:
                    target.on_diff(event, recv_ns)
                    ns["on_diff"] += clock() - t2
    ns["book"] = book.ns
    ns["arbiter"] = ns.pop("on_diff") - book.ns
    return {**ns, "parsed": parsed, "skipped": skipped}


# --- components, each timed alone -----------------------------------------------------------


class _WireEnvelope(msgspec.Struct):
    """A combined-stream depth frame decoded in one pass, into the adapter's own struct."""

    stream: str
    data: binance._DepthUpdate


_typed_decoder = msgspec.json.Decoder(_WireEnvelope)


def _loop(fn: Callable[[bytes], object]) -> Callable[[list[bytes]], None]:
    def workload(frames: list[bytes]) -> None:
        for raw in frames:
            fn(raw)

    return workload


def _parse_only(frames: list[bytes]) -> None:
    parse = binance.parse
    for raw in frames:
        parse(raw, 0, 0)


def _feed(state: tuple[SequencedBook, list[DepthDiff]]) -> None:
    arbiter, diffs = state
    on_diff = arbiter.on_diff
    for diff in diffs:
        on_diff(diff, diff.recv_ns)


def _apply_all(state: tuple[L2Book, list[tuple[tuple[Level, ...], tuple[Level, ...]]]]) -> None:
    book, changes = state
    apply = book.apply
    for bids, asks in changes:
        apply(bids, asks)


def _levels(diff: DepthDiff) -> int:
    return len(diff.bids) + len(diff.asks)


def _components(data: DepthData, repeats: int) -> list[dict[str, object]]:
    raws = [raw for _, raw in data.frames]
    diffs = data.applicable
    n_levels = [_levels(d) for d in data.diffs]
    mean_levels = sum(n_levels) / max(len(n_levels), 1)
    median_levels = sorted(n_levels)[len(n_levels) // 2] if n_levels else 0
    near_20 = [raw for raw, n in zip(raws, n_levels, strict=True) if 16 <= n <= 24]
    shape = f"{len(raws)} frames, {median_levels} levels median, {mean_levels:.0f} mean"
    rows: list[dict[str, object]] = []

    def row(operation: str, timing: Timing, ops: int, per: str, note: str) -> None:
        rows.append(
            {
                "table": "components",
                "operation": operation,
                "per": per,
                "µs/op": timing.per_op_us(ops),
                "ops/s": timing.ops_per_s(ops),
                "spread %": timing.spread_pct,
                "data": note,
            }
        )

    def frames_of(sample: list[bytes]) -> Callable[[], list[bytes]]:
        return lambda: sample

    row(
        "id peek: bytes.find(b'\"u\":') + int()",
        measure(_loop(peek_last_id), frames_of(raws), repeats=repeats),
        len(raws),
        "frame",
        shape,
    )
    row(
        "feeds.binance.parse (decode + level checks + DepthDiff)",
        measure(_parse_only, frames_of(raws), repeats=repeats),
        len(raws),
        "frame",
        shape,
    )
    row(
        "msgspec typed Struct decode only (no checks)",
        measure(_loop(_typed_decoder.decode), frames_of(raws), repeats=repeats),
        len(raws),
        "frame",
        shape,
    )
    if near_20:
        row(
            "msgspec typed Struct decode only (no checks)",
            measure(_loop(_typed_decoder.decode), frames_of(near_20), repeats=repeats),
            len(near_20),
            "frame",
            f"{len(near_20)} frames of 16-24 levels",
        )
    row(
        "orjson.loads (untyped dicts, no checks)",
        measure(_loop(orjson.loads), frames_of(raws), repeats=repeats),
        len(raws),
        "frame",
        shape,
    )
    row(
        "L2Book.apply",
        measure(
            _apply_all,
            lambda: (_arbiter(data.snapshot, 1).book, [(d.bids, d.asks) for d in diffs]),
            repeats=repeats,
        ),
        len(diffs),
        "diff",
        f"{len(diffs)} diffs after the snapshot",
    )
    row(
        "SequencedBook.on_diff, update applied (incl. L2Book)",
        measure(_feed, lambda: (_arbiter(data.snapshot, 1), diffs), repeats=repeats),
        len(diffs),
        "update",
        f"{len(diffs)} diffs after the snapshot",
    )
    copies = [msgspec.structs.replace(d, conn_id=1) for d in diffs]

    def duplicates_setup() -> tuple[SequencedBook, list[DepthDiff]]:
        arbiter = _arbiter(data.snapshot, 2)
        _feed((arbiter, diffs))
        return arbiter, copies

    row(
        "SequencedBook.on_diff, duplicate dropped",
        measure(_feed, duplicates_setup, repeats=repeats),
        len(copies),
        "duplicate",
        f"{len(copies)} second copies",
    )
    return rows


# --- the benchmark ----------------------------------------------------------------------------

_VARIANTS = (
    ("(a) 1 copy", 1, False),
    ("(b) 3 copies, all parsed", N_COPIES, False),
    ("(c) 3 copies, dups skipped by id peek", N_COPIES, True),
)


def run(quick: bool) -> list[dict[str, object]]:
    data = load_depth_data(limit=150 if quick else None)
    repeats = 2 if quick else 5
    rows: list[dict[str, object]] = []
    results: dict[str, tuple[Timing, dict[str, int], SequencedBook, int]] = {}
    for name, n_copies, prefilter in _VARIANTS:
        copies = _copies(data, n_copies)
        workload = _prefiltered if prefilter else _all_parsed
        timing = measure(
            workload,
            functools.partial(_fresh_arbiter, data.snapshot, n_copies, copies),
            repeats=repeats,
        )
        check = _arbiter(data.snapshot, n_copies, timed=True)
        shares = _instrumented((check, copies), prefilter)
        results[name] = (timing, shares, check, len(copies))

    reference = results[_VARIANTS[0][0]][2]
    baseline_ns = results[_VARIANTS[1][0]][0].median_ns
    for name, _, _ in _VARIANTS:
        timing, ns, arbiter, frames_in = results[name]
        stats = arbiter.stats
        if stats.gaps or stats.updates != reference.stats.updates:
            raise RuntimeError(
                f"{name}: {stats.updates} updates, {stats.gaps} gaps: not the stream"
            )
        if arbiter.book.normalized() != reference.book.normalized():
            raise RuntimeError(f"{name}: the book differs from the one-copy book")
        total = sum(ns[k] for k in ("peek", "parse", "dispatch", "arbiter", "book")) or 1
        rows.append(
            {
                "table": "variants",
                "variant": name,
                "frames in": frames_in,
                "frames parsed": ns["parsed"],
                "updates applied": stats.updates,
                "copies dropped": ns["skipped"] + stats.duplicates + stats.stale,
                "µs/frame": timing.per_op_us(frames_in),
                "frames/s": timing.ops_per_s(frames_in),
                "µs/update": timing.per_op_us(stats.updates),
                "speed vs (b)": baseline_ns / timing.median_ns,
                "parse %": 100.0 * ns["parse"] / total,
                "arbiter %": 100.0 * ns["arbiter"] / total,
                "book %": 100.0 * ns["book"] / total,
                "id peek %": 100.0 * ns["peek"] / total,
                "dispatch %": 100.0 * ns["dispatch"] / total,
                "spread %": timing.spread_pct,
            }
        )
    rows.extend(_components(data, repeats))
    rows.append({"table": "data", "source": data.source, "frames": len(data.frames)})
    return rows
