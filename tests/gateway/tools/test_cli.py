"""The ``mdgateway`` entry points: ``--version`` and ``python -m gateway``."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

from gateway.tools.cli import build_parser


def test_version_names_the_installed_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"mdgateway {version('mdgateway')}"


def test_python_dash_m_gateway_runs_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"mdgateway {version('mdgateway')}"


def test_a_missing_command_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "COMMAND" in result.stderr
