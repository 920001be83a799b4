"""``verify``: real captures rebuilt against SOURCES.md and an independent replay, the JSON
shape, the command line, corrupted captures and synthetic gap/resync cases."""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.tools.verify import VerifyReport
from gateway.tools.verify import add_arguments
from gateway.tools.verify import encode_json
from gateway.tools.verify import main
from gateway.tools.verify import verify_capture

RealData = Callable[[str], Path]

HFT = "binance/hftbacktest/spot/btcusdt_20240808.gz"
CRYPTOFEED = "binance/cryptofeed/BINANCE.ws.1.0"
CRYPTOFEED_FUTURES = "binance/cryptofeed/BINANCE_FUTURES.ws.1.0"

#: The documented per-symbol JSON keys, in the documented order.
SYMBOL_KEYS = [
    "updates",
    "duplicates",
    "gaps",
    "resyncs",
    "crossed",
    "checksum_ok",
    "checksum_failed",
    "last_id",
    "bid_levels",
    "ask_levels",
    "bids",
    "asks",
]


def run_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mdgateway verify")
    add_arguments(parser)
    return main(parser.parse_args(argv))


# --- an independent replay: the validation recipe of binance/SOURCES.md ------------------


class OracleBook:
    """Plain dicts and the SOURCES.md rule: drop ``u <= L``; the first applied diff has
    ``U <= L + 1 <= u``; then ``U == prev_u + 1``."""

    def __init__(self) -> None:
        self.last_id: int | None = None
        self.prev_u: int | None = None
        self.buffer: list[dict[str, Any]] = []
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}
        self.applied = 0
        self.broken = 0
        self.crossed = 0

    def snapshot(self, body: dict[str, Any]) -> None:
        self.last_id = body["lastUpdateId"]
        self.bids, self.asks = {}, {}
        self._levels(self.bids, body["bids"])
        self._levels(self.asks, body["asks"])
        buffered, self.buffer = self.buffer, []
        for d in buffered:
            self.diff(d)

    def diff(self, d: dict[str, Any]) -> None:
        if self.last_id is None:
            self.buffer.append(d)
            return
        if d["u"] <= self.last_id:
            return
        if self.prev_u is None:
            links = d["U"] <= self.last_id + 1 <= d["u"]
        else:
            links = d["U"] == self.prev_u + 1
        if not links:
            self.broken += 1
        self._levels(self.bids, d["b"])
        self._levels(self.asks, d["a"])
        self.prev_u = self.last_id = d["u"]
        self.applied += 1
        if self.bids and self.asks and max(self.bids) >= min(self.asks):
            self.crossed += 1

    @staticmethod
    def _levels(side: dict[Decimal, tuple[str, str]], levels: list[list[str]]) -> None:
        for price, qty in levels:
            if Decimal(qty) == 0:
                side.pop(Decimal(price), None)
            else:
                side[Decimal(price)] = (price, qty)

    def top(self, depth: int) -> tuple[list[list[str]], list[list[str]]]:
        bids = [list(self.bids[p]) for p in sorted(self.bids, reverse=True)[:depth]]
        asks = [list(self.asks[p]) for p in sorted(self.asks)[:depth]]
        return bids, asks


def oracle(events: Iterable[tuple[str, str, dict[str, Any]]]) -> dict[str, OracleBook]:
    books: dict[str, OracleBook] = {}
    for kind, symbol, body in events:
        book = books.setdefault(f"binance:{symbol}", OracleBook())
        if kind == "snap":
            book.snapshot(body)
        else:
            book.diff(body)
    return books


def hftbacktest_events(path: Path) -> Iterator[tuple[str, str, dict[str, Any]]]:
    symbol = path.name.split("_")[0].upper()
    with gzip.open(path, "rt") as f:
        for line in f:
            _, frame = line.split(" ", 1)
            if '"stream"' not in frame:
                yield "snap", symbol, json.loads(frame)
            elif '"depthUpdate"' in frame:
                data = json.loads(frame)["data"]
                yield "diff", data["s"], data


