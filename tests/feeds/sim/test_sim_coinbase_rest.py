"""The simulated Coinbase venue's public REST product book, fetched with httpx on
loopback: the true book's top N in the Advanced Trade shape, and its errors."""

from __future__ import annotations

import json
import time
from decimal import Decimal

from feeds import coinbase
from feeds.sim.coinbase import product_book_body
from feeds.sim.limits import SimLimits
from feeds.sim.numbers import trim
from feeds.sim.simulators import SimCoinbase
from gateway.core.model import Level

from .conftest import get
from .conftest import rest_base

SYMBOLS = ["BTC-USD", "ETH-USD"]


def book_url(base: str, product: str, limit: int | None = None) -> str:
    url = f"{base}{coinbase.PRODUCT_BOOK_PATH}?product_id={product}"
    return url if limit is None else f"{url}&limit={limit}"


def _levels(side: list[dict[str, str]]) -> list[Level]:
    assert all(list(level) == ["price", "size"] for level in side)
    return [(level["price"], level["size"]) for level in side]


def _trimmed(levels: list[Level]) -> list[Level]:
    return [(trim(p), trim(q)) for p, q in levels]


def test_product_book_body_mid_and_spread() -> None:
    body = json.loads(
        product_book_body(
            "BTC-USD",
            [("68923.66", "0.17189468"), ("68923", "0.05795895")],
            [("68923.67", "0.16987193")],
            "2026-04-07T00:28:59.662782Z",
        )
    )
    # Exact, to 12 decimals; a recorded response with the same best levels says
    # 0.001450880372 (Coinbase's own rounding differs in the 10th significant digit).
    assert body.pop("spread_bps") == "0.001450880478"
    assert body == {
        "pricebook": {
            "product_id": "BTC-USD",
            "bids": [
                {"price": "68923.66", "size": "0.17189468"},
                {"price": "68923", "size": "0.05795895"},
            ],
            "asks": [{"price": "68923.67", "size": "0.16987193"}],
            "time": "2026-04-07T00:28:59.662782Z",
        },
        # The values of a recorded response with the same best levels.
        "last": "68923.665",
        "mid_market": "68923.665",
        "spread_absolute": "0.01",
    }


async def test_product_book_is_the_true_top_n() -> None:
    # More requests than Coinbase's 10 per second, which are not the subject here.
    unlimited = SimLimits()
    async with SimCoinbase(SYMBOLS, 1, interval_s=0.01, rest=True, limits=unlimited) as sim:
        base = rest_base(sim)
        assert base.startswith("http://127.0.0.1:") and not base.endswith(":0")
        first = sim.true_book("BTC-USD").normalized()
        await sim.wait_steps(5)
        assert sim.true_book("BTC-USD").normalized() != first
        sim.pause()
        for product in SYMBOLS:
            truth = sim.true_book(product)
            for limit in (1, 10, 250, 1000, None, 0):
                before_ns = time.time_ns()
                response = await get(book_url(base, product, limit))
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("application/json")
                body = json.loads(response.content)
                assert list(body) == [
                    "pricebook",
                    "last",
                    "mid_market",
                    "spread_bps",
                    "spread_absolute",
                ]
                book = body["pricebook"]
                assert list(book) == ["product_id", "bids", "asks", "time"]
                assert book["product_id"] == product
                depth = limit or None
                assert _levels(book["bids"]) == _trimmed(truth.bids(depth))
                assert _levels(book["asks"]) == _trimmed(truth.asks(depth))
                # Same values as the WebSocket's strings.
                for (p, q), (tp, tq) in zip(_levels(book["bids"]), truth.bids(depth), strict=True):
                    assert (Decimal(p), Decimal(q)) == (Decimal(tp), Decimal(tq))
                stamp = book["time"]
                assert stamp.endswith("Z") and len(stamp) == len("2026-04-07T00:28:59.662782Z")
                assert stamp[:10] == time.strftime("%Y-%m-%d", time.gmtime(before_ns // 10**9))
                best_bid = Decimal(truth.bids(1)[0][0])
                best_ask = Decimal(truth.asks(1)[0][0])
                assert Decimal(body["mid_market"]) == (best_bid + best_ask) / 2
                assert body["last"] == body["mid_market"]
                assert Decimal(body["spread_absolute"]) == best_ask - best_bid
        assert sim.rest_requests == 12


async def test_product_book_errors_and_other_paths() -> None:
    async with SimCoinbase(["BTC-USD"], n_endpoints=1, interval_s=0.05, rest=True) as sim:
        base = rest_base(sim)
        for product in ("DOGE-USD", "BTC/USD", "btc-usd"):
            response = await get(book_url(base, product, 5))
            assert response.status_code == 404
            body = json.loads(response.content)
            assert body["error"] == "NOT_FOUND"
            assert product in body["message"] and body["error_details"] == body["message"]
        for query in ("limit=5", "product_id=", "product_id=BTC-USD&limit=-1"):
            response = await get(f"{base}{coinbase.PRODUCT_BOOK_PATH}?{query}")
            assert response.status_code == 400, query
            assert json.loads(response.content)["error"] == "INVALID_ARGUMENT"
        for limit in ("x", "1.5", "9" * 50):
            response = await get(
                f"{base}{coinbase.PRODUCT_BOOK_PATH}?product_id=BTC-USD&limit={limit}"
            )
            assert response.status_code == 400
        for path in ("/api/v3/brokerage/product_book", "/", "/products/BTC-USD/book"):
            response = await get(f"{base}{path}?product_id=BTC-USD")
            assert response.status_code == 404
