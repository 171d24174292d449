"""POST /orders with an Idempotency-Key, on real PostgreSQL and RabbitMQ.

A repeat gets the first order back and places nothing; the same key for another order is a 422;
concurrent requests with one key create one order, the later one waiting on the first's
transaction (PostgreSQL's unique index) and answering with its order, or 409 if it outlasts the
statement timeout; a 500 leaves the key free for the retry; an expired key counts as unused.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
import requests
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from orders_api.adapters.postgres.database import create_engine
from orders_api.adapters.postgres.unit_of_work import SqlAlchemyUnitOfWork
from orders_api.api.errors import INTERNAL_ERROR_BODY
from orders_api.idempotency import KEY_TTL, request_fingerprint
from orders_api.service_layer.ordering import purge_expired_idempotency_keys
from orders_api.settings.shared import Settings
from orders_testkit.rabbitmq_admin import RabbitAdmin

pytestmark = pytest.mark.integration

#: Seconds any wait of these tests may last before the test fails instead of hanging.
WAIT_TIMEOUT_S = 15.0


@pytest.fixture
def order() -> dict[str, Any]:
    """A limit order on an instrument no other test uses, so rows can be counted per test."""
    return {
        "type": "limit",
        "side": "buy",
        "instrument": uuid.uuid4().hex[:12].upper(),
        "limit_price": 150.5,
        "quantity": 10,
    }


@pytest.fixture
def key() -> str:
    return f"test-{uuid.uuid4()}"


def post(client: FlaskClient, body: dict[str, Any], key: str) -> TestResponse:
    return client.post("/orders", json=body, headers={"Idempotency-Key": key})


def count_orders(database: psycopg2.extensions.connection, order: dict[str, Any]) -> int:
    count = _one(database, "SELECT count(*) FROM orders WHERE instrument = %s", order["instrument"])
    assert isinstance(count, int)
    return count


def key_holder(database: psycopg2.extensions.connection, key: str) -> str | None:
    """The id of the order the key names, or ``None`` if the key is not stored."""
    value = _one(database, "SELECT order_id::text FROM idempotency_keys WHERE key = %s", key)
    return None if value is None else str(value)


def messages(rabbit: RabbitAdmin, settings: Settings) -> list[list[str]]:
    """The arguments (order ids) of the messages in the test's queue; none if nothing declared it."""
    try:
        bodies = rabbit.peek_bodies(settings.placement_queue)
    except requests.HTTPError as error:
        if error.response is None or error.response.status_code != 404:
            raise
        return []
    return [body["args"] for body in bodies]


def _one(database: psycopg2.extensions.connection, query: str, *params: object) -> object:
    with database.cursor() as cursor:
        cursor.execute(query, params)
        row = cursor.fetchone()
    return None if row is None else row[0]


def wait_until(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until it holds; fail the test after :data:`WAIT_TIMEOUT_S`."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {WAIT_TIMEOUT_S} s")
        time.sleep(0.05)


def test_a_repeat_with_the_same_key_and_body_returns_the_same_order_and_places_nothing(
    client: FlaskClient,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    order: dict[str, Any],
    key: str,
) -> None:
    first = post(client, order, key)
    # The same request formatted differently: other key order, other whitespace.
    repeat = client.post(
        "/orders",
        data=json.dumps(dict(reversed(list(order.items()))), indent=4),
        content_type="application/json",
        headers={"Idempotency-Key": key},
    )

    assert first.status_code == repeat.status_code == 201
    assert repeat.get_json() == first.get_json()
    assert repeat.headers["Location"] == first.headers["Location"] == f"/orders/{first.get_json()['id']}"
    assert count_orders(database, order) == 1
    assert key_holder(database, key) == first.get_json()["id"]
    assert messages(rabbit, settings) == [[first.get_json()["id"]]]


def test_a_repeat_returns_the_order_as_it_stands_now(
    client: FlaskClient, database: psycopg2.extensions.connection, order: dict[str, Any], key: str
) -> None:
    order_id = post(client, order, key).get_json()["id"]
    with database.cursor() as cursor:
        cursor.execute(
            "UPDATE orders SET status = 'placed', placed_at = now(), attempts = 1 WHERE id = %s", (order_id,)
        )

    repeat = post(client, order, key)

    assert repeat.status_code == 201
    assert repeat.get_json()["id"] == order_id
    assert repeat.get_json()["status"] == "placed"
    assert repeat.get_json()["attempts"] == 1


def test_the_same_key_with_a_different_body_is_a_json_422_and_places_nothing(
    client: FlaskClient,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    order: dict[str, Any],
    key: str,
) -> None:
    first = post(client, order, key).get_json()
    other = {**order, "instrument": uuid.uuid4().hex[:12].upper()}

    response = post(client, other, key)

    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == 422
    assert body["status"] == "Unprocessable Entity"
    assert "different request" in body["message"]
    assert count_orders(database, other) == 0
    assert key_holder(database, key) == first["id"]
    assert messages(rabbit, settings) == [[first["id"]]]


