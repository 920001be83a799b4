"""``GET /subscribers``: each subscriber's counters and lag (unsent bytes, time behind)."""

from __future__ import annotations

import asyncio
import http

import msgspec
import pytest

from gateway.io.fanout import Fanout
from gateway.io.service import subscribers_answer
from gateway.wire.config import ServerConfig
from gateway.wire.protocol import Subscribe
from gateway.wire.protocol import encode_json
from tests.harness import wait_until

from .fanout_helpers import KEY
from .fanout_helpers import FakeView
from .fanout_helpers import RawClient
from .fanout_helpers import levels
from .fanout_helpers import serving

BIDS = [("100.00", "1"), ("99.50", "2")]
ASKS = [("100.50", "1")]


@pytest.mark.async_timeout_s(40)
async def test_a_subscriber_behind_is_listed_with_its_unsent_bytes_and_time_behind() -> None:
    view = FakeView()
    now_s = 100.0  # the policy's clock, driven here
    fanout = Fanout(
        view,
        ServerConfig(max_buffer_bytes=16 * 1024, max_behind_s=60.0),
        close_timeout_s=30,
        clock_s=lambda: now_s,
    )
    fanout.publish(view.reset(KEY, BIDS, ASKS))
    async with serving(fanout):
        slow = await RawClient.connect(fanout.port, rcvbuf_bytes=4096)
        async with slow:
            await slow.send(encode_json(Subscribe([KEY])).decode())
            await wait_until(fanout.changes, lambda: fanout.stats.messages_sent >= 3)
            answer = subscribers_answer(fanout)
            assert answer.status is http.HTTPStatus.OK
            assert answer.content_type == "application/json"
            (live,) = msgspec.json.decode(answer.body)["subscribers"]
            assert (live["behind"], live["behind_s"], live["books"]) == (False, 0.0, 1)
            assert live["wire_format"] == "json" and live["messages_sent"] == 3

            wide = levels(60, 10.0, 0.01)  # big deltas the reader does not read
            for n in range(50_000):
                if fanout.stats.conflations:
                    break
                fanout.publish([view.delta(KEY, bids=[(p, f"{n % 7 + 1}") for p, _ in wide])])
                if n % 10 == 0:
                    await asyncio.sleep(0)  # the transport writes what it can
            now_s += 2.5
            (behind,) = msgspec.json.decode(subscribers_answer(fanout).body)["subscribers"]
            assert behind["behind"] and behind["behind_s"] == 2.5
            assert behind["buffered_bytes"] > 16 * 1024, "above max_buffer_bytes: behind"
            assert behind["dropped"] >= 1 and behind["conflations"] == 1
            assert set(behind) == {
                "id",
                "remote",
                "wire_format",
                "books",
                "messages_sent",
                "bytes_sent",
                "dropped",
                "conflations",
                "bad_requests",
                "behind",
                "buffered_bytes",
                "behind_s",
            }
