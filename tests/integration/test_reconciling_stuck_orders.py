"""The reconciliation sweep on real PostgreSQL and RabbitMQ: lost messages republished, nothing else.

Time is controlled through the threshold: the tests set ``updated_at`` of their orders two days
back and sweep with a threshold of one day, which no other test's order in this run's database
can reach, so the table-wide sweep only ever sees the orders of the test at hand.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pika
import psycopg2.extensions
import pytest
from flask.testing import FlaskClient

from orders_api.adapters.postgres.unit_of_work import SqlAlchemyUnitOfWork
from orders_api.adapters.rabbitmq.placement_queue import PlacementPublisher
from orders_api.service_layer.reconciliation import republish_stale_orders
from orders_api.settings.shared import Settings
from orders_testkit.rabbitmq_admin import RabbitAdmin
from tests.integration.conftest import StartWorker
from tests.integration.placement_helpers import (
    ORDER,
    SETTLE_TIMEOUT_S,
    RecordingExchange,
    eventually,
    settled_row,
)

pytestmark = pytest.mark.integration

#: The sweep's threshold in these tests; the tests' stale orders are twice as old.
STALE_AFTER = timedelta(days=1)


@pytest.fixture
def sweep_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"reconcile_stale_after_s": STALE_AFTER.total_seconds()})


@pytest.fixture
def client(client_for: Callable[[Settings], FlaskClient], sweep_settings: Settings) -> FlaskClient:
    return client_for(sweep_settings)


@pytest.fixture
def backdate(database: psycopg2.extensions.connection) -> Iterator[Callable[..., None]]:
    """Make orders look untouched for two days; afterwards, whatever is still pending is made fresh.

    That keeps a test that failed half-way from leaving stale orders for the next test's sweep.
    """
    backdated: list[str] = []

    def make_stale(*order_ids: str) -> None:
        backdated.extend(order_ids)
        execute(
            database,
            "UPDATE orders SET updated_at = now() - interval '2 days' WHERE id = ANY(%s::uuid[])",
            list(order_ids),
        )

    yield make_stale
    execute(database, "UPDATE orders SET updated_at = now() WHERE id = ANY(%s::uuid[])", backdated)


@pytest.fixture
def reliable_exchange(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in exchange without its random outages and its 0.5 s sleep."""
    monkeypatch.setattr("exchange_simulator.stock_exchange.random.random", lambda: 0.0)
    monkeypatch.setattr("exchange_simulator.stock_exchange.time.sleep", lambda _seconds: None)


def execute(database: psycopg2.extensions.connection, statement: str, *parameters: object) -> None:
    with database.cursor() as cursor:
        cursor.execute(statement, parameters)


def updated_at(database: psycopg2.extensions.connection, order_ids: list[str]) -> dict[str, object]:
    with database.cursor() as cursor:
        cursor.execute("SELECT id::text, updated_at FROM orders WHERE id = ANY(%s::uuid[])", (order_ids,))
        return dict(cursor.fetchall())


