"""The Python client for strategies, at its public import path.

``from gateway.client import GatewayClient, BookEvent, BboEvent, TradeEvent, StatusEvent``:
every name of :mod:`gateway.io.client`'s ``__all__``. The connections are
:mod:`gateway.io.client`, the events and books :mod:`gateway.wire.client_session`.
"""

from gateway.io.client import *  # noqa: F403
from gateway.io.client import __all__ as __all__
