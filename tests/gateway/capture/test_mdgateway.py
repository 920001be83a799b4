"""The project's capture format: codec, gzip members cut anywhere, rotation, reading."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from gateway.capture import CaptureFormat
from gateway.capture import CaptureReader
from gateway.capture import codec as mdgw
from gateway.capture import detect_format
from gateway.capture import detect_venue

KINDS: list[mdgw.LineKind] = ["ws", "rest", "connect", "disconnect", "gap", "header"]


@given(
    recv_ns=st.integers(0, 10**19 - 1),
    kind=st.sampled_from(KINDS),
    conn_id=st.integers(-1, 10**6),
    url=st.text(),
    payload=st.binary(),
)
def test_a_line_round_trips_any_payload(
    recv_ns: int, kind: mdgw.LineKind, conn_id: int, url: str, payload: bytes
) -> None:
    line = mdgw.encode_line(recv_ns, kind, conn_id, url, payload)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and b"\r" not in line
    assert line[:19].isdigit() and line[19:20] == b" "
    assert mdgw.decode_line(line) == mdgw.Line(recv_ns, kind, conn_id, url, payload)


def test_a_text_frame_is_written_as_it_is() -> None:
    line = mdgw.encode_line(5, "ws", 2, "", b'{"a": 1}')
    assert line == b'0000000000000000005 ws 2 t  {"a": 1}\n'


@pytest.mark.parametrize(
    "line",
    [b"", b"12 ws 0 t  x", b"0000000000000000005 nope 0 t  x", b"0000000000000000005 ws 0 b  !!"],
)
def test_a_bad_line_is_a_value_error(line: bytes) -> None:
    with pytest.raises(ValueError):
        mdgw.decode_line(line)


#: A wall clock reading (ns): 2024-01-31 12:00:00.123456 UTC.
NOW_NS = 1_706_702_400_123_456_000


def _write(
    directory: Path,
    batches: list[list[bytes]],
    rotate_bytes: int = mdgw.CaptureFileWriter.rotate_bytes,
) -> mdgw.CaptureFileWriter:
    writer = mdgw.CaptureFileWriter(directory, rotate_bytes=rotate_bytes)
    for batch in batches:
        writer.write(batch, now_ns=NOW_NS, now_s=0.0)
    writer.close()
    return writer


def _frames(n: int, start: int = 0) -> list[bytes]:
    return [mdgw.encode_line(1000 + i, "ws", 0, "", b'{"i":%d}' % i) for i in range(start, n)]


def test_a_file_cut_anywhere_in_its_last_member_reads_every_complete_member(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    connect = mdgw.encode_line(999, "connect", 0, "wss://stream.binance.com/ws", b"")
    writer = _write(src, [[connect, *_frames(5)], _frames(9, 5)])
    (path,) = writer.files
    data = path.read_bytes()
    last_member = mdgw.gzip_member(b"".join(_frames(9, 5)))
    start = len(data) - len(last_member)
    assert data[start:] == last_member
    for cut in range(start, len(data) + 1):
        cut_dir = tmp_path / f"cut{cut}"
        cut_dir.mkdir()
        (cut_dir / path.name).write_bytes(data[:cut])
        reader = CaptureReader(cut_dir)
        records = list(reader)
        complete = cut == len(data)
        assert len(records) == (10 if complete else 6)
        assert [r.payload for r in records[1:]] == [
            b'{"i":%d}' % i for i in range(len(records) - 1)
        ]
        assert records[1].url == "wss://stream.binance.com/ws", "ws records get their URL"
        assert reader.stats.truncated == (start < cut < len(data))


def test_garbage_after_the_members_stops_the_reading_cleanly(tmp_path: Path) -> None:
    (path,) = _write(tmp_path, [_frames(3)]).files
    with path.open("ab") as f:
        f.write(b"\x1f\x8bnot gzip at all")
    reader = CaptureReader(tmp_path)
    assert len(list(reader)) == 3 and reader.stats.truncated


def test_files_rotate_by_size_and_read_back_in_order(tmp_path: Path) -> None:
    batches = [_frames(20 * (k + 1), 20 * k) for k in range(10)]
    writer = _write(tmp_path, batches, rotate_bytes=300)
    assert len(writer.files) >= 5
    assert [mdgw.parse_name(p.name) for p in writer.files] == [
        (writer.session, i) for i in range(len(writer.files))
    ]
    assert detect_format(tmp_path) is CaptureFormat.MDGATEWAY
    for path in (tmp_path, writer.files[3]):
        records = list(CaptureReader(path))
        assert [r.payload for r in records] == [b'{"i":%d}' % i for i in range(200)]


def test_files_rotate_by_time_on_the_clock_they_are_given(tmp_path: Path) -> None:
    """A file open ``rotate_s`` by the monotonic readings given is closed after the write
    that finds it so; the next write opens the next, its header stamped with the wall
    clock given; the session is named after the first write's wall clock."""
    writer = mdgw.CaptureFileWriter(tmp_path, rotate_s=10.0)
    writer.write(_frames(1), now_ns=NOW_NS, now_s=100.0)
    writer.write(_frames(2, 1), now_ns=NOW_NS + 5, now_s=109.9)
    assert len(writer.files) == 1, "open 9.9 s: kept"
    writer.write(_frames(3, 2), now_ns=NOW_NS + 7, now_s=110.0)
    writer.write(_frames(4, 3), now_ns=NOW_NS + 9, now_s=110.0)
    writer.close()
    assert writer.session == "20240131T120000.123456Z"
    assert [mdgw.parse_name(p.name) for p in writer.files] == [
        (writer.session, 0),
        (writer.session, 1),
    ]
    headers = [
        mdgw.decode_line(line)
        for path in writer.files
        for line in mdgw.iter_lines(path, mdgw.MemberReader())
        if line.split(b" ", 2)[1] == b"header"
    ]
    assert [h.recv_ns for h in headers] == [NOW_NS, NOW_NS + 9]
    assert [r.payload for r in CaptureReader(tmp_path)] == [b'{"i":%d}' % i for i in range(4)]


def test_two_sessions_in_a_directory_are_read_one_after_the_other(tmp_path: Path) -> None:
    for session in ("20240101T000000.000000Z", "20240102T000000.000000Z"):
        connect = mdgw.encode_line(1, "connect", 0, "ws://127.0.0.1:1/ws", b'{"venue":"okx"}')
        writer = mdgw.CaptureFileWriter(tmp_path, session=session)
        writer.write([connect, *_frames(2)], now_ns=NOW_NS, now_s=0.0)
        writer.close()
    records = list(CaptureReader(tmp_path))
    assert [(r.kind, r.conn_id) for r in records] == [
        ("connect", 0),
        ("ws", 0),
        ("ws", 0),
        ("disconnect", 0),
        ("connect", 1),
        ("ws", 1),
        ("ws", 1),
    ]
    assert detect_venue(tmp_path) == "okx"


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ws", "rest"]), st.binary()), max_size=30))
def test_the_reader_returns_what_was_written(
    tmp_path_factory: pytest.TempPathFactory, items: list[tuple[str, bytes]]
) -> None:
    directory = tmp_path_factory.mktemp("cap")
    lines = [
        mdgw.encode_line(i, "ws" if k == "ws" else "rest", 0 if k == "ws" else -1, "", p)
        for i, (k, p) in enumerate(items)
    ]
    _write(directory, [lines[:10], lines[10:]])
    assert [(r.kind, r.payload) for r in CaptureReader(directory)] == items
