"""The recovery rings: one symbol's recent book deltas or trades, for subscribers that
reconnect. Pure.

The fan-out appends every published :class:`~gateway.wire.protocol.Delta` of a symbol to
its book's :class:`RecoveryRing` (the message object it built for the live subscribers, not
a copy) and restarts that ring at each new epoch; every published
:class:`~gateway.wire.protocol.TradeMsg` goes to the symbol's trade ring, whose epoch is
the gateway process's trade epoch (one per process, never restarted). A reconnecting
subscriber names the ``(epoch, seq)`` its stream stands at; :meth:`RecoveryRing.since`
returns every message after it, or None when any of them is gone (another epoch, evicted,
or a position the ring never had): recovery is all or nothing.

Bounds: entries older than ``max_age_s`` are evicted, and the oldest ones while the ring
holds more than ``max_bytes``. An entry costs :func:`message_cost` (an estimate of the
memory a stored message holds: the message object with its strings and numbers, and its
ring entry) plus the recovered frames cached on it. Frames are encoded only
when a subscriber recovers, once per wire format (:meth:`RecoveryRing.frame`), so that the
live path pays nothing for them and a burst of reconnections encodes each message once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final
from typing import Generic
from typing import NamedTuple
from typing import TypeVar

import msgspec

from gateway.wire.protocol import Delta
from gateway.wire.protocol import TradeMsg

# Measured with tracemalloc on CPython 3.11 (tests/gateway/wire/test_recovery.py holds the
# estimate within a quarter of what a ring of real messages takes).
#: The cost of a delta besides its levels: the object, its numbers, its ring entry (the
#: entry, its frames' dict, its place in the deque).
DELTA_BASE_COST: Final = 512
#: The cost of one level besides its strings' characters: the tuple, its place in the
#: side's tuple and two string headers.
LEVEL_COST: Final = 160
#: The cost of a trade besides its price and quantity strings' characters: the object,
#: its numbers, two string headers and its ring entry.
TRADE_BASE_COST: Final = 576

#: What a ring holds: one stream's messages, each with an ``(epoch, seq)`` and a
#: ``recovered`` mark.
M = TypeVar("M", Delta, TradeMsg)


def delta_cost(msg: Delta) -> int:
    """Estimated bytes a stored delta holds (the object, its levels and strings)."""
    cost = DELTA_BASE_COST
    for side in (msg.bids, msg.asks):
        for price, qty in side:
            cost += LEVEL_COST + len(price) + len(qty)
    return cost


def message_cost(msg: Delta | TradeMsg) -> int:
    """Estimated bytes a stored message holds: :func:`delta_cost` for a delta."""
    if isinstance(msg, Delta):
        return delta_cost(msg)
    return TRADE_BASE_COST + len(msg.price) + len(msg.qty)


def recovered_copy(msg: M) -> M:
    """The message as re-sent on recovery: ``recovered`` true, everything else equal."""
    return msgspec.structs.replace(msg, recovered=True)


class RingEntry(Generic[M]):
    """One stored message, when it was stored, its cost and its recovered frames."""

    __slots__ = ("cost", "frames", "held", "msg", "stored_s")

    def __init__(self, msg: M, stored_s: float) -> None:
        self.msg: M = msg
        self.stored_s = stored_s
        self.cost = message_cost(msg)
        #: False once evicted: its frames are no longer counted.
        self.held = True
        #: Recovered frames by wire format (False: JSON, True: MessagePack), built lazily.
        self.frames: dict[bool, bytes] = {}


class RecoveryRing(Generic[M]):
    """One symbol's stream (book deltas, or trades) in its current epoch, bounded by bytes
    and by age. Invariants: the entries' seqs are consecutive, ``floor_seq + 1`` to
    ``last_seq``, all of ``epoch``; :attr:`bytes` is their cost, at most ``max_bytes`` after
    every call.

    ``epoch`` is None until the first :meth:`restart`. The ring can serve any position
    from :attr:`floor_seq` (the seq before its oldest entry) to :attr:`last_seq`.
    """

    __slots__ = (
        "bytes",
        "entries",
        "epoch",
        "evicted",
        "floor_seq",
        "last_seq",
        "max_age_s",
        "max_bytes",
    )

    def __init__(self, max_bytes: int, max_age_s: float) -> None:
        if max_bytes < 0 or max_age_s < 0:
            raise ValueError("max_bytes >= 0 and max_age_s >= 0")
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.epoch: int | None = None
        self.floor_seq = 0
        self.last_seq = 0
        self.entries: deque[RingEntry[M]] = deque()
        #: Bytes held: the entries' costs and their cached frames.
        self.bytes = 0
        #: Entries evicted (by age or bytes) over the ring's life.
        self.evicted = 0

    def restart(self, epoch: int, seq: int) -> None:
        """A new epoch starts at ``seq`` (a snapshot): what was held is dropped."""
        self.entries.clear()
        self.bytes = 0
        self.epoch = epoch
        self.floor_seq = self.last_seq = seq

    def append(self, msg: M, now_s: float) -> None:
        """Store the next message of the stream. A message that does not follow (another epoch
        or a seq not ``last_seq + 1``) restarts the ring after it: nothing before it can be
        recovered."""
        if msg.epoch != self.epoch or msg.seq != self.last_seq + 1:
            self.restart(msg.epoch, msg.seq)
            return
        entry = RingEntry(msg, now_s)
        self.entries.append(entry)
        self.bytes += entry.cost
        self.last_seq = msg.seq
        self.evict(now_s)

    def since(self, epoch: int, seq: int, now_s: float) -> list[RingEntry[M]] | None:
        """Every message after ``(epoch, seq)``, in order (empty when nothing was missed), or
        None when the ring cannot serve that position completely."""
        self.evict(now_s)
        if epoch != self.epoch or not self.floor_seq <= seq <= self.last_seq:
            return None
        skip = seq - self.floor_seq
        return [self.entries[i] for i in range(skip, len(self.entries))]

    def frame(self, entry: RingEntry[M], msgpack: bool, build: Callable[[M], bytes]) -> bytes:
        """The entry's recovered frame in one wire format: ``build(recovered_copy(msg))``,
        cached on the entry and counted in :attr:`bytes` (which may evict older entries)."""
        frame = entry.frames.get(msgpack)
        if frame is None:
            frame = entry.frames[msgpack] = build(recovered_copy(entry.msg))
            if entry.held:  # charged while held (an evicted entry is freed with its caller)
                entry.cost += len(frame)
                self.bytes += len(frame)
                self._evict_bytes()
        return frame

    def evict(self, now_s: float) -> None:
        """Drop the entries older than ``max_age_s``, then the oldest beyond ``max_bytes``."""
        entries = self.entries
        horizon = now_s - self.max_age_s
        while entries and entries[0].stored_s < horizon:
            self._pop()
        self._evict_bytes()

    def _evict_bytes(self) -> None:
        while self.entries and self.bytes > self.max_bytes:
            self._pop()

    def _pop(self) -> None:
        entry = self.entries.popleft()
        self.bytes -= entry.cost
        self.floor_seq = entry.msg.seq
        entry.held = False
        self.evicted += 1


#: Bits of an instance's random nonce, its epoch base: a process's book epochs count up
#: from it (+ 1 per rebuild), so they stay below 2**53 (JSON-safe) however long it runs.
INSTANCE_NONCE_BITS: Final = 52


class GatewayInstance(NamedTuple):
    """One gateway process: ``id`` names it to subscribers (``subscribed.instance``);
    every book's epochs count up from ``epoch_base``, and every trade stream's epoch is
    ``epoch_base`` itself (book and trade positions are never compared with each other)."""

    id: str
    epoch_base: int


def new_instance(start_ns: int, nonce: int) -> GatewayInstance:
    """The instance started at wall clock ``start_ns`` (ns since the Unix epoch, shown in
    the id for people) with a random ``nonce`` of :data:`INSTANCE_NONCE_BITS` bits.

    Epochs come from the nonce alone, not the clock (a clock stepped back across a restart
    would repeat them). Clients only compare epochs for equality: an epoch a later process
    reaches equals a given earlier one with a chance of one in 2**52.
    """
    base = nonce & ((1 << INSTANCE_NONCE_BITS) - 1)
    return GatewayInstance(f"{start_ns:x}-{base:013x}", base)
