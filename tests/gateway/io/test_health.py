"""The /healthz rule: 503 when at least the configured share of symbols is not live."""

from __future__ import annotations

import http

import msgspec
import pytest

from gateway.core.model import STARTING_REASON
from gateway.core.model import SymbolState
from gateway.io.health import health_document

LIVE, STALE, SYNCING = SymbolState.LIVE, SymbolState.STALE, SymbolState.SYNCING


def states(*codes: SymbolState) -> list[tuple[str, SymbolState]]:
    return [(f"binance:S{i}", state) for i, state in enumerate(codes)]


@pytest.mark.parametrize(
    ("symbols", "share", "healthy"),
    [
        # default 1.0: unhealthy only when no symbol is live
        (states(LIVE, LIVE), 1.0, True),
        (states(LIVE, STALE, STALE), 1.0, True),
        (states(STALE, SYNCING), 1.0, False),
        # 0.5: half or more not live
        (states(LIVE, LIVE, STALE), 0.5, True),
        (states(LIVE, STALE), 0.5, False),
        # 0.3 of 10 symbols: exactly 3 not live is enough (no float rounding on the edge)
        (states(*[STALE] * 3, *[LIVE] * 7), 0.3, False),
        (states(*[STALE] * 2, *[LIVE] * 8), 0.3, True),
        # at or below 1/N: any symbol not live
        (states(LIVE, LIVE, LIVE, SYNCING), 0.25, False),
        (states(LIVE, LIVE, LIVE, LIVE), 0.01, True),
        # no symbols: nothing is missing
        ([], 1.0, True),
    ],
)
def test_the_share_of_symbols_not_live_decides(
    symbols: list[tuple[str, SymbolState]], share: float, healthy: bool
) -> None:
    assert health_document(symbols, {}, 0, share)[0] is healthy


def test_the_answer_names_every_symbol_not_live_with_its_state_and_reason() -> None:
    symbols = states(LIVE, STALE, SYNCING)
    reasons = {"binance:S1": "every upstream connection down", "binance:S0": "snapshot applied"}
    answer = health_document(symbols, reasons, 3, 0.5).answer()
    assert answer.status is http.HTTPStatus.SERVICE_UNAVAILABLE
    assert answer.content_type == "application/json"
    doc = msgspec.json.decode(answer.body)
    assert doc["status"] == "unavailable" and doc["subscribers"] == 3
    assert (doc["live"], doc["total"], doc["not_live_share_limit"]) == (1, 3, 0.5)
    assert doc["not_live"] == [
        {"symbol": "binance:S1", "state": "stale", "reason": "every upstream connection down"},
        {"symbol": "binance:S2", "state": "syncing", "reason": STARTING_REASON},
    ]
    assert [s["state"] for s in doc["symbols"]] == ["live", "stale", "syncing"]
    ok = health_document(symbols, reasons, 3, 1.0).answer()
    assert ok.status is http.HTTPStatus.OK and msgspec.json.decode(ok.body)["status"] == "ok"
