"""Every state machine of the cores against its spec, written beside the scenarios that
drive it: the table is exactly the spec, and every pair the spec leaves out is an error."""

from __future__ import annotations

import enum

import pytest

from gateway.core.transitions import UndefinedTransition
from gateway.core.transitions import transition

from .state_tables import Spec
from .test_backoff import HEALTH_SPEC
from .test_flow import FLOW_SPEC
from .test_renewal import RENEWAL_SPEC
from .test_replicated_states import OUTPUT_SPEC
from .test_replicated_states import REPLICA_SPEC
from .test_score import REPLACE_SPEC
from .test_score import STANDBY_SPEC
from .test_sequenced_connections import PLACEMENT_SPEC
from .test_sequenced_connections import TRUST_SPEC
from .test_sequenced_states import STATUS_SPEC
from .test_sequenced_states import SYNC_SPEC
from .test_subscriber import SUBSCRIBER_SPEC

#: The machines that look their table up with :func:`transition`.
BY_TRANSITION = [
    HEALTH_SPEC,
    RENEWAL_SPEC,
    REPLICA_SPEC,
    OUTPUT_SPEC,
    REPLACE_SPEC,
    STANDBY_SPEC,
    SYNC_SPEC,
    STATUS_SPEC,
    PLACEMENT_SPEC,
    TRUST_SPEC,
]
#: The flow and the subscriber's book raise errors of their own: their tests drive them.
SPECS = [*BY_TRANSITION, FLOW_SPEC, SUBSCRIBER_SPEC]


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.machine)
def test_the_table_is_exactly_its_spec(spec: Spec) -> None:
    assert dict(spec.table) == spec.expected


@pytest.mark.parametrize(
    ("spec", "state", "event"),
    [(spec, *pair) for spec in BY_TRANSITION for pair in spec.undefined()],
    ids=lambda x: x.machine if isinstance(x, Spec) else x.name,
)
def test_each_pair_left_out_is_an_error(spec: Spec, state: enum.Enum, event: enum.Enum) -> None:
    expected = f"{spec.machine}: no transition for {event.name} in state {state.name}"
    with pytest.raises(UndefinedTransition) as raised:
        transition(spec.machine, spec.table, state, event)
    assert str(raised.value) == expected
