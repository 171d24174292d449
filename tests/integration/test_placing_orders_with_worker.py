"""The Dramatiq worker on real PostgreSQL and RabbitMQ: placement, retries, dead letters and orphans."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg2.extensions
import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import sessionmaker

from orders_api import stock_exchange
from orders_api.adapters.confirmed_publisher import ConfirmedPublisher
from orders_api.adapters.database import create_engine
from orders_api.adapters.placement_queue import PlacementPublisher, queue_declarations
from orders_api.config import Settings
from orders_api.domain import Order, OrderType, Side
from orders_api.service_layer.unit_of_work import SqlAlchemyUnitOfWork
from tests.integration.checks import order_row
from tests.integration.conftest import StartWorker
from tests.rabbitmq_admin import RabbitAdmin

pytestmark = pytest.mark.integration

ORDER = {"type": "limit", "side": "sell", "instrument": "GB0002634946", "limit_price": "12.34", "quantity": 7}
#: Seconds any wait for the worker may take before the test fails instead of hanging.
SETTLE_TIMEOUT_S = 20


class RecordingExchange:
    """The real stock exchange stand-in, with every call recorded; ``fail_with`` makes it raise first."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.calls: list[uuid.UUID] = []
        self.fail_with = fail_with
        self._lock = threading.Lock()

    def __call__(self, order: Order) -> None:
        with self._lock:
            self.calls.append(order.id)
        if self.fail_with is not None:
            raise self.fail_with
        stock_exchange.place_order(order)


@pytest.fixture
def exchange_outcomes(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Script the stand-in's availability draws (``>= 0.9`` fails) and skip its 0.5 s sleep."""
    monkeypatch.setattr("orders_api.stock_exchange.time.sleep", lambda _seconds: None)

    def script(*draws: float, then: float = 0.0) -> None:
        remaining = list(draws)
        lock = threading.Lock()

        def draw() -> float:
            with lock:
                return remaining.pop(0) if remaining else then

        monkeypatch.setattr("orders_api.stock_exchange.random.random", draw)

    script()
    return script


def eventually(check: Callable[[], Any], timeout_s: float = SETTLE_TIMEOUT_S) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s: {check.__doc__ or check}")
        time.sleep(0.05)


def settled_row(database: psycopg2.extensions.connection, order_id: str) -> dict[str, object]:
    def settled() -> dict[str, object] | None:
        """the order leaves pending"""
        row = order_row(database, order_id)
        return row if row is not None and row["status"] != "pending" else None

    result: dict[str, object] = eventually(settled)
    return result


def queue_drained(rabbit: RabbitAdmin, queue: str) -> None:
    """Wait until ``queue`` holds no message, ready or unacked."""

    def drained() -> bool:
        """the queue is empty"""
        return bool(rabbit.queue(queue).get("messages", 1) == 0)

    eventually(drained)


def dead_lettered_order_ids(rabbit: RabbitAdmin, settings: Settings) -> list[list[str]]:
    """The arguments of the messages in the dead-letter queue, once there is at least one."""
    dead = eventually(lambda: rabbit.peek_bodies(f"{settings.placement_queue}.XQ"))
    return [message["args"] for message in dead]


def test_worker_places_a_committed_order_once(
    client: FlaskClient,
    start_worker: StartWorker,
    database: psycopg2.extensions.connection,
    exchange_outcomes: Callable[..., None],
) -> None:
    order_id = client.post("/orders", json=ORDER).get_json()["id"]
    exchange = RecordingExchange()

    start_worker(exchange)
    row = settled_row(database, order_id)

    assert row["status"] == "placed"
    assert row["attempts"] == 1
    assert row["placed_at"] is not None
    assert row["claimed_until"] is None
    assert exchange.calls == [uuid.UUID(order_id)]


def test_unavailable_exchange_is_retried_until_the_order_is_placed(
    client: FlaskClient,
    start_worker: StartWorker,
    database: psycopg2.extensions.connection,
    exchange_outcomes: Callable[..., None],
) -> None:
    exchange_outcomes(0.95, 0.99)
    order_id = client.post("/orders", json=ORDER).get_json()["id"]
    exchange = RecordingExchange()

    start_worker(exchange)
    row = settled_row(database, order_id)

    assert row["status"] == "placed"
    assert row["attempts"] == 3
    assert row["last_error"] is None
    assert len(exchange.calls) == 3


def test_error_that_retrying_cannot_fix_fails_the_order_and_dead_letters_its_message(
    client: FlaskClient,
    start_worker: StartWorker,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
) -> None:
    order_id = client.post("/orders", json=ORDER).get_json()["id"]
    exchange = RecordingExchange(fail_with=ValueError("instrument not tradable"))

    start_worker(exchange)
    row = settled_row(database, order_id)

    assert row["status"] == "failed"
    assert row["last_error"] == "ValueError: instrument not tradable"
    assert len(exchange.calls) == 1
    queue_drained(rabbit, settings.placement_queue)
    assert dead_lettered_order_ids(rabbit, settings) == [[order_id]]


def test_a_message_that_comes_back_for_a_failed_order_is_dead_lettered_again(
    client: FlaskClient,
    start_worker: StartWorker,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
) -> None:
    # As if the order had been failed and its message's rejection lost with the connection.
    order_id = client.post("/orders", json=ORDER).get_json()["id"]
    with database.cursor() as cursor:
        cursor.execute(
            "UPDATE orders SET status = 'failed', last_error = 'ValueError: x' WHERE id = %s", (order_id,)
        )
    exchange = RecordingExchange()

    start_worker(exchange)

    assert dead_lettered_order_ids(rabbit, settings) == [[order_id]]
    assert exchange.calls == []
    row = order_row(database, order_id)
    assert row is not None
    assert row["status"] == "failed"
    assert row["last_error"] == "ValueError: x"


def test_exhausted_retries_fail_the_order_and_dead_letter_its_message(
    client: FlaskClient,
    start_worker: StartWorker,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    exchange_outcomes: Callable[..., None],
) -> None:
    exchange_outcomes(then=0.99)
    order_id = client.post("/orders", json=ORDER).get_json()["id"]

    start_worker(RecordingExchange(), max_retries=2)
    row = settled_row(database, order_id)

    assert row["status"] == "failed"
    assert row["attempts"] == 3
    assert "OrderPlacementError" in str(row["last_error"])
    assert dead_lettered_order_ids(rabbit, settings) == [[order_id]]


@pytest.fixture
def placements(settings: Settings) -> Iterator[PlacementPublisher]:
    """Publish placement requests the way the API does, for orders the test controls."""
    publisher = ConfirmedPublisher(
        settings.rabbitmq_url,
        queue_declarations(settings.placement_queue),
        connect_timeout_s=settings.connect_timeout_s,
        confirm_timeout_s=settings.confirm_timeout_s,
    )
    yield PlacementPublisher(publisher, settings.placement_queue)
    publisher.close()


@pytest.fixture
def unit_of_work(settings: Settings) -> Iterator[Callable[[], SqlAlchemyUnitOfWork]]:
    engine = create_engine(settings, pool_size=2)
    sessions = sessionmaker(bind=engine)
    yield lambda: SqlAlchemyUnitOfWork(sessions)
    engine.dispose()


def new_order() -> Order:
    return Order(
        id=uuid.uuid4(),
        created_at=datetime.now(UTC),
        type=OrderType.MARKET,
        side=Side.BUY,
        instrument="US0378331005",
        limit_price=None,
        quantity=1,
    )


def waiting_for_advisory_locks(database: psycopg2.extensions.connection) -> int:
    """How many sessions wait on an advisory lock: the worker waiting on an order's creation lock."""
    with database.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks JOIN pg_database d ON d.oid = pg_locks.database"
            " WHERE locktype = 'advisory' AND NOT granted AND d.datname = current_database()"
        )
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def test_message_for_an_order_that_was_never_committed_is_dropped(
    start_worker: StartWorker,
    placements: PlacementPublisher,
    rabbit: RabbitAdmin,
    settings: Settings,
) -> None:
    placements.request_placement(uuid.uuid4())
    exchange = RecordingExchange()

    start_worker(exchange)
    queue_drained(rabbit, settings.placement_queue)

    assert exchange.calls == []
    assert rabbit.queue(f"{settings.placement_queue}.XQ")["messages"] == 0


