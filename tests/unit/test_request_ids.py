"""Request ids: a client's id is kept only when it is sane, and each order finds its own request's id."""

from __future__ import annotations

import uuid

import pytest

from orders_api import request_ids

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "header",
    [
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "01HF3Z8K9M2X7Q4R5T6V7W8Y9Z",
        "checkout:7f3a.retry-2",
        "YWJjZGVm+/==",
        "a",
        "x" * request_ids.MAX_LENGTH,
    ],
)
def test_keeps_a_sane_request_id_as_it_is(header: str) -> None:
    assert request_ids.sanitised(header) == header


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "x" * (request_ids.MAX_LENGTH + 1),
        "has space",
        'quote"d',
        "new\nline",
        "tab\tbed",
        "semi;colon",
        "caf\u00e9",
        "{json}",
        "back\\slash",
    ],
)
def test_replaces_a_missing_or_unsafe_request_id_with_a_new_uuid(header: str | None) -> None:
    replaced = request_ids.sanitised(header)

    assert uuid.UUID(replaced).version == 4
    assert request_ids.sanitised(header) != replaced, "each replacement is a new id"


@pytest.mark.parametrize("value", [None, 42, b"bytes", ["list"], "bad id"])
def test_a_message_option_that_is_no_sane_string_is_no_request_id(value: object) -> None:
    assert not request_ids.is_sane(value)


def test_binding_a_request_id_lasts_for_the_block_only() -> None:
    assert request_ids.current() is None
    with request_ids.bind("outer"):
        with request_ids.bind("inner"):
            assert request_ids.current() == "inner"
        assert request_ids.current() == "outer"
    assert request_ids.current() is None


def test_each_order_of_a_batch_gets_its_own_requests_id_and_others_the_current_one() -> None:
    first, second, unlisted = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    with request_ids.bind("current"), request_ids.bind_orders({first: "one", second: "two"}):
        found = [request_ids.for_order(order_id) for order_id in (first, second, unlisted)]

    assert found == ["one", "two", "current"]
    assert request_ids.for_order(first) is None
