"""The fan-out's security and per-subscriber limits: token, Origin allow-list, paths and
HTTP routes, request rate, the limits taken from a configuration. Each refusal has its
documented status, error code or close code, and leaves the other subscribers alone."""

from __future__ import annotations

import asyncio
import http
import logging
from typing import TYPE_CHECKING

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.io.fanout import Fanout
from gateway.io.health import HttpAnswer
from gateway.wire.config import parse_config
from gateway.wire.protocol import (
    Error,
    ErrorCode,
    Pong,
    Snapshot,
    Status,
    Subscribed,
    decode_server_message,
)

from .fanout_helpers import KEY, KEY2, FakeView, live_fanout

if TYPE_CHECKING:
    from tests.gateway.conftest import Run
    from tests.gateway.io.conftest import Serving

BIDS = [("100.00", "1"), ("99.50", "2")]
ASKS = [("100.50", "1")]
TOKEN = "s3cret-token-0123456789"


async def http_get(
    port: int, target: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, bytes]:
    """``GET target`` over a bare socket: (status, head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


async def refused_status(url: str, **options: object) -> int:
    """The HTTP status a WebSocket handshake to ``url`` is refused with."""
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, **options):  # type: ignore[arg-type]
            pass
    return info.value.response.status_code


async def subscribed(url: str, **options: object) -> bool:
    """Whether a WebSocket client can connect to ``url`` and subscribe."""
    async with connect(url, **options) as ws:  # type: ignore[arg-type]
        await ws.send('{"op":"subscribe","symbols":["binance:BTCUSDT"]}')
        reply = decode_server_message(await ws.recv())
        return isinstance(reply, Subscribed) and reply.symbols == [KEY]


def test_a_token_is_required_by_header_or_query_and_refused_with_401(
    run: Run, serving: Serving, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        _view, fanout = live_fanout(BIDS, ASKS, token=TOKEN)
        async with serving(fanout):
            url = f"ws://127.0.0.1:{fanout.port}/"
            assert await refused_status(url) == 401
            assert await refused_status(f"{url}?token=wrong") == 401
            bearer = {"Authorization": "Bearer wrong"}
            assert await refused_status(url, additional_headers=bearer) == 401
            assert await refused_status(url + "?token=" + TOKEN[:-1]) == 401
            assert await subscribed(f"{url}?token={TOKEN}")
            assert await subscribed(url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
            assert await subscribed(url, additional_headers={"Authorization": f"bearer {TOKEN}"})
            # Two tokens (even one right) are refused: which one is meant is unclear.
            both = {"Authorization": f"Bearer {TOKEN}"}
            assert await refused_status(f"{url}?token=x", additional_headers=both) == 401

            status, head, _ = await http_get(fanout.port, "/healthz")
            assert status == 401 and b'WWW-Authenticate: Bearer realm="mdgateway"' in head
            status, _, body = await http_get(
                fanout.port, "/healthz", {"Authorization": f"Bearer {TOKEN}"}
            )
            assert status == 200 and msgspec.json.decode(body)["status"] == "ok"
            assert fanout.stats.http_refused == {401: 6}

    with caplog.at_level(logging.WARNING, logger="gateway.io.fanout"):
        run(main)
    lines = [r.getMessage() for r in caplog.records if "401" in r.getMessage()]
    assert len(lines) == 5  # rate-limited per cause; the sixth is counted, not written
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


def test_browsers_from_origins_not_listed_are_refused_with_403(run: Run, serving: Serving) -> None:
    async def main() -> None:
        _view, fanout = live_fanout(BIDS, ASKS, allowed_origins=["https://desk.example"])
        async with serving(fanout):
            url = f"ws://127.0.0.1:{fanout.port}/"
            assert await refused_status(url, origin="https://evil.example") == 403
            assert await refused_status(url, origin="https://desk.example:444") == 403
            assert await subscribed(url, origin="https://desk.example")
            assert await subscribed(url)  # no Origin: not a browser
            status, _, _ = await http_get(fanout.port, "/healthz", {"Origin": "null"})
            assert status == 403
            assert fanout.stats.http_refused == {403: 3}

        # By default no browser page may connect at all.
        _view, fanout = live_fanout(BIDS, ASKS)
        async with serving(fanout):
            url = f"ws://127.0.0.1:{fanout.port}/"
            assert await refused_status(url, origin="http://127.0.0.1:3000") == 403
            assert await subscribed(url)

    run(main)


def test_unknown_paths_get_404_and_routes_plug_in(run: Run, serving: Serving) -> None:
    async def main() -> None:
        _view, fanout = live_fanout(BIDS, ASKS)
        fanout.http_routes["/metrics"] = lambda: HttpAnswer(
            http.HTTPStatus.OK, "text/plain; version=0.0.4", b"subscribers 0\n"
        )
        async with serving(fanout):
            url = f"ws://127.0.0.1:{fanout.port}"
            assert await refused_status(f"{url}/stream") == 404
            assert await refused_status(f"{url}/healthz/") == 404
            status, _, _ = await http_get(fanout.port, "/favicon.ico")
            assert status == 404
            status, head, body = await http_get(fanout.port, "/metrics")
            assert status == 200 and body == b"subscribers 0\n"
            assert b"Content-Type: text/plain; version=0.0.4" in head
            assert b"Content-Length: 14" in head
            status, head, body = await http_get(fanout.port, "/healthz?verbose=1")
            assert status == 200 and b"Content-Type: application/json" in head
            assert await subscribed(f"{url}/?anything=1")
            assert fanout.stats.http_refused == {404: 3}

    run(main)


def test_the_request_rate_is_limited_per_connection(run: Run, serving: Serving) -> None:
    async def main() -> None:
        now_s = 50.0
        view, fanout = live_fanout(
            BIDS, ASKS, requests_per_s=2.0, request_burst=2, clock_s=lambda: now_s
        )
        async with (
            serving(fanout),
            connect(f"ws://127.0.0.1:{fanout.port}/") as eager,
            connect(f"ws://127.0.0.1:{fanout.port}/") as calm,
        ):
            await eager.send('{"op":"list"}')
            await eager.recv()
            await eager.send('{"op":"resync","symbol":"binance:BTCUSDT"}')
            err = decode_server_message(await eager.recv())
            assert isinstance(err, Error) and err.code is ErrorCode.NOT_SUBSCRIBED
            await eager.send('{"op":"subscribe","symbols":["binance:BTCUSDT"]}')
            err = decode_server_message(await eager.recv())
            assert isinstance(err, Error) and err.code is ErrorCode.RATE_LIMITED
            assert "retry in 0.500 s" in err.message
            await eager.send('{"op":"ping","id":3}')  # pings are not limited
            assert decode_server_message(await eager.recv()) == Pong(3)
            await eager.send('{"op":"unsubscribe","symbols":["binance:BTCUSDT"]}')
            await eager.recv()  # unsubscribed: not limited either

            # Another connection has its own budget.
            await calm.send('{"op":"subscribe","symbols":["binance:BTCUSDT"]}')
            assert decode_server_message(await calm.recv()) == Subscribed(
                [KEY], ["book"], fanout.instance
            )

            now_s += 0.5  # one token back
            await eager.send('{"op":"subscribe","symbols":["binance:BTCUSDT"]}')
            assert decode_server_message(await eager.recv()) == Subscribed(
                [KEY], ["book"], fanout.instance
            )
            assert isinstance(decode_server_message(await eager.recv()), Status)
            assert isinstance(decode_server_message(await eager.recv()), Snapshot)
            assert fanout.stats.rate_limited == 1
            assert fanout.subscriber_stats()[0].bad_requests == 2
            del view

    run(main)


def test_the_limits_come_from_the_configuration(run: Run, serving: Serving) -> None:
    config = parse_config(
        """
