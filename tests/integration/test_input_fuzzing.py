"""POST /orders against hostile and random input, on the real app with PostgreSQL and RabbitMQ up.

Whatever a client sends, the answer is a ``201`` that round-trips or a ``4xx`` in the one JSON
error shape; never a ``5xx``. First a table of known-nasty bodies, then hypothesis: JSON values of
every kind, order-shaped objects with broken, missing or extra fields, and raw bytes under random
content types.

Hypothesis runs with a fixed budget and no example database (nothing is written into the
repository); in CI (``CI`` set) it is derandomized, so a run is reproducible, and on a developer's
machine each run explores new examples and prints any failing one.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from orders_api.api.app import MAX_BODY_BYTES
from orders_api.api.request_schemas import (
    INSTRUMENT_PATTERN,
    MAX_LIMIT_PRICE,
    MAX_QUANTITY,
    ORDER_TYPES,
    SIDES,
)

pytestmark = pytest.mark.integration

#: Examples per property: enough to reach every validation branch, bounded for CI's time.
MAX_EXAMPLES = 200

FUZZ = hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    # The app behind `client` is stateless between requests, so one per test serves every example.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

ORDER_KEYS = ("type", "side", "instrument", "quantity", "limit_price")

VALID_ORDER = (
    '{"type": "limit", "side": "buy", "instrument": "US0378331005", "limit_price": %s, "quantity": %s}'
)


def assert_clean_answer(response: TestResponse, sent: object) -> None:
    """A 201 that round-trips or a 4xx in the error contract's shape; nothing else."""
    status = response.status_code
    assert status == 201 or 400 <= status < 500, (status, response.get_data()[:500], sent)
    if status == 201:
        return
    assert response.mimetype == "application/json", (status, response.get_data()[:500])
    body = response.get_json()
    assert isinstance(body, dict), body
    assert body["code"] == status, body
    assert isinstance(body["status"], str) and body["status"], body
    assert isinstance(body["message"], str) and body["message"], body
    assert set(body) <= {"code", "status", "message", "errors"}, body


def assert_round_trips(client: FlaskClient, response: TestResponse, sent: dict[str, Any]) -> None:
    """The 201 describes what was sent, and ``GET`` shows the very same order."""
    created = response.get_json()
    assert response.headers["Location"] == f"/orders/{created['id']}"
    for key in ("type", "side", "instrument", "quantity"):
        assert created[key] == sent[key], (key, created, sent)
    price = sent.get("limit_price")
    if price is None:
        assert created["limit_price"] is None
    else:
        assert Decimal(created["limit_price"]) == Decimal(str(price)), (created, sent)
    shown = client.get(f"/orders/{created['id']}")
    assert shown.status_code == 200
    # One order's page also lists its executions (none yet); everything else is the 201's.
    assert shown.get_json() == {**created, "executions": []}


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (VALID_ORDER % ("1e309", "1"), "application/json", 422),
        (VALID_ORDER % ("-1e309", "1"), "application/json", 422),
        (VALID_ORDER % ("NaN", "1"), "application/json", 422),
        (VALID_ORDER % ("Infinity", "1"), "application/json", 422),
        (VALID_ORDER % ("-Infinity", "1"), "application/json", 422),
        (VALID_ORDER % ("1", "1e309"), "application/json", 422),
        (VALID_ORDER % ("1", "NaN"), "application/json", 422),
        (VALID_ORDER % ("1", "Infinity"), "application/json", 422),
        (VALID_ORDER % ("1", "-Infinity"), "application/json", 422),
        (VALID_ORDER % ("1e-400", "1"), "application/json", 422),
        (VALID_ORDER % ("1", "9" * 5000), "application/json", 400),
        ('{"type": "\\ud800", "side": "\\udfff", "instrument": "US0378331005", "quantity": 1}', None, 422),
        (
            '{"\\ud800": 1, "type": "market", "side": "buy", "instrument": "US0378331005", "quantity": 1}',
            None,
            422,
        ),
        (
            '{"type": "market\\u0000", "side": "buy", "instrument": "US037833100\\u0000", "quantity": 1}',
            None,
            422,
        ),
        (
            '{"\\u0000": 1, "type": "market", "side": "buy", "instrument": "US0378331005", "quantity": 1}',
            None,
            422,
        ),
        (
            '{"type": "\u202emarket", "side": "buy\u200f", "instrument": "US0378331005", "quantity": 1}',
            None,
            422,
        ),
        (
            '{"\U0001f600": "\U0001f4c8", "type": "market", "side": "buy", "instrument": "US0378331005"}',
            None,
            422,
        ),
        (b'{"type": "\xff\xfe", "side": "buy"}', "application/json", 400),
        (b"\xc3\x28", "application/json", 400),
        (
            '{"type": "market", "side": "buy", "instrument": "\ud800"}'.encode(errors="surrogatepass"),
            None,
            400,
        ),
        ('{"type": "market", "side": "buy"}'.encode("utf-16"), "application/json", 400),
        (b"", "application/json", 400),
        ('"an order"', "application/json", 422),
        ("42", "application/json", 422),
        ("[]", "application/json", 422),
        ('{"type": ' + "[" * 950 + "]" * 950 + "}", "application/json", 400),
        ("{}", "text/plain", 415),
        ("{}", "", 415),
        ("x" * (MAX_BODY_BYTES + 1), "application/json", 413),
    ],
)
def test_hostile_bodies_get_a_clean_4xx(
    client: FlaskClient, body: str | bytes, content_type: str | None, status: int
) -> None:
    response = client.post(
        "/orders", data=body, content_type="application/json" if content_type is None else content_type
    )

    assert response.status_code == status, response.get_data()[:500]
    assert_clean_answer(response, body)


