"""The worker's use cases on real PostgreSQL, without a broker, judged by the rows they leave.

The unit tests drive :mod:`orders_api.service_layer.placement` against a fake repository; these
check the two things a fake cannot vouch for: that a batch inserted by ``add_many`` holds the
creation lock a worker waits on, and that each outcome, written by the SQL compare-and-set over
a row another delivery changed meanwhile, leaves the stored row right.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

import psycopg2.extensions
import pytest
import sqlalchemy as sa

from exchange_simulator.stock_exchange import OrderPlacementError
from orders_api.adapters.postgres.database import create_engine
from orders_api.adapters.postgres.unit_of_work import SqlAlchemyUnitOfWork
from orders_api.clock import utc_now
from orders_api.domain import Order
from orders_api.service_layer.placement import Exchange, PlacementOutcome, place_on_exchange
from orders_api.settings.shared import Settings
from tests.integration.checks import order_row, waiting_for_advisory_locks
from tests.integration.placement_helpers import SETTLE_TIMEOUT_S, eventually, new_order
from tests.unit.fakes import T0, FakeClock, make_order, seasoned_claims
from workers.placement_actor import DATABASE_UNAVAILABLE, waits_for_database

pytestmark = pytest.mark.integration

LEASE = timedelta(seconds=60)
#: Orders in the batch of the creation-lock test, each with a delivery of its own waiting on it.
BATCH = 3
#: The columns a placement never changes, as :func:`make_order` fills them in.
AS_SUBMITTED = {"limit_price": make_order().limit_price, "quantity": make_order().quantity}


def placed_on_the_exchange(placed: list[uuid.UUID]) -> Exchange:
    """An exchange that takes every order at once and notes which."""

    def exchange(order: Order) -> None:
        placed.append(order.id)  # list.append is atomic, so deliveries may share the list

    return exchange


def accepting_exchange(_order: Order) -> None:
    """An exchange that takes every order at once."""


def deliver(
    order_id: uuid.UUID, uow: SqlAlchemyUnitOfWork, exchange: Exchange, clock: FakeClock
) -> PlacementOutcome:
    """Handle one delivery of the placement message for ``order_id``, on the test's clock."""
    return place_on_exchange(order_id, uow, exchange, claims=seasoned_claims(clock, LEASE), now=clock)


def outlive_the_lease(database: psycopg2.extensions.connection, order_id: uuid.UUID) -> None:
    """Have the order's claim run out on the database's clock, the one claims are judged on."""
    with database.cursor() as cursor:
        cursor.execute(
            "UPDATE orders SET claimed_until = now() - interval '1 second' WHERE id = %s", (str(order_id),)
        )


# A batch's creation locks


@pytest.fixture
def engine(settings: Settings) -> Iterator[sa.Engine]:
    """An engine with room for the batch's open transaction and one delivery per order at once."""
    engine = create_engine(settings, pool_size=BATCH + 1)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_delivery_waits_for_the_batch_that_creates_its_order_before_deciding(
    outcome: str, engine: sa.Engine, database: psycopg2.extensions.connection
) -> None:
    batch = [new_order() for _ in range(BATCH)]
    placed: list[uuid.UUID] = []
    claims = seasoned_claims(FakeClock(utc_now()), LEASE)
    with ThreadPoolExecutor(max_workers=BATCH) as deliveries:
        with SqlAlchemyUnitOfWork(engine) as uow:
            uow.orders.add_many(batch)
            # The batch's messages are confirmed before its COMMIT: each delivery reads the
            # order while the batch is still open, finds nothing, and must wait on its lock.
            decisions: list[Future[PlacementOutcome]] = [
                deliveries.submit(
                    place_on_exchange,
                    order.id,
                    SqlAlchemyUnitOfWork(engine),
                    placed_on_the_exchange(placed),
                    claims=claims,
                )
                for order in batch
            ]

            def every_delivery_waits_or_one_decided() -> bool:
                """every delivery waits on a creation lock, or one has already decided"""
                return waiting_for_advisory_locks(database) == BATCH or any(d.done() for d in decisions)

            eventually(every_delivery_waits_or_one_decided)
            decided = [decision.result() for decision in decisions if decision.done()]
            assert decided == [], "a delivery decided before the batch creating its order had ended"
            if outcome == "commit":
                uow.commit()
        outcomes = [decision.result(timeout=SETTLE_TIMEOUT_S) for decision in decisions]

    rows = [order_row(database, str(order.id)) for order in batch]
    if outcome == "commit":
        assert outcomes == [PlacementOutcome.PLACED] * BATCH
        assert sorted(placed) == sorted(order.id for order in batch)
        assert [row and row["status"] for row in rows] == ["placed"] * BATCH
    else:
        assert outcomes == [PlacementOutcome.ORPHAN_DROPPED] * BATCH
        assert placed == []
        assert rows == [None] * BATCH


# Outcomes written over a row another delivery changed


