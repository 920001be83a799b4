"""Subscriber side of the fanout benchmark: N raw WebSocket connections in one process.

    python bench/fanout_reader.py PORT N TIMEOUT_S

Run by ``bench/fanout.py`` as a separate process, so that reading costs the server's core
nothing. Opens N connections to ``ws://127.0.0.1:PORT/``, subscribes each to the book of
``binance:BTCUSDT`` and then only counts: it never decodes a frame. It looks for the end
marker ``bench-end-`` (the reason of a ``status`` message the server sends after each
measured round) and prints ``done K`` once every connection has received K markers.
Prints ``ready`` once connected. Exits when its stdin closes, a connection closes, or
TIMEOUT_S passes. Standard library only, loopback only.
"""

from __future__ import annotations

import base64
import os
import selectors
import socket
import sys
import time

MARKER = b"bench-end-"
SUBSCRIBE = b'{"op":"subscribe","symbols":["binance:BTCUSDT"],"channels":["book"]}'
RECV_BYTES = 1 << 18
#: A pass that read less than this naps before the next, so that the data accumulates and
#: the reader spends few wake-ups per byte (it must keep up with the server, not race it).
SMALL_PASS_BYTES = 64 * 1024
NAP_S = 0.0005


def masked_text_frame(payload: bytes) -> bytes:
    """A client text frame (clients must mask); payloads under 126 bytes only."""
    if len(payload) >= 126:
        raise ValueError("payload too long for this reader")
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + mask + body


def open_subscriber(port: int, deadline: float) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=max(0.1, deadline - time.time()))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("reader: connection closed during the handshake")
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"reader: handshake refused: {head[:80]!r}")
    sock.sendall(masked_text_frame(SUBSCRIBE))
    sock.setblocking(False)
    return sock, rest


def main(argv: list[str]) -> int:
    port, count, timeout_s = int(argv[0]), int(argv[1]), float(argv[2])
    deadline = time.time() + timeout_s
    socks: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    markers = [0] * count
    tails = [b""] * count
    try:
        for index in range(count):
            sock, rest = open_subscriber(port, deadline)
            socks.append(sock)
            markers[index] += rest.count(MARKER)
            tails[index] = rest[-(len(MARKER) - 1) :]
            selector.register(sock, selectors.EVENT_READ, index)
        selector.register(sys.stdin, selectors.EVENT_READ, -1)
        print("ready", flush=True)
        reported = 0
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                print("reader: timeout", file=sys.stderr, flush=True)
                return 1
            pass_bytes = 0
            for key, _ in selector.select(min(remaining, 1.0)):
                index = key.data
                if index < 0:
                    if not os.read(sys.stdin.fileno(), 4096):
                        return 0  # the benchmark closed our stdin: stop
                    continue
                try:
                    data = socks[index].recv(RECV_BYTES)
                except BlockingIOError:
                    continue
                if not data:
                    print(f"reader: connection {index} closed", file=sys.stderr, flush=True)
                    return 1
                pass_bytes += len(data)
                window = tails[index] + data
                markers[index] += window.count(MARKER)
                tails[index] = window[-(len(MARKER) - 1) :]
            done = min(markers)
            while reported < done:
                reported += 1
                print(f"done {reported}", flush=True)
            if 0 < pass_bytes < SMALL_PASS_BYTES:
                time.sleep(NAP_S)
    finally:
        selector.close()
        for sock in socks:
            sock.close()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
