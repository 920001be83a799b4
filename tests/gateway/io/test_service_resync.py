"""Snapshots per symbol against the simulated Binance venue on loopback: one symbol's REST
answers fail until the test ends their outage, while the others sync and stay live."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest
from websockets.frames import CloseCode

from feeds.sim.connection import RestAnswer
from feeds.sim.simulators import SimBinanceSpot
from gateway.core.model import SymbolState
from gateway.io.client import ClientState
from gateway.io.client import Event
from gateway.io.client import StatusEvent
from gateway.wire.config import Config
from tests.subscriber import loopback_config
from tests.subscriber import serving

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
KEYS = [f"binance:{s}" for s in SYMBOLS]
FAILING, OTHERS = KEYS[0], KEYS[1:]
N_ENDPOINTS = 2
#: The bound of every wait for the gateway: generous, a loaded machine must not reach it.
WAIT_S = 15.0


class SnapshotOutage(SimBinanceSpot):
    """The simulated venue answering ``failing``'s REST books with 503 until :meth:`end`
    (the fault ``rest[SYMBOL]:5xx``, ended by the test instead of the venue's clock)."""

    def __init__(self, failing: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failing = failing
        self.ended = False

    def end(self) -> None:
        self.ended = True

    async def _rest_answer(self, target: str) -> RestAnswer | None:
        if not self.ended and parse_qs(urlsplit(target).query).get("symbol") == [self.failing]:
            return RestAnswer(HTTPStatus.SERVICE_UNAVAILABLE, b'{"code":503,"msg":"outage"}')
        return await super()._rest_answer(target)


def _config(sim: SimBinanceSpot) -> Config:
    return loopback_config(
        "binance",
        SYMBOLS,
        sim.endpoint_urls,
        [sim.rest_url],
        max_concurrent_snapshots=2,
        snapshot_backoff_max_s=0.2,
    )


async def _missed_updates(sim: SimBinanceSpot, symbols: list[str]) -> None:
    """Return once the venue published an update of every one of ``symbols`` (a caller
    that is not connected misses them)."""
    seen = {symbol: sim.last_id(symbol) for symbol in symbols}
    async with asyncio.timeout(WAIT_S):
        while any(sim.last_id(symbol) == seen[symbol] for symbol in symbols):
            await sim.wait_steps()


async def _one_symbols_outage(refuse: bool) -> dict[str, list[ClientState]]:
    """Runs until B and C are live (and, with ``refuse``, live again after both endpoints
    refused them), all while A's snapshots fail; then ends A's outage and runs until A is
    live. Returns every symbol's states in order."""
    sim = SnapshotOutage(SYMBOLS[0], SYMBOLS, n_endpoints=N_ENDPOINTS, seed=3, interval_s=0.02)
    async with sim:
        states: dict[str, list[ClientState]] = {key: [] for key in KEYS}

        def on_update(event: Event) -> None:
            if isinstance(event, StatusEvent):
                states[event.symbol].append(event.state)

        def last(key: str) -> ClientState | None:
            return states[key][-1] if states[key] else None

        async with serving(_config(sim), KEYS, on_update=on_update) as (service, subscriber):
            fetcher = service.venues[0].fetcher
            assert fetcher is not None
            await subscriber.until(
                lambda: (
                    fetcher.stats.failures >= 1 and all(last(k) == SymbolState.LIVE for k in OTHERS)
                ),
                WAIT_S,
            )
            if refuse:
                # Both endpoints refuse until every book missed updates: each resyncs.
                for index in range(N_ENDPOINTS):
                    await sim.close_endpoint(index, CloseCode.GOING_AWAY, "refused")
                await subscriber.until(
                    lambda: all(last(k) == SymbolState.STALE for k in OTHERS), WAIT_S
                )
                await _missed_updates(sim, SYMBOLS[1:])
                for index in range(N_ENDPOINTS):
                    await sim.open_endpoint(index)
                await subscriber.until(
                    lambda: all(last(k) == SymbolState.LIVE for k in OTHERS), WAIT_S
                )
            assert SymbolState.LIVE not in states[FAILING]
            sim.end()
            await subscriber.until(lambda: last(FAILING) == SymbolState.LIVE, WAIT_S)
            assert fetcher.stats.max_in_flight <= 2
            assert service.venues[0].stats.snapshots_superseded == 0
            return states


@pytest.mark.async_timeout_s(50)
async def test_one_symbols_failing_snapshots_never_hold_back_the_others() -> None:
    states = await _one_symbols_outage(refuse=False)
    for key in OTHERS:
        # Live once, and never anything else since: A's retries touched nothing.
        assert states[key][states[key].index(SymbolState.LIVE) :] == [SymbolState.LIVE]


@pytest.mark.async_timeout_s(50)
async def test_the_others_resync_and_go_live_while_one_symbols_snapshots_fail() -> None:
    states = await _one_symbols_outage(refuse=True)
    for key in OTHERS:
        after_outage = states[key][states[key].index(SymbolState.STALE) :]
        # Resynced from a snapshot, live again while A's snapshots fail.
        assert after_outage == [SymbolState.STALE, SymbolState.RESYNCING, SymbolState.LIVE]
