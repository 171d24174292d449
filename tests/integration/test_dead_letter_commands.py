"""The ``dead-letters`` commands on real PostgreSQL and RabbitMQ, with dead letters made by a real worker.

The worker's exchange raises ``ValueError`` (not retryable) until a test lets it through, so an
order fails and its message is dead-lettered exactly as in production; once let through, calls
wait at a gate, so a test can see a replayed order ``pending`` before the worker places it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator

import psycopg2.extensions
import pytest
from click.testing import Result
from flask.testing import FlaskClient

from exchange_simulator import stock_exchange
from orders_api.adapters.rabbitmq.dead_letters import RabbitDeadLetterQueue
from orders_api.domain import Order
from orders_api.settings.shared import Settings
from orders_testkit.rabbitmq_admin import RabbitAdmin
from tests.integration.checks import order_row
from tests.integration.conftest import StartWorker
from tests.integration.placement_helpers import (
    ORDER,
    SETTLE_TIMEOUT_S,
    eventually,
    queue_drained,
    settled_row,
)

pytestmark = pytest.mark.integration

NOT_TRADABLE = "ValueError: instrument not tradable"


class FailThenGatedExchange:
    """Raises ``ValueError`` while :attr:`failing`; then each call waits for :attr:`gate` and places."""

    def __init__(self) -> None:
        self.failing = True
        self.gate = threading.Event()
        self.calls: list[uuid.UUID] = []
        self._lock = threading.Lock()

    def __call__(self, order: Order) -> None:
        with self._lock:
            self.calls.append(order.id)
        if self.failing:
            raise ValueError("instrument not tradable")
        if not self.gate.wait(SETTLE_TIMEOUT_S):
            raise TimeoutError("the test never opened the gate")
        stock_exchange.place_order(order)


@pytest.fixture
def exchange(monkeypatch: pytest.MonkeyPatch) -> Iterator[FailThenGatedExchange]:
    monkeypatch.setattr("exchange_simulator.stock_exchange.random.random", lambda: 0.0)
    monkeypatch.setattr("exchange_simulator.stock_exchange.time.sleep", lambda _seconds: None)
    exchange = FailThenGatedExchange()
    yield exchange
    exchange.gate.set()  # never leave a worker thread waiting


@pytest.fixture
def dead_letters(
    client: FlaskClient,
    start_worker: StartWorker,
    exchange: FailThenGatedExchange,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
) -> Callable[[int], list[tuple[str, str]]]:
    """Make ``count`` failed orders with their messages dead-lettered; return (message id, order id) pairs."""

    def make(count: int) -> list[tuple[str, str]]:
        order_ids = [client.post("/orders", json=ORDER).get_json()["id"] for _ in range(count)]
        start_worker(exchange)
        for order_id in order_ids:
            assert settled_row(database, order_id)["status"] == "failed"
        eventually(lambda: len(rabbit.peek(xq(settings))) == count)
        exchange.failing = False
        by_order = {body["args"][0]: body["message_id"] for body in rabbit.peek_bodies(xq(settings))}
        return [(by_order[order_id], order_id) for order_id in order_ids]

    return make


def xq(settings: Settings) -> str:
    return f"{settings.placement_queue}.XQ"


def cli(client: FlaskClient, *args: str) -> Result:
    return client.application.test_cli_runner().invoke(args=["dead-letters", *args])


def dead_letter_ids(rabbit: RabbitAdmin, settings: Settings) -> list[str]:
    """The ids of the messages in the dead-letter queue, read live (and put back)."""
    return sorted(body["message_id"] for body in rabbit.peek_bodies(xq(settings)))


def test_a_dead_letter_is_listed_with_its_failed_order_and_stays_in_the_queue(
    client: FlaskClient,
    dead_letters: Callable[[int], list[tuple[str, str]]],
    rabbit: RabbitAdmin,
    settings: Settings,
) -> None:
    [(message_id, order_id)] = dead_letters(1)

    listed = cli(client, "list")
    again = cli(client, "list")

    assert listed.exit_code == 0, listed.output
    [header, row, summary] = listed.output.splitlines()
    assert header.split()[:3] == ["MESSAGE", "ID", "ORDER"]
    assert row.split()[:3] == [message_id, order_id, "place_order"]
    assert row.split()[-6:] == ["0", "failed", *NOT_TRADABLE.split()]
    assert summary == f"1 dead letter in {xq(settings)}"
    assert again.output == listed.output
    assert dead_letter_ids(rabbit, settings) == [message_id]


def test_a_dead_letter_is_shown_whole_with_its_order_and_stays_in_the_queue(
    client: FlaskClient,
    dead_letters: Callable[[int], list[tuple[str, str]]],
    rabbit: RabbitAdmin,
    settings: Settings,
) -> None:
    [(message_id, order_id)] = dead_letters(1)

    shown = cli(client, "show", message_id)

    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.output)
    assert document["message"]["message_id"] == message_id
    assert document["message"]["args"] == [order_id]
    assert document["reason"] == "rejected"
    assert document["dead_lettered_at"] is not None
    assert (document["order"]["id"], document["order"]["status"]) == (order_id, "failed")
    assert document["order"]["last_error"] == NOT_TRADABLE
    assert dead_letter_ids(rabbit, settings) == [message_id]


def test_a_replayed_dead_letter_reopens_its_order_which_a_worker_then_places_and_the_queue_is_empty(
    client: FlaskClient,
    dead_letters: Callable[[int], list[tuple[str, str]]],
    exchange: FailThenGatedExchange,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
) -> None:
    [(message_id, order_id)] = dead_letters(1)

    replayed = cli(client, "replay", message_id)

    assert replayed.exit_code == 0, replayed.output
    assert (
        replayed.output
        == f"{message_id} (order {order_id}): order reopened and its placement requested again\n"
    )
    row = order_row(database, order_id)
    assert row is not None
    assert (row["status"], row["last_error"]) == ("pending", NOT_TRADABLE)
    assert dead_letter_ids(rabbit, settings) == []
    exchange.gate.set()
    assert settled_row(database, order_id)["status"] == "placed"
    assert exchange.calls == [uuid.UUID(order_id)] * 2
    queue_drained(rabbit, settings.placement_queue)
    assert dead_letter_ids(rabbit, settings) == []


def test_replaying_all_reopens_failed_orders_and_only_removes_the_letters_of_placed_ones(
    client: FlaskClient,
    dead_letters: Callable[[int], list[tuple[str, str]]],
    exchange: FailThenGatedExchange,
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
) -> None:
    (failed_message, failed_order), (placed_message, placed_order) = dead_letters(2)
    with database.cursor() as cursor:
        cursor.execute(
            "UPDATE orders SET status = 'placed', placed_at = now() WHERE id = %s", (placed_order,)
        )
    placed_before = order_row(database, placed_order)
    exchange.gate.set()

    replayed = cli(client, "replay", "--all")

    assert replayed.exit_code == 0, replayed.output
    assert sorted(replayed.output.splitlines()) == sorted(
        [
            f"{failed_message} (order {failed_order}): order reopened and its placement requested again",
            f"{placed_message} (order {placed_order}): order already placed; nothing to replay",
        ]
    )
    assert dead_letter_ids(rabbit, settings) == []
    assert settled_row(database, failed_order)["status"] == "placed"
    assert order_row(database, placed_order) == placed_before
    assert exchange.calls.count(uuid.UUID(placed_order)) == 1


def test_replaying_an_unknown_message_fails_cleanly_and_changes_nothing(
    client: FlaskClient,
    dead_letters: Callable[[int], list[tuple[str, str]]],
    database: psycopg2.extensions.connection,
    rabbit: RabbitAdmin,
    settings: Settings,
) -> None:
    [(message_id, order_id)] = dead_letters(1)

    replayed = cli(client, "replay", "no-such-message")

    assert replayed.exit_code == 1
    assert "no dead letter with message id 'no-such-message'" in replayed.output
    assert dead_letter_ids(rabbit, settings) == [message_id]
    assert settled_row(database, order_id)["status"] == "failed"


def test_replay_needs_either_a_message_id_or_all(client: FlaskClient) -> None:
    assert cli(client, "replay").exit_code == 2
    assert cli(client, "replay", "some-id", "--all").exit_code == 2


def test_listing_a_dead_letter_queue_that_does_not_exist_yet_says_there_is_none(
    client: FlaskClient, settings: Settings, rabbit: RabbitAdmin
) -> None:
    rabbit.delete_queue(xq(settings))  # as before any setup or worker declared it

    listed = cli(client, "list")

    assert listed.exit_code == 0, listed.output
    assert listed.output == f"no dead letters in {xq(settings)}\n"


def test_one_pass_holds_each_message_once_however_many_there_are(
    dead_letters: Callable[[int], list[tuple[str, str]]], settings: Settings
) -> None:
    made = dead_letters(3)
    queue = RabbitDeadLetterQueue(settings.rabbitmq_url, settings.placement_queue, connect_timeout_s=2)

    with queue.hold() as held:
        first = [letter.message_id for letter in held]
        second = [letter.message_id for letter in held]
    with queue.hold() as held:
        after = [letter.message_id for letter in held]

    assert sorted(first) == sorted(message_id for message_id, _ in made)
    assert second == first
    assert sorted(after) == sorted(first)
