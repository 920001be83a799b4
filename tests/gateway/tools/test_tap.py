"""``mdgateway tap``: the checks on scripted messages, a fake gateway, and the real one."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from websockets.asyncio.server import ServerConnection

from gateway.core.model import SymbolState
from gateway.io.changes import StateChanges
from gateway.tools.cli import build_parser
from gateway.tools.tap import LatencySummary
from gateway.tools.tap import Tap
from gateway.tools.tap import TapError
from gateway.tools.tap import render_text
from gateway.tools.tap import run_tap
from gateway.wire import protocol as p
from tests.gateway.io.fanout_helpers import live_fanout
from tests.gateway.io.fanout_helpers import serving
from tests.harness import wait_until
from tests.harness import ws_serving
from tests.subscriber import live_demo_gateway
from tests.subscriber import mdgateway_output

ROOT = Path(__file__).resolve().parents[3]
KEY = "binance:BTCUSDT"
DOCUMENTED_KEYS = ["messages", "snapshots", "deltas", "gaps", "last_seq", "bids", "asks"]


def _snap(
    seq: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]], epoch: int = 1
) -> p.Snapshot:
    return p.Snapshot(KEY, epoch, seq, 1000 + seq, bids, asks)


def _delta(
    seq: int,
    bids: tuple[tuple[str, str], ...] = (),
    asks: tuple[tuple[str, str], ...] = (),
    epoch: int = 1,
) -> p.Delta:
    return p.Delta(KEY, epoch, seq, 1000 + seq, bids, asks)


def _args(url: str, symbol: str = KEY, duration: float = 1.0, *options: str) -> argparse.Namespace:
    return build_parser().parse_args(
        ["tap", url, "--symbol", symbol, "--duration", str(duration), "--json", *options]
    )


# --- the state machine, no network ------------------------------------------------------


def test_counts_gaps_resyncs_and_violations_on_scripted_messages() -> None:
    tap = Tap("ws://unused/", KEY)

    def feed(msg: p.ServerMessage) -> object:
        return tap.on_raw(p.encode_json(msg).decode())

    assert feed(_delta(5)) is None, "before any snapshot: a gap, but a snapshot is coming"
    assert feed(p.Status(KEY, SymbolState.LIVE, "")) is None
    assert feed(_snap(0, [("100", "1"), ("99", "2")], [("101", "1")])) is None
    assert feed(_delta(1, (("100", "0.5"),))) is None
    assert feed(_delta(3)) == p.Resync(KEY), "seq jump: gap and resync"
    assert feed(_delta(4)) is None, "ignored until the snapshot"
    assert feed(_snap(0, [("100", "1")], [("101", "1")], epoch=2)) is None
    assert feed(_delta(1, (("100", "0.5"),), epoch=3)) == p.Resync(KEY), "epoch jump"
    feed(_snap(0, [("100", "1")], [("101", "1")], epoch=3))
    feed(_delta(1, (("101", "1"),), epoch=3))  # crossed: bid 101 >= ask 101
    feed(_delta(2, (("101", "0"),), epoch=3))
    assert feed(_delta(3, (("-1", "1"),), epoch=3)) == p.Resync(KEY), "bad level"
    feed(_snap(0, [("99", "1"), ("100", "1")], [], epoch=3))  # bids not best first
    tap.on_raw("{not json")
    report = tap.report()
    assert (report.messages, report.snapshots, report.deltas) == (14, 4, 8)
    assert report.gaps == 3 and report.resyncs == 3 and report.ignored_deltas == 1
    assert report.crossed == 1 and report.bad_levels == 2 and report.bad_messages == 1
    assert report.epoch_changes == 2 and report.status == "live" and report.statuses == 1
    assert report.last_seq == 0 and not report.synced and report.bids == [] and not report.ok


def test_a_clean_stream_is_ok_and_keeps_the_book() -> None:
    tap = Tap("ws://unused/", KEY)
    for msg in [
        p.Subscribed([KEY], ["book"]),
        _snap(7, [("100", "1"), ("99", "2")], [("101", "1")]),
        _delta(8, (("100", "0"), ("99.5", "3")), (("102", "4"),)),
    ]:
        assert tap.on_raw(p.encode_json(msg).decode()) is None
    report = tap.report()
    assert report.ok and report.gaps == 0 and report.last_seq == 8 and report.last_id == 1008
    assert report.bids == [("99.5", "3"), ("99", "2")]
    assert report.asks == [("101", "1"), ("102", "4")]


@pytest.mark.parametrize("wire_format", ["json", "msgpack"])
def test_latency_percentiles_of_venue_receive_send_and_tap_times(
    wire_format: p.WireFormat, capsys: pytest.CaptureFixture[str]
) -> None:
    """Delta i (1..100): venue to gateway i ms, receive to send 2*i us, send to tap 3*i us;
    a recovered delta adds no send-to-tap sample, one without times no sample at all."""

    def wire(msg: p.ServerMessage) -> str | bytes:
        data = p.encode(msg, wire_format)
        return data.decode() if wire_format == "json" else data  # text or binary frame

    tap = Tap("ws://unused/", KEY)
    tap.on_raw(wire(_snap(0, [("100", "1")], [("101", "1")])))
    venue_ms = 1_700_000_000_000
    for i in range(1, 101):
        recv_ns = (venue_ms + i) * 1_000_000 + i * 1_000_000  # i ms after the venue time
        send_ns = recv_ns + 2_000 * i
        msg = p.Delta(KEY, 1, i, 1000 + i, (), (), venue_ms + i, recv_ns, send_ns)
        tap.on_raw(wire(msg), send_ns + 3_000 * i)
    recovered = p.Delta(KEY, 1, 101, 1101, (), (), None, 5, 6, True)
    tap.on_raw(wire(recovered), 10**18)
    tap.on_raw(wire(_delta(102)), 10**18)
    report = tap.report()
    assert report.ok and report.deltas == 102
    assert report.latency == {
        "venue_to_gateway": LatencySummary(100, 50.0, 90.0, 99.0, 100.0),
        "gateway_recv_to_send": LatencySummary(101, 0.1, 0.18, 0.198, 0.2),
        "send_to_tap": LatencySummary(100, 0.15, 0.27, 0.297, 0.3),
    }
    decoded = msgspec.json.decode(msgspec.json.encode(report))
    assert decoded["latency"]["send_to_tap"]["p99_ms"] == 0.297
    render_text(report, sys.stdout)
    assert "latency send_to_tap ms: p50 0.15  p90 0.27  p99 0.297  max 0.3" in (
        capsys.readouterr().out
    )


def test_a_refused_subscription_is_an_error() -> None:
    tap = Tap("ws://unused/", "nowhere:X")
    with pytest.raises(TapError, match="unknown_symbol"):
        tap.on_raw('{"type":"error","code":"unknown_symbol","message":"no","symbol":"nowhere:X"}')


# --- a fake gateway -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _fake_gateway(
    script: Callable[[ServerConnection], Awaitable[None]],
) -> AsyncIterator[str]:
    async def handler(ws: ServerConnection) -> None:
        await script(ws)
        await ws.wait_closed()

    async with ws_serving(handler, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


async def _send(ws: ServerConnection, *msgs: p.ServerMessage) -> None:
    for msg in msgs:
        await ws.send(p.encode_json(msg).decode())


async def test_fake_gateway_gap_and_crossed_book_are_counted_and_fail(
    capsys: pytest.CaptureFixture[str],
) -> None:
    requests: list[object] = []

    async def script(ws: ServerConnection) -> None:
        requests.append(p.decode_request(await ws.recv()))
        await _send(
            ws,
            p.Subscribed([KEY], ["book"]),
            p.Status(KEY, SymbolState.LIVE, ""),
            _snap(0, [("100", "1"), ("99", "2")], [("101", "1")]),
            _delta(1, (("100", "0.5"),)),
            _delta(3, (("99", "0"),)),  # seq 2 is missing
        )
        requests.append(p.decode_request(await ws.recv()))
        await _send(
            ws,
            _snap(10, [("100", "0.5")], [("101", "1")]),
            _delta(11, (("102", "1"),)),  # crossed
            _delta(12, (("102", "0"),)),
        )

    async with _fake_gateway(script) as url:
        code = await run_tap(_args(url, duration=1.0))
    assert requests == [p.Subscribe([KEY], ["book"], None, None), p.Resync(KEY)]
    report = json.loads(capsys.readouterr().out)
    assert list(report)[:7] == DOCUMENTED_KEYS
    assert report["gaps"] == 1 and report["crossed"] == 1 and report["bad_levels"] == 0
    assert (report["messages"], report["snapshots"], report["deltas"]) == (8, 2, 4)
    assert report["last_seq"] == 12 and report["resyncs"] == 1
    assert report["bids"] == [["100", "0.5"]] and report["asks"] == [["101", "1"]]
    assert code == 1


async def test_a_connection_closed_by_the_gateway_ends_the_tap_and_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.recv()
        await _send(ws, _snap(0, [("100", "1")], [("101", "1")]))
        await ws.close(1001, "shutting down")

    async with _fake_gateway(script) as url:
        code = await run_tap(_args(url, duration=5.0))
    report = json.loads(capsys.readouterr().out)
    assert report["snapshots"] == 1 and "1001 shutting down" in report["closed"]
    assert code == 1


async def test_a_subscription_refused_on_the_wire_is_an_error_not_an_exception_group(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.recv()
        await _send(ws, p.Error(p.ErrorCode.UNKNOWN_SYMBOL, "unknown symbol(s): " + KEY, KEY))

    async with _fake_gateway(script) as url:
        with pytest.raises(TapError, match="unknown_symbol"):
            await Tap(url, KEY).run(5.0)
        assert await run_tap(_args(url, duration=5.0)) == 2
    assert "the gateway refused the subscription: unknown_symbol" in capsys.readouterr().err


async def test_a_cancelled_tap_re_raises_the_cancellation_and_closes_its_connection() -> None:
    closed = asyncio.Event()
    tap = _WatchedTap("", KEY)

    async def script(ws: ServerConnection) -> None:
        await ws.recv()
        await _send(ws, _snap(0, [("100", "1")], [("101", "1")]))
        await ws.wait_closed()
        closed.set()

    async with _fake_gateway(script) as url:
        tap.url = url
        async with asyncio.TaskGroup() as tasks:
            running = tasks.create_task(tap.run(None, asyncio.Event()))
            await tap.until(lambda: tap.counts.snapshots == 1, 10)
            running.cancel()
        assert running.cancelled()
        async with asyncio.timeout(10):
            await closed.wait()
    assert tap.counts.closed is None  # the tap ended it, not the gateway


async def test_an_unreachable_gateway_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard) on loopback: nothing listens there in the test environment.
    code = await run_tap(_args("ws://127.0.0.1:9/"))
    assert code == 2
    assert "cannot connect to ws://127.0.0.1:9/" in capsys.readouterr().err
    # A URL's password is not shown.
    assert await run_tap(_args("ws://desk:hunter2@127.0.0.1:9/")) == 2
    err = capsys.readouterr().err
    assert "cannot connect to ws://desk:***@127.0.0.1:9/" in err and "hunter2" not in err


async def test_the_gateway_is_named_in_any_form_top_takes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _view, fanout = live_fanout([("100.00", "1")], [("100.50", "1")])
    async with serving(fanout):
        for given in (
            f"http://127.0.0.1:{fanout.port}",
            f"127.0.0.1:{fanout.port}",
            f"ws://127.0.0.1:{fanout.port}/healthz",
        ):
            assert await run_tap(_args(given, KEY, 0.1)) == 0, given
            report = json.loads(capsys.readouterr().out)
            assert report["snapshots"] == 1 and report["symbol"] == KEY
    assert await run_tap(_args("mailto:someone", KEY, 0.1)) == 2
    assert "expected the gateway's base URL" in capsys.readouterr().err


TOKEN = "tap-token-0123456789"


async def test_the_token_is_sent_as_a_header_and_named_nowhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MDGATEWAY_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    _view, fanout = live_fanout([("100.00", "1")], [("100.50", "1")], token=TOKEN)
    async with serving(fanout):
        url = f"ws://127.0.0.1:{fanout.port}/"
        # Without a token, and with a wrong one in the URL: 401, said without the token.
        for given in (url, f"{url}?token=wrong-token-0123456789"):
            assert await run_tap(_args(given, KEY, 0.1)) == 2
            err = capsys.readouterr().err
            assert f"cannot connect to {url}: " in err and "HTTP 401" in err
            assert "--token-file PATH" in err and "wrong-token" not in err
        # The file's token wins over the URL's; the environment's is used alone.
        monkeypatch.setenv("MDGATEWAY_TOKEN", TOKEN)
        for given, options in (
            (f"{url}?token=wrong-token-0123456789", ("--token-file", str(token_file))),
            (url, ()),
        ):
            await run_tap(_args(given, KEY, 0.1, *options))
            out, err = capsys.readouterr()
            assert json.loads(out)["snapshots"] == 1, err
            assert TOKEN not in out + err
    assert fanout.stats.http_refused == {401: 2}


# --- the real gateway on the simulated venue ------------------------------------------------


class _WatchedTap(Tap):
    """A tap that notifies ``changes`` after every message it handles."""

    def __init__(self, url: str, symbol: str) -> None:
        super().__init__(url, symbol)
        self.changes = StateChanges()

    def on_raw(self, data: str | bytes, recv_ns: int | None = None) -> p.Request | None:
        request = super().on_raw(data, recv_ns)
        self.changes.notify()
        return request

    async def until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        await wait_until(self.changes, predicate, timeout_s)


@pytest.mark.async_timeout_s(40)
async def test_tap_follows_the_gateway_with_no_gap_and_its_book(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with live_demo_gateway() as (sim, service, url):
        tap = _WatchedTap(url, KEY)
        stop = asyncio.Event()
        running = asyncio.create_task(tap.run(None, stop))
        await tap.until(lambda: tap.counts.deltas > 10, 20)
        sim.pause()
        last = sim.last_id("BTCUSDT")
        await tap.until(lambda: tap.counts.last_id == last, 10)
        assert service.books[KEY].applied_id == last
        stop.set()
        report = await running
        assert report.ok and report.snapshots == 1 and report.gaps == 0
        assert report.deltas > 10 and report.crossed == 0 and report.bad_levels == 0
        assert report.status == "live" and report.closed is None
        # Every delta carried the gateway's times; those of venue updates the venue's
        # event time (a delta built from a snapshot has none).
        for measure in ("venue_to_gateway", "gateway_recv_to_send", "send_to_tap"):
            summary = report.latency[measure]
            assert 0 < summary.count <= report.deltas, measure
            assert summary.count == report.deltas or measure == "venue_to_gateway"
            assert summary.p50_ms <= summary.p90_ms <= summary.p99_ms <= summary.max_ms
        gateway_book = service.books[KEY].book
        assert (report.bids, report.asks) == (gateway_book.bids(), gateway_book.asks())
        assert tap.book.normalized() == sim.true_book("BTCUSDT").normalized()

        assert await run_tap(_args(url, symbol="nowhere:X")) == 2
        assert "unknown_symbol" in capsys.readouterr().err


@pytest.mark.async_timeout_s(45)
async def test_cli_tap_prints_one_json_object_and_exits_zero() -> None:
    async with live_demo_gateway() as (_sim, _service, url):
        code, stdout, stderr = await mdgateway_output(
            "tap", url, "--symbol", KEY, "--json", "--duration", "1.5", timeout_s=30
        )
        assert code == 0, stderr
        report = json.loads(stdout)
        assert list(report)[:7] == DOCUMENTED_KEYS
        assert report["snapshots"] == 1 and report["gaps"] == 0 and report["deltas"] > 0
        assert report["bids"] and report["asks"] and report["ok"] is True


# --- the verdict on the symbol's state, the status lines on a terminal ----------------------


@pytest.mark.parametrize(
    ("state", "ok"),
    [
        (SymbolState.LIVE, True),
        (SymbolState.RESYNCING, False),
        (SymbolState.STALE, False),
        (SymbolState.SYNCING, False),
    ],
)
def test_the_verdict_needs_the_symbol_to_end_live(state: SymbolState, ok: bool) -> None:
    tap = Tap("ws://unused/", KEY)
    for msg in [
        p.Status(KEY, SymbolState.LIVE, ""),
        _snap(7, [("100", "1")], [("101", "1")]),
        p.Status(KEY, state, ""),
    ]:
        tap.on_raw(p.encode_json(msg).decode())
    report = tap.report()
    assert report.status == str(state) and report.gaps == 0
    assert report.ok is ok


def test_a_later_gateways_state_and_message_type_are_shown_not_counted_bad() -> None:
    tap = Tap("ws://unused/", KEY)
    for msg in [
        p.Status(KEY, SymbolState.LIVE, ""),
        _snap(7, [("100", "1")], [("101", "1")]),
        p.Status(KEY, "halted", "venue halt"),  # a later gateway's values, as sent
        {"type": "funding", "symbol": KEY, "rate": "0.0001"},
        p.Error("entitlement_expired", "renew", KEY),
    ]:
        assert tap.on_raw(msgspec.json.encode(msg).decode()) is None
    report = tap.report()
    assert report.status == "unknown (halted)" and not report.ok
    assert (report.unknown_messages, report.bad_messages, report.errors) == (1, 0, 1)
    assert report.synced and report.statuses == 2


def _answering(*msgs: p.ServerMessage) -> Callable[[ServerConnection], Awaitable[None]]:
    """A fake gateway's script: the subscription, answered with the live symbol's snapshot
    and then ``msgs``."""

    async def script(ws: ServerConnection) -> None:
        await ws.recv()
        live = p.Status(KEY, SymbolState.LIVE, "")
        snapshot = _snap(0, [("100", "1")], [("101", "1")])
        await _send(ws, p.Subscribed([KEY], ["book"]), live, snapshot, *msgs)

    return script


async def test_a_symbol_that_ends_stale_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    script = _answering(p.Status(KEY, SymbolState.STALE, "every endpoint down"))
    async with _fake_gateway(script) as url:
        code = await run_tap(_args(url, duration=0.5))
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "stale" and report["gaps"] == 0 and report["ok"] is False
    assert code == 1


class _Terminal:
    """The master side of a pseudo-terminal: what the child writes, as it arrives."""

    def __init__(self, master_fd: int) -> None:
        self.fd = master_fd
        self.text = ""
        self.closed = asyncio.Event()
        self.changes = StateChanges()
        asyncio.get_running_loop().add_reader(master_fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed its side
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.fd)
            self.closed.set()
        self.text += data.decode(errors="replace")
        self.changes.notify()

    async def until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        await wait_until(self.changes, predicate, timeout_s)


@pytest.mark.async_timeout_s(60)
async def test_tap_on_a_terminal_prints_status_lines_and_its_summary_on_ctrl_c() -> None:
    import pty

    async with _fake_gateway(_answering(_delta(1, (("100", "2"),)))) as url:
        master_fd, child_fd = pty.openpty()
        try:
            process = await asyncio.create_subprocess_exec(
                *[sys.executable, "-m", "gateway", "tap", url, "--symbol", KEY],
                stdout=child_fd,
                stderr=asyncio.subprocess.PIPE,
                cwd=ROOT,
            )
            os.close(child_fd)
            child_fd = -1
            terminal = _Terminal(master_fd)
            try:
                # No --duration: a status line per second, then the summary on Ctrl-C.
                await terminal.until(lambda: "status live" in terminal.text, 30)
                assert f"{KEY} " in terminal.text and "deltas 1  gaps 0" in terminal.text
                assert "best 100 / 101" in terminal.text
                process.send_signal(signal.SIGINT)
                async with asyncio.timeout(30):
                    _, stderr = await process.communicate()
                    await terminal.closed.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        finally:
            if child_fd >= 0:
                os.close(child_fd)
            asyncio.get_running_loop().remove_reader(master_fd)
            os.close(master_fd)
    assert process.returncode == 0, stderr.decode()
    assert f"tap {KEY}: OK" in terminal.text and "deltas 1" in terminal.text
