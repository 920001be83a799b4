"""Closing a websockets server so that no connection it accepted outlives it.

``websockets.asyncio.server.Server.close()`` leaves two kinds of accepted connection open
on asyncio's selector loop (Python 3.11; uvloop makes its transports as it accepts):

- Accepted in the loop turn in which ``close()`` is called, before websockets' closing task
  ran: asyncio makes the connection's transport in a task of its own, which then runs after
  ``asyncio.Server.close()``; making the transport fails (the server is closed), asyncio
  drops the error, and the half-made transport, never closed, holds the socket open until
  the garbage collector finds it (``ResourceWarning: unclosed transport``). The client
  sees no EOF meanwhile.
- In its opening handshake, its request not received yet: websockets waits for the request
  (to answer 503) up to the server's ``open_timeout``, and ``wait_closed()`` with it.

:func:`close_servers` closes both kinds: it stops accepting before the server closes, lets
the accepts already made become connections, and aborts every connection still waiting for
its request. It knows a connection from its accept on when the server was made with
``create_connection=AcceptedConnection``; without it, the handshakes are left to
``open_timeout``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

from websockets.asyncio.server import Server
from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode


@dataclass
class _Accepted:
    """A server's connections from accept to connection loss, and whether it is closing."""

    connections: set[AcceptedConnection] = field(default_factory=set)
    closing: bool = False


_ACCEPTED: weakref.WeakKeyDictionary[Server, _Accepted] = weakref.WeakKeyDictionary()


def _accepted(server: Server) -> _Accepted:
    return _ACCEPTED.setdefault(server, _Accepted())


class AcceptedConnection(ServerConnection):
    """A server connection its server's :func:`close_servers` knows from its accept on (pass
    the class as ``serve(..., create_connection=AcceptedConnection)``). One accepted while
    its server closes is aborted at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        accepted = _accepted(self.server)
        if accepted.closing:
            # Its request would only be refused: the handler sees the connection lost.
            self.transport.abort()
            return
        accepted.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        _accepted(self.server).connections.discard(self)
        super().connection_lost(exc)


async def close_servers(
    servers: Sequence[Server], code: int = CloseCode.GOING_AWAY, reason: str = ""
) -> None:
    """Close every server of ``servers`` and return once every connection they accepted is
    closed and every connection handler returned: each stops accepting, closes its open
    WebSocket connections with ``code`` and ``reason`` (each within its server's
    ``close_timeout``), answers a request already received (a WebSocket one with 503),
    and aborts a connection whose request has not been received. A cancellation while
    they wait leaves them closing. Idempotent: a server closed before is only waited for."""
    closing = [server for server in servers if not _accepted(server).closing]
    for server in closing:
        _accepted(server).closing = True
    loop = asyncio.get_running_loop()
    try:
        if closing and isinstance(loop, asyncio.SelectorEventLoop):
            # Stop accepting while the servers are open: a connection accepted earlier in
            # this loop turn has its transport made in a task that runs before this one
            # resumes, while its server can still take it.
            for server in closing:
                for sock in server.sockets:
                    loop.remove_reader(sock.fileno())
            await asyncio.sleep(0)
    finally:
        for server in closing:
            for connection in list(_accepted(server).connections):
                if connection.request is None:
                    connection.transport.abort()
            server.close(close_connections=True, code=code, reason=reason)
    for server in servers:
        await server.wait_closed()
