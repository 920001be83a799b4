"""The asyncio capture writer: bounded queue, drops counted and marked, flush on cancel."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from gateway.capture import CaptureReader
from gateway.capture import codec as mdgw
from gateway.io.capture_writer import CaptureWriter
from tests.harness import wait_until


def _lines(directory: Path) -> list[mdgw.Line]:
    out = []
    for path in mdgw.session_files(directory):
        out += [mdgw.decode_line(line) for line in mdgw.iter_lines(path, mdgw.MemberReader())]
    return [line for line in out if line.kind != "header"]


async def test_a_full_queue_drops_from_the_capture_counts_and_marks_the_gap(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, max_queue=4, flush_s=0.01)
    accepted = [writer.record_frame(0, b"f%d" % i, 100 + i) for i in range(10)]
    assert accepted == [True] * 4 + [False] * 6
    assert writer.queued == 4 and writer.stats.dropped == 6

    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(writer.run())
        await wait_until(writer.changes, lambda: writer.stats.written == 4)
        assert writer.record_frame(0, b"after", 200), "there is room once drained"
        task.cancel()
    lines = _lines(tmp_path)
    assert [line.kind for line in lines] == ["ws"] * 4 + ["gap", "ws"]
    assert mdgw.gap_dropped(lines[4].payload) == 6 and lines[4].recv_ns == 104
    assert writer.stats.gaps == 1 and writer.stats.written == 6
    reader = CaptureReader(tmp_path)
    assert [r.payload for r in reader] == [b"f0", b"f1", b"f2", b"f3", b"after"]
    assert reader.stats.dropped == 6


def test_the_queue_stays_bounded_under_a_flood(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, max_queue=100, flush_s=60)
    for i in range(10_000):
        writer.record_frame(1, b"x", i)
        assert writer.queued <= 101
    assert writer.stats.records + writer.stats.dropped == 10_000


async def test_it_flushes_while_running_and_on_cancel(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, flush_s=0.01)

    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(writer.run())
        writer.record_connect(0, "ws://127.0.0.1:1/ws", "binance")
        writer.record_frame(0, b'{"a":1}\n', 5)
        writer.record_rest("http://h/api/v3/depth?symbol=X", b"{}", 6)
        await wait_until(writer.changes, lambda: writer.stats.written == 3)
        assert writer.stats.written == 3, "written before the cancel"
        writer.record_disconnect(0, "ws://127.0.0.1:1/ws")
        task.cancel()
    assert not writer.record_frame(0, b"late", 7), "a stopped writer drops"
    records = list(CaptureReader(tmp_path))
    assert [r.kind for r in records] == ["connect", "ws", "rest", "disconnect"]
    assert records[1].payload == b'{"a":1}\n' and records[1].url == "ws://127.0.0.1:1/ws"


async def test_a_write_in_flight_when_cancelled_is_written_before_the_last(tmp_path: Path) -> None:
    """Cancelled while a batch is being written in the worker thread: that batch still lands,
    and the final batch (taken on cancellation) lands after it, never before, even when the
    final write is handed over while the first is still being written."""
    writer = CaptureWriter(tmp_path, flush_s=60)
    in_flight = threading.Event()
    final_handed_over = threading.Event()
    write, submit = writer._write, writer._writer.submit

    def slow_first_write(batch: list[Any], close: bool) -> None:
        if not close and not in_flight.is_set():
            in_flight.set()
            assert final_handed_over.wait(10), "the final write was never handed over"
        write(batch, close)

    def watched_submit(fn: Any, *args: Any) -> Any:
        future = submit(fn, *args)
        if args and args[-1] is True:
            final_handed_over.set()
        return future

    writer._write = slow_first_write  # type: ignore[method-assign]
    writer._writer.submit = watched_submit  # type: ignore[method-assign]

    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(writer.run())
        writer.record_frame(0, b"first", 1)
        writer._wake.set()
        async with asyncio.timeout(10):
            await asyncio.to_thread(in_flight.wait)
        writer.record_frame(0, b"last", 2)
        task.cancel()
    assert [r.payload for r in CaptureReader(tmp_path)] == [b"first", b"last"]
    assert writer.stats.written == 2 and writer.stats.dropped == 0 and not writer.stats.failed
