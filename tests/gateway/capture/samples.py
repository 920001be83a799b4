"""Sample capture lines and files shared by the reader tests."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

from gateway.capture import CaptureReader
from gateway.capture import CaptureRecord
from gateway.capture import ReadStats

DIFF = (
    b'{"stream":"btcusdt@depth@100ms","data":'
    b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":%d,"u":%d,"b":[],"a":[]}}'
)
TICKER = (
    b'{"stream":"btcusdt@bookTicker","data":{"u":5,"s":"BTCUSDT","b":"1","B":"1","a":"2","A":"1"}}'
)
SNAPSHOT = b'{"lastUpdateId":10,"bids":[["1.0","2"]],"asks":[["2.0","3"]]}'
WS_URL = "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms"


def write_gz(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    return path


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def records(path: Path) -> tuple[list[CaptureRecord], ReadStats]:
    reader = CaptureReader(path)
    out = list(reader)
    return out, reader.stats


def cryptofeed_pair(tmp_path: Path, ws: list[bytes], http: list[bytes] | None) -> Path:
    ws_path = write(tmp_path / "BINANCE.ws.1.0", ws)
    if http is not None:
        write(tmp_path / "BINANCE.http.0.0", http)
    return ws_path


BYBIT_LINEAR = "wss://stream.bybit.com/v5/public/linear"
BYBIT_SPOT = "wss://stream.bybit.com/v5/public/spot"
BYBIT_DELTA = (
    b'{"topic":"orderbook.200.BTCUSDT","type":"delta","ts":1786310818130,"data":{"s":"BTCUSDT",'
    b'"b":[["65095.30","0.005"]],"a":[],"u":15076953,"seq":753843913870},"cts":1786310818129}'
)
HEADER = {"t": "header", "format": 2, "exchange": "BYBIT", "config": {}, "recorded": 1.0}


def cf2(**fields: object) -> bytes:
    """One format-2 record. Keys in the order given: cryptofeed's own writer puts ``t``
    after ``conn`` and ``ts``; files converted from format 1 put it first."""
    return json.dumps(fields, separators=(",", ":")).encode()


def ob_line(u: int, ts: int, kind: str = "delta", topic: str = "orderbook.500.XRPUSDT") -> bytes:
    return (
        b'{"topic":"%s","type":"%s","ts":%d,"data":{"s":"XRPUSDT","b":[["1.9531","6203"]],'
        b'"a":[],"u":%d,"seq":130020238981},"cts":%d}'
        % (topic.encode(), kind.encode(), ts, u, ts - 2)
    )


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path
