"""One endpoint's copies mangled for a while (docs/faults.md ``mangle``: the last id 10^12
ahead), on each sequenced venue's real wire and link rule (:mod:`tests.feeds.venue_copies`):
while another connection keeps the book consistent, the bad copies cost that connection
(counted, reconnected), never the book a resync; on the only connection, a resync, never a
wrong ``live`` book."""

from __future__ import annotations

import pytest

from gateway.core.model import SymbolState

from .venue_copies import INTERVAL_NS
from .venue_copies import VENUES
from .venue_copies import CopiesRun
from .venue_copies import Reconnects
from .venue_copies import Window
from .venue_copies import make_venue

#: The venue's steps; endpoint 0 mangles every copy it sends from step 20 to step 70 (1 s).
STEPS = 100
MANGLED = Window(0, 20 * INTERVAL_NS, 70 * INTERVAL_NS)
#: Endpoint 0 first with every frame (the others 10 ms later), or last.
LAGS = {"mangled first": (0, 10_000_000, 10_000_000), "mangled last": (10_000_000, 0, 5_000_000)}


@pytest.mark.parametrize("reconnects", ["none", "reopen", "renew"])
@pytest.mark.parametrize("order", list(LAGS))
@pytest.mark.parametrize("venue", VENUES)
def test_one_mangled_connection_of_three_costs_the_book_no_resync(
    venue: str, order: str, reconnects: Reconnects
) -> None:
    run = CopiesRun(make_venue(venue), LAGS[order], (MANGLED,), reconnects)
    run.play(STEPS)
    arb = run.arb
    assert (arb.stats.resyncs, arb.stats.gaps, arb.stats.venue_resets) == (0, 0, 0)
    assert run.statuses == [(run.statuses[0][0], SymbolState.LIVE, "snapshot applied")]
    assert run.wrong_live == 0 and arb.state is SymbolState.LIVE and run.is_true()
    # Blamed on endpoint 0's connections only, and they were asked to reconnect.
    blamed = {run.endpoint_of(c) for c, s in arb.stats.connections.items() if s.disagreements}
    assert blamed == {0} and set(run.reconnects_wanted) == {0}
    assert arb.stats.confirmed == 0 and arb.pending == 0


@pytest.mark.parametrize("venue", VENUES)
def test_a_mangled_only_connection_resyncs_and_never_serves_a_wrong_book(venue: str) -> None:
    run = CopiesRun(make_venue(venue), (0,), (MANGLED,), "reopen")
    run.play(STEPS)
    arb = run.arb
    assert arb.stats.resyncs >= 1
    assert run.wrong_live == 0 and arb.state is SymbolState.LIVE and run.is_true()
