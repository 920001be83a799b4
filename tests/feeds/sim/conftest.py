"""What the simulator tests share.

- A test written as ``async def`` runs in an event loop of its own, bounded in time (see
  ``tests/conftest.py``). Tests wait on events and conditions, never on time: that bound is
  their only one.
- Rendering without a server: the frames a protocol publishes for each book step.
- Helpers on loopback: the REST base and a GET, reading a stream up to an update id, and
  reading frames up to a barrier (the reply to a request: a connection's frames are queued
  in order, so every frame queued before the request arrives before its reply).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence

import httpx
from websockets.asyncio.client import ClientConnection

from feeds.sim.book_process import Batch
from feeds.sim.book_process import BookProcess
from feeds.sim.connection import ConnState
from feeds.sim.connection import Publication
from feeds.sim.simulators import SimVenue
from feeds.sim.venue import VenueProtocol
from gateway.core.model import DepthDiff
from gateway.core.model import Trade
from gateway.core.model import VenueEvent

#: A venue parser: ``parse(frame, recv_ns, conn_id)``.
Parse = Callable[[bytes, int, int], Sequence[VenueEvent]]


def rest_base(sim: SimVenue) -> str:
    """The REST base URL of a venue that serves REST."""
    url = sim.rest_url
    assert url is not None
    return url


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5.0) as client:
        return await client.get(url)


async def frames_until(
    ws: ClientConnection, is_barrier: Callable[[bytes], bool], count: int = 1
) -> AsyncIterator[bytes]:
    """Every frame received before the ``count``-th barrier frame (which is not yielded)."""
    seen = 0
    while True:
        raw = await ws.recv(decode=False)
        if is_barrier(raw):
            seen += 1
            if seen == count:
                return
            continue
        yield raw


async def read_diffs(
    ws: ClientConnection, parse: Parse, last_id: int
) -> tuple[list[DepthDiff], list[Trade]]:
    """Diffs and trades received until the diff that ends at ``last_id`` (-1: the first)."""
    diffs: list[DepthDiff] = []
    trades: list[Trade] = []
    while not diffs or diffs[-1].last_id < last_id:
        for event in parse(await ws.recv(decode=False), 0, 0):
            if isinstance(event, DepthDiff):
                diffs.append(event)
            elif isinstance(event, Trade):
                trades.append(event)
    assert last_id < 0 or diffs[-1].last_id == last_id
    return diffs, trades


def rendered_steps(
    protocol: VenueProtocol, proc: BookProcess, state: ConnState, steps: int
) -> Iterator[tuple[Batch, list[tuple[Publication, bytes]]]]:
    """Each of ``steps`` steps of ``proc`` that changed the book, with what ``protocol``
    publishes for it and the frame of each publication on ``state``'s connection (which
    must get them all)."""
    for _ in range(steps):
        batch = proc.step()
        if batch is None:
            continue
        frames: list[tuple[Publication, bytes]] = []
        for pub in protocol.on_batch(proc.symbol, batch, time.time_ns()):
            frame = protocol.frame_for(state, pub)
            assert frame is not None
            frames.append((pub, frame))
        yield batch, frames