# --- strategies -------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)

#: Values at the edges of what the fields accept, and the classics of number and text parsing.
nasty_scalars = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        0,
        -1,
        -0.0,
        1e-300,
        1e300,
        2**63,
        -(2**63) - 1,
        10**30,
        MAX_QUANTITY + 1,
        str(MAX_LIMIT_PRICE + Decimal("0.01")),
        "0.001",
        "NaN",
        "Infinity",
        "1e5",
        "0x10",
        " 1",
        "\u0661\u0662",  # Arabic-Indic digits, which int() and Decimal() accept
        "",
        "\u0000",
        "\ud800",
        "\u202e",
        True,
        False,
        None,
    ]
)
field_values = nasty_scalars | json_values
#: Keys a careless or hostile client may send beside the order's own.
nasty_keys = st.sampled_from(
    ["", "\u0000", "\ud800", "\u202etype", "TYPE", "type ", "__proto__", "\U0001f600"]
)

prices = st.decimals(min_value=Decimal("0.01"), max_value=MAX_LIMIT_PRICE, places=2)
price_forms = prices.flatmap(
    lambda price: st.sampled_from(
        [str(price), f"{price:.2f}", float(price)] + ([int(price)] if price == int(price) else [])
    )
)


@st.composite
def valid_orders(draw: st.DrawFn) -> dict[str, Any]:
    """An order the API must accept, with its price in any form a client may send."""
    order: dict[str, Any] = {
        "type": draw(st.sampled_from(ORDER_TYPES)),
        "side": draw(st.sampled_from(SIDES)),
        "instrument": draw(st.from_regex(INSTRUMENT_PATTERN, fullmatch=True)),
        "quantity": draw(st.integers(1, MAX_QUANTITY)),
    }
    if order["type"] == "limit":
        order["limit_price"] = draw(price_forms)
    elif draw(st.booleans()):
        order["limit_price"] = None
    return order


@st.composite
def order_like_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A valid order with some fields replaced by any JSON value or dropped, and maybe extra keys."""
    order = draw(valid_orders())
    for key in draw(st.sets(st.sampled_from(ORDER_KEYS))):
        if draw(st.booleans()):
            order.pop(key, None)
        else:
            order[key] = draw(field_values)
    order.update(draw(st.dictionaries(st.one_of(st.text(), nasty_keys), field_values, max_size=2)))
    return order


def encode(value: object, ascii_only: bool) -> bytes:
    """JSON as Python writes it (``NaN`` and ``Infinity`` included); lone surrogates pass through
    as the invalid UTF-8 a careless client would send."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", errors="surrogatepass")


CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "application/vnd.orders+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "application/octet-stream",
)

raw_bodies = st.one_of(
    st.binary(max_size=512),
    st.builds(encode, order_like_objects(), st.booleans()),
    st.builds(
        lambda json_bytes, junk: json_bytes + junk,
        st.builds(encode, valid_orders(), st.just(True)),
        st.binary(min_size=1, max_size=8),
    ),
    st.integers(MAX_BODY_BYTES - 64, MAX_BODY_BYTES + 64).map(lambda size: b" " * size),
)


#: Any value a header can carry: printable ASCII (the test client refuses line breaks, rightly).
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


# --- properties -------------------------------------------------------------------------------


@FUZZ
@given(
    value=json_values | order_like_objects(),
    ascii_only=st.booleans(),
    idempotency_key=st.none() | header_values,
)
def test_any_json_value_is_a_201_that_round_trips_or_a_clean_4xx(
    client: FlaskClient, value: object, ascii_only: bool, idempotency_key: str | None
) -> None:
    headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
    response = client.post(
        "/orders", data=encode(value, ascii_only), content_type="application/json", headers=headers
    )

    event(f"status {response.status_code}")  # shown by --hypothesis-show-statistics
    assert_clean_answer(response, value)
    if response.status_code == 201:
        assert isinstance(value, dict)
        assert_round_trips(client, response, value)


@FUZZ
@given(body=raw_bodies, content_type=st.sampled_from(CONTENT_TYPES) | header_values)
def test_any_bytes_under_any_content_type_are_a_201_or_a_clean_4xx(
    client: FlaskClient, body: bytes, content_type: str
) -> None:
    response = client.post("/orders", data=body, content_type=content_type)

    event(f"status {response.status_code}")  # shown by --hypothesis-show-statistics
    assert_clean_answer(response, body)
