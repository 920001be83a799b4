"""The README's client example and the programs of ``examples/``, each run as a child
process against a gateway of a simulated Binance on an ephemeral loopback port.

The README's example must run as pasted (only its URL is pointed at the test's gateway)
and stop by itself; the examples run until SIGINT, which the test sends by process id once
they printed enough, and must then exit 0."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import os
import re
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from .subscriber import LIVE_WITHIN_S
from .subscriber import ROOT
from .subscriber import live_demo_gateway

KEY = "binance:BTCUSDT"
DEMO_URL = "ws://127.0.0.1:8765/"
#: Bound of each child's run; they print their lines within a second or two.
RUN_WITHIN_S = 30.0
#: Bound of a test with a demo gateway: the gateway live, then the child's run.
GATEWAY_AND_RUN_WITHIN_S = LIVE_WITHIN_S + RUN_WITHIN_S


async def run_child(*args: str, lines: int | None) -> tuple[int, list[str], str]:
    """``python ARGS`` from the repository root: with ``lines``, SIGINT (by its process
    id) once it printed that many lines; without, until it ends by itself. Returns the
    exit code, stdout's lines and stderr; killed on a timeout or any error."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    printed: list[str] = []
    try:
        async with asyncio.timeout(RUN_WITHIN_S):
            if lines is not None:
                while len(printed) < lines:
                    line = await process.stdout.readline()
                    if not line:
                        break
                    printed.append(line.decode().rstrip("\n"))
                os.kill(process.pid, signal.SIGINT)
            rest, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    printed += rest.decode().splitlines()
    assert process.returncode is not None
    return process.returncode, printed, stderr.decode()


def readme_example() -> str:
    """The README's Python block of the section "From Python"."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("#### From Python") :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_example_is_formatted_and_linted(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    for check in (["format", "--check"], ["check"]):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ruff",
                *check,
                "--config",
                str(ROOT / "pyproject.toml"),
                str(script),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=RUN_WITHIN_S,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.async_timeout_s(GATEWAY_AND_RUN_WITHIN_S)
async def test_the_readme_example_runs_as_pasted_and_stops_by_itself(tmp_path: Path) -> None:
    async with live_demo_gateway() as (_sim, _service, url):
        example = readme_example()
        assert example.count(DEMO_URL) == 1
        script = tmp_path / "example.py"
        script.write_text(example.replace(DEMO_URL, url))
        code, lines, stderr = await run_child(str(script), lines=None)
    assert code == 0, stderr
    books = [line for line in lines if line.startswith(KEY)]
    assert len(books) == 20, lines
    assert any(line.startswith("status live") for line in lines), lines
    seqs = [int(line.split()[1]) for line in books]
    # Deltas follow each other within an epoch; a snapshot may restart the count.
    assert all(b == a + 1 or b <= a for a, b in itertools.pairwise(seqs)), seqs


SPREAD_LINE = re.compile(rf"^{re.escape(KEY)} bid (\S+) ask (\S+) spread (\S+)$")


async def run_example(script: str, *options: str, lines: int) -> list[str]:
    """``examples/SCRIPT URL --symbol KEY OPTIONS`` against a demo gateway, interrupted once
    it printed ``lines`` lines; its output, once it exited 0."""
    async with live_demo_gateway() as (_sim, _service, url):
        code, printed, stderr = await run_child(
            f"examples/{script}", url, "--symbol", KEY, *options, lines=lines
        )
    assert code == 0, stderr
    return printed


@pytest.mark.async_timeout_s(GATEWAY_AND_RUN_WITHIN_S)
async def test_spread_printer_prints_the_spread_on_each_change() -> None:
    lines = await run_example("spread_printer.py", lines=6)
    assert lines[0] == f"{KEY} status live: snapshot applied", lines
    spreads = []
    for line in lines[1:6]:
        match = SPREAD_LINE.match(line)
        assert match is not None, line
        bid, ask, spread = (Decimal(group) for group in match.groups())
        assert ask - bid == spread > 0
        spreads.append(spread)
    assert all(a != b for a, b in itertools.pairwise(spreads)), spreads


BBO_LINE = re.compile(rf"^(\S+) {re.escape(KEY)} (\d+):(\d+) bid (\S+)@(\S+) ask (\S+)@(\S+)$")


@pytest.mark.async_timeout_s(GATEWAY_AND_RUN_WITHIN_S)
async def test_bbo_logger_logs_each_top_of_book_with_its_time() -> None:
    lines = await run_example("bbo_logger.py", lines=6)
    assert lines[0].endswith(f"{KEY} status live: snapshot applied"), lines
    positions = []
    for line in lines[1:6]:
        match = BBO_LINE.match(line)
        assert match is not None, line
        when = datetime.datetime.fromisoformat(match[1])
        assert when.tzinfo is not None and abs(when - datetime.datetime.now(datetime.UTC)) < (
            datetime.timedelta(minutes=1)
        )
        assert Decimal(match[5]) < Decimal(match[7])  # bid below ask
        positions.append((int(match[2]), int(match[3])))
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


@pytest.mark.async_timeout_s(GATEWAY_AND_RUN_WITHIN_S)
async def test_recovery_demo_with_trades_gets_every_trade_once_across_the_dropped_connection() -> (
    None
):
    lines = await run_example("recovery_demo.py", "--drop-after", "5", "--trades", lines=40)
    dropped = lines.index("dropping the connection")
    (recovery,) = [line for line in lines[dropped:] if line.startswith("trades ")]
    trades = [line.split() for line in lines if line.startswith("trade ")]
    positions = [tuple(map(int, at.split(":"))) for _, at, *_ in trades]
    assert len(positions) >= 2 and len({epoch for epoch, _ in positions}) == 1, lines
    # Every trade once, in order, across the reconnection; recovered ones only after it.
    assert all(b[1] == a[1] + 1 for a, b in itertools.pairwise(positions)), positions
    before = [t for t in trades if lines.index(" ".join(t)) < dropped]
    assert all(len(t) == 2 for t in before), lines
    epoch, seq = positions[len(before) - 1] if before else (positions[0][0], positions[0][1] - 1)
    assert re.fullmatch(rf"trades recovered from {epoch}:{seq} on gateway \S+", recovery), lines


@pytest.mark.async_timeout_s(GATEWAY_AND_RUN_WITHIN_S)
async def test_recovery_demo_keeps_its_book_across_the_dropped_connection() -> None:
    lines = await run_example("recovery_demo.py", "--drop-after", "5", lines=16)
    assert lines[0] == "status live: snapshot applied", lines
    dropped = lines.index("dropping the connection")
    (recovery,) = [line for line in lines[dropped:] if "recovered" in line]
    books = [line.split() for line in lines if re.fullmatch(r"\d+:\d+ \w+", line)]
    assert books[0][1] == "snapshot" and all(kind == "delta" for _, kind in books[1:]), lines
    # One stream across the reconnection: the same epoch, every seq one above the last.
    positions = [tuple(map(int, at.split(":"))) for at, _ in books]
    assert len(positions) >= 8 and len({epoch for epoch, _ in positions}) == 1, lines
    assert all(b[1] == a[1] + 1 for a, b in itertools.pairwise(positions)), positions
    # Recovered from the last message before the drop.
    epoch, seq = positions[4]
    assert re.fullmatch(rf"recovered from {epoch}:{seq} on gateway \S+", recovery), lines
