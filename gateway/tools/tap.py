"""``mdgateway tap``: follow one symbol of a running gateway and check what it sends.

A debugging tool for users and the tests' eye. It speaks the subscriber protocol itself
(see ``docs/protocol.md``) rather than through :class:`~gateway.io.client.GatewayClient`,
which hides gaps by resyncing: every count here is of what the gateway put on the wire.

Per message of the symbol's ``book`` channel, :class:`Tap`:

* counts it (``messages`` counts every gateway message of the connection, replies
  included; ``snapshots``, ``deltas`` and ``statuses`` count those of the symbol);
* checks the sequence (with :class:`~gateway.core.subscriber.SubscribedBook`, the state
  machine the client uses too): a delta before any snapshot, or whose ``epoch`` differs
  from the book's or whose ``seq`` is not the previous one + 1, is a **gap**; the book is
  then discarded, a ``resync`` is sent, and deltas are ignored (counted, not checked) until
  the fresh snapshot. A snapshot of another epoch than the previous one is an epoch change;
* keeps the book (:class:`~gateway.core.book.L2Book`) and checks it after every snapshot or
  delta: a crossed book counts one ``crossed`` violation per message after which it is
  crossed; an unparseable, non-positive-price, negative-quantity or infinite level, or a
  snapshot side not strictly best first, counts one ``bad_levels`` violation (the book is
  then discarded until the next snapshot, with a resync after a bad delta).

Latency, of every delta that carries the times (``docs/protocol.md``, latency fields):
``venue_to_gateway`` (the gateway's ``recv_ns`` minus the venue's ``event_ms``),
``gateway_recv_to_send`` (``send_ns - recv_ns``) and ``send_to_tap`` (the tap's wall clock
at receipt minus ``send_ns``; not of recovered deltas, sent earlier). Each is summarized
as p50/p90/p99/max in milliseconds over the most recent :data:`MAX_LATENCY_SAMPLES`
samples (``max`` and ``count`` over all). Clocks of different hosts make the venue and
cross-host figures only as good as their synchronization.

Exit codes of :func:`main`: 0 when at least one snapshot arrived, no gap, no violation and
no connection loss was seen, and the symbol's last ``status`` (if any came) is ``live``; 1
otherwise; 2 on usage and connection errors (the gateway cannot be reached, refuses the
subscription, e.g. ``unknown_symbol``), with the reason on stderr.

The gateway's token (``server.token``) comes from ``--token``, ``--token-file``, the URL's
``?token=`` or ``MDGATEWAY_TOKEN`` (:func:`gateway.tools.runtime.gateway_token`) and is
sent as ``Authorization: Bearer``, never in the URL; no message names it.

On a terminal the command prints a status line per second while it runs (nothing when
stdout is redirected); the summary comes at the end, after ``--duration`` or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any
from typing import Final
from typing import TextIO

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.exceptions import InvalidStatus
from websockets.exceptions import WebSocketException

from gateway.core.book import L2Book
from gateway.core.model import Level
from gateway.core.model import SymbolState
from gateway.core.subscriber import SubscribedBook
from gateway.core.subscriber import SubscriberAction
from gateway.io.client import connect_gateway
from gateway.tools.runtime import TOKEN_ENV
from gateway.tools.runtime import UsageError
from gateway.tools.runtime import add_gateway_url_argument
from gateway.tools.runtime import add_seconds_argument
from gateway.tools.runtime import add_token_arguments
from gateway.tools.runtime import int_at_least
from gateway.tools.runtime import url_and_token
from gateway.tools.top import gateway_urls
from gateway.wire.protocol import Delta
from gateway.wire.protocol import Error
from gateway.wire.protocol import ErrorCode
from gateway.wire.protocol import ProtocolError
from gateway.wire.protocol import Request
from gateway.wire.protocol import Resync
from gateway.wire.protocol import ServerMessage
from gateway.wire.protocol import Snapshot
from gateway.wire.protocol import Status
from gateway.wire.protocol import Subscribe
from gateway.wire.protocol import UnknownMessage
from gateway.wire.protocol import encode_json
from gateway.wire.protocol import read_server_message
from gateway.wire.tokens import redact
from gateway.wire.tokens import split_token

DEFAULT_OPEN_TIMEOUT_S: Final = 5.0
#: Levels per side in the human summary (the JSON report has the whole book).
_SUMMARY_DEPTH: Final = 5
#: Large enough for a full book snapshot of any venue.
_MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
#: Latency samples kept per measure (the percentiles are of the most recent ones).
MAX_LATENCY_SAMPLES: Final = 100_000
#: The measures of :attr:`TapReport.latency`, in order.
LATENCY_MEASURES: Final = ("venue_to_gateway", "gateway_recv_to_send", "send_to_tap")


class LatencySummary(msgspec.Struct, frozen=True):
    """Percentiles (nearest rank) of one latency, in milliseconds."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


