"""The ``POST /orders`` body schema, rule by rule, both ways."""

from decimal import Decimal
from typing import Any

import pytest
from marshmallow import ValidationError

from orders_api.api.request_schemas import (
    MAX_LIMIT_PRICE,
    MAX_QUANTITY,
    ORDER_TYPES,
    SIDES,
    OrderRequestSchema,
)

pytestmark = pytest.mark.unit

MARKET = {"type": "market", "side": "buy", "instrument": "US0378331005", "quantity": 10}
LIMIT = {**MARKET, "type": "limit", "side": "sell", "limit_price": "150.50"}
LOADED_KEYS = {"type", "side", "instrument", "quantity", "limit_price"}


def changed(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Return a copy of ``base`` with some fields replaced or added."""
    return {**base, **changes}


def without(base: dict[str, Any], field: str) -> dict[str, Any]:
    """Return a copy of ``base`` with one field left out."""
    return {key: value for key, value in base.items() if key != field}


def load_errors(payload: Any) -> dict[str, Any]:
    """Load ``payload`` expecting a rejection, and return the per-field messages."""
    with pytest.raises(ValidationError) as excinfo:
        OrderRequestSchema().load(payload)
    messages = excinfo.value.messages
    assert isinstance(messages, dict)
    return messages


VALID_ORDERS = [
    pytest.param(MARKET, None, id="market order without a price"),
    pytest.param(changed(MARKET, limit_price=None), None, id="market order with a null price"),
    pytest.param(changed(MARKET, side="sell"), None, id="market sell order"),
    pytest.param(changed(LIMIT, limit_price=150.5), Decimal("150.50"), id="limit price as json float 150.5"),
    pytest.param(LIMIT, Decimal("150.50"), id="limit price as string 150.50"),
    pytest.param(changed(LIMIT, limit_price=150), Decimal("150.00"), id="limit price as json integer 150"),
    pytest.param(changed(LIMIT, limit_price=150.0), Decimal("150.00"), id="limit price as json float 150.0"),
    pytest.param(changed(LIMIT, limit_price="0.01"), Decimal("0.01"), id="limit price of one cent"),
    pytest.param(changed(LIMIT, limit_price="150"), Decimal("150.00"), id="limit price as whole string"),
    pytest.param(
        changed(LIMIT, limit_price="150.500"), Decimal("150.50"), id="limit price whose third place is zero"
    ),
    pytest.param(
        changed(LIMIT, limit_price=str(MAX_LIMIT_PRICE)), MAX_LIMIT_PRICE, id="limit price at the cap"
    ),
    pytest.param(changed(LIMIT, side="buy"), Decimal("150.50"), id="limit buy order"),
    pytest.param(changed(MARKET, quantity=1), None, id="quantity of one"),
    pytest.param(changed(MARKET, quantity=MAX_QUANTITY), None, id="quantity at the cap"),
    pytest.param(changed(MARKET, instrument="000000000000"), None, id="instrument of digits only"),
    pytest.param(changed(MARKET, instrument="ABCDEFGHIJKL"), None, id="instrument of letters only"),
]


@pytest.mark.parametrize(("payload", "expected_price"), VALID_ORDERS)
def test_accepts_a_well_formed_order_and_loads_exact_types(
    payload: dict[str, Any], expected_price: Decimal | None
) -> None:
    result = OrderRequestSchema().load(payload)

    assert result == {**without(payload, "limit_price"), "limit_price": expected_price}
    assert set(result) == LOADED_KEYS
    assert type(result["quantity"]) is int
    if expected_price is None:
        assert result["limit_price"] is None
    else:
        assert type(result["limit_price"]) is Decimal


INVALID_ORDERS = [
    # Required fields.
    pytest.param(without(MARKET, "type"), {"type"}, id="type missing"),
    pytest.param(without(MARKET, "side"), {"side"}, id="side missing"),
    pytest.param(without(MARKET, "instrument"), {"instrument"}, id="instrument missing"),
    pytest.param(without(MARKET, "quantity"), {"quantity"}, id="quantity missing"),
    # type
    pytest.param(changed(MARKET, type="stop"), {"type"}, id="type not an order type"),
    pytest.param(changed(MARKET, type="Market"), {"type"}, id="type in the wrong case"),
    pytest.param(changed(MARKET, type=1), {"type"}, id="type not a string"),
    pytest.param(changed(MARKET, type=None), {"type"}, id="type null"),
    pytest.param(changed(MARKET, type=["market"]), {"type"}, id="type a list"),
    # side
    pytest.param(changed(MARKET, side="hold"), {"side"}, id="side not a side"),
    pytest.param(changed(MARKET, side="BUY"), {"side"}, id="side in the wrong case"),
    pytest.param(changed(MARKET, side=True), {"side"}, id="side a boolean"),
    pytest.param(changed(MARKET, side=None), {"side"}, id="side null"),
    # instrument
    pytest.param(changed(MARKET, instrument="US037833100"), {"instrument"}, id="instrument of 11 chars"),
    pytest.param(changed(MARKET, instrument="US03783310055"), {"instrument"}, id="instrument of 13 chars"),
    pytest.param(changed(MARKET, instrument="us0378331005"), {"instrument"}, id="instrument in lowercase"),
    pytest.param(changed(MARKET, instrument="US 378331005"), {"instrument"}, id="instrument with a space"),
    pytest.param(changed(MARKET, instrument="US037833100\n"), {"instrument"}, id="instrument with a newline"),
    pytest.param(changed(MARKET, instrument="US037833100É"), {"instrument"}, id="instrument with non ascii"),
    pytest.param(changed(MARKET, instrument=""), {"instrument"}, id="instrument empty"),
    pytest.param(changed(MARKET, instrument=378331005123), {"instrument"}, id="instrument not a string"),
    pytest.param(changed(MARKET, instrument=None), {"instrument"}, id="instrument null"),
    # quantity
    pytest.param(changed(MARKET, quantity=0), {"quantity"}, id="quantity zero"),
    pytest.param(changed(MARKET, quantity=-1), {"quantity"}, id="quantity negative"),
    pytest.param(changed(MARKET, quantity=1.5), {"quantity"}, id="quantity fractional"),
    pytest.param(changed(MARKET, quantity=5.0), {"quantity"}, id="quantity a whole float"),
    pytest.param(changed(MARKET, quantity="5"), {"quantity"}, id="quantity a numeric string"),
    pytest.param(changed(MARKET, quantity=True), {"quantity"}, id="quantity true"),
    pytest.param(changed(MARKET, quantity=False), {"quantity"}, id="quantity false"),
    pytest.param(changed(MARKET, quantity=None), {"quantity"}, id="quantity null"),
    pytest.param(changed(MARKET, quantity=MAX_QUANTITY + 1), {"quantity"}, id="quantity over the cap"),
    pytest.param(changed(MARKET, quantity=2**63), {"quantity"}, id="quantity beyond bigint"),
    # limit_price on a limit order
    pytest.param(without(LIMIT, "limit_price"), {"limit_price"}, id="limit price missing on limit"),
    pytest.param(changed(LIMIT, limit_price=None), {"limit_price"}, id="limit price null on limit"),
    pytest.param(changed(LIMIT, limit_price=0), {"limit_price"}, id="limit price zero"),
    pytest.param(changed(LIMIT, limit_price="0.00"), {"limit_price"}, id="limit price zero string"),
    pytest.param(changed(LIMIT, limit_price=-1), {"limit_price"}, id="limit price negative"),
    pytest.param(changed(LIMIT, limit_price="-1.00"), {"limit_price"}, id="limit price negative string"),
    pytest.param(changed(LIMIT, limit_price=150.505), {"limit_price"}, id="limit price with 3 places"),
    pytest.param(changed(LIMIT, limit_price="150.505"), {"limit_price"}, id="limit price string 3 places"),
    pytest.param(changed(LIMIT, limit_price=0.001), {"limit_price"}, id="limit price below a cent"),
    pytest.param(changed(LIMIT, limit_price=0.1 + 0.2), {"limit_price"}, id="limit price float artefact"),
    pytest.param(changed(LIMIT, limit_price="abc"), {"limit_price"}, id="limit price not a number"),
    pytest.param(changed(LIMIT, limit_price=""), {"limit_price"}, id="limit price empty string"),
    pytest.param(changed(LIMIT, limit_price=" 150.50"), {"limit_price"}, id="limit price with a space"),
    pytest.param(changed(LIMIT, limit_price="+150.50"), {"limit_price"}, id="limit price with a plus"),
    pytest.param(changed(LIMIT, limit_price="1_500"), {"limit_price"}, id="limit price with underscore"),
    pytest.param(changed(LIMIT, limit_price="1.5e2"), {"limit_price"}, id="limit price with exponent"),
    pytest.param(changed(LIMIT, limit_price="150."), {"limit_price"}, id="limit price with bare point"),
    pytest.param(changed(LIMIT, limit_price="NaN"), {"limit_price"}, id="limit price string NaN"),
    pytest.param(changed(LIMIT, limit_price="Infinity"), {"limit_price"}, id="limit price string Infinity"),
    pytest.param(changed(LIMIT, limit_price=float("nan")), {"limit_price"}, id="limit price float nan"),
    pytest.param(changed(LIMIT, limit_price=float("inf")), {"limit_price"}, id="limit price float inf"),
    pytest.param(changed(LIMIT, limit_price=float("-inf")), {"limit_price"}, id="limit price float -inf"),
    pytest.param(changed(LIMIT, limit_price="1e309"), {"limit_price"}, id="limit price string 1e309"),
    pytest.param(changed(LIMIT, limit_price=True), {"limit_price"}, id="limit price true"),
    pytest.param(changed(LIMIT, limit_price=False), {"limit_price"}, id="limit price false"),
    pytest.param(changed(LIMIT, limit_price=[150]), {"limit_price"}, id="limit price a list"),
    pytest.param(
        changed(LIMIT, limit_price=str(MAX_LIMIT_PRICE + Decimal("0.01"))),
        {"limit_price"},
        id="limit price over the cap",
    ),
    pytest.param(changed(LIMIT, limit_price=10**10), {"limit_price"}, id="limit price 11 integer digits"),
    pytest.param(changed(LIMIT, limit_price=1e20), {"limit_price"}, id="limit price huge float"),
    pytest.param(changed(LIMIT, limit_price=10**50), {"limit_price"}, id="limit price huge integer"),
    # limit_price on a market order
    pytest.param(changed(MARKET, limit_price=10), {"limit_price"}, id="price 10 on market"),
    pytest.param(changed(MARKET, limit_price=0), {"limit_price"}, id="price 0 on market"),
    pytest.param(changed(MARKET, limit_price="0"), {"limit_price"}, id="price string 0 on market"),
    pytest.param(changed(MARKET, limit_price="150.50"), {"limit_price"}, id="price string on market"),
    pytest.param(changed(MARKET, limit_price="abc"), {"limit_price"}, id="invalid price on market"),
    # Unknown fields.
    pytest.param(changed(MARKET, stop_price="1.00"), {"stop_price"}, id="unknown field"),
    pytest.param(changed(MARKET, limitprice="1.00"), {"limitprice"}, id="misspelt limit price"),
    pytest.param(changed(MARKET, a=1, b=2), {"a", "b"}, id="two unknown fields"),
    # Several faults at once.
    pytest.param({}, {"type", "side", "instrument", "quantity"}, id="empty object"),
    pytest.param(
        {"type": "limit", "side": "hold", "instrument": "x", "quantity": 0},
        {"side", "instrument", "quantity", "limit_price"},
        id="limit order with every other field wrong",
    ),
    pytest.param(
        {"type": "market", "side": "buy", "instrument": "x", "quantity": "5", "limit_price": 1},
        {"instrument", "quantity", "limit_price"},
        id="market order with price and bad fields",
    ),
    pytest.param(
        {"type": "stop", "side": "up", "instrument": 1, "quantity": True, "limit_price": "abc", "tif": "day"},
        {"type", "side", "instrument", "quantity", "limit_price", "tif"},
        id="every field wrong plus an unknown one",
    ),
    pytest.param(
        changed(MARKET, type="stop", limit_price="10.00"), {"type"}, id="bad type skips the price rule"
    ),
]


@pytest.mark.parametrize(("payload", "fields_at_fault"), INVALID_ORDERS)
def test_rejects_an_invalid_order_naming_exactly_the_fields_at_fault(
    payload: dict[str, Any], fields_at_fault: set[str]
) -> None:
    messages = load_errors(payload)

    assert set(messages) == fields_at_fault
    for field in fields_at_fault:
        assert messages[field], f"no message for {field}"
        assert all(isinstance(message, str) and message for message in messages[field])


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param([], id="empty list"),
        pytest.param([MARKET], id="list of orders"),
        pytest.param("market", id="string"),
        pytest.param(10, id="number"),
        pytest.param(True, id="boolean"),
        pytest.param(None, id="null"),
    ],
)
def test_rejects_a_body_that_is_not_a_json_object(payload: Any) -> None:
    assert set(load_errors(payload)) == {"_schema"}


def test_loads_a_json_float_price_as_the_exact_decimal_the_client_wrote() -> None:
    result = OrderRequestSchema().load(changed(LIMIT, limit_price=150.5))

    assert result["limit_price"] == Decimal("150.50")
    assert isinstance(result["limit_price"], Decimal)
    assert not isinstance(result["limit_price"], float)
    assert str(result["limit_price"]) == "150.50"


def test_loads_a_float_price_without_binary_float_noise() -> None:
    # Decimal(0.07) would be 0.07000000000000000666...; the client meant 0.07.
    result = OrderRequestSchema().load(changed(LIMIT, limit_price=0.07))

    assert result["limit_price"] == Decimal("0.07")


def test_always_returns_the_limit_price_key_for_market_orders() -> None:
    assert OrderRequestSchema().load(MARKET)["limit_price"] is None


def test_reports_a_price_on_a_market_order_as_not_allowed() -> None:
    for price in (10, 0, "0"):
        messages = load_errors(changed(MARKET, limit_price=price))

        assert any("not allowed for market orders" in message.lower() for message in messages["limit_price"])


def test_reports_a_missing_or_null_price_on_a_limit_order_as_required() -> None:
    for payload in (without(LIMIT, "limit_price"), changed(LIMIT, limit_price=None)):
        assert load_errors(payload) == {"limit_price": ["Required for limit orders."]}


def test_does_not_call_an_invalid_limit_price_missing() -> None:
    messages = load_errors(changed(LIMIT, limit_price="abc"))

    assert messages["limit_price"] == [
        'Not a valid decimal number: send a JSON number or a string such as "150.50".'
    ]


@pytest.mark.parametrize(
    ("price", "message"),
    [
        pytest.param(0, "Must be greater than 0.", id="zero"),
        pytest.param(150.505, "Must have at most 2 decimal places.", id="three places"),
        pytest.param(float("nan"), "Must be a finite number (NaN and Infinity are not allowed).", id="nan"),
        pytest.param(10**10, "Must be less than or equal to 9999999999.99.", id="over the cap"),
    ],
)
def test_explains_why_a_limit_price_is_rejected(price: object, message: str) -> None:
    assert load_errors(changed(LIMIT, limit_price=price)) == {"limit_price": [message]}


def test_explains_the_instrument_format_when_it_is_rejected() -> None:
    messages = load_errors(changed(MARKET, instrument="us0378331005"))

    assert messages == {
        "instrument": ["Must be 12 characters, uppercase letters A-Z and digits 0-9 only (ISIN format)."]
    }


def test_names_the_allowed_values_when_an_enum_is_wrong() -> None:
    messages = load_errors(changed(MARKET, type="stop", side="hold"))

    assert messages == {"type": ["Must be one of: market, limit."], "side": ["Must be one of: buy, sell."]}
    assert ORDER_TYPES == ("market", "limit")
    assert SIDES == ("buy", "sell")


def test_rejects_an_unknown_field_under_its_own_name() -> None:
    assert load_errors(changed(MARKET, stop_price="1.00")) == {"stop_price": ["Unknown field."]}
