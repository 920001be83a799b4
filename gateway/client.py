"""The Python client for strategies, at its public import path.

``from gateway.client import GatewayClient, BookEvent, BboEvent, TradeEvent, StatusEvent``;
the connection is :mod:`gateway.io.client`, the events and books :mod:`gateway.wire.client_session`.
"""

from gateway.io.client import (
    BboEvent,
    Book,
    BookEvent,
    ClientStats,
    Event,
    GatewayClient,
    GatewayError,
    Level,
    Side,
    StatusEvent,
    SymbolState,
    TradeEvent,
    subscribe,
)

__all__ = [
    "BboEvent",
    "Book",
    "BookEvent",
    "ClientStats",
    "Event",
    "GatewayClient",
    "GatewayError",
    "Level",
    "Side",
    "StatusEvent",
    "SymbolState",
    "TradeEvent",
    "subscribe",
]