@pytest.mark.parametrize("outcome", ["rollback", "commit"])
def test_worker_waits_for_the_creating_transaction_before_deciding(
    outcome: str,
    start_worker: StartWorker,
    placements: PlacementPublisher,
    unit_of_work: Callable[[], SqlAlchemyUnitOfWork],
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    exchange_outcomes: Callable[..., None],
) -> None:
    order = new_order()
    exchange = RecordingExchange()
    with unit_of_work() as uow:
        uow.orders.add(order)
        placements.request_placement(order.id)
        start_worker(exchange)
        eventually(lambda: waiting_for_advisory_locks(database) == 1)
        assert exchange.calls == []
        if outcome == "commit":
            uow.commit()

    queue_drained(rabbit, settings.placement_queue)
    if outcome == "commit":
        assert settled_row(database, str(order.id))["status"] == "placed"
        assert exchange.calls == [order.id]
    else:
        assert order_row(database, str(order.id)) is None
        assert exchange.calls == []


def test_a_retry_that_cannot_be_republished_is_dead_lettered_not_lost_and_its_order_stays_pending(
    request: pytest.FixtureRequest,
    start_worker: StartWorker,
    placements: PlacementPublisher,
    unit_of_work: Callable[[], SqlAlchemyUnitOfWork],
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    exchange_outcomes: Callable[..., None],
) -> None:
    exchange_outcomes(0.95)
    order = new_order()
    with unit_of_work() as uow:
        uow.orders.add(order)
        placements.request_placement(order.id)
        uow.commit()
    # Make the delay queue refuse the retry: nobody may consume from it, so a filler message
    # stays ready in it, and a length limit of 0 then has RabbitMQ nack every further publish.
    delay_queue = f"{settings.placement_queue}.DQ"
    request.addfinalizer(rabbit.restore_permissions)
    rabbit.deny_consuming_from(delay_queue)
    rabbit.reject_publishes_to(delay_queue)

    start_worker(RecordingExchange())

    # A failed republish is a failure a retry can fix: the order stays pending (the stuck-order
    # sweep republishes it), and its message is in the dead-letter queue, not lost.
    assert dead_lettered_order_ids(rabbit, settings) == [[str(order.id)]]
    row = order_row(database, str(order.id))
    assert row is not None
    assert row["status"] == "pending"
    assert row["attempts"] == 1
    assert row["claimed_until"] is None
    assert "OrderPlacementError" in str(row["last_error"])


def test_two_deliveries_of_one_order_place_it_once(
    client: FlaskClient,
    start_worker: StartWorker,
    placements: PlacementPublisher,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("orders_api.stock_exchange.random.random", lambda: 0.0)
    order_id = client.post("/orders", json=ORDER).get_json()["id"]
    placements.request_placement(uuid.UUID(order_id))
    exchange = RecordingExchange()

    start_worker(exchange, time_limit_ms=1000)
    assert settled_row(database, order_id)["status"] == "placed"
    queue_drained(rabbit, settings.placement_queue)
    queue_drained(rabbit, f"{settings.placement_queue}.DQ")

    assert exchange.calls == [uuid.UUID(order_id)]
