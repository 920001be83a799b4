"""The fan-out's security and per-subscriber limits: Host and Origin allow-lists, token,
paths and HTTP routes, request rate, the limits taken from a configuration. Each refusal has its
documented status, error code or close code, and leaves the other subscribers alone."""

from __future__ import annotations

import asyncio
import http
import logging

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from gateway.io.fanout import Fanout
from gateway.io.health import HttpAnswer
from gateway.wire.config import ServerConfig
from gateway.wire.config import parse_config
from gateway.wire.protocol import Error
from gateway.wire.protocol import ErrorCode
from gateway.wire.protocol import Pong
from gateway.wire.protocol import Snapshot
from gateway.wire.protocol import Status
from gateway.wire.protocol import Subscribed
from gateway.wire.protocol import decode_server_message

from .fanout_helpers import KEY
from .fanout_helpers import KEY2
from .fanout_helpers import FakeView
from .fanout_helpers import live_fanout
from .fanout_helpers import serving

BIDS = [("100.00", "1"), ("99.50", "2")]
ASKS = [("100.50", "1")]
TOKEN = "s3cret-token-0123456789"


async def http_get(
    port: int,
    target: str,
    headers: dict[str, str] | None = None,
    hosts: tuple[str, ...] = ("127.0.0.1",),
) -> tuple[int, bytes, bytes]:
    """``GET target`` over a bare socket with a ``Host`` header per ``hosts``:
    (status, head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {target} HTTP/1.1", *(f"Host: {host}" for host in hosts)]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


async def refused_status(
    url: str, origin: Origin | None = None, additional_headers: dict[str, str] | None = None
) -> int:
    """The HTTP status a WebSocket handshake to ``url`` (with an Origin header, other
    headers) is refused with."""
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, origin=origin, additional_headers=additional_headers):
            pass
    return info.value.response.status_code


async def subscribed(
    url: str, origin: Origin | None = None, additional_headers: dict[str, str] | None = None
) -> bool:
    """Whether a WebSocket client can connect to ``url`` (with an Origin header, other
    headers) and subscribe."""
    async with connect(url, origin=origin, additional_headers=additional_headers) as ws:
        await ws.send('{"op":"subscribe","symbols":["binance:BTCUSDT"]}')
        reply = decode_server_message(await ws.recv())
        return isinstance(reply, Subscribed) and reply.symbols == [KEY]


async def test_a_token_is_required_by_header_or_query_and_refused_with_401(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.io.fanout")
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
    lines = [r.getMessage() for r in caplog.records if "401" in r.getMessage()]
    assert len(lines) == 5  # rate-limited per cause; the sixth is counted, not written
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


async def test_no_log_line_of_the_server_holds_a_token(caplog: pytest.LogCaptureFixture) -> None:
    # websockets writes request lines and headers at DEBUG: the most the server can log.
    caplog.set_level(logging.DEBUG, logger="websockets.server")
    caplog.set_level(logging.DEBUG, logger="gateway.io.fanout")
    _view, fanout = live_fanout(BIDS, ASKS, token=TOKEN)
    async with serving(fanout):
        url = f"ws://127.0.0.1:{fanout.port}/"
        assert await subscribed(f"{url}?token={TOKEN}")
        assert await subscribed(url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
        assert await refused_status(f"{url}?a=1&token={TOKEN}x") == 401
        # A path holding one (a client that put it there): 404, logged redacted.
        headers = {"Authorization": f"Bearer {TOKEN}"}
        status, _, _ = await http_get(fanout.port, f"/stream/token={TOKEN}", headers)
        assert status == 404
    text = caplog.text
    assert TOKEN not in text
    assert "GET /?token=*** HTTP/1.1" in text and "GET /?a=1&token=*** HTTP/1.1" in text
    assert "Authorization: Bearer ***" in text
    assert "404 no such path ('/stream/token=***')" in text


def test_a_fanout_refuses_a_server_whose_token_was_not_read() -> None:
    # Serving without the token the configuration names would let anyone in.
    for unread in (ServerConfig(token_file="token"), ServerConfig(token_env="GW_TOKEN")):
        with pytest.raises(ValueError, match="not read"):
            Fanout(FakeView(), unread)


async def test_browsers_from_origins_not_listed_are_refused_with_403() -> None:
    _view, fanout = live_fanout(BIDS, ASKS, allowed_origins=["https://desk.example"])
    async with serving(fanout):
        url = f"ws://127.0.0.1:{fanout.port}/"
        assert await refused_status(url, origin=Origin("https://evil.example")) == 403
        assert await refused_status(url, origin=Origin("https://desk.example:444")) == 403
        assert await subscribed(url, origin=Origin("https://desk.example"))
        assert await subscribed(url)  # no Origin: not a browser
        status, _, _ = await http_get(fanout.port, "/healthz", {"Origin": "null"})
        assert status == 403
        assert fanout.stats.http_refused == {403: 3}

    # By default no browser page may connect at all.
    _view, fanout = live_fanout(BIDS, ASKS)
    async with serving(fanout):
        url = f"ws://127.0.0.1:{fanout.port}/"
        assert await refused_status(url, origin=Origin("http://127.0.0.1:3000")) == 403
        assert await subscribed(url)


#: The headers of a WebSocket upgrade request (RFC 6455 section 4.1).
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


async def test_hosts_not_allowed_get_421_on_every_route_and_the_upgrade(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.io.fanout")
    _view, fanout = live_fanout(BIDS, ASKS)
    fanout.http_routes["/metrics"] = lambda: HttpAnswer(http.HTTPStatus.OK, "text/plain", b"")
    async with serving(fanout):
        port = fanout.port
        rebound = (f"evil.example:{port}",)
        for target in ("/healthz", "/metrics", "/subscribers", "/nowhere"):
            status, _, body = await http_get(port, target, hosts=rebound)
            assert (status, body) == (421, b"host not allowed\n")
        status, _, _ = await http_get(port, "/", UPGRADE, hosts=rebound)
        assert status == 421
        # None, two (even both allowed), and malformed are refused too.
        for hosts in ((), ("127.0.0.1", "localhost"), ("::1",), (f"127.0.0.1:{port}x",)):
            status, _, _ = await http_get(port, "/healthz", hosts=hosts)
            assert status == 421, hosts
        # The Host is checked before the Origin: a rebound page is told 421, not 403.
        status, _, _ = await http_get(port, "/healthz", {"Origin": "http://evil.example"}, rebound)
        assert status == 421
        assert fanout.stats.http_refused == {421: 10}

        # The loopback names, with or without a port, in any case.
        for host in ("127.0.0.1", f"127.0.0.1:{port}", "localhost", f"LocalHost:{port}", "[::1]"):
            status, _, _ = await http_get(port, "/healthz", hosts=(host,))
            assert status == 200, host
        assert await subscribed(f"ws://localhost:{port}/")
        assert fanout.stats.http_refused == {421: 10}
    lines = [r.getMessage() for r in caplog.records if "421" in r.getMessage()]
    assert len(lines) == 5  # rate-limited per cause; the rest counted, not written
    assert "host not allowed ('evil.example:" in lines[0]


async def test_allowed_hosts_configured_are_the_only_ones() -> None:
    _view, fanout = live_fanout(BIDS, ASKS, allowed_hosts=["gw-1.desk.internal"])
    async with serving(fanout):
        port = fanout.port
        assert fanout.allowed_hosts == frozenset({"gw-1.desk.internal"})
        status, _, _ = await http_get(port, "/healthz", hosts=(f"GW-1.desk.internal:{port}",))
        assert status == 200
        status, _, _ = await http_get(port, "/healthz", hosts=("localhost",))
        assert status == 421
        assert await refused_status(f"ws://127.0.0.1:{port}/") == 421
        assert fanout.stats.http_refused == {421: 2}


async def test_unknown_paths_get_404_and_routes_plug_in() -> None:
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


async def test_the_request_rate_is_limited_per_connection() -> None:
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
        assert isinstance(err, Error) and err.typed_code is ErrorCode.NOT_SUBSCRIBED
        await eager.send('{"op":"subscribe","symbols":["binance:BTCUSDT"]}')
        err = decode_server_message(await eager.recv())
        assert isinstance(err, Error) and err.typed_code is ErrorCode.RATE_LIMITED
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


async def test_the_limits_come_from_the_configuration() -> None:
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

    async with serving(fanout):
        url = f"ws://127.0.0.1:{fanout.port}/"
        assert await refused_status(url) == 401
        async with connect(f"{url}?token=abcdefghijklmnop") as ws:
            await ws.send('{"op":"subscribe","symbols":["binance:BTCUSDT","binance:ETHUSDT"]}')
            err = decode_server_message(await ws.recv())
            assert isinstance(err, Error) and err.typed_code is ErrorCode.TOO_MANY_SUBSCRIPTIONS


async def test_loopback_without_a_token_is_served_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.io.fanout")
    async with serving(Fanout(FakeView(keys=(KEY, KEY2)))) as fanout:
        assert fanout.port
    assert not caplog.records
