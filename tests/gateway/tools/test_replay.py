"""``mdgateway replay``: the notice sent on request is the one the capture's venue adapter
declares, and reads back as a reconnect request."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.model import VenueNotice
from gateway.tools.replay import _notice_frame
from gateway.wire.venues import ADAPTERS

SPOT_DIFF = (
    b'{"stream":"btcusdt@depth@100ms","data":'
    b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"b":[],"a":[]}}'
)
USDM_DIFF = SPOT_DIFF.replace(b'"U":', b'"pu":0,"U":')
OKX_FRAME = b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[]}'
KRAKEN_FRAME = b'{"channel":"status","type":"update","data":[]}'


@pytest.mark.parametrize(
    ("frame", "venue"),
    [(SPOT_DIFF, "binance"), (USDM_DIFF, "binance-usdm"), (OKX_FRAME, "okx")],
)
def test_the_notice_is_the_venues_and_asks_to_reconnect(
    tmp_path: Path, frame: bytes, venue: str
) -> None:
    path = tmp_path / "frames.ndjson"
    path.write_bytes(frame + b"\n")
    notice = _notice_frame(path)
    assert notice is not None
    events = ADAPTERS[venue].parse(notice(), 1, 0)
    assert len(events) == 1 and isinstance(events[0], VenueNotice)
    assert events[0].reconnect


def test_a_venue_without_a_notice_gets_none(tmp_path: Path) -> None:
    path = tmp_path / "frames.ndjson"
    path.write_bytes(KRAKEN_FRAME + b"\n")
    assert _notice_frame(path) is None
    assert _notice_frame(tmp_path / "missing.ndjson") is None


def test_the_notices_are_the_venues_wire_bytes() -> None:
    binance = ADAPTERS["binance"].notice_frame
    okx = ADAPTERS["okx"].notice_frame
    assert binance is not None and okx is not None
    assert binance(1_770_123_456_789_999_999) == (
        b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}'
    )
    assert okx(0) == (
        b'{"event":"notice","code":"64008","msg":"The connection will soon be closed for a '
        b'service upgrade. Please reconnect.","connId":"sim"}'
    )