class Latencies:
    """One latency's samples (ns): the most recent ``max_samples``, their count and max."""

    __slots__ = ("count", "max_ns", "samples")

    def __init__(self, max_samples: int = MAX_LATENCY_SAMPLES) -> None:
        self.samples: deque[int] = deque(maxlen=max_samples)
        self.count = 0
        self.max_ns: int | None = None

    def add(self, value_ns: int) -> None:
        self.samples.append(value_ns)
        self.count += 1
        if self.max_ns is None or value_ns > self.max_ns:
            self.max_ns = value_ns

    def summary(self) -> LatencySummary | None:
        """None before the first sample."""
        if self.max_ns is None:
            return None
        ordered = sorted(self.samples)

        def rank_ms(share: float) -> float:
            index = max(0, -(-len(ordered) * share // 1) - 1)  # nearest rank
            return round(ordered[int(index)] / 1e6, 3)

        return LatencySummary(
            self.count, rank_ms(0.5), rank_ms(0.9), rank_ms(0.99), round(self.max_ns / 1e6, 3)
        )


class TapError(Exception):
    """The tap could not run: the gateway is unreachable or refused the subscription."""


class TapReport(msgspec.Struct, kw_only=True):
    """What the tap saw. The first seven fields are the documented JSON shape; ``bids`` and
    ``asks`` are the whole book at the end, best first, as the venue's decimal strings
    (empty when no consistent book is held)."""

    messages: int = 0
    snapshots: int = 0
    deltas: int = 0
    gaps: int = 0
    #: ``seq`` of the last snapshot or delta of the symbol; null before the first one.
    last_seq: int | None = None
    bids: list[Level] = msgspec.field(default_factory=list)
    asks: list[Level] = msgspec.field(default_factory=list)
    symbol: str = ""
    #: Epoch of the last snapshot or delta; null before the first one.
    epoch: int | None = None
    #: Venue update id of the last snapshot or delta; null before the first one.
    last_id: int | None = None
    #: The symbol's last ``status`` state (``syncing``, ``live``...; ``unknown (VALUE)``
    #: for a later gateway's state this tap does not know); null before any.
    status: str | None = None
    statuses: int = 0
    #: Snapshots whose epoch differs from the previous snapshot's.
    epoch_changes: int = 0
    #: Messages after which the book was crossed (best bid >= best ask).
    crossed: int = 0
    #: Snapshots or deltas with an invalid level, or a snapshot side not best first.
    bad_levels: int = 0
    #: ``resync`` requests sent after a gap or a bad delta.
    resyncs: int = 0
    #: Deltas ignored while waiting for a snapshot after a gap.
    ignored_deltas: int = 0
    #: Gateway messages that could not be decoded.
    bad_messages: int = 0
    #: Messages of a type this tap does not know (a later gateway's), ignored.
    unknown_messages: int = 0
    #: ``error`` replies that did not end the tap (e.g. ``not_subscribed``).
    errors: int = 0
    #: Why the connection ended before the tap did; null when the tap ended it.
    closed: str | None = None
    #: Whether the book is held (a snapshot arrived and nothing since voided it).
    synced: bool = False
    duration_s: float = 0.0
    ok: bool = False
    #: Per measure of :data:`LATENCY_MEASURES`, its summary (absent before any sample).
    latency: dict[str, LatencySummary] = msgspec.field(default_factory=dict)

    @property
    def inconsistencies(self) -> int:
        return self.crossed + self.bad_levels


class Tap:
    """The state of one tapped symbol. :meth:`on_message` is pure (no I/O) and returns
    the request to send back, if any; :meth:`run` does the networking."""

    def __init__(
        self,
        url: str,
        symbol: str,
        *,
        depth: int | None = None,
        open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
        token: str | None = None,
    ) -> None:
        url, url_token = split_token(url)
        #: The gateway's URL, without any token.
        self.url = url
        #: Sent as ``Authorization: Bearer`` (the URL's ``?token=`` when None).
        self.token = url_token if token is None else token
        self.symbol = symbol
        self.depth = depth
        self.open_timeout_s = open_timeout_s
        #: The symbol's book and its sync state (snapshot order checked strictly).
        self.subscription = SubscribedBook(strict_snapshot_order=True)
        self.counts = TapReport(symbol=symbol)
        self.latencies = {measure: Latencies() for measure in LATENCY_MEASURES}
        self._snapshot_epoch: int | None = None
        #: ``time.monotonic()`` when the tap began (subscribed, once :meth:`run` is).
        self.started = time.monotonic()

    @property
    def book(self) -> L2Book:
        return self.subscription.book

    @property
    def synced(self) -> bool:
        """True while the book is valid and deltas are checked against it."""
        return self.subscription.synced

    # --- pure state machine -----------------------------------------------------------------

    def on_raw(self, data: str | bytes, recv_ns: int | None = None) -> Request | None:
        """One WebSocket message from the gateway, received at wall clock ``recv_ns``
        (None: unknown, no ``send_to_tap`` sample). Raises :class:`TapError` when the
        gateway refuses the subscription."""
        self.counts.messages += 1
        try:
            msg = read_server_message(data)
        except ProtocolError:
            self.counts.bad_messages += 1
            return None
        if isinstance(msg, UnknownMessage):
            self.counts.unknown_messages += 1
            return None
        return self.on_message(msg, recv_ns)

    def on_message(self, msg: ServerMessage, recv_ns: int | None = None) -> Request | None:
        """One decoded message (already counted in ``messages`` by :meth:`on_raw`)."""
        counts = self.counts
        if isinstance(msg, Error):
            if msg.code in (ErrorCode.UNKNOWN_SYMBOL, ErrorCode.BAD_REQUEST):
                raise TapError(f"the gateway refused the subscription: {msg.code}: {msg.message}")
            counts.errors += 1
            return None
        if isinstance(msg, Status):
            if msg.symbol == self.symbol:
                counts.statuses += 1
                counts.status = str(msg.typed_state)
            return None
        if isinstance(msg, Snapshot):
            if msg.symbol == self.symbol:
                self._on_snapshot(msg)
            return None
        if isinstance(msg, Delta) and msg.symbol == self.symbol:
            self._latency(msg, recv_ns)
            return self._on_delta(msg)
        return None

    def _latency(self, msg: Delta, tap_recv_ns: int | None) -> None:
        """The samples of one delta, of the times it carries."""
        latencies = self.latencies
        if msg.recv_ns > 0:
            if msg.event_ms is not None and msg.event_ms > 0:
                latencies["venue_to_gateway"].add(msg.recv_ns - msg.event_ms * 1_000_000)
            if msg.send_ns > 0:
                latencies["gateway_recv_to_send"].add(msg.send_ns - msg.recv_ns)
        if msg.send_ns > 0 and tap_recv_ns is not None and not msg.recovered:
            latencies["send_to_tap"].add(tap_recv_ns - msg.send_ns)

    def _on_snapshot(self, msg: Snapshot) -> None:
        counts = self.counts
        counts.snapshots += 1
        if self._snapshot_epoch is not None and msg.epoch != self._snapshot_epoch:
            counts.epoch_changes += 1
        self._snapshot_epoch = msg.epoch
        self._position(msg.epoch, msg.seq, msg.id)
        actions = self.subscription.on_snapshot(msg.epoch, msg.seq, msg.id, msg.bids, msg.asks)
        if SubscriberAction.BAD_LEVEL in actions:
            counts.bad_levels += 1
        else:
            self._check_book()

    def _on_delta(self, msg: Delta) -> Request | None:
        counts = self.counts
        counts.deltas += 1
        actions = self.subscription.on_delta(msg.epoch, msg.seq, msg.id, msg.bids, msg.asks)
        if SubscriberAction.IGNORED_DELTA in actions:
            counts.ignored_deltas += 1
            return None
        self._position(msg.epoch, msg.seq, msg.id)
        if SubscriberAction.BOOK_UPDATED in actions:
            self._check_book()
            return None
        # A delta before any snapshot is a gap too; no resync: a snapshot is coming.
        if SubscriberAction.GAP in actions or SubscriberAction.EARLY_DELTA in actions:
            counts.gaps += 1
        if SubscriberAction.BAD_LEVEL in actions:
            counts.bad_levels += 1
        if SubscriberAction.ASK_RESYNC in actions:
            counts.resyncs += 1
            return Resync(self.symbol)
        return None

    def _position(self, epoch: int, seq: int, venue_id: int) -> None:
        self.counts.epoch = epoch
        self.counts.last_seq = seq
        self.counts.last_id = venue_id

    def _check_book(self) -> None:
        if self.book.is_crossed():
            self.counts.crossed += 1

    def report(self) -> TapReport:
        """The counts so far, with the book and the verdict."""
        report = msgspec.structs.replace(self.counts)
        report.bids = self.book.bids() if self.synced else []
        report.asks = self.book.asks() if self.synced else []
        report.synced = self.synced
        report.duration_s = round(time.monotonic() - self.started, 3)
        report.latency = {}
        for measure, latencies in self.latencies.items():
            summary = latencies.summary()
            if summary is not None:
                report.latency[measure] = summary
        report.ok = (
            report.snapshots > 0
            and report.gaps == 0
            and report.inconsistencies == 0
            and report.closed is None
            and report.status in (None, str(SymbolState.LIVE))
        )
        return report

    # --- networking ---------------------------------------------------------------------------

    async def run(
        self, duration_s: float | None = None, stop: asyncio.Event | None = None
    ) -> TapReport:
        """Connect, subscribe and follow until ``duration_s`` has passed (counted from the
        subscription), ``stop`` is set, or the gateway closes the connection. Raises
        :class:`TapError` when the gateway cannot be reached or refuses the subscription."""
        try:
            ws = await connect_gateway(
                self.url,
                token=self.token,
                compression=None,
                open_timeout=self.open_timeout_s,
                max_size=_MAX_MESSAGE_BYTES,
            )
        except (OSError, WebSocketException, TimeoutError) as exc:
            hint = ""
            if isinstance(exc, InvalidStatus) and exc.response.status_code == 401:
                hint = f" (the token: --token-file PATH, --token or {TOKEN_ENV})"
            raise TapError(
                f"cannot connect to {redact(self.url)}: {exc or type(exc).__name__}{hint}"
            ) from None
        self.started = time.monotonic()
        try:
            await ws.send(encode_json(Subscribe([self.symbol], ["book"], self.depth)).decode())
            await self._follow_until(ws, duration_s, stop)
        except ConnectionClosed:
            self.counts.closed = _close_reason(ws)
        finally:
            await ws.close()
        return self.report()

    async def _follow_until(
        self, ws: ClientConnection, duration_s: float | None, stop: asyncio.Event | None
    ) -> None:
        """Follow ``ws`` until ``duration_s`` has passed, ``stop`` is set or the connection
        ended, whichever comes first; raises the TapError of a refused subscription."""
        try:
            async with asyncio.TaskGroup() as tasks:
                waits: set[asyncio.Task[Any]] = {tasks.create_task(self._follow(ws))}
                if stop is not None:
                    waits.add(tasks.create_task(stop.wait()))
                await asyncio.wait(waits, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
                for task in waits:
                    task.cancel()
        except* TapError as refused:
            raise refused.exceptions[0] from None

    async def _follow(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in ws:
                request = self.on_raw(data, time.time_ns())
                if request is not None:
                    await ws.send(encode_json(request).decode())
        self.counts.closed = _close_reason(ws)


def _close_reason(ws: ClientConnection) -> str:
    code = ws.close_code
    if code is None or code == 1006:
        return "connection lost"
    return f"the gateway closed the connection: {code} {ws.close_reason or ''}".rstrip()


# --- output --------------------------------------------------------------------------------


def render_json(report: TapReport, out: TextIO) -> None:
    out.write(msgspec.json.encode(report).decode() + "\n")
    out.flush()


def render_text(report: TapReport, out: TextIO) -> None:
    """A few lines for a person: counts, verdict and the top of the book."""
    lines = [
        f"tap {report.symbol}: {'OK' if report.ok else 'PROBLEM'} after {report.duration_s:.1f} s",
        f"  messages {report.messages}  snapshots {report.snapshots}  deltas {report.deltas}"
        f"  statuses {report.statuses}  status {report.status or '-'}",
        f"  gaps {report.gaps}  resyncs {report.resyncs}  epoch changes {report.epoch_changes}"
        f"  crossed {report.crossed}  bad levels {report.bad_levels}"
        f"  bad messages {report.bad_messages}  unknown messages {report.unknown_messages}",
        f"  epoch {_or_dash(report.epoch)}  last seq {_or_dash(report.last_seq)}"
        f"  last id {_or_dash(report.last_id)}",
    ]
    for measure, summary in report.latency.items():
        lines.append(
            f"  latency {measure} ms: p50 {summary.p50_ms:g}  p90 {summary.p90_ms:g}"
            f"  p99 {summary.p99_ms:g}  max {summary.max_ms:g}  ({summary.count} deltas)"
        )
    if report.closed is not None:
        lines.append(f"  connection: {report.closed}")
    if report.snapshots == 0:
        lines.append("  no snapshot arrived")
    if report.synced:
        lines.append(f"  book: {len(report.bids)} bids, {len(report.asks)} asks")
        bids = report.bids[:_SUMMARY_DEPTH]
        asks = report.asks[:_SUMMARY_DEPTH]
        for i in range(max(len(bids), len(asks))):
            bid = f"{bids[i][1]} @ {bids[i][0]}" if i < len(bids) else ""
            ask = f"{asks[i][0]} x {asks[i][1]}" if i < len(asks) else ""
            lines.append(f"  {bid:>32} | {ask}")
    out.write("\n".join(lines) + "\n")
    out.flush()


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def status_line(tap: Tap) -> str:
    """One line on the tap so far: status, position, counts and the best prices."""
    counts = tap.counts
    best_bid, best_ask = (tap.book.best_bid(), tap.book.best_ask()) if tap.synced else (None, None)
    return (
        f"{tap.symbol} {time.monotonic() - tap.started:.0f} s: status {counts.status or '-'}"
        f"  seq {_or_dash(counts.epoch)}:{_or_dash(counts.last_seq)}"
        f"  deltas {counts.deltas}  gaps {counts.gaps}  resyncs {counts.resyncs}"
        f"  best {best_bid[0] if best_bid else '-'} / {best_ask[0] if best_ask else '-'}"
    )


async def _status_lines(tap: Tap, out: TextIO, interval_s: float = 1.0) -> None:
    """A status line on ``out`` every ``interval_s`` until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        out.write(status_line(tap) + "\n")
        out.flush()


# --- command -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``tap``; :func:`main` takes the namespace they produce."""
    add_gateway_url_argument(parser)
    parser.add_argument(
        "--symbol", required=True, metavar="KEY", help="symbol key, e.g. binance:BTCUSDT"
    )
    add_seconds_argument(parser, "--duration", "stop after S seconds (default: until Ctrl-C)")
    parser.add_argument(
        "--depth",
        type=int_at_least(1),
        default=None,
        metavar="N",
        help="levels per side to subscribe to, kept exact (default: the full book)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_token_arguments(parser)


async def run_tap(args: argparse.Namespace, stop: asyncio.Event | None = None) -> int:
    """Run ``tap`` on the running loop: report on stdout (and a status line per second
    while it runs when stdout is a terminal), errors on stderr; returns the exit code."""
    try:
        url, token = url_and_token(args)
        # Any form top takes: http(s)://, ws(s)://, HOST:PORT, unix:PATH.
        url = gateway_urls(url, token).ws_url
    except UsageError as exc:
        print(f"mdgateway tap: error: {exc}", file=sys.stderr)
        return 2
    tap = Tap(url, args.symbol, depth=args.depth, token=token)
    async with asyncio.TaskGroup() as tasks:
        lines = tasks.create_task(_status_lines(tap, sys.stdout)) if sys.stdout.isatty() else None
        try:
            report = await tap.run(args.duration, stop)
        except TapError as exc:
            print(f"mdgateway tap: error: {exc}", file=sys.stderr)
            return 2
        finally:
            if lines is not None:
                lines.cancel()
    if args.json:
        render_json(report, sys.stdout)
    else:
        render_text(report, sys.stdout)
    return 0 if report.ok else 1


async def _until_signal(args: argparse.Namespace) -> int:
    """SIGINT/SIGTERM end the tap normally, so that the summary is still printed."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await run_tap(args, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


def _run(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX platform
        return asyncio.run(main)
    return uvloop.run(main)


def main(args: argparse.Namespace) -> int:
    """Run ``tap`` until ``--duration`` or Ctrl-C; returns the exit code."""
    return _run(_until_signal(args))
