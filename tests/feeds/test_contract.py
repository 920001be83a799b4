"""The contract every venue parser keeps (rule 7): a frame or a REST book body that breaks
the venue's contract raises VenueContractError and nothing else; mutated real frames and
arbitrary bytes give events of the parser's types or that error; a price or quantity
outside the venue's decimal grammar is that error, never an event, and the venue's real
number forms are kept exactly. Each venue's test module declares its
:class:`~tests.feeds.fuzzing.ParserContract`; the tests run over all of them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from gateway.core.model import DepthDiff
from gateway.core.model import DepthSnapshot
from gateway.core.model import VenueContractError

from . import test_binance
from . import test_binance_coinm
from . import test_binance_usdm
from . import test_bybit
from . import test_coinbase
from . import test_kraken
from . import test_okx
from .fuzzing import NON_DECIMALS
from .fuzzing import NOT_DECIMALS
from .fuzzing import ParserContract
from .fuzzing import RealData
from .fuzzing import event_numbers
from .fuzzing import mutated
from .fuzzing import with_number

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


# --- numbers: the venue's decimal grammar ---------------------------------------------------


@pytest.mark.parametrize(
    ("contract", "text"),
    [
        pytest.param(contract, text, id=f"{name}-{text}")
        for name, contract in CONTRACTS.items()
        for text in contract.numbers.real
    ],
)
def test_the_venue_s_real_number_forms_are_kept_exactly(
    contract: ParserContract, text: str
) -> None:
    numbers = contract.numbers
    frames = [(numbers.with_qty(text), 1)]
    if Decimal(text) > 0:
        frames.append((numbers.with_price(text), 0))
    for frame, field in frames:
        events = contract.parse(frame, 1, 0)
        (book,) = [e for e in events if isinstance(e, DepthDiff | DepthSnapshot)]
        assert text in {level[field] for level in book.bids + book.asks}


@pytest.mark.parametrize(
    ("contract", "text"),
    [
        pytest.param(contract, text, id=f"{name}-{text!a}")
        for name, contract in CONTRACTS.items()
        for text in (*NOT_DECIMALS, *contract.numbers.refused)
    ],
)
def test_numbers_outside_the_venue_grammar_raise_the_contract_error(
    contract: ParserContract, text: str
) -> None:
    numbers = contract.numbers
    assert contract.parse(numbers.frame, 1, 0), "the unspoilt frame gives an event"
    for frame in (numbers.with_price(text), numbers.with_qty(text)):
        with pytest.raises(VenueContractError):
            contract.parse(frame, 1, 0)


@EACH
@pytest.mark.parametrize("zero", ["0", "0.0", "0.00000000"])
def test_a_zero_price_raises_the_contract_error(contract: ParserContract, zero: str) -> None:
    with pytest.raises(VenueContractError):
        contract.parse(contract.numbers.with_price(zero), 1, 0)


_NUMBERED: dict[int, list[tuple[bytes, str]]] = {}


def _numbered_frames(contract: ParserContract, real_data: RealData) -> list[tuple[bytes, str]]:
    """``(frame, number)`` for each seed frame that parses to events and each price or
    quantity of those events found in the frame."""
    key = id(contract)
    if key not in _NUMBERED:
        found: list[tuple[bytes, str]] = []
        json_numbers = contract.numbers.json_numbers
        for frame in (contract.numbers.frame, *contract.seeds(real_data)):
            try:
                events = contract.parse(frame, 1, 0)
            except VenueContractError:
                continue
            for number in sorted(event_numbers(events)):
                if with_number(frame, number, "1", json_numbers) is not None:
                    found.append((frame, number))
        _NUMBERED[key] = found
    return _NUMBERED[key]


@EACH
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_non_decimal_numbers_in_valid_frames_raise_the_contract_error(
    contract: ParserContract, real_data: RealData, data: st.DataObject
) -> None:
    frame, number = data.draw(st.sampled_from(_numbered_frames(contract, real_data)))
    text = data.draw(NON_DECIMALS)
    spoilt = with_number(frame, number, text, contract.numbers.json_numbers)
    assert spoilt is not None
    with pytest.raises(VenueContractError):
        contract.parse(spoilt, 1, 0)
