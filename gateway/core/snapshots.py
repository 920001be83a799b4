"""Which REST snapshot attempt of each symbol is current. Pure: no I/O, no clock.

Each time a book wants a snapshot the pipeline starts a new attempt for its symbol
(:meth:`SnapshotAttempts.start`) and tags the fetch with its id. Fetches of different
symbols run concurrently and each retries on its own, so an answer can come back after a
newer attempt started (a second gap while the first fetch was retrying): only the answer
to the current attempt is used, once; any other is superseded and discarded, never applied.
"""

from __future__ import annotations


class SnapshotAttempts:
    """The current attempt id per symbol, and whether it was answered.

    Contract: :meth:`admit` is True at most once per attempt, and only for the attempt
    last returned by :meth:`start` for that symbol. Memory: one entry per symbol.
    """

    def __init__(self) -> None:
        #: Per symbol: the id of its current attempt, and whether it was answered.
        self._current: dict[str, tuple[int, bool]] = {}
        #: Answers discarded: to a superseded attempt, or a second answer to one attempt.
        self.superseded = 0

    def start(self, symbol: str) -> int:
        """A new attempt for ``symbol``; returns its id (1, 2, ... per symbol). Any
        earlier attempt of the symbol is superseded."""
        attempt = self._current.get(symbol, (0, False))[0] + 1
        self._current[symbol] = (attempt, False)
        return attempt

    def current(self, symbol: str) -> int | None:
        """The id of ``symbol``'s current attempt, or None when none was started."""
        entry = self._current.get(symbol)
        return None if entry is None else entry[0]

    def admit(self, symbol: str, attempt: int) -> bool:
        """An answer to ``attempt`` of ``symbol`` came back: True when it is to be used
        (the current attempt, not answered before); otherwise it is counted as superseded."""
        entry = self._current.get(symbol)
        if entry is None or entry != (attempt, False):
            self.superseded += 1
            return False
        self._current[symbol] = (attempt, True)
        return True
