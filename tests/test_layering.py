"""The pure cores import no asyncio, websockets or socket, not even indirectly.

Each module is imported in a fresh interpreter and the forbidden modules are looked for in
``sys.modules`` afterwards, so an import through any chain of other modules is caught.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PURE_MODULES = [
    "gateway.model",
    "gateway.book",
    "gateway.arbiter",
    "gateway.backoff",
    "gateway.config",
    "gateway.protocol",
    "gateway.capture_formats",
    "gateway.capture",
    "feeds.binance",
    "feeds.okx",
    "feeds.kraken",
    "feeds.coinbase",
    "feeds.bybit",
    "feeds.sim.faults",
    "feeds.sim.replay_plan",
    "feeds.binance_usdm",
    "gateway.venues",
    "feeds.sim.book_process",
    "feeds.sim.binance_spot",
]
FORBIDDEN = ["asyncio", "websockets", "socket", "uvloop", "httpx"]

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))
"""


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module, json.dumps(FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [], f"{module} pulls in I/O modules"


def test_the_probe_detects_an_io_import() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "gateway.upstream", json.dumps(FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "asyncio" in json.loads(result.stdout)
