"""Runs every ``async def`` test of the gateway's shells and tools on a fresh event loop,
bounded in time: 20 s, or the seconds of its ``@pytest.mark.async_timeout_s(seconds)`` (a
TimeoutError past them). The helpers such tests wait with are in ``harness.py``."""

from __future__ import annotations

import inspect

import pytest

from tests.gateway.harness import ASYNC_TIMEOUT_S, run_bounded


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"async_timeout_s(seconds): the bound of an async test's run ({ASYNC_TIMEOUT_S} s without)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Runs an ``async def`` test with :func:`run_bounded`; other tests are left to pytest."""
    test = pyfuncitem.obj
    if not inspect.iscoroutinefunction(test):
        return None
    marker = pyfuncitem.get_closest_marker("async_timeout_s")
    timeout_s = ASYNC_TIMEOUT_S if marker is None else float(marker.args[0])
    arguments = {name: pyfuncitem.funcargs[name] for name in inspect.signature(test).parameters}
    run_bounded(lambda: test(**arguments), timeout_s)
    return True