[server]
max_subscribers = 3
max_buffer_bytes = 65536
max_conflations = 2
conflation_window_s = 30
max_behind_s = 1.5
max_request_bytes = 2048
max_subscriptions = 1
requests_per_s = 3
request_burst = 4
token = "abcdefghijklmnop"
allowed_origins = ["https://desk.example"]

[[venues]]
venue = "kraken"
symbols = ["BTC/USD"]
endpoints = ["wss://ws.kraken.com/v2"]
"""
    )
    fanout = Fanout(FakeView(), config.server)
    assert fanout.flow_policy.max_buffer_bytes == 65536
    assert fanout.flow_policy.low_water_bytes == 65536 // 4
    assert fanout.flow_policy.max_conflations == 2
    assert fanout.flow_policy.conflation_window_s == 30.0
    assert fanout.flow_policy.max_behind_s == 1.5
    server = fanout.server
    assert (server.max_subscribers, server.max_request_bytes, server.max_subscriptions) == (
        3,
        2048,
        1,
    )
    assert (server.requests_per_s, server.request_burst) == (3.0, 4)
    assert fanout.allowed_origins == {"https://desk.example"}

    async def main() -> None:
        async with serving(fanout):
            url = f"ws://127.0.0.1:{fanout.port}/"
            assert await refused_status(url) == 401
            async with connect(f"{url}?token=abcdefghijklmnop") as ws:
                await ws.send('{"op":"subscribe","symbols":["binance:BTCUSDT","binance:ETHUSDT"]}')
                err = decode_server_message(await ws.recv())
                assert isinstance(err, Error) and err.code is ErrorCode.TOO_MANY_SUBSCRIPTIONS

    run(main)


def test_loopback_without_a_token_is_served_without_a_warning(
    run: Run, serving: Serving, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with serving(Fanout(FakeView(keys=(KEY, KEY2)))) as fanout:
            assert fanout.port

    with caplog.at_level(logging.WARNING, logger="gateway.io.fanout"):
        run(main)
    assert not caplog.records
