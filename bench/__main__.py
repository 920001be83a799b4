"""The benchmark runner: ``python -m bench [NAME ...] [--quick] [--json]``.

Prints the machine (Python, event loop, CPUs, load), then one table per benchmark (a
benchmark whose rows carry a ``table`` key prints one table per distinct value), each as
soon as it is done. ``--json`` prints everything as one JSON document instead.
``--quick`` runs every benchmark at a tiny size (what the smoke test does): the figures are
then only a sign of life. Benchmarks run one after the other, never in parallel.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table

from bench import BENCHMARKS
from bench.common import machine

Row = dict[str, object]


def fmt(value: object) -> str:
    """A cell: integers with thousands separators, floats to about 3-4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        size = abs(value)
        if size >= 1000:
            return f"{value:,.0f}"
        if size >= 100:
            return f"{value:.1f}"
        if size >= 10:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def groups(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Rows by their ``table`` key (``""`` when absent), in order of first appearance."""
    out: dict[str, list[Row]] = {}
    for row in rows:
        name = str(row.get("table", ""))
        out.setdefault(name, []).append({k: v for k, v in row.items() if k != "table"})
    return out


def render_tables(console: Console, title: str, rows: Sequence[Row]) -> None:
    for name, group in groups(rows).items():
        columns = list(dict.fromkeys(key for row in group for key in row))
        table = Table(
            title=f"{title} -- {name}" if name else title,
            title_justify="left",
            title_style="bold",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for column in columns:
            numeric = all(isinstance(row.get(column), int | float | type(None)) for row in group)
            table.add_column(
                column,
                justify="right" if numeric else "left",
                overflow="fold",
                no_wrap=column == columns[0],
            )
        for row in group:
            table.add_row(*(fmt(row.get(column)) for column in columns))
        console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {BENCHMARKS}"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--json", action="store_true", help="print all rows as one JSON document")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Wide enough for every table; a narrower terminal wraps the lines.
    width = max(shutil.get_terminal_size((240, 40)).columns, 240)
    console = Console(width=width, highlight=False, markup=False)
    progress = Console(stderr=True, highlight=False)
    info = machine()
    if not args.json:
        render_tables(
            console, "machine", [{"": key, "value": value} for key, value in info.items()]
        )
        if args.quick:
            console.print("--quick: tiny sizes, the figures are only a sign of life\n")

    started = time.perf_counter()
    results: dict[str, object] = {}
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        progress.print(f"running {name} ...", style="dim")
        t0 = time.perf_counter()
        rows = module.run(args.quick)
        elapsed_s = time.perf_counter() - t0
        results[name] = {"title": module.TITLE, "seconds": elapsed_s, "rows": rows}
        if not args.json:
            render_tables(console, module.TITLE, rows)
            console.print(f"({name} took {elapsed_s:.1f} s)\n")
            console.file.flush()

    total_s = time.perf_counter() - started
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.json:
        document = {
            "machine": info,
            "quick": args.quick,
            "seconds": total_s,
            "load average at end (1/5/15 min)": load,
            "benchmarks": results,
        }
        text = json.dumps(_clean(document), ensure_ascii=False, indent=1, allow_nan=False)
        sys.stdout.write(text + "\n")
    else:
        console.print(f"total {total_s:.1f} s; load average at end (1/5/15 min): {load}")
    return 0


def _clean(value: object) -> object:
    """JSON-ready: NaN and infinities become null, anything unknown its ``str``."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
