"""POST /orders on real PostgreSQL and RabbitMQ: 201 only with a committed row and a confirmed message."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal

import psycopg2.extensions
import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from psycopg2 import sql

from orders_api.adapters.postgres.unit_of_work import SqlAlchemyUnitOfWork
from orders_api.adapters.rabbitmq.confirmed_publisher import PublishError
from orders_api.adapters.rabbitmq.placement_queue import PlacementPublisher
from orders_api.api.errors import INTERNAL_ERROR_BODY
from orders_api.service_layer.ordering import accept_orders
from orders_api.settings.shared import Settings
from orders_testkit.rabbitmq_admin import RabbitAdmin
from tests.integration.checks import order_row
from tests.integration.placement_helpers import new_order
from workers.broker import PlacementBroker

pytestmark = pytest.mark.integration

LIMIT_ORDER = {
    "type": "limit",
    "side": "buy",
    "instrument": "US0378331005",
    "limit_price": 150.5,
    "quantity": 10,
}
MARKET_ORDER = {"type": "market", "side": "sell", "instrument": "DE0007164600", "quantity": 3}
#: Requests sent at once in the group-commit test: enough that some arrive while a batch is open.
CONCURRENT_POSTS = 24


@pytest.fixture
def order() -> dict[str, object]:
    """A limit order on an instrument no other test uses, so rows can be counted per test."""
    return {**LIMIT_ORDER, "instrument": uuid.uuid4().hex[:12].upper()}


def count_orders(database: psycopg2.extensions.connection, order: dict[str, object]) -> int:
    with database.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM orders WHERE instrument = %s", (order["instrument"],))
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def test_accepted_order_is_committed_and_its_message_is_in_the_durable_queue(
    client: FlaskClient, database: psycopg2.extensions.connection, rabbit: RabbitAdmin, settings: Settings
) -> None:
    response = client.post("/orders", json=LIMIT_ORDER)

    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"/orders/{body['id']}"
    assert body["status"] == "pending"
    assert Decimal(body["limit_price"]) == Decimal("150.50")
    assert body["created_at"].endswith("+00:00")
    row = order_row(database, body["id"])
    assert row is not None
    assert row["status"] == "pending"
    assert row["limit_price"] == Decimal("150.50")

    queue = rabbit.queue(settings.placement_queue)
    assert queue["durable"] is True
    [message] = rabbit.peek(settings.placement_queue)
    assert message["properties"]["delivery_mode"] == 2
    payload = rabbit.peek_bodies(settings.placement_queue)[0]
    assert payload["actor_name"] == "place_order"
    assert payload["args"] == [body["id"]]


def test_orders_posted_at_once_are_committed_together_each_with_its_message(
    client_for: Callable[[Settings], FlaskClient],
    settings: Settings,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    order: dict[str, object],
) -> None:
    app = client_for(settings).application
    responses: list[tuple[int, str]] = []

    def post() -> None:
        response = app.test_client().post("/orders", json=order)
        responses.append((response.status_code, response.get_json().get("id", "")))

    threads = [threading.Thread(target=post) for _ in range(CONCURRENT_POSTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert [status for status, _ in responses] == [201] * CONCURRENT_POSTS
    with database.cursor() as cursor:
        # Rows inserted by one transaction share its id (xmin): fewer transactions than rows
        # means the requests were committed together.
        cursor.execute(
            "SELECT count(*), count(DISTINCT xmin::text) FROM orders WHERE instrument = %s",
            (order["instrument"],),
        )
        rows, transactions = cursor.fetchone() or (0, 0)
    assert rows == CONCURRENT_POSTS
    assert transactions < CONCURRENT_POSTS
    requested = [payload["args"][0] for payload in rabbit.peek_bodies(settings.placement_queue)]
    assert sorted(requested) == sorted(order_id for _, order_id in responses)


def test_market_order_is_accepted_without_a_limit_price(client: FlaskClient) -> None:
    response = client.post("/orders", json=MARKET_ORDER)

    assert response.status_code == 201
    assert response.get_json()["limit_price"] is None


def test_accepted_order_can_be_read_back(client: FlaskClient) -> None:
    created = client.post("/orders", json=LIMIT_ORDER).get_json()

    response = client.get(f"/orders/{created['id']}")

    assert response.status_code == 200
    shown = response.get_json()
    assert shown == {**created, "executions": []}  # one order's page lists its executions too
    assert shown["placed_at"] is None
    assert shown["attempts"] == 0


@pytest.mark.parametrize("order_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_unknown_or_malformed_order_id_is_a_json_404(client: FlaskClient, order_id: str) -> None:
    response = client.get(f"/orders/{order_id}")

    assert response.status_code == 404
    assert response.get_json()["code"] == 404


def test_invalid_order_is_a_422_naming_each_field_and_stores_nothing(
    client: FlaskClient, database: psycopg2.extensions.connection, order: dict[str, object]
) -> None:
    response = client.post("/orders", json={**order, "type": "market", "limit_price": 10, "quantity": 0})

    assert response.status_code == 422
    assert set(response.get_json()["errors"]["json"]) == {"limit_price", "quantity"}
    assert count_orders(database, order) == 0


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        ('{"type": "market"', "application/json", 400),
        ("type=market", "application/x-www-form-urlencoded", 415),
        ("[1, 2]", "application/json", 422),
        ("null", "application/json", 422),
        ("[" * 100_000 + "]" * 100_000, "application/json", 413),
        ("[" * 5_000 + "]" * 5_000, "application/json", 400),
    ],
    ids=["malformed-json", "form-content-type", "json-array", "json-null", "too-large", "too-deep"],
)
def test_a_body_that_is_not_one_json_object_is_a_json_4xx(
    client: FlaskClient, data: str, content_type: str, status: int
) -> None:
    response = client.post("/orders", data=data, content_type=content_type)

    assert response.status_code == status
    assert response.get_json()["code"] == status


def test_broker_nack_is_a_500_and_rolls_back_the_order(
    client: FlaskClient,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    order: dict[str, object],
) -> None:
    assert client.post("/orders", json=LIMIT_ORDER).status_code == 201  # declares the queue
    rabbit.reject_publishes_to(settings.placement_queue)

    response = client.post("/orders", json=order)

    assert response.status_code == 500
    assert response.get_json() == INTERNAL_ERROR_BODY
    assert count_orders(database, order) == 0


def test_a_placement_message_no_queue_would_take_is_a_publish_error_not_a_send(
    placements: PlacementPublisher, rabbit: RabbitAdmin, settings: Settings
) -> None:
    placements.request_placement(uuid.uuid4())  # connects and declares the queues
    # The publisher declares its queues only when it connects, so the deleted queue stays
    # deleted: RabbitMQ returns the mandatory message (basic.return), then acks it.
    rabbit.delete_queue(settings.placement_queue)

    with pytest.raises(PublishError, match="could not route"):
        placements.request_placement(uuid.uuid4())


@pytest.mark.parametrize("keyed", [False, True], ids=["group-commit", "idempotency-key"])
def test_a_placement_message_no_queue_would_take_is_a_500_and_stores_nothing(
    keyed: bool,
    client: FlaskClient,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    order: dict[str, object],
) -> None:
    assert client.post("/orders", json=LIMIT_ORDER).status_code == 201  # declares the queues
    rabbit.delete_queue(settings.placement_queue)
    headers = {"Idempotency-Key": str(uuid.uuid4())} if keyed else {}

    response = client.post("/orders", json=order, headers=headers)

    assert response.status_code == 500
    assert response.get_json() == INTERNAL_ERROR_BODY
    assert count_orders(database, order) == 0


@pytest.fixture
def refused_at_commit(database: psycopg2.extensions.connection) -> Iterator[str]:
    """An instrument whose orders PostgreSQL refuses at ``COMMIT``, and not a statement earlier.

    A constraint trigger deferred to commit time raises for that instrument only, so the
    transaction gets through its inserts and the publish and fails at the very last step. It is
    created in this run's database for this test alone and dropped after it.
    """
    instrument = uuid.uuid4().hex[:12].upper()
    name = sql.Identifier(f"refuse_commit_{instrument.lower()}")
    with database.cursor() as cursor:
        cursor.execute(
            sql.SQL(
                "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql"
                " AS $$ BEGIN RAISE EXCEPTION 'commit refused by the test'; END $$"
            ).format(name)
        )
        cursor.execute(
            sql.SQL(
                "CREATE CONSTRAINT TRIGGER {} AFTER INSERT ON orders DEFERRABLE INITIALLY DEFERRED"
                " FOR EACH ROW WHEN (NEW.instrument = {}) EXECUTE FUNCTION {}()"
            ).format(name, sql.Literal(instrument), name)
        )
    yield instrument
    with database.cursor() as cursor:
        cursor.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON orders").format(name))
        cursor.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(name))


def test_a_batch_whose_commit_fails_after_its_messages_were_confirmed_raises_and_stores_none_of_it(
    refused_at_commit: str,
    unit_of_work: Callable[[], SqlAlchemyUnitOfWork],
    placements: PlacementPublisher,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
) -> None:
    batch = [new_order(), replace(new_order(), instrument=refused_at_commit)]

    with pytest.raises(sa.exc.DBAPIError, match="commit refused by the test"):
        accept_orders(batch, unit_of_work(), placements)

    assert [order_row(database, str(order.id)) for order in batch] == [None, None]
    # It was the COMMIT that failed: both messages had been confirmed before it.
    requested = [payload["args"][0] for payload in rabbit.peek_bodies(settings.placement_queue)]
    assert sorted(requested) == sorted(str(order.id) for order in batch)


def test_an_order_whose_group_commit_fails_at_commit_is_a_500_and_is_not_stored(
    refused_at_commit: str,
    client: FlaskClient,
    database: psycopg2.extensions.connection,
    order: dict[str, object],
) -> None:
    refused = {**order, "instrument": refused_at_commit}

    response = client.post("/orders", json=refused)

    assert response.status_code == 500
    assert response.get_json() == INTERNAL_ERROR_BODY
    assert count_orders(database, refused) == 0


@pytest.mark.parametrize("broker", ["closed_port", "silent_server"])
def test_broker_out_of_reach_is_a_500_within_the_connect_timeout_and_stores_nothing(
    broker: str,
    settings: Settings,
    database: psycopg2.extensions.connection,
    order: dict[str, object],
    client_for: Callable[[Settings], FlaskClient],
    request: pytest.FixtureRequest,
) -> None:
    port = _closed_port() if broker == "closed_port" else request.getfixturevalue("silent_server")
    url = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
    client = client_for(Settings(database_url=settings.database_url, rabbitmq_url=url))

    started = time.monotonic()
    response = client.post("/orders", json=order)

    assert response.status_code == 500
    assert response.get_json() == INTERNAL_ERROR_BODY
    assert time.monotonic() - started < settings.connect_timeout_s + 1
    assert count_orders(database, order) == 0


def test_unreachable_database_is_a_500(
    settings: Settings, client_for: Callable[[Settings], FlaskClient]
) -> None:
    unreachable = Settings(
        database_url=f"postgresql://postgres@127.0.0.1:{_closed_port()}/orders",
        rabbitmq_url=settings.rabbitmq_url,
    )
    client = client_for(unreachable)

    response = client.post("/orders", json=LIMIT_ORDER)

    assert response.status_code == 500
    assert response.get_json() == INTERNAL_ERROR_BODY


def test_queues_declared_by_the_api_are_the_ones_the_workers_declare(
    client: FlaskClient, settings: Settings, rabbit: RabbitAdmin
) -> None:
    assert client.post("/orders", json=LIMIT_ORDER).status_code == 201
    broker = PlacementBroker(url=settings.rabbitmq_url, confirm_delivery=True)
    try:
        broker.declare_queue(settings.placement_queue, ensure=True)  # 406 if the arguments differed
        assert rabbit.queue(settings.placement_queue)["type"] == "quorum"
        assert broker.get_queue_message_counts(settings.placement_queue) == (1, 0, 0)
    finally:
        broker.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word, like a hung broker."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(timeout=2)
    for connection in accepted:
        connection.close()
    listener.close()