@pytest.fixture
def stored_order(unit_of_work: Callable[[], SqlAlchemyUnitOfWork]) -> Order:
    """A pending order committed in this run's database."""
    order = make_order()
    with unit_of_work() as uow:
        uow.orders.add(order)
        uow.commit()
    return order


def test_a_placement_recorded_after_another_delivery_placed_the_order_keeps_the_first_placement(
    stored_order: Order,
    unit_of_work: Callable[[], SqlAlchemyUnitOfWork],
    database: psycopg2.extensions.connection,
) -> None:
    # The first delivery's exchange call outlives its lease; a second delivery takes the order
    # over and places it; then the first call returns too, a second later.
    clock = FakeClock(T0)
    first_placed_at = T0 + LEASE + timedelta(seconds=1)

    def stall_while_another_delivery_places(_order: Order) -> None:
        clock.advance(first_placed_at - T0)
        outlive_the_lease(database, stored_order.id)
        assert deliver(stored_order.id, unit_of_work(), accepting_exchange, clock) is PlacementOutcome.PLACED
        clock.advance(timedelta(seconds=1))

    outcome = deliver(stored_order.id, unit_of_work(), stall_while_another_delivery_places, clock)

    # Both calls placed the order on the exchange: the second to be recorded says so.
    assert outcome is PlacementOutcome.PLACED_AGAIN
    assert order_row(database, str(stored_order.id)) == {
        **AS_SUBMITTED,
        "status": "placed",
        "placed_at": first_placed_at,
        "attempts": 2,
        "last_error": None,
        "claimed_until": None,
    }


def test_a_placement_recorded_over_another_deliverys_claim_clears_it_and_keeps_its_attempt(
    stored_order: Order,
    unit_of_work: Callable[[], SqlAlchemyUnitOfWork],
    database: psycopg2.extensions.connection,
) -> None:
    # The first delivery's exchange call outlives its lease and a second delivery claims the
    # order; the first call then returns: the exchange has the order, whoever holds the claim.
    clock = FakeClock(T0)

    def stall_while_another_delivery_claims(_order: Order) -> None:
        clock.advance(LEASE + timedelta(seconds=1))
        outlive_the_lease(database, stored_order.id)
        with unit_of_work() as uow:
            seen, database_now = uow.orders.get_with_clock(stored_order.id)
            assert seen is not None
            assert uow.orders.compare_and_set(seen, seen.claim(database_now, LEASE))
            uow.commit()

    outcome = deliver(stored_order.id, unit_of_work(), stall_while_another_delivery_claims, clock)

    assert outcome is PlacementOutcome.PLACED
    assert order_row(database, str(stored_order.id)) == {
        **AS_SUBMITTED,
        "status": "placed",
        "placed_at": T0 + LEASE + timedelta(seconds=1),
        "attempts": 2,
        "last_error": None,
        "claimed_until": None,
    }


def test_a_failure_reported_after_another_delivery_placed_the_order_leaves_it_placed(
    stored_order: Order,
    unit_of_work: Callable[[], SqlAlchemyUnitOfWork],
    database: psycopg2.extensions.connection,
) -> None:
    # The first delivery's exchange call outlives its lease; a second delivery takes the order
    # over and places it; then the first call fails. Releasing the first claim now would put a
    # placed order back to pending, and a retry would place it on the exchange again.
    clock = FakeClock(T0)
    placed_at = T0 + LEASE + timedelta(seconds=1)

    def stall_while_another_delivery_places_then_fail(_order: Order) -> None:
        clock.advance(placed_at - T0)
        outlive_the_lease(database, stored_order.id)
        assert deliver(stored_order.id, unit_of_work(), accepting_exchange, clock) is PlacementOutcome.PLACED
        raise OrderPlacementError("Failed to place order at stock exchange. Connection not available")

    with pytest.raises(OrderPlacementError):
        deliver(stored_order.id, unit_of_work(), stall_while_another_delivery_places_then_fail, clock)

    assert order_row(database, str(stored_order.id)) == {
        **AS_SUBMITTED,
        "status": "placed",
        "placed_at": placed_at,
        "attempts": 2,
        "last_error": None,
        "claimed_until": None,
    }


def test_a_server_that_takes_no_writes_yet_makes_the_delivery_wait_without_spending_a_retry(
    settings: Settings, stored_order: Order
) -> None:
    """A failover's new primary refuses every write until its promotion ends (SQLSTATE 25006),
    as a read-only session does here. The delivery waits for it as for a database that is away:
    counted as an ordinary error, each refusal would double the order's backoff."""
    read_only = create_engine(settings, autocommit=True)
    sa.event.listen(read_only, "connect", lambda connection, _record: connection.set_session(readonly=True))
    try:
        with pytest.raises(sa.exc.DBAPIError) as refused:
            place_on_exchange(
                stored_order.id,
                SqlAlchemyUnitOfWork(read_only),
                accepting_exchange,
                claims=seasoned_claims(FakeClock(utc_now()), LEASE),
            )
    finally:
        read_only.dispose()
    assert waits_for_database(refused.value)
    assert not isinstance(refused.value, DATABASE_UNAVAILABLE), "the read-only refusal is its own case"
