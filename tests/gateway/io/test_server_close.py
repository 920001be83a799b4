"""close_servers: no connection a websockets server accepted outlives its close, on loopback.

A client that connects just before the close and one that never sends its request are
the cases websockets' own ``close()`` leaves open (see gateway/io/server_close.py).
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.asyncio.server import Server
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from gateway.io.server_close import AcceptedConnection
from gateway.io.server_close import close_servers
from tests.harness import tcp_connect
from tests.harness import wait_peer_closed

#: Longer than any test's bound: a close that waits for a handshake to time out fails.
OPEN_TIMEOUT_S = 600.0


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def _server() -> Server:
    return await serve(
        _echo,
        "127.0.0.1",
        0,
        open_timeout=OPEN_TIMEOUT_S,
        create_connection=AcceptedConnection,
    )


def _port(server: Server) -> int:
    port: int = next(iter(server.sockets)).getsockname()[1]
    return port


async def test_a_connection_made_in_the_closing_loop_turn_is_closed() -> None:
    server = await _server()
    client = tcp_connect(_port(server))
    # The loop sees the connection at its next turn, after this task resumes and closes:
    # websockets' close() alone leaves it half accepted, open until garbage collection.
    await asyncio.sleep(0)
    await close_servers([server])
    await wait_peer_closed(client)


async def test_a_connection_accepted_as_the_close_begins_is_aborted() -> None:
    server = await _server()
    client = tcp_connect(_port(server))
    # Resumes in the loop turn that accepts the connection, before the accept; the close
    # begins after it, and the connection is made while the server closes.
    await asyncio.sleep(0)
    close = asyncio.ensure_future(close_servers([server]))
    async with asyncio.timeout(5.0):  # well before OPEN_TIMEOUT_S
        await close
    await wait_peer_closed(client)


async def test_a_connection_waiting_for_its_request_is_aborted_at_once() -> None:
    server = await _server()
    silent = tcp_connect(_port(server))
    # Accepted in order: once this handshake is done, the silent connection is accepted.
    async with connect(f"ws://127.0.0.1:{_port(server)}") as ws:
        await ws.send("ping")
        assert await ws.recv() == "ping"
        async with asyncio.timeout(5.0):  # well before OPEN_TIMEOUT_S
            await close_servers([server], 1012, "restarting")
        try:
            await ws.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            assert (closed.rcvd.code, closed.rcvd.reason) == (1012, "restarting")
        else:
            raise AssertionError("the open connection was not closed")
    await wait_peer_closed(silent)


async def test_closing_again_waits_for_the_first_close() -> None:
    server = await _server()
    async with asyncio.timeout(5.0):
        await asyncio.gather(close_servers([server]), close_servers([server]))
    assert not server.is_serving()
