"""The capture writer: records what the venues sent, off the hot path (docs/capture-format.md).

:meth:`CaptureWriter.record` is synchronous and never blocks: it appends to a bounded
queue. When the queue is full the record is dropped from the capture (never from the
feed), counted, and the next record that fits is preceded by a ``gap`` line saying how many
were dropped and between which receive times. :meth:`CaptureWriter.run`, one task of the
service's TaskGroup, drains the queue every ``flush_s`` (sooner once it is half full),
encodes and writes each batch as one gzip member in a worker thread
(:class:`gateway.capture.codec.CaptureFileWriter`), rotates files by size and time, and on
cancellation writes what is queued and closes the file. URLs are recorded with their
password and ``token=`` value as ``***`` (a capture is shared and kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from gateway.capture.codec import CaptureFileWriter
from gateway.capture.codec import LineKind
from gateway.capture.codec import encode_line
from gateway.capture.codec import gap_payload
from gateway.capture.codec import session_name
from gateway.core.stats import CaptureStats
from gateway.io.changes import StateChanges
from gateway.wire.tokens import redact

log = logging.getLogger(__name__)

#: ``conn_id`` of REST and gap records.
NO_CONN = -1

_Item = tuple[int, LineKind, int, str, bytes]


class CaptureWriter:
    """Records raw frames, connection events and REST responses into ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        max_queue: int = 100_000,
        rotate_bytes: int = 256 * 1024 * 1024,
        rotate_s: float = 3600.0,
        flush_s: float = 1.0,
        level: int = 6,
    ) -> None:
        if max_queue < 1 or flush_s <= 0:
            raise ValueError("max_queue must be >= 1 and flush_s > 0")
        self.directory = directory
        self.files = CaptureFileWriter(
            directory,
            rotate_bytes=rotate_bytes,
            rotate_s=rotate_s,
            level=level,
            session=session_name(time.time_ns()),  # the session starts now
        )
        self.stats = CaptureStats()
        #: Notified after every batch is written (``stats.written`` counts it).
        self.changes = StateChanges()
        self._max_queue = max_queue
        self._wake_at = max(1, max_queue // 2)
        self._flush_s = flush_s
        self._queue: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._gap_count = 0
        self._gap_first_ns = 0
        self._gap_last_ns = 0
        #: Held by the thread that writes (``stats`` are read from the event loop too). Never
        #: taken on the event loop: the two threads count drops in fields of their own.
        self._lock = threading.Lock()
        #: One writer thread: batches are written in the order they were taken, so the final
        #: write on cancellation comes after a write that was in flight when it came.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture-writer")

    # --- recording: synchronous, never blocks ------------------------------------------------

    def record(self, recv_ns: int, kind: LineKind, conn_id: int, url: str, payload: bytes) -> bool:
        """Queues one record; False (and counted) when it is dropped from the capture."""
        queue = self._queue
        if len(queue) >= self._max_queue or self._closed:
            self.stats.dropped_on_record += 1
            if self._gap_count == 0:
                self._gap_first_ns = recv_ns
            self._gap_count += 1
            self._gap_last_ns = recv_ns
            return False
        if self._gap_count:
            self._queue_gap()
        queue.append((recv_ns, kind, conn_id, url, payload))
        self.stats.records += 1
        if len(queue) >= self._wake_at:
            self._wake.set()
        return True

    def record_frame(self, conn_id: int, raw: bytes, recv_ns: int) -> bool:
        return self.record(recv_ns, "ws", conn_id, "", raw)

    # A capture is shared and kept: the URLs it records name no password or token.

    def record_connect(self, conn_id: int, url: str, venue: str = "") -> bool:
        payload = msgspec.json.encode({"venue": venue}) if venue else b""
        return self.record(time.time_ns(), "connect", conn_id, redact(url), payload)

    def record_disconnect(self, conn_id: int, url: str = "") -> bool:
        return self.record(time.time_ns(), "disconnect", conn_id, redact(url), b"")

    def record_rest(self, url: str, body: bytes, recv_ns: int) -> bool:
        return self.record(recv_ns, "rest", NO_CONN, redact(url), body)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # --- writing -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Writes until cancelled; then writes what is queued and closes the file.

        Every batch taken from the queue is written (or counted as dropped once the disk
        failed): cancellation never withdraws a batch handed to the worker thread, even one
        the thread has not started yet, so when ``run`` returns after its cancellation every
        record accepted is in the files. A second cancellation stops the waiting, not the
        writing.
        """
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    async with asyncio.timeout(self._flush_s):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()
                await self._hand_over(loop, close=False)
                self.changes.notify()
        finally:
            self._closed = True
            try:
                await self._hand_over(loop, close=True)
            finally:
                self._writer.shutdown(wait=False)

    def _hand_over(self, loop: asyncio.AbstractEventLoop, *, close: bool) -> asyncio.Future[None]:
        """Takes what is queued and hands it to the worker thread. Shielded: cancelling the
        waiter would cancel a write the thread has not started, and its batch, already
        taken from the queue, would be lost."""
        return asyncio.shield(loop.run_in_executor(self._writer, self._write, self._take(), close))

    def _queue_gap(self) -> None:
        payload = gap_payload(self._gap_count, self._gap_first_ns, self._gap_last_ns)
        self._queue.append((self._gap_first_ns, "gap", NO_CONN, "", payload))
        self.stats.gaps += 1
        self._gap_count = 0

    def _take(self) -> list[_Item]:
        if self._closed and self._gap_count:
            self._queue_gap()
        batch = list(self._queue)
        self._queue.clear()
        return batch

    def _write(self, batch: list[_Item], close: bool) -> None:
        """In a worker thread: encodes and writes ``batch``; closes the file when asked."""
        with self._lock:
            if self.stats.failed:
                self.stats.dropped_on_write += len(batch)
                return
            lines = []
            for item in batch:
                try:
                    lines.append(encode_line(*item))
                except ValueError:
                    self.stats.unencodable += 1
            try:
                self.stats.flushes += self.files.write(
                    lines, now_ns=time.time_ns(), now_s=time.monotonic()
                )
                self.stats.written += len(lines)
                if close:
                    self.files.close()
            except OSError as exc:
                self.stats.failed = f"{type(exc).__name__}: {exc}"
                self.stats.dropped_on_write += len(lines)
                log.error("capture stopped, the feed goes on: %s", self.stats.failed)
                with contextlib.suppress(OSError):
                    self.files.close()
