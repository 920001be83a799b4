"""Fixtures for the fan-out and client tests: ``serving(fanout)`` runs a Fanout on an
ephemeral loopback port for the block's duration."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest

from gateway.io.fanout import Fanout

Serving = Callable[[Fanout], AbstractAsyncContextManager[Fanout]]


@contextlib.asynccontextmanager
async def serve_fanout(fanout: Fanout) -> AsyncIterator[Fanout]:
    """Run ``fanout.serve`` on an ephemeral loopback port for the block's duration."""
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(fanout.serve("127.0.0.1", 0, ready))
        await ready.wait()
        try:
            yield fanout
        finally:
            task.cancel()


@pytest.fixture
def serving() -> Serving:
    return serve_fanout