def cryptofeed_events(ws_path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    timed: list[tuple[Decimal, int, tuple[str, str, dict[str, Any]]]] = []
    for n, line in enumerate(ws_path.read_text().splitlines()[1:]):
        if '"depthUpdate"' in line:
            stamp, frame = line.split(": ", 1)
            data = json.loads(frame)["data"]
            timed.append((Decimal(stamp), n, ("diff", data["s"], data)))
    http_path = ws_path.with_name(ws_path.name.replace(".ws.1.0", ".http.0.0"))
    for n, line in enumerate(http_path.read_text().splitlines()):
        if line.strip():
            url, rest = line.split(" -> ", 1)
            stamp, body = rest.split(": ", 1)
            symbol = re.search(r"symbol=(\w+)", url)
            assert symbol is not None
            timed.append((Decimal(stamp), 10**6 + n, ("snap", symbol.group(1), json.loads(body))))
    return [event for _, _, event in sorted(timed, key=lambda t: (t[0], t[1]))]


def assert_matches_oracle(report: VerifyReport, books: dict[str, OracleBook], depth: int) -> None:
    assert set(report.symbols) == set(books)
    for key, expected in books.items():
        got = report.symbols[key]
        assert expected.broken == 0, f"{key}: the recorded chain itself is broken"
        assert got.updates == expected.applied, key
        assert got.last_id == expected.last_id, key
        assert (got.bid_levels, got.ask_levels) == (len(expected.bids), len(expected.asks)), key
        assert got.crossed == expected.crossed == 0, key
        bids, asks = expected.top(depth)
        assert [list(level) for level in got.bids] == bids, key
        assert [list(level) for level in got.asks] == asks, key


# --- real data ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hft_report(real_data: RealData) -> VerifyReport:
    return verify_capture(real_data(HFT))


@pytest.fixture(scope="module")
def cryptofeed_report(real_data: RealData) -> VerifyReport:
    return verify_capture(real_data(CRYPTOFEED))


def test_hftbacktest_btcusdt_matches_sources_md(
    hft_report: VerifyReport, real_data: RealData
) -> None:
    path = real_data(HFT)
    assert (hft_report.format, hft_report.venue) == ("hftbacktest", "binance")
    assert list(hft_report.symbols) == ["binance:BTCUSDT"]
    btc = hft_report.symbols["binance:BTCUSDT"]
    # SOURCES.md: 3,451 diffs, 3 before the snapshot, 2 of them dropped; 3,449 applied,
    # 0 gaps, never crossed, 1,209 bid and 2,196 ask levels at the end.
    assert btc.synced and btc.state == "live"
    assert (btc.gaps, btc.resyncs, btc.crossed, btc.duplicates) == (0, 0, 0, 0)
    assert (btc.diffs, btc.stale, btc.updates) == (3451, 2, 3449)
    assert (btc.bid_levels, btc.ask_levels) == (1209, 2196)
    assert (btc.snapshots, btc.pending, btc.bad_updates) == (1, 0, 0)
    last_u = None
    with gzip.open(path, "rt") as f:
        for line in f:
            if '"depthUpdate"' in line:
                last_u = json.loads(line.split(" ", 1)[1])["data"]["u"]
    assert last_u is not None and btc.last_id == last_u
    assert (hft_report.bad_frames, hft_report.malformed_lines, hft_report.truncated) == (
        0,
        0,
        False,
    )
    assert hft_report.records == 41249  # 3,451 + 28,040 + 9,757 + 1 snapshot
    assert hft_report.ok


def test_hftbacktest_btcusdt_matches_an_independent_replay(
    hft_report: VerifyReport, real_data: RealData
) -> None:
    assert_matches_oracle(hft_report, oracle(hftbacktest_events(real_data(HFT))), 20)


def test_cryptofeed_spot_pair_matches_sources_md(cryptofeed_report: VerifyReport) -> None:
    report = cryptofeed_report
    assert (report.format, report.venue) == ("cryptofeed-raw", "binance")
    assert [Path(s).name for s in report.sources] == ["BINANCE.ws.1.0", "BINANCE.http.0.0"]
    # SOURCES.md: depth diffs NKNUSDT 150, LRCBTC 15, BLZETH 10, RUNEEUR 2; all sync,
    # 0 gaps, never crossed.
    diffs = {key: s.diffs for key, s in report.symbols.items()}
    assert diffs == {
        "binance:NKNUSDT": 150,
        "binance:LRCBTC": 15,
        "binance:BLZETH": 10,
        "binance:RUNEEUR": 2,
    }
    for key, s in report.symbols.items():
        assert s.synced and s.state == "live", key
        assert (s.gaps, s.resyncs, s.crossed, s.duplicates, s.pending) == (0, 0, 0, 0, 0), key
        assert s.updates + s.stale == s.diffs, key
        assert s.snapshots == 1, key
    assert (report.bad_frames, report.malformed_lines) == (0, 0)
    assert report.ok


def test_cryptofeed_spot_pair_matches_an_independent_replay(
    cryptofeed_report: VerifyReport, real_data: RealData
) -> None:
    assert_matches_oracle(cryptofeed_report, oracle(cryptofeed_events(real_data(CRYPTOFEED))), 20)


def test_json_shape_is_exactly_as_documented(
    real_data: RealData, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main([str(real_data(CRYPTOFEED)), "--json"]) == 0
    out, _ = capsys.readouterr()
    assert out.endswith("\n") and out.count("\n") == 1  # one object, nothing else
    doc = json.loads(out)
    assert set(doc) >= {"symbols", "file", "format", "venue", "bad_frames"}
    assert set(doc["symbols"]) == {
        "binance:NKNUSDT",
        "binance:LRCBTC",
        "binance:BLZETH",
        "binance:RUNEEUR",
    }
    for key, sym in doc["symbols"].items():
        assert list(sym)[: len(SYMBOL_KEYS)] == SYMBOL_KEYS, key
        for name in SYMBOL_KEYS[:10]:
            assert type(sym[name]) is int, (key, name)
        assert (sym["checksum_ok"], sym["checksum_failed"]) == (0, 0)
        for side in ("bids", "asks"):
            levels = sym[side]
            assert 0 < len(levels) <= 20
            for level in levels:
                assert isinstance(level, list) and len(level) == 2
                assert all(isinstance(x, str) and re.fullmatch(r"\d+\.\d+", x) for x in level)
        assert len(sym["bids"]) == min(20, sym["bid_levels"])
        assert len(sym["asks"]) == min(20, sym["ask_levels"])
        # Best first on both sides; never crossed.
        bid_prices = [Decimal(p) for p, _ in sym["bids"]]
        ask_prices = [Decimal(p) for p, _ in sym["asks"]]
        assert bid_prices == sorted(bid_prices, reverse=True)
        assert ask_prices == sorted(ask_prices)
        assert bid_prices[0] < ask_prices[0]


def test_depth_option(real_data: RealData, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(real_data(CRYPTOFEED))
    assert run_main([path, "--json", "--depth", "3"]) == 0
    three = json.loads(capsys.readouterr().out)["symbols"]
    assert run_main([path, "--json", "--depth", "0"]) == 0
    zero = json.loads(capsys.readouterr().out)["symbols"]
    assert run_main([path, "--json"]) == 0
    default = json.loads(capsys.readouterr().out)["symbols"]
    for key in default:
        assert three[key]["bids"] == default[key]["bids"][:3]
        assert three[key]["asks"] == default[key]["asks"][:3]
        assert len(three[key]["bids"]) == 3
        assert zero[key]["bids"] == [] and zero[key]["asks"] == []
        assert zero[key]["bid_levels"] == default[key]["bid_levels"]
    with pytest.raises(SystemExit) as info:
        run_main([path, "--json", "--depth", "-1"])
    assert info.value.code == 2


def test_cli_entry_as_a_subprocess(real_data: RealData, repo_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.tools.verify", str(real_data(CRYPTOFEED)), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo_root,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert len(doc["symbols"]) == 4
    assert all(s["gaps"] == 0 for s in doc["symbols"].values())


def test_table_output(real_data: RealData, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main([str(real_data(CRYPTOFEED))]) == 0
    out = capsys.readouterr().out
    for symbol in ("NKNUSDT", "LRCBTC", "BLZETH", "RUNEEUR"):
        assert f"binance:{symbol}" in out
    assert "OK" in out


def hft_head(real_data: RealData, count: int) -> list[bytes]:
    """The first ``count`` lines of the real hftbacktest capture (the snapshot is line 8)."""
    lines: list[bytes] = []
    with gzip.open(real_data(HFT), "rb") as f:
        for line in f:
            lines.append(line.rstrip(b"\n"))
            if len(lines) == count:
                break
    return lines


def write_gz(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    return path


def _cut_in_half(lines: list[bytes], marker: bytes) -> None:
    """Truncates to half its length the first line from line 300 on that holds ``marker``."""
    index = next(i for i in range(300, len(lines)) if marker in lines[i])
    lines[index] = lines[index][: len(lines[index]) // 2]


def test_truncated_frame_line_in_a_real_capture_is_a_bad_frame(
    real_data: RealData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = hft_head(real_data, 600)
    _cut_in_half(lines, b"@bookTicker")
    path = write_gz(tmp_path / "btcusdt_20240808.gz", lines)
    report = verify_capture(path)
    assert report.bad_frames == 1 and report.malformed_lines == 0
    btc = report.symbols["binance:BTCUSDT"]
    assert btc.synced and btc.gaps == 0  # a ticker lost costs the book nothing
    assert run_main([str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bad_frames"] == 1


def test_truncated_depth_line_is_a_bad_frame_and_a_gap(
    real_data: RealData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = hft_head(real_data, 600)
    _cut_in_half(lines, b'"depthUpdate"')
    lines.insert(450, b"not a capture line")
    path = write_gz(tmp_path / "btcusdt_20240808.gz", lines)
    report = verify_capture(path)
    assert (report.bad_frames, report.malformed_lines) == (1, 1)
    assert report.malformed_examples[0].startswith("btcusdt_20240808.gz:451: ")
    btc = report.symbols["binance:BTCUSDT"]
    # One connection only: the lost diff cannot come from elsewhere, so the gap is certain.
    assert (btc.gaps, btc.resyncs) == (1, 1)
    assert btc.state == "resyncing"
    assert not report.ok
    assert run_main([str(path)]) == 1
    assert "FAIL" in capsys.readouterr().out


DIFF = (
    '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT",'
    '"U":%d,"u":%d,"b":[["%s","1"]],"a":[]}}'
)
SNAP = '{"lastUpdateId":%d,"bids":[["100.0","1"]],"asks":[["101.0","2"]]}'
WS_URL = "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms"
REST_URL = "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000"


def test_reconnect_gap_is_resynced_from_the_next_snapshot(tmp_path: Path) -> None:
    ws = tmp_path / "BINANCE.ws.1.0"
    ws.write_text(
        "\n".join(
            [
                f"{WS_URL} <-> 1.0",
                "1.1: " + DIFF % (9, 11, "99.0"),
                "1.3: " + DIFF % (12, 13, "99.5"),
                "1.4: " + DIFF % (12, 13, "99.5"),  # the same update again: a duplicate
                f"{WS_URL} <-> 2.0",
                "2.1: " + DIFF % (20, 21, "98.0"),  # ids 14..19 lost in the reconnect
                "2.3: " + DIFF % (22, 24, "97.0"),
                "2.5: " + DIFF % (25, 26, "96.0"),
            ]
        )
        + "\n"
    )
    (tmp_path / "BINANCE.http.0.0").write_text(
        f"{REST_URL} -> 1.2: {SNAP % 10}\n{REST_URL} -> 2.4: {SNAP % 23}\n"
    )
    report = verify_capture(ws)
    btc = report.symbols["binance:BTCUSDT"]
    assert (btc.gaps, btc.resyncs, btc.snapshots, btc.duplicates) == (1, 1, 2, 1)
    assert btc.state == "live" and btc.last_id == 26
    # After the resync: snapshot 23, then 22..24 (buffered, links) and 25..26.
    assert btc.bids == [("100.0", "1"), ("97.0", "1"), ("96.0", "1")]
    assert not report.ok  # it had a gap


def test_the_rebuilds_log_lines_are_on_stderr_only_at_the_log_level_asked(
    tmp_path: Path, repo_root: Path
) -> None:
    """The report counts the gap: its warning is no stray line on stderr, unless asked for
    with ``--log-level``, then as a log line with its level."""
    ws = tmp_path / "BINANCE.ws.1.0"
    ws.write_text(
        f"{WS_URL} <-> 1.0\n"
        + "1.1: "
        + DIFF % (9, 11, "99.0")
        + "\n"
        + "1.3: "
        + DIFF % (20, 21, "98.0")  # ids 12..19 lost: a gap
        + "\n"
    )
    (tmp_path / "BINANCE.http.0.0").write_text(f"{REST_URL} -> 1.2: {SNAP % 10}\n")

    def verify(*options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "verify", str(ws), "--json", *options],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=repo_root,
            check=False,
        )

    quiet = verify()
    assert quiet.returncode == 1 and quiet.stderr == ""
    assert json.loads(quiet.stdout)["symbols"]["binance:BTCUSDT"]["gaps"] == 1
    told = verify("--log-level", "warning")
    assert told.returncode == 1 and told.stdout == quiet.stdout
    assert re.search(r" WARNING gateway\.\S+: binance:BTCUSDT: lost at id 11", told.stderr)


def test_capture_without_a_snapshot_never_syncs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_gz(
        tmp_path / "btcusdt_20240808.gz",
        [b"1 " + (DIFF % (1, 2, "1.0")).encode(), b"2 " + (DIFF % (3, 4, "1.0")).encode()],
    )
    report = verify_capture(path)
    btc = report.symbols["binance:BTCUSDT"]
    assert not btc.synced and btc.state == "syncing" and btc.last_id == -1
    assert btc.pending == 2
    assert run_main([str(path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["symbols"]["binance:BTCUSDT"]["updates"] == 0


def test_a_venue_of_which_no_frame_is_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--venue`` naming another venue than the capture's: nothing parses, and the one
    line says so and names the capture's venue, not a missing snapshot."""
    ws = tmp_path / "BINANCE.ws.1.0"
    ws.write_text(f"{WS_URL} <-> 1.0\n1.1: " + DIFF % (9, 11, "99.0") + "\n")
    (tmp_path / "BINANCE.http.0.0").write_text(f"{REST_URL} -> 1.2: {SNAP % 10}\n")
    assert run_main([str(ws), "--venue", "okx"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "mdgateway verify: error: --venue okx: no frame of the capture parses as okx "
        "(1 refused); the capture shows binance (verify it without --venue)\n"
    )
    assert run_main([str(ws), "--venue", "binance", "--json"]) == 0  # the right one
    capsys.readouterr()
    # Frames that parse as the venue named (USD-M's have all of spot's fields): a report,
    # with a note naming the capture's venue.
    futures = tmp_path / "BINANCE_FUTURES.ws.1.0"
    futures.write_text(
        "wss://fstream.binance.com/stream?streams=btcusdt@depth@100ms <-> 1.0\n1.1: "
        + DIFF.replace('"U"', '"pu":8,"U"') % (9, 11, "99.0")
        + "\n"
    )
    assert run_main([str(futures), "--venue", "binance", "--json"]) == 1
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert "read as --venue binance; the capture shows binance-usdm" in notes


BYBIT_BOOK = (
    '{"topic":"orderbook.500.XRPUSDT","type":"%s","ts":%d,'
    '"data":{"s":"XRPUSDT","b":[["%s","5"]],"a":[["2.0","5"]],"u":%d,"seq":%d}}'
)


def test_capture_without_connect_records_is_never_stale(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Bybit's history files record no connection: its first frame, an in-band snapshot,
    # arrives on a connection that is up from then on, not on none.
    path = tmp_path / "xrpusdt-ob500.data"
    path.write_text(
        BYBIT_BOOK % ("snapshot", 1000, "1.0", 7, 70)
        + "\n"
        + BYBIT_BOOK % ("delta", 1100, "1.1", 8, 80)
        + "\n"
    )
    with caplog.at_level(logging.INFO, logger="gateway"):
        report = verify_capture(path)
    (xrp,) = report.symbols.values()
    assert report.ok and xrp.state == "live" and xrp.last_id == 8
    assert [r.getMessage() for r in caplog.records if "stale" in r.getMessage()] == []


def test_capture_without_any_book_fails(tmp_path: Path) -> None:
    ticker = b'{"stream":"btcusdt@bookTicker","data":{"u":5,"s":"BTCUSDT","b":"1","B":"1"}}'
    path = write_gz(tmp_path / "btcusdt_20240808.gz", [b"1 " + ticker])
    report = verify_capture(path, venue="binance")
    assert report.symbols == {} and not report.ok


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello\n", "unrecognised capture format"),
        (b"", "empty"),
    ],
)
def test_format_errors_exit_2_with_the_reason_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "capture.txt"
    path.write_bytes(content)
    assert run_main([str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err and str(path) in captured.err


def test_usage_errors_exit_2(
    tmp_path: Path, real_data: RealData, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main([str(tmp_path / "missing.gz")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert run_main([str(real_data(CRYPTOFEED)), "--venue", "nasdaq"]) == 2
    assert "unknown venue 'nasdaq'" in capsys.readouterr().err
    ticker = b'{"stream":"btcusdt@bookTicker","data":{"u":5,"s":"BTCUSDT"}}'
    path = write_gz(tmp_path / "btcusdt_20240808.gz", [b"1 " + ticker])
    assert run_main([str(path)]) == 2
    assert "cannot tell the venue" in capsys.readouterr().err


def test_encode_json_round_trips(cryptofeed_report: VerifyReport) -> None:
    doc = json.loads(encode_json(cryptofeed_report))
    assert doc["symbols"]["binance:NKNUSDT"]["last_id"] == (
        cryptofeed_report.symbols["binance:NKNUSDT"].last_id
    )


def test_real_data_skips_visibly_or_fails_under_ci(
    real_data: RealData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="real data not found at /"):
        real_data("binance/no-such-file.gz")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        real_data("binance/no-such-file.gz")
    monkeypatch.delenv("CI")
    assert real_data(HFT).is_file()
