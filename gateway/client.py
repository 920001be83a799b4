"""The Python client for strategies, at its public import path.

``from gateway.client import GatewayClient``; the implementation is :mod:`gateway.io.client`.
"""

from gateway.io.client import BookUpdate, ClientStats, GatewayClient, GatewayError

__all__ = ["BookUpdate", "ClientStats", "GatewayClient", "GatewayError"]
