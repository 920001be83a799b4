"""What the benchmarks share: timing, the depth data, the event loop, the machine.

Timing: :func:`measure` runs a workload ``warmup`` times untimed, then ``repeats`` times
timed with ``time.perf_counter_ns``, each on fresh state built outside the timed region, and
keeps every run so that the median and the spread can be reported. The garbage collector is
left on (as in the service) but collected before each run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Coroutine
from dataclasses import dataclass
from dataclasses import field
from functools import lru_cache
from pathlib import Path
from typing import Any
from typing import TypeVar

from feeds import binance
from feeds.sim import binance_spot as render
from feeds.sim.book_process import BookProcess
from gateway.capture import CaptureReader
from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.io.fanout import Fanout

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA_ROOT = REPO_ROOT.parent / "shared" / "data" / "real"
#: The real Binance spot capture (hftbacktest collector, BTCUSDT, 2024-08-08, ~6 minutes).
CAPTURE = REAL_DATA_ROOT / "binance" / "hftbacktest" / "spot" / "btcusdt_20240808.gz"
SYMBOL = "BTCUSDT"
KEY = "binance:BTCUSDT"
_DEPTH_PREFIX = b'{"stream":"btcusdt@depth'
#: Frames rendered by the simulator when the real capture is missing (about the capture's).
SIM_FRAMES = 3451

S = TypeVar("S")
T = TypeVar("T")


# --- timing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """The wall times of the timed runs of one workload, in nanoseconds."""

    runs_ns: tuple[int, ...]

    @property
    def median_ns(self) -> float:
        return float(statistics.median(self.runs_ns))

    @property
    def spread_pct(self) -> float:
        """(slowest - fastest) / median, in percent: the noise of this measurement."""
        return 100.0 * (max(self.runs_ns) - min(self.runs_ns)) / max(self.median_ns, 1.0)

    def per_op_us(self, ops: int) -> float:
        return self.median_ns / max(ops, 1) / 1000.0

    def ops_per_s(self, ops: int) -> float:
        return ops * 1e9 / max(self.median_ns, 1.0)


def measure(
    workload: Callable[[S], object],
    setup: Callable[[], S],
    *,
    repeats: int,
    warmup: int = 1,
) -> Timing:
    """Time ``workload(setup())``: ``warmup`` untimed runs, then ``repeats`` timed ones."""
    runs: list[int] = []
    for i in range(warmup + repeats):
        state = setup()
        gc.collect()
        t0 = time.perf_counter_ns()
        workload(state)
        elapsed = time.perf_counter_ns() - t0
        if i >= warmup:
            runs.append(elapsed)
    return Timing(tuple(runs))


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (``pct`` in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(len(sorted_values) * pct / 100.0))
    return sorted_values[min(len(sorted_values), rank) - 1]


# --- depth data -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DepthData:
    """The REST snapshot and the depth frames after it, in receive order."""

    source: str
    real: bool
    snapshot: DepthSnapshot
    #: ``(recv_ns, raw combined-stream frame)`` of every depth update.
    frames: list[tuple[int, bytes]]
    diffs: list[DepthDiff] = field(default_factory=list)

    @property
    def applicable(self) -> list[DepthDiff]:
        """The diffs that a book built from the snapshot applies: ``u`` past the snapshot."""
        last = self.snapshot.last_id
        return [d for d in self.diffs if d.last_id > last]


def load_depth_data(limit: int | None = None) -> DepthData:
    """The real capture's snapshot and depth frames (the first ``limit`` frames), or,
    where ``../shared/data/real`` is missing, frames rendered by the simulator."""
    return _load(CAPTURE, limit)


@lru_cache(maxsize=4)
def _load(capture: Path, limit: int | None) -> DepthData:
    data = _load_capture(capture, limit) if capture.is_file() else _load_sim(limit)
    diffs = []
    for recv_ns, raw in data.frames:
        for event in binance.parse(raw, recv_ns, 0):
            if isinstance(event, DepthDiff):
                diffs.append(event)
    return DepthData(data.source, data.real, data.snapshot, data.frames, diffs)


def _load_capture(capture: Path, limit: int | None) -> DepthData:
    snapshot: DepthSnapshot | None = None
    frames: list[tuple[int, bytes]] = []
    for record in CaptureReader(capture):
        if record.kind == "rest" and snapshot is None:
            snapshot = binance.parse_snapshot(SYMBOL, record.payload, record.recv_ns)
        elif record.kind == "ws" and record.payload.startswith(_DEPTH_PREFIX):
            frames.append((record.recv_ns, record.payload))
            if limit is not None and len(frames) >= limit and snapshot is not None:
                break
    if snapshot is None:
        raise RuntimeError(f"{capture}: no REST snapshot in the capture")
    rel = (
        capture.relative_to(REPO_ROOT.parent)
        if capture.is_relative_to(REPO_ROOT.parent)
        else capture
    )
    return DepthData(f"real capture ../{rel}", True, snapshot, frames)


def _load_sim(limit: int | None) -> DepthData:
    process = BookProcess(SYMBOL, seed=7, mid=60_000.0, actions_per_step=16.0)
    last_id, bids, asks = process.snapshot(1000)
    body = render.snapshot_body(last_id, bids, asks)
    snapshot = binance.parse_snapshot(SYMBOL, body, 0)
    frames: list[tuple[int, bytes]] = []
    count = SIM_FRAMES if limit is None else min(limit, SIM_FRAMES)
    step = 0
    while len(frames) < count:
        step += 1
        batch = process.step()
        if batch is not None:
            event_ms = 1_723_161_255_000 + 100 * step
            frames.append((event_ms * 1_000_000, render.batch_frame(batch, event_ms)))
    return DepthData(
        f"SIMULATED frames (feeds/sim BookProcess + binance_spot renderer): {CAPTURE} is missing",
        False,
        snapshot,
        frames,
    )


# --- helper processes -----------------------------------------------------------------------


async def read_line(proc: asyncio.subprocess.Process, what: str, timeout_s: float) -> str:
    """The next line ``proc`` (started with piped stdout and stderr) prints, stripped;
    RuntimeError with its stderr when it exited, TimeoutError after ``timeout_s``."""
    if proc.stdout is None or proc.stderr is None:
        raise RuntimeError(f"{what}: started without piped stdout and stderr")
    async with asyncio.timeout(timeout_s):
        raw = await proc.stdout.readline()
    if not raw:
        err = await proc.stderr.read()
        raise RuntimeError(f"{what} exited: {err.decode(errors='replace').strip()}")
    return raw.decode().strip()


@contextlib.asynccontextmanager
async def serving(fanout: Fanout) -> AsyncIterator[Fanout]:
    """``fanout`` serving on 127.0.0.1 (a free port: ``fanout.port``) for the block; its
    server is stopped when the block ends."""
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        server = tasks.create_task(fanout.serve("127.0.0.1", 0, ready))
        await ready.wait()
        try:
            yield fanout
        finally:
            server.cancel()


async def stop_process(proc: asyncio.subprocess.Process, timeout_s: float = 5.0) -> None:
    """Close ``proc``'s stdin (its signal to exit), wait for it up to ``timeout_s``, then
    kill it."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        async with asyncio.timeout(timeout_s):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


# --- event loop and machine -----------------------------------------------------------------


def loop_name() -> str:
    try:
        return f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a POSIX dependency
        return "asyncio (default loop: uvloop is not installed)"


def run_async(main: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """Run ``main`` on a fresh uvloop event loop, bounded by ``timeout_s``."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await main

    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(bounded())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(bounded())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "?"


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "event loop": loop_name(),
        "cpus": f"{os.cpu_count()} ({usable} usable by this process)",
        "cpu model": _cpu_model(),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in load),
        "libraries": ", ".join(
            f"{name} {_version(name)}"
            for name in ("websockets", "msgspec", "orjson", "sortedcontainers", "uvloop")
        ),
    }