def purge(settings: Settings, queue: str) -> None:
    """Empty ``queue``, as a broker that lost it would; the orders' messages are gone."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.rabbitmq_url))
    try:
        connection.channel().queue_purge(queue)
    finally:
        connection.close()


def requested_order_ids(rabbit: RabbitAdmin, settings: Settings) -> list[str]:
    """The order ids of the placement requests now in the queue, read live (and put back)."""
    return sorted(body["args"][0] for body in rabbit.peek_bodies(settings.placement_queue))


def post_orders(client: FlaskClient, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = client.post("/orders", json=ORDER)
        assert response.status_code == 201, response.get_data(as_text=True)
        ids.append(response.get_json()["id"])
    return ids


def test_a_stale_pending_order_whose_message_was_lost_is_republished_and_then_placed(
    client: FlaskClient,
    backdate: Callable[..., None],
    start_worker: StartWorker,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
    reliable_exchange: None,
) -> None:
    [order_id] = post_orders(client, 1)
    purge(settings, settings.placement_queue)
    backdate(order_id)
    assert requested_order_ids(rabbit, settings) == []

    result = client.application.test_cli_runner().invoke(args=["reconcile"])

    assert result.exit_code == 0, result.output
    assert requested_order_ids(rabbit, settings) == [order_id]
    exchange = RecordingExchange()
    start_worker(exchange)
    assert settled_row(database, order_id)["status"] == "placed"
    assert exchange.calls == [uuid.UUID(order_id)]


def test_only_pending_orders_untouched_past_the_threshold_and_not_under_a_live_claim_are_republished(
    client: FlaskClient,
    backdate: Callable[..., None],
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
) -> None:
    fresh, live_claim, expired_claim, placed, failed = post_orders(client, 5)
    purge(settings, settings.placement_queue)
    execute(database, "UPDATE orders SET claimed_until = now() + interval '1 hour' WHERE id = %s", live_claim)
    execute(
        database, "UPDATE orders SET claimed_until = now() - interval '1 hour' WHERE id = %s", expired_claim
    )
    execute(database, "UPDATE orders SET status = 'placed', placed_at = now() WHERE id = %s", placed)
    execute(
        database, "UPDATE orders SET status = 'failed', last_error = 'ValueError: x' WHERE id = %s", failed
    )
    backdate(live_claim, expired_claim, placed, failed)
    left_alone = [fresh, live_claim, placed, failed]
    before = updated_at(database, left_alone)

    result = client.application.test_cli_runner().invoke(args=["reconcile"])

    assert result.exit_code == 0, result.output
    assert requested_order_ids(rabbit, settings) == [expired_claim]
    assert updated_at(database, left_alone) == before
    assert updated_at(database, [expired_claim])[expired_claim] > before[fresh]  # type: ignore[operator]


def test_a_second_sweep_right_after_the_first_republishes_nothing(
    client: FlaskClient,
    backdate: Callable[..., None],
    rabbit: RabbitAdmin,
    settings: Settings,
) -> None:
    order_ids = post_orders(client, 3)
    purge(settings, settings.placement_queue)
    backdate(*order_ids)
    runner = client.application.test_cli_runner()

    first = runner.invoke(args=["reconcile"])
    second = runner.invoke(args=["reconcile"])

    assert (first.exit_code, second.exit_code) == (0, 0), first.output + second.output
    assert requested_order_ids(rabbit, settings) == sorted(order_ids)


class HoldingPlacements:
    """Publishes for real, then holds its sweep's transaction open after the first request until released."""

    def __init__(self, inner: PlacementPublisher) -> None:
        self._inner = inner
        self.published = threading.Event()
        self.release = threading.Event()

    def request_placement(self, order_id: uuid.UUID) -> None:
        self._inner.request_placement(order_id)
        if not self.published.is_set():
            self.published.set()
            assert self.release.wait(SETTLE_TIMEOUT_S), "the test never released the first sweep"


def test_two_concurrent_sweeps_split_the_stale_orders_and_republish_each_once(
    client: FlaskClient,
    backdate: Callable[..., None],
    unit_of_work: Callable[[], SqlAlchemyUnitOfWork],
    placements: PlacementPublisher,
    rabbit: RabbitAdmin,
    settings: Settings,
) -> None:
    order_ids = post_orders(client, 2)
    purge(settings, settings.placement_queue)
    backdate(*order_ids)
    holding = HoldingPlacements(placements)
    first_sweep: list[uuid.UUID] = []

    def sweep_while_holding() -> None:
        first_sweep.extend(
            republish_stale_orders(unit_of_work, holding, stale_after=STALE_AFTER, batch_size=1)
        )

    first = threading.Thread(target=sweep_while_holding)
    first.start()
    try:
        assert holding.published.wait(SETTLE_TIMEOUT_S), "the first sweep republished nothing"
        # The first sweep holds one stale order locked in its open transaction: the second
        # sweep must skip it rather than wait for it, and take the other one.
        second_sweep = republish_stale_orders(unit_of_work, placements, stale_after=STALE_AFTER, batch_size=1)
    finally:
        holding.release.set()
        first.join(SETTLE_TIMEOUT_S)
    assert not first.is_alive()

    assert len(first_sweep) == 1
    assert len(second_sweep) == 1
    assert sorted(map(str, first_sweep + second_sweep)) == sorted(order_ids)
    assert requested_order_ids(rabbit, settings) == sorted(order_ids)
    assert republish_stale_orders(unit_of_work, placements, stale_after=STALE_AFTER) == []


def test_the_sweep_names_its_broker_connection_as_the_sweep(
    client: FlaskClient,
    client_for: Callable[[Settings], FlaskClient],
    sweep_settings: Settings,
    backdate: Callable[..., None],
    rabbit: RabbitAdmin,
) -> None:
    [order_id] = post_orders(client, 1)
    backdate(order_id)
    sweep = client_for(sweep_settings).application  # a process of its own, as `flask reconcile` runs

    result = sweep.test_cli_runner().invoke(args=["reconcile"])

    assert result.exit_code == 0, result.output
    name = f"orders-reconcile {socket.gethostname()} pid {os.getpid()}"

    def listed() -> bool:
        """the management API lists the sweep's connection by its name"""
        return name in rabbit.connection_names()

    eventually(listed)
