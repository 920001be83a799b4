"""Shared fixtures.

``real_data(relpath)`` resolves recorded exchange data under ``../shared/data/real`` (beside
the repository root, the directory holding pyproject.toml). A missing file skips the test
with the path in the reason, except under CI (``CI`` set and not false), where it fails:
real-data tests are never skipped silently in CI.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


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
