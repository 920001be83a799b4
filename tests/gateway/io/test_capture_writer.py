"""The asyncio capture writer: bounded queue, drops counted and marked, flush on cancel."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import pytest

from gateway.capture import CaptureReader
from gateway.capture import codec as mdgw
from gateway.core.stats import CAPTURE_DROPPED
from gateway.io.capture_writer import CaptureWriter
from gateway.io.metrics import families
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


async def test_recorded_urls_name_no_password_or_token(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, flush_s=0.01)
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(writer.run())
        writer.record_connect(0, "wss://desk:hunter2@127.0.0.1:1/ws?token=abc", "binance")
        writer.record_rest("https://desk:hunter2@h/api/v3/depth?symbol=X", b"{}", 6)
        writer.record_disconnect(0, "wss://desk:hunter2@127.0.0.1:1/ws")
        await wait_until(writer.changes, lambda: writer.stats.written == 3)
        task.cancel()
    urls = [record.url for record in CaptureReader(tmp_path)]
    assert urls == [
        "wss://desk:***@127.0.0.1:1/ws?token=***",
        "https://desk:***@h/api/v3/depth?symbol=X",
        "wss://desk:***@127.0.0.1:1/ws",
    ]


@pytest.mark.parametrize("first_batch", ["being written", "waiting for the worker thread"])
async def test_a_batch_handed_to_the_worker_when_cancelled_is_written_before_the_last(
    tmp_path: Path, first_batch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled after a batch was handed to the worker thread, while the thread writes it or
    before the thread got to it (busy, or not yet scheduled on a loaded machine): that batch
    still lands, and the final batch (taken on cancellation) lands after it, never before,
    even when the final write is handed over while the first is not written yet."""
    writer = CaptureWriter(tmp_path, flush_s=60)
    worker_held = threading.Event()
    final_handed_over = threading.Event()
    submit = writer._writer.submit

    def hold_the_worker() -> None:
        worker_held.set()
        assert final_handed_over.wait(10), "the final write was never handed over"

    def held_then(fn: Callable[..., object], *args: object) -> object:
        hold_the_worker()
        return fn(*args)

    def watched_submit(fn: Callable[..., object], *args: object) -> Future[object]:
        if args[-1] is True:
            final_handed_over.set()
        elif not worker_held.is_set() and first_batch == "being written":
            return submit(held_then, fn, *args)
        elif not worker_held.is_set():
            submit(hold_the_worker)
        return submit(fn, *args)

    monkeypatch.setattr(writer._writer, "submit", watched_submit)

    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(writer.run())
        writer.record_frame(0, b"first", 1)
        writer._wake.set()
        async with asyncio.timeout(10):
            await asyncio.to_thread(worker_held.wait)
        writer.record_frame(0, b"last", 2)
        task.cancel()
    assert [r.payload for r in CaptureReader(tmp_path)] == [b"first", b"last"]
    assert writer.stats.written == 2 and writer.stats.dropped == 0 and not writer.stats.failed


async def test_a_second_cancellation_stops_the_waiting_not_the_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled again while its final write waits for the worker thread: ``run`` returns at
    once, and the thread still writes the final batch and closes the file."""
    writer = CaptureWriter(tmp_path, flush_s=60)
    worker_released = threading.Event()
    submit = writer._writer.submit
    final_handed_over = asyncio.Event()

    def watched_submit(fn: Callable[..., object], *args: object) -> Future[object]:
        if args[-1] is True:
            submit(worker_released.wait, 10)
            final_handed_over.set()
        return submit(fn, *args)

    monkeypatch.setattr(writer._writer, "submit", watched_submit)
    async with asyncio.TaskGroup() as tasks, asyncio.timeout(10):
        task = tasks.create_task(writer.run())
        writer.record_frame(0, b"first", 1)
        writer._wake.set()
        await writer.changes.wait_until(lambda: writer.stats.written == 1)
        writer.record_frame(0, b"last", 2)
        task.cancel()
        await final_handed_over.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert writer.stats.written == 1, "the final write is still held"
    worker_released.set()
    await asyncio.to_thread(writer._writer.shutdown, True)
    assert [r.payload for r in CaptureReader(tmp_path)] == [b"first", b"last"]
    assert writer.stats.written == 2 and not writer.stats.failed


async def test_each_thread_counts_its_own_drops_and_the_export_is_their_sum(
    tmp_path: Path,
) -> None:
    """Drops on the event loop (queue full) and in the writer thread (disk failed) land in
    separate counters, so neither thread's increments can overwrite the other's; the
    exported ``capture_dropped`` is their sum."""
    directory = tmp_path / "capture"
    writer = CaptureWriter(directory, max_queue=2, flush_s=60)
    directory.rmdir()  # the first write fails: no directory to open the file in
    accepted = [writer.record_frame(0, b"f%d" % i, 100 + i) for i in range(5)]
    assert accepted == [True, True, False, False, False]
    assert (writer.stats.dropped_on_record, writer.stats.dropped_on_write) == (3, 0)

    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(writer.run())
        await wait_until(writer.changes, lambda: bool(writer.stats.failed))
        assert (writer.stats.dropped_on_record, writer.stats.dropped_on_write) == (3, 2)
        task.cancel()
    assert writer.stats.written == 0 and writer.stats.dropped_on_record == 3
    assert writer.stats.dropped == writer.stats.dropped_on_record + writer.stats.dropped_on_write
    [family] = families((CAPTURE_DROPPED,), (), [((), writer.stats)])
    assert [s.value for s in family.samples] == [float(writer.stats.dropped)]