@pytest.mark.parametrize(
    "bad_key",
    ["", "x" * 256, "caf\xe9", "tab\tinside", "del\x7f", " leading-space"],
    ids=["empty", "too-long", "non-ascii", "tab", "del", "leading-space"],
)
def test_an_invalid_key_is_a_json_400_and_stores_nothing(
    client: FlaskClient, database: psycopg2.extensions.connection, order: dict[str, Any], bad_key: str
) -> None:
    response = post(client, order, bad_key)

    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == 400
    assert list(body["errors"]["headers"]) == ["Idempotency-Key"]
    assert count_orders(database, order) == 0


@pytest.mark.parametrize(
    "good_key", ["k", "x" * 255, "order 42 / retry #1"], ids=["short", "longest", "spaces"]
)
def test_keys_of_1_to_255_printable_characters_are_accepted(
    client: FlaskClient, database: psycopg2.extensions.connection, order: dict[str, Any], good_key: str
) -> None:
    # Each run has a database of its own and no other test uses these keys.
    response = post(client, order, good_key)

    assert response.status_code == 201
    assert key_holder(database, good_key) == response.get_json()["id"]


def test_an_invalid_order_with_a_key_stores_nothing_and_leaves_the_key_free(
    client: FlaskClient, database: psycopg2.extensions.connection, order: dict[str, Any], key: str
) -> None:
    invalid = post(client, {**order, "quantity": 0}, key)
    valid = post(client, order, key)

    assert invalid.status_code == 422
    assert valid.status_code == 201
    assert key_holder(database, key) == valid.get_json()["id"]


def test_concurrent_requests_with_one_key_create_one_order(
    client: FlaskClient,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    order: dict[str, Any],
    key: str,
) -> None:
    senders = 4
    start = threading.Barrier(senders, timeout=WAIT_TIMEOUT_S)
    responses: list[TestResponse] = []

    def send() -> None:
        own_client = client.application.test_client()
        start.wait()
        responses.append(post(own_client, order, key))

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads)

    statuses = sorted(response.status_code for response in responses)
    assert len(statuses) == senders
    assert set(statuses) <= {201, 409}, statuses
    created_ids = {response.get_json()["id"] for response in responses if response.status_code == 201}
    assert len(created_ids) == 1
    assert count_orders(database, order) == 1
    [order_id] = created_ids
    assert key_holder(database, key) == order_id
    assert messages(rabbit, settings) == [[order_id]]


@pytest.fixture
def holder(settings: Settings) -> Iterator[psycopg2.extensions.connection]:
    """A connection of its own, to hold a key in an open transaction as a request in flight does."""
    connection = psycopg2.connect(settings.database_url, connect_timeout=5)
    yield connection
    connection.rollback()
    connection.close()


def hold_key(holder: psycopg2.extensions.connection, key: str, order: dict[str, Any]) -> str:
    """Insert an order and ``key`` for it without committing, like a request still publishing."""
    order_id = str(uuid.uuid4())
    with holder.cursor() as cursor:
        cursor.execute(
            "INSERT INTO orders (id, created_at, type, side, instrument, limit_price, quantity)"
            " VALUES (%s, now(), %s, %s, %s, %s, %s)",
            (
                order_id,
                order["type"],
                order["side"],
                order["instrument"],
                order["limit_price"],
                order["quantity"],
            ),
        )
        cursor.execute(
            "INSERT INTO idempotency_keys (key, request_fingerprint, order_id, created_at)"
            " VALUES (%s, %s, %s, now())",
            (key, request_fingerprint(order), order_id),
        )
    return order_id


def waiting_on_a_key(database: psycopg2.extensions.connection) -> bool:
    """Whether a session of this database waits on a lock while writing ``idempotency_keys``."""
    waiting = _one(
        database,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' AND query LIKE %s",
        "%idempotency_keys%",
    )
    return bool(waiting)


def post_in_background(client: FlaskClient, order: dict[str, Any], key: str) -> Callable[[], TestResponse]:
    """Start the request in a thread; the returned function waits for its response."""
    responses: list[TestResponse] = []
    thread = threading.Thread(target=lambda: responses.append(post(client, order, key)))
    thread.start()

    def response() -> TestResponse:
        thread.join(timeout=WAIT_TIMEOUT_S)
        assert not thread.is_alive(), "the request did not finish"
        [answer] = responses
        return answer

    return response


@pytest.fixture
def patient_client(client_for: Callable[[Settings], FlaskClient], settings: Settings) -> FlaskClient:
    """A client whose statements may wait long enough for a test to end the other transaction first."""
    return client_for(settings.model_copy(update={"statement_timeout_ms": int(WAIT_TIMEOUT_S * 1000)}))


def test_a_request_waits_for_the_key_holder_and_returns_its_order_once_it_commits(
    patient_client: FlaskClient,
    holder: psycopg2.extensions.connection,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    order: dict[str, Any],
    key: str,
) -> None:
    held_order_id = hold_key(holder, key, order)
    response = post_in_background(patient_client, order, key)
    wait_until(lambda: waiting_on_a_key(database), "the request waiting on the held key")

    holder.commit()

    answer = response()
    assert answer.status_code == 201
    assert answer.get_json()["id"] == held_order_id
    assert answer.headers["Location"] == f"/orders/{held_order_id}"
    assert count_orders(database, order) == 1
    # The holder stands for a request that published its own message; this one published none.
    assert messages(rabbit, settings) == []


