"""Fixtures for the fan-out and client tests: ``serving(fanout)`` runs a Fanout on an
ephemeral loopback port for the block's duration; ``start_serving(tasks, fanout, port)``
starts one in a TaskGroup and returns its task once it listens (for tests that stop and
restart the server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import pytest

from gateway.io.fanout import Fanout

Serving = Callable[[Fanout], AbstractAsyncContextManager[Fanout]]
StartServing = Callable[[asyncio.TaskGroup, Fanout, int], Awaitable["asyncio.Task[None]"]]


async def start_fanout(
    tasks: asyncio.TaskGroup, fanout: Fanout, port: int = 0
) -> asyncio.Task[None]:
    """Start ``fanout.serve`` on loopback ``port`` (0: any) in ``tasks``; returns its task
    once it listens."""
    ready = asyncio.Event()
    task = tasks.create_task(fanout.serve("127.0.0.1", port, ready))
    await ready.wait()
    return task


@contextlib.asynccontextmanager
async def serve_fanout(fanout: Fanout) -> AsyncIterator[Fanout]:
    """Run ``fanout.serve`` on an ephemeral loopback port for the block's duration."""
    async with asyncio.TaskGroup() as tasks:
        task = await start_fanout(tasks, fanout)
        try:
            yield fanout
        finally:
            task.cancel()


@pytest.fixture
def serving() -> Serving:
    return serve_fanout


@pytest.fixture
def start_serving() -> StartServing:
    return start_fanout
