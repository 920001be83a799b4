"""How the simulated venues write numbers and times: BookProcess's 8-decimal strings cut to
a venue's decimals or trimmed, a tick's decimals, ISO 8601 times. Pure, shared by the venue
renderers."""

from __future__ import annotations

import time


def fixed(text: str, decimals: int) -> str:
    """A decimal string (BookProcess's 8 decimals) with exactly ``decimals`` decimals.

    Only zeros may be cut: a value with more significant decimals raises ValueError."""
    head, _, frac = text.partition(".")
    frac = frac.ljust(decimals, "0")
    if frac[decimals:].strip("0"):
        raise ValueError(f"{text!r} has more than {decimals} significant decimals")
    return f"{head}.{frac[:decimals]}" if decimals else head


def trim(text: str) -> str:
    """A decimal string without trailing zeros (``"2.50000000"`` -> ``"2.5"``, zero -> ``"0"``)."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def decimals(step: str) -> int:
    """Decimals of a tick such as ``"0.01"`` (2) or ``"1"`` (0)."""
    frac = step.partition(".")[2].rstrip("0")
    return len(frac)


def iso_time(ns: int) -> str:
    """``2023-02-09T20:32:50.714964Z`` of a time in ns since the epoch (microseconds)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"