def test_a_request_waits_for_the_key_holder_and_places_its_own_order_once_it_rolls_back(
    patient_client: FlaskClient,
    holder: psycopg2.extensions.connection,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    order: dict[str, Any],
    key: str,
) -> None:
    held_order_id = hold_key(holder, key, order)
    response = post_in_background(patient_client, order, key)
    wait_until(lambda: waiting_on_a_key(database), "the request waiting on the held key")

    holder.rollback()

    answer = response()
    assert answer.status_code == 201
    order_id = answer.get_json()["id"]
    assert order_id != held_order_id
    assert count_orders(database, order) == 1
    assert key_holder(database, key) == order_id
    assert messages(rabbit, settings) == [[order_id]]


def test_a_key_held_past_the_statement_timeout_is_a_json_409_and_stores_nothing(
    client_for: Callable[[Settings], FlaskClient],
    holder: psycopg2.extensions.connection,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    order: dict[str, Any],
    key: str,
) -> None:
    timeout_ms = 300
    impatient = client_for(settings.model_copy(update={"statement_timeout_ms": timeout_ms}))
    hold_key(holder, key, order)

    started = time.monotonic()
    response = post(impatient, order, key)
    elapsed = time.monotonic() - started

    assert response.status_code == 409
    body = response.get_json()
    assert body["code"] == 409
    assert "still in progress" in body["message"]
    assert response.headers["Retry-After"] == "1"
    assert timeout_ms / 1000 <= elapsed < timeout_ms / 1000 + 2
    holder.rollback()
    assert count_orders(database, order) == 0
    assert key_holder(database, key) is None
    assert messages(rabbit, settings) == []


def test_a_500_stores_no_key_so_a_retry_with_it_places_the_order_once(
    client: FlaskClient,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    order: dict[str, Any],
    key: str,
) -> None:
    warm_up = client.post("/orders", json={**order, "instrument": uuid.uuid4().hex[:12].upper()})
    assert warm_up.status_code == 201  # the queue must exist before it can be made to reject
    rabbit.reject_publishes_to(settings.placement_queue)

    failed = post(client, order, key)

    assert failed.status_code == 500
    assert failed.get_json() == INTERNAL_ERROR_BODY
    assert key_holder(database, key) is None
    assert count_orders(database, order) == 0

    rabbit.delete_policy(f"reject-{settings.placement_queue}")
    # The policy's removal reaches the queue asynchronously, so the client retries as a real
    # one would, each 500 again storing nothing.
    retries: list[TestResponse] = []

    def retried() -> bool:
        retries.append(post(client, order, key))
        assert retries[-1].status_code in (201, 500)
        if retries[-1].status_code == 500:
            assert key_holder(database, key) is None
        return retries[-1].status_code == 201

    wait_until(retried, "a 201 for the retried request")
    order_id = retries[-1].get_json()["id"]
    assert count_orders(database, order) == 1
    assert key_holder(database, key) == order_id
    assert [args for args in messages(rabbit, settings) if args == [order_id]] == [[order_id]]


def test_an_expired_key_counts_as_unused_and_places_a_new_order(
    client: FlaskClient,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    order: dict[str, Any],
    key: str,
) -> None:
    first_id = post(client, order, key).get_json()["id"]
    with database.cursor() as cursor:
        cursor.execute(
            "UPDATE idempotency_keys SET created_at = created_at - %s - interval '1 second' WHERE key = %s",
            (KEY_TTL, key),
        )

    again = post(client, order, key)

    assert again.status_code == 201
    second_id = again.get_json()["id"]
    assert second_id != first_id
    assert count_orders(database, order) == 2
    assert key_holder(database, key) == second_id
    assert sorted(messages(rabbit, settings)) == sorted([[first_id], [second_id]])
    assert post(client, order, key).get_json()["id"] == second_id


def test_purging_deletes_expired_keys_and_keeps_fresh_ones_and_all_orders(
    client: FlaskClient, database: psycopg2.extensions.connection, settings: Settings, order: dict[str, Any]
) -> None:
    expired_key, fresh_key = f"test-expired-{uuid.uuid4()}", f"test-fresh-{uuid.uuid4()}"
    post(client, order, expired_key)
    post(client, {**order, "quantity": 11}, fresh_key)
    with database.cursor() as cursor:
        cursor.execute(
            "UPDATE idempotency_keys SET created_at = %s WHERE key = %s",
            (datetime.now(UTC) - KEY_TTL - KEY_TTL, expired_key),
        )
    engine = create_engine(settings, pool_size=1)
    try:
        purged = purge_expired_idempotency_keys(SqlAlchemyUnitOfWork(engine))
    finally:
        engine.dispose()

    assert purged >= 1
    assert key_holder(database, expired_key) is None
    assert key_holder(database, fresh_key) is not None
    assert count_orders(database, order) == 2
