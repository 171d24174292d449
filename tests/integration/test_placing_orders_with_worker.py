"""The Dramatiq worker on real PostgreSQL and RabbitMQ: placement, retries, dead letters and orphans."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import dramatiq
import psycopg2.extensions
import pytest
from flask.testing import FlaskClient
from psycopg2 import sql

from exchange_simulator.stock_exchange import OrderPlacementError
from orders_api.adapters.postgres.unit_of_work import SqlAlchemyUnitOfWork
from orders_api.adapters.rabbitmq.placement_queue import PlacementPublisher
from orders_api.domain import Order
from orders_api.settings.shared import Settings
from orders_testkit.rabbitmq_admin import RabbitAdmin
from tests.integration.checks import order_row, waiting_for_advisory_locks
from tests.integration.conftest import StartWorker
from tests.integration.placement_helpers import (
    ORDER,
    RecordingExchange,
    eventually,
    new_order,
    queue_drained,
    settled_row,
)
from tests.settings_env import workers_on
from workers.bootstrap import bootstrap

pytestmark = pytest.mark.integration

#: Orders waiting for the exchange in the outage test: more than the probes of a second, so
#: that retrying each of them would show in the count of calls.
ORDERS_IN_OUTAGE = 20


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


def test_the_retries_of_every_worker_thread_are_published_over_one_connection(
    client: FlaskClient,
    start_worker: StartWorker,
    database: psycopg2.extensions.connection,
    exchange_outcomes: Callable[..., None],
) -> None:
    """Catches a publishing connection per thread: per greenlet under gevent, hundreds a process."""
    exchange_outcomes(*[0.95] * 12)  # the first twelve calls refused: every order retried
    order_ids = [client.post("/orders", json=ORDER).get_json()["id"] for _ in range(12)]

    broker = start_worker(RecordingExchange())

    assert [settled_row(database, order_id)["status"] for order_id in order_ids] == ["placed"] * 12
    assert len(broker.connections) == 1


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


def test_an_order_whose_placement_keeps_being_cut_short_fails_as_poison_and_is_dead_lettered(
    client: FlaskClient,
    start_worker: StartWorker,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
) -> None:
    # As if two workers had died mid-placement and the third claim had just expired too.
    order_id = client.post("/orders", json=ORDER).get_json()["id"]
    with database.cursor() as cursor:
        cursor.execute(
            "UPDATE orders SET attempts = 3, abandoned_claims = 2,"
            " claimed_until = now() - interval '1 second' WHERE id = %s",
            (order_id,),
        )
    exchange = RecordingExchange()

    start_worker(exchange)
    row = settled_row(database, order_id)

    assert row["status"] == "failed"
    assert "PoisonOrderError" in str(row["last_error"])
    assert row["claimed_until"] is None
    assert exchange.calls == []
    assert dead_lettered_order_ids(rabbit, settings) == [[order_id]]


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

    start_worker(RecordingExchange(), placement_max_retries=2)
    row = settled_row(database, order_id)

    assert row["status"] == "failed"
    assert row["attempts"] == 3
    assert "OrderPlacementError" in str(row["last_error"])
    assert dead_lettered_order_ids(rabbit, settings) == [[order_id]]


def test_during_an_exchange_outage_placements_wait_for_it_instead_of_retrying_and_are_placed_after_it(
    client: FlaskClient,
    start_worker: StartWorker,
    database: psycopg2.extensions.connection,
    exchange_outcomes: Callable[..., None],
) -> None:
    order_ids = [client.post("/orders", json=ORDER).get_json()["id"] for _ in range(ORDERS_IN_OUTAGE)]
    exchange = RecordingExchange(fail_with=OrderPlacementError("exchange outage"))

    start_worker(
        exchange,
        exchange_breaker_failures=4,
        exchange_breaker_quiet_ms=100,
        exchange_breaker_longest_pause_ms=200,
    )
    eventually(lambda: exchange.calls)
    # ``exchange_outcomes`` stubs out ``time.sleep``, so the test waits on an event instead:
    # first until the breaker has opened (100 ms without an answer), then a second of outage,
    # in which each order would otherwise be retried every 20-200 ms.
    threading.Event().wait(0.5)
    calls_before = len(exchange.calls)
    threading.Event().wait(1.0)
    calls_while_open = len(exchange.calls) - calls_before
    exchange.fail_with = None
    rows = [settled_row(database, order_id) for order_id in order_ids]

    assert all(row["status"] == "placed" for row in rows)
    assert calls_while_open < ORDERS_IN_OUTAGE, "the breaker did not hold placements back"


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


def test_a_retry_that_cannot_be_republished_is_requeued_not_dead_lettered_and_its_order_placed_later(
    request: pytest.FixtureRequest,
    start_worker: StartWorker,
    placements: PlacementPublisher,
    unit_of_work: Callable[[], SqlAlchemyUnitOfWork],
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    exchange_outcomes: Callable[..., None],
) -> None:
    order = new_order()
    with unit_of_work() as uow:
        uow.orders.add(order)
        placements.request_placement(order.id)
        uow.commit()
    # Make the delay queue refuse the retry: nobody may consume from it, so a filler message
    # stays ready in it, and a length limit of 0 then has RabbitMQ nack every further publish.
    delay_queue = f"{settings.placement_queue}.DQ"
    dead_letter_queue = f"{settings.placement_queue}.XQ"
    request.addfinalizer(rabbit.restore_permissions)
    rabbit.deny_consuming_from(delay_queue)
    rabbit.reject_publishes_to(delay_queue)
    exchange = RecordingExchange(fail_with=OrderPlacementError("exchange outage"))

    start_worker(exchange)

    def came_back_or_dead_lettered() -> bool:
        """the message is delivered again or dead-lettered"""
        return len(exchange.calls) >= 2 or bool(rabbit.peek(dead_letter_queue))

    # A retry that cannot be scheduled is a failure a retry can fix: the message goes back to
    # the queue and is tried again, it is not dead-lettered, and the order stays pending.
    eventually(came_back_or_dead_lettered)
    assert rabbit.peek(dead_letter_queue) == []
    row = order_row(database, str(order.id))
    assert row is not None
    assert row["status"] == "pending"
    attempts = row["attempts"]  # claimed again by the delivery that came back, which may still hold it
    assert isinstance(attempts, int) and attempts >= 2
    assert "OrderPlacementError" in str(row["last_error"])

    # Once the delay queue takes retries again the order is placed, though the exchange refuses
    # it once more (a retry to schedule), and nothing was dead-lettered on the way.
    rabbit.delete_policy(f"reject-{delay_queue}")
    rabbit.restore_permissions()
    exchange_outcomes(0.95)
    exchange.fail_with = None
    row = settled_row(database, str(order.id))

    assert row["status"] == "placed"
    assert rabbit.peek(dead_letter_queue) == []


def test_two_deliveries_of_one_order_place_it_once(
    client: FlaskClient,
    start_worker: StartWorker,
    placements: PlacementPublisher,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("exchange_simulator.stock_exchange.random.random", lambda: 0.0)
    order_id = client.post("/orders", json=ORDER).get_json()["id"]
    placements.request_placement(uuid.UUID(order_id))
    exchange = RecordingExchange()

    start_worker(exchange, placement_time_limit_ms=1000)
    assert settled_row(database, order_id)["status"] == "placed"
    queue_drained(rabbit, settings.placement_queue)
    queue_drained(rabbit, f"{settings.placement_queue}.DQ")

    assert exchange.calls == [uuid.UUID(order_id)]


def test_waiting_for_the_database_spends_none_of_the_retries_the_exchange_gets_afterwards(
    client: FlaskClient,
    start_worker: StartWorker,
    settings: Settings,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    exchange_outcomes: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A database that refuses every connection (nothing listens on port 1), and waits of 20 to
    # 50 ms, so that the message waits far more often than its one retry allows.
    monkeypatch.setattr("workers.placement_actor.DATABASE_RETRY_DELAY_MS", (20, 50))
    away = settings.model_copy(update={"database_url": "postgresql://postgres@127.0.0.1:1/away"})
    broker = bootstrap(
        workers_on(away, worker_threads=2, placement_max_retries=1, placement_min_backoff_ms=20),
        RecordingExchange(),
    )
    cut_off = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    cut_off.start()
    try:
        order_id = client.post("/orders", json=ORDER).get_json()["id"]
        eventually(lambda: caplog.text.count(f"order {order_id} waits for the database") >= 5)
    finally:
        cut_off.stop()
        broker.close()
    exchange_outcomes(0.95)  # the first call is refused, as 10 % of calls are
    exchange = RecordingExchange()

    start_worker(exchange, placement_max_retries=1)
    row = settled_row(database, order_id)

    assert row["status"] == "placed", row
    assert len(exchange.calls) == 2
    assert rabbit.queue(f"{settings.placement_queue}.XQ").get("messages", 0) == 0


#: Ends every session of a database role.
TERMINATE_ROLE = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s"


class CutOffAfterTheCall(RecordingExchange):
    """Accepts the order, then shuts the worker's database role out: an outage right after the call.

    It always accepts (no sleep, none of the stand-in's random refusals): the test counts
    exactly one call, and a refusal would make a second attempt of its own.
    """

    def __init__(self, database: psycopg2.extensions.connection, role: str) -> None:
        super().__init__()
        self._database = database
        self._role = role

    def __call__(self, order: Order) -> None:
        with self._lock:
            self.calls.append(order.id)
        with self._database.cursor() as cursor:
            cursor.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(self._role)))
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (self._role,)
            )


@pytest.fixture
def worker_role(database: psycopg2.extensions.connection) -> Iterator[str]:
    """A database role of this test's own for the worker, which the test can shut out and let in again."""
    role = f"worker_{uuid.uuid4().hex[:8]}"
    with database.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(sql.Identifier(role)))
    yield role
    with database.cursor() as cursor:
        cursor.execute(TERMINATE_ROLE, (role,))
        cursor.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_an_answer_the_database_cannot_take_outlives_the_worker_that_got_it(
    client: FlaskClient,
    start_worker: StartWorker,
    settings: Settings,
    database: psycopg2.extensions.connection,
    worker_role: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The worker places the order, loses the database, and is stopped during the outage; a
    # worker started after it records the answer from the broker, and never calls the exchange.
    as_role = settings.model_copy(
        update={"database_url": settings.database_url.replace("postgres@", f"{worker_role}@", 1)}
    )
    exchange = CutOffAfterTheCall(database, worker_role)
    broker = bootstrap(workers_on(as_role, worker_threads=2), exchange)
    stopped = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    stopped.start()
    try:
        order_id = client.post("/orders", json=ORDER).get_json()["id"]
        eventually(lambda: f"answer for order {order_id} handed to the courier" in caplog.text)
    finally:
        stopped.stop()
        broker.close()
    assert (order_row(database, order_id) or {}).get("status") == "pending"
    with database.cursor() as cursor:
        cursor.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(worker_role)))
    after = RecordingExchange()

    start_worker(after)
    row = settled_row(database, order_id)

    assert (row["status"], row["attempts"]) == ("placed", 1)
    assert exchange.calls == [uuid.UUID(order_id)]
    assert after.calls == []
