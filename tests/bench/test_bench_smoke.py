"""Smoke test of the benchmarks in ``bench/``: each runs at its ``--quick`` size and yields
the expected rows with sane numbers (finite, positive where they are costs or rates).

No timing thresholds here, by the project's rule: speed is measured and printed by
``make bench``, never asserted in tests.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

Rows = list[dict[str, object]]


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], ModuleType]]:
    """``bench("fanout")`` imports ``bench.fanout`` (bench/ is not an installed package).

    Meanwhile the objects of the test process (every collected test) are frozen
    (:func:`gc.freeze`): the ``gc.collect()`` a benchmark makes before each timed run then
    scans the benchmark's own objects, as under ``python -m bench``, not the whole session.
    """
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    gc.freeze()
    try:
        yield lambda name: importlib.import_module(f"bench.{name}")
    finally:
        gc.unfreeze()


def _is_rate_or_cost(column: str) -> bool:
    return "µs" in column or "/s" in column


def _check_numbers(rows: Rows) -> None:
    assert rows, "a benchmark returned no rows"
    for row in rows:
        for column, value in row.items():
            assert isinstance(column, str)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            assert math.isfinite(value), f"{column} = {value} in {row}"
            assert value >= 0, f"{column} = {value} in {row}"
            if _is_rate_or_cost(column):
                assert value > 0, f"{column} = {value} in {row}"


def _table(rows: Rows, name: str) -> Rows:
    return [row for row in rows if row.get("table") == name]


def _number(row: dict[str, object], column: str) -> float:
    """``row[column]``, which must be a number."""
    value = row[column]
    assert isinstance(value, int | float) and not isinstance(value, bool), f"{column} = {value!r}"
    return value


def test_receive_path(bench: Callable[[str], ModuleType]) -> None:
    module = bench("receive_path")
    rows = module.run(quick=True)
    _check_numbers(rows)
    variants = {row["variant"]: row for row in _table(rows, "variants")}
    assert list(variants) == [name for name, _, _ in module._VARIANTS]
    one, parsed, peeked = variants.values()
    assert parsed["frames in"] == peeked["frames in"] == 3 * _number(one, "frames in")
    assert one["updates applied"] == parsed["updates applied"] == peeked["updates applied"]
    assert _number(peeked, "frames parsed") < _number(parsed, "frames parsed")
    assert _number(peeked, "id peek %") > 0 and parsed["id peek %"] == 0
    shares = ("parse %", "arbiter %", "book %", "id peek %", "dispatch %")
    for row in variants.values():
        assert sum(_number(row, column) for column in shares) == pytest.approx(100.0)
    operations = [row["operation"] for row in _table(rows, "components")]
    assert any("id peek" in str(op) for op in operations)
    assert any("feeds.binance.parse" in str(op) for op in operations)
    assert any("duplicate dropped" in str(op) for op in operations)
    (data,) = _table(rows, "data")
    assert data["frames"] == one["frames in"]


def test_id_peek_reads_the_last_update_id(bench: Callable[[str], ModuleType]) -> None:
    module = bench("receive_path")
    data = bench("common").load_depth_data(limit=150)
    assert [module.peek_last_id(raw) for _, raw in data.frames] == [d.last_id for d in data.diffs]
    assert module.peek_last_id(b'{"stream":"btcusdt@trade","data":{"e":"trade"}}') == -1


def test_receive_path_falls_back_to_the_simulator(
    bench: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    common = bench("common")
    monkeypatch.setattr(common, "CAPTURE", tmp_path / "missing.gz")
    rows = bench("receive_path").run(quick=True)
    _check_numbers(rows)
    (data,) = _table(rows, "data")
    assert str(data["source"]).startswith("SIMULATED")


def test_client_falls_back_to_the_simulator(
    bench: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(bench("common"), "CAPTURE", tmp_path / "missing.gz")
    levels, source = bench("client")._load_levels()
    assert source.startswith("SIMULATED")
    assert len(levels.bids) == len(levels.asks) == 200
    bids = [float(price) for price, _ in levels.bids]
    asks = [float(price) for price, _ in levels.asks]
    assert bids == sorted(set(bids), reverse=True) and asks == sorted(set(asks))
    assert bids[0] < asks[0]


def test_book(bench: Callable[[str], ModuleType]) -> None:
    rows = bench("book").run(quick=True)
    _check_numbers(rows)
    impls = [row for row in rows if "table" not in row]
    assert [row["implementation"] for row in impls] == [
        "L2Book (SortedDict, float keys)",
        "dict + max()/min() on read",
        "dict + sorted() on read",
        "dict + best key kept on write",
    ]
    assert len({row["levels applied"] for row in impls}) == 1
    assert len({row["book levels at end (bid/ask)"] for row in impls}) == 1


def test_fanout(bench: Callable[[str], ModuleType]) -> None:
    module = bench("fanout")
    rows = module.run(quick=True)
    _check_numbers(rows)
    cells = {(row["variant"], row["subscribers"]) for row in rows}
    assert cells == {(name, n) for name, _ in module.VARIANTS for n in module.SUBSCRIBERS}
    for row in rows:
        assert row["deliveries/round"] >= row["subscribers"]


def test_end_to_end(bench: Callable[[str], ModuleType]) -> None:
    module = bench("end_to_end")
    rows = module.run(quick=True)
    _check_numbers(rows)
    latency = _table(rows, "latency")
    assert [row["segment"] for row in latency] == [name for name, _, _ in module.SEGMENTS]
    assert all(_number(row, "samples") > 0 for row in latency)
    endpoints = _table(rows, "endpoints")
    assert len(endpoints) == module.ENDPOINTS
    (summary,) = _table(rows, "summary")
    assert _number(summary, "deltas published") > 0
    assert sum(_number(row, "first wins") for row in endpoints) == summary["deltas published"]
    assert sum(_number(row, "duplicates dropped") for row in endpoints) > 0
    assert summary["client seq gaps"] == summary["gateway gaps"] == 0


def test_client(bench: Callable[[str], ModuleType]) -> None:
    module = bench("client")
    rows = module.run(quick=True)
    _check_numbers(rows)
    cells = [(kind.name, wire_format) for kind in module.KINDS for wire_format in module.FORMATS]
    per_message = _table(rows, "per message")
    loopback = _table(rows, "loopback")
    assert [(row["message"], row["format"]) for row in per_message] == cells
    assert [(row["message"], row["format"]) for row in loopback] == cells
    assert {kind.name for kind in module.KINDS} >= {
        "delta, 1 level",
        "delta, 10 levels",
        "delta, 50 levels",
        "snapshot, 400 levels",
        "trade",
        "bbo",
        "status",
    }
    # The same messages in both formats: MessagePack's are the smaller.
    sizes = {(row["message"], row["format"]): _number(row, "message B") for row in per_message}
    for kind in module.KINDS:
        assert sizes[kind.name, "msgpack"] < sizes[kind.name, "json"]
    assert all(_number(row, "messages/round") >= 5 for row in loopback)
    (data,) = _table(rows, "data")
    assert data["book levels (bids/asks)"] == "200/200"


def test_runner_prints_tables_and_json(
    bench: Callable[[str], ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    runner = bench("__main__")
    # The quickest benchmark: what is checked here is the runner's output.
    assert runner.main(["fanout", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "event loop" in out and "cpus" in out
    assert bench("fanout").TITLE in out
    assert runner.main(["fanout", "--quick", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {"python", "event loop", "cpus"} <= set(document["machine"])
    rows = document["benchmarks"]["fanout"]["rows"]
    assert rows and all(isinstance(row, dict) for row in rows)
    with pytest.raises(SystemExit):
        runner.main(["no_such_benchmark"])
