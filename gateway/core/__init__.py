"""The pure core: model, book, arbitration, the venue pipeline and the policies.

Nothing here does I/O or imports an event loop, a socket or a WebSocket library; every
input (frames, connection events, snapshots, the clock) is handed in and every output is
returned. ``tests/test_layering.py`` proves it.
"""
