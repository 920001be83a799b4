"""The asyncio test harness of ``conftest.py``: an ``async def`` test runs on its own loop,
bounded by its ``async_timeout_s`` marker."""

from __future__ import annotations

import asyncio

import pytest


async def test_an_async_test_runs_on_a_running_loop() -> None:
    assert asyncio.get_running_loop().is_running()


@pytest.mark.xfail(raises=TimeoutError, strict=True, reason="the bound must end the run")
@pytest.mark.async_timeout_s(0.01)
async def test_an_async_test_past_its_bound_fails_with_timeout_error() -> None:
    await asyncio.Event().wait()
