"""The asyncio test harness of ``conftest.py``: an ``async def`` test runs on its own loop,
bounded by its ``async_timeout_s`` marker."""

from __future__ import annotations

import asyncio

import pytest

pytest_plugins = ["pytester"]

#: A test module run by an inner pytest with the suite's conftest: one test past its bound.
_PAST_ITS_BOUND = """
import asyncio

import pytest


@pytest.mark.async_timeout_s(0.01)
async def test_waits_forever() -> None:
    await asyncio.Event().wait()
"""


async def test_an_async_test_runs_on_a_running_loop() -> None:
    assert asyncio.get_running_loop().is_running()


def test_an_async_test_past_its_bound_fails_with_timeout_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest("from tests.conftest import pytest_configure, pytest_pyfunc_call\n")
    pytester.makepyfile(test_past_its_bound=_PAST_ITS_BOUND)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*TimeoutError*"])
