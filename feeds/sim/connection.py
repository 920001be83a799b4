"""The values a simulated venue's protocol (:mod:`feeds.sim.venue`) and its shell exchange:
a connection's state, a rendered message, a refusal, a REST answer. Pure."""

from __future__ import annotations

from typing import Final
from typing import NamedTuple

#: Content type of a JSON REST answer.
JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"


class ConnState:
    """Per-connection state kept by the protocol: the request path, the subscription keys
    it receives, a counter for venues that number the messages of a connection, and free
    ``extra``."""

    __slots__ = ("extra", "path", "seq", "subs")

    def __init__(self, path: str) -> None:
        self.path = path
        self.subs: set[str] = set()
        self.seq = 0
        self.extra: dict[str, object] = {}

    def update_subscription(self, key: str, subscribe: bool) -> bool:
        """Adds ``key`` to the subscriptions (removes it when not ``subscribe``); True when
        it was not subscribed before, so the venue sends a fresh snapshot."""
        if not subscribe:
            self.subs.discard(key)
            return False
        fresh = key not in self.subs
        self.subs.add(key)
        return fresh


class Publication:
    """One rendered venue message for the connections subscribed to ``key``.

    ``frame`` is sent as is, unless the protocol frames per connection (then ``frame`` and
    ``tail`` are the parts around the per-connection field)."""

    __slots__ = ("frame", "key", "tail")

    def __init__(self, key: str, frame: bytes, tail: bytes = b"") -> None:
        self.key = key
        self.frame = frame
        self.tail = tail


class CloseConnection(Exception):
    """Raised by :meth:`VenueProtocol.on_open` or :meth:`VenueProtocol.on_message` to close
    the connection with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class RestAnswer(NamedTuple):
    """An HTTP answer: status, body, extra headers and the body's content type."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = JSON_CONTENT_TYPE
