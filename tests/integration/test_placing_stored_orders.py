"""The worker's use cases on real PostgreSQL, without a broker, judged by the rows they leave.

The unit tests drive :mod:`orders_api.service_layer.placement` against a fake repository; these
check what a fake cannot vouch for: that a batch inserted by ``add_many`` holds the creation
lock a worker waits on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

import psycopg2.extensions
import pytest
import sqlalchemy as sa

from orders_api.adapters.database import create_engine
from orders_api.config import Settings
from orders_api.domain import Order
from orders_api.service_layer.ordering import utc_now
from orders_api.service_layer.placement import Exchange, PlacementOutcome, place_on_exchange
from orders_api.service_layer.unit_of_work import SqlAlchemyUnitOfWork
from tests.integration.checks import order_row, waiting_for_advisory_locks
from tests.integration.placement_helpers import SETTLE_TIMEOUT_S, eventually, new_order

pytestmark = pytest.mark.integration

LEASE = timedelta(seconds=60)
#: Orders in the batch of the creation-lock test, each with a delivery of its own waiting on it.
BATCH = 3


def placed_on_the_exchange(placed: list[uuid.UUID]) -> Exchange:
    """An exchange that takes every order at once and notes which."""

    def exchange(order: Order) -> None:
        placed.append(order.id)  # list.append is atomic, so deliveries may share the list

    return exchange


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
                    lease=LEASE,
                    ends_by=utc_now() + LEASE / 2,
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

