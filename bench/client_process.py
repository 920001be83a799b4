"""The strategy process of the ``client`` benchmark: one ``GatewayClient``, counting events.

    python -m bench.client_process URL KEY FORMAT CHANNELS TIMEOUT_S

Run by ``bench/client.py`` as a separate process (from the repository's root), so that
its CPU time is what one strategy process pays. Subscribes ``KEY`` on ``CHANNELS``
(comma-separated) in ``FORMAT`` (``json`` or ``msgpack``) with
:class:`gateway.io.client.GatewayClient` on uvloop, and consumes its events as a strategy
would (``async for``), only counting them.

Prints ``ready`` after its first book or bbo event. Then, for each end marker (a ``status``
whose reason is ``bench-end-CELL``, sent after each measured round), prints
``done CELL EVENTS CPU_NS GAPS BAD``: the events yielded since the previous marker (the
marker's own excluded), the process CPU time (user + system) spent meanwhile, and the
client's seq gaps and bad messages so far. Exits when the connection ends (the benchmark
stops its server), when its stdin closes, or after TIMEOUT_S. Loopback only.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence

from bench.common import run_async
from gateway.io.client import GatewayClient
from gateway.io.client import StatusEvent
from gateway.wire.client_session import CHANNELS
from gateway.wire.protocol import Channel
from gateway.wire.protocol import WireFormat

MARKER = "bench-end-"
_CHANNELS: dict[str, Channel] = {channel: channel for channel in CHANNELS}
_FORMATS: dict[str, WireFormat] = {"json": "json", "msgpack": "msgpack"}


async def follow(url: str, key: str, wire_format: WireFormat, channels: Sequence[Channel]) -> None:
    """Count ``key``'s events round by round until the connection ends."""
    client = GatewayClient(
        url, [key], channels=channels, wire_format=wire_format, reconnect=False, recover=False
    )
    ready = False
    events = 0
    cpu_ns = time.process_time_ns()
    async with client:
        async for event in client:
            if type(event) is StatusEvent and event.reason.startswith(MARKER):
                now_ns = time.process_time_ns()
                stats = client.stats
                cell = event.reason[len(MARKER) :]
                print(
                    f"done {cell} {events} {now_ns - cpu_ns} {stats.gaps} {stats.bad_messages}",
                    flush=True,
                )
                events = 0
                cpu_ns = time.process_time_ns()
            elif ready:
                events += 1
            elif event.kind in ("snapshot", "bbo"):
                ready = True
                print("ready", flush=True)


async def _until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def _main(url: str, key: str, wire_format: WireFormat, channels: list[Channel]) -> None:
    """Follow until the connection ends or stdin closes, whichever comes first."""
    async with asyncio.TaskGroup() as tasks:
        follower = tasks.create_task(follow(url, key, wire_format, channels))
        watcher = tasks.create_task(_until_stdin_closes())
        follower.add_done_callback(lambda _: watcher.cancel())
        watcher.add_done_callback(lambda _: follower.cancel())


def main(argv: Sequence[str]) -> int:
    if len(argv) != 5 or argv[2] not in _FORMATS:
        print(__doc__, file=sys.stderr)
        return 2
    url, key, wire_format, channel_list, timeout_s = argv
    channels = [_CHANNELS[name] for name in channel_list.split(",")]
    run_async(_main(url, key, _FORMATS[wire_format], channels), float(timeout_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
