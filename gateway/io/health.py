"""``GET /healthz``: whether the gateway serves enough live symbols, for a load balancer;
and :class:`HttpAnswer`, what an HTTP route on the subscriber port answers.

The rule: ``/healthz`` answers 503 when at least ``not_live_share`` of the symbols are not
``live`` (``server.healthz_not_live_share``, default 1.0: every symbol), 200 otherwise. The
body says which symbols are not live, their state and the reason they were last given.
"""

from __future__ import annotations

import http
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import NamedTuple

import msgspec
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from gateway.core.model import STARTING_REASON
from gateway.core.model import SymbolState
from gateway.wire.protocol import PROTOCOL_VERSION


class HttpAnswer(NamedTuple):
    """An HTTP route's answer: status, content type and body."""

    status: http.HTTPStatus
    content_type: str
    body: bytes

    def response(self, conn: ServerConnection) -> Response:
        """The answer as websockets' ``process_request`` returns it (the connection closes
        after it)."""
        response = conn.respond(self.status, "")
        response.body = self.body
        for name, value in (
            ("Content-Length", str(len(self.body))),
            ("Content-Type", self.content_type),
        ):
            del response.headers[name]
            response.headers[name] = value
        return response


#: A GET route served on the subscriber port: called once per request.
HttpRoute = Callable[[], HttpAnswer]


class Health(NamedTuple):
    """The ``/healthz`` verdict and the document that explains it."""

    healthy: bool
    document: dict[str, object]

    def answer(self) -> HttpAnswer:
        """The ``/healthz`` answer: 200 when healthy, 503 otherwise."""
        status = http.HTTPStatus.OK if self.healthy else http.HTTPStatus.SERVICE_UNAVAILABLE
        return HttpAnswer(status, "application/json", msgspec.json.encode(self.document))


def health_document(
    symbols: Iterable[tuple[str, SymbolState]],
    reasons: Mapping[str, str],
    subscribers: int,
    not_live_share: float,
    since_ns: Mapping[str, int] | None = None,
) -> Health:
    """Healthy unless at least ``not_live_share`` of ``symbols`` are not live (no
    symbols: healthy). ``reasons``: each symbol's last status reason (none yet:
    :data:`~gateway.core.model.STARTING_REASON`); ``since_ns``: when
    each entered its state (wall clock ns), where known."""
    states = list(symbols)
    since = since_ns or {}
    not_live: list[dict[str, object]] = []
    for key, state in states:
        if state != SymbolState.LIVE:
            entry: dict[str, object] = {
                "symbol": key,
                "state": state,
                "reason": reasons.get(key, STARTING_REASON),
            }
            if key in since:
                entry["since_ns"] = since[key]
            not_live.append(entry)
    healthy = not states or len(not_live) / len(states) < not_live_share
    return Health(
        healthy,
        {
            "status": "ok" if healthy else "unavailable",
            "protocol_version": PROTOCOL_VERSION,
            "subscribers": subscribers,
            "live": len(states) - len(not_live),
            "total": len(states),
            "not_live_share_limit": not_live_share,
            "not_live": not_live,
            "symbols": [{"symbol": key, "state": state} for key, state in states],
        },
    )
