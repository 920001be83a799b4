"""The contract every venue parser keeps (rule 7): a frame or a REST book body that breaks
the venue's contract raises VenueContractError and nothing else; mutated real frames and
arbitrary bytes give events of the parser's types or that error. Each venue's test module
declares its :class:`~tests.feeds.fuzzing.ParserContract`; the tests run over all of them."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.model import VenueContractError

from . import (
    test_binance,
    test_binance_coinm,
    test_binance_usdm,
    test_bybit,
    test_coinbase,
    test_kraken,
    test_okx,
)
from .fuzzing import ParserContract, RealData, mutated

CONTRACTS: dict[str, ParserContract] = {
    "binance": test_binance.CONTRACT,
    "binance-usdm": test_binance_usdm.CONTRACT,
    "binance-coinm": test_binance_coinm.CONTRACT,
    "bybit-spot": test_bybit.SPOT_CONTRACT,
    "bybit-linear": test_bybit.LINEAR_CONTRACT,
    "coinbase": test_coinbase.CONTRACT,
    "coinbase-exchange": test_coinbase.EXCHANGE_CONTRACT,
    "kraken": test_kraken.CONTRACT,
    "okx": test_okx.CONTRACT,
}
EACH = pytest.mark.parametrize("contract", list(CONTRACTS.values()), ids=list(CONTRACTS))


@pytest.mark.parametrize(
    ("contract", "frame"),
    [
        pytest.param(contract, frame, id=f"{name}-{index}")
        for name, contract in CONTRACTS.items()
        for index, frame in enumerate(contract.bad_frames)
    ],
)
def test_bad_frames_raise_the_one_contract_error(contract: ParserContract, frame: bytes) -> None:
    with pytest.raises(VenueContractError):
        contract.parse(frame, 1, 0)


@pytest.mark.parametrize(
    ("contract", "body"),
    [
        pytest.param(contract, body, id=f"{name}-{index}")
        for name, contract in CONTRACTS.items()
        for index, body in enumerate(contract.bad_snapshots)
    ],
)
def test_bad_snapshot_bodies_raise_the_one_contract_error(
    contract: ParserContract, body: bytes
) -> None:
    assert contract.snapshot is not None
    with pytest.raises(VenueContractError):
        contract.snapshot(body)


@EACH
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_real_frames_yield_events_or_the_contract_error(
    contract: ParserContract, real_data: RealData, data: st.DataObject
) -> None:
    contract.check(data.draw(mutated(contract.seeds(real_data))))


@EACH
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_yield_events_or_the_contract_error(
    contract: ParserContract, data: bytes
) -> None:
    contract.check(data)
