"""Shared fixtures, and the runner of ``async def`` tests.

An ``async def`` test runs on a fresh event loop, bounded in time: 20 s, or the seconds of
its ``@pytest.mark.async_timeout_s(seconds)`` (a TimeoutError past them); the helpers such
tests wait with are in ``harness.py``.

``real_data(relpath)`` resolves recorded exchange data under ``../shared/data/real`` (beside
the repository root, the directory holding pyproject.toml). A missing file skips the test
with the path in the reason, except under CI (``CI`` set and not false), where it fails:
real-data tests are never skipped silently in CI.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import ASYNC_TIMEOUT_S
from tests.harness import run_bounded


def _repo_root() -> Path:
    for directory in Path(__file__).resolve().parents:
        if (directory / "pyproject.toml").is_file():
            return directory
    raise RuntimeError(f"no pyproject.toml above {__file__}")


REPO_ROOT = _repo_root()
REAL_DATA_ROOT = REPO_ROOT.parent / "shared" / "data" / "real"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def resolve_real_data(relpath: str) -> Path:
    """``../shared/data/real/<relpath>``; skips (or fails under CI) when it is missing."""
    path = (REAL_DATA_ROOT / relpath).resolve()
    if path.exists():
        return path
    reason = (
        f"real data not found at {path}: the recorded exchange data is expected in "
        f"{REAL_DATA_ROOT} (see its SOURCES.md)"
    )
    if _in_ci():
        pytest.fail(f"{reason}; CI is set, so real-data tests must not be skipped", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def real_data() -> Callable[[str], Path]:
    """A function ``real_data(relpath) -> Path``: see :func:`resolve_real_data`."""
    return resolve_real_data


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the directory holding pyproject.toml)."""
    return REPO_ROOT


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
