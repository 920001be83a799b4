"""Benchmarks of mdgateway: ``python -m bench`` (or ``make bench``) runs them and prints tables.

Each benchmark is a module of this package with a ``TITLE`` and ``run(quick: bool) ->
list[dict[str, object]]``; the rows are what gets printed (``bench/README.md`` explains every
figure). Speed and memory targets live here, never as timing assertions in unit tests;
``tests/bench`` only checks that every benchmark runs and yields sane numbers.
"""

from __future__ import annotations

#: Benchmark modules, in the order the runner runs them.
BENCHMARKS: tuple[str, ...] = ("receive_path", "book", "fanout", "end_to_end", "client")
