"""The reconciliation sweep with fakes: what it republishes, in which order, and what a failure leaves.

The fakes cannot tell time, so a test names the stale orders; the real selection (by
``updated_at``, claims, ``SKIP LOCKED``) is proved against PostgreSQL in the integration tests.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest

from orders_api.adapters.rabbitmq.confirmed_publisher import PublishError
from orders_api.api.commands import run_every
from orders_api.domain import Order, OrderStatus
from orders_api.service_layer.reconciliation import SweepInterruptedError, republish_stale_orders
from tests.unit.fakes import T0, FakeOrderRepository, FakePlacementRequests, FakeUnitOfWork, make_order

pytestmark = pytest.mark.unit

STALE_AFTER = timedelta(minutes=15)


def test_each_stale_order_is_republished_and_the_transaction_commits_after_the_confirms() -> None:
    first, second = make_order(), make_order()
    uow = FakeUnitOfWork(first, second)
    uow.repository.stale = {first.id, second.id}
    placements = FakePlacementRequests(events=uow.events)

    republished = republish_stale_orders(lambda: uow, placements, stale_after=STALE_AFTER)

    assert sorted(republished) == sorted([first.id, second.id])
    assert sorted(placements.requested) == sorted([first.id, second.id])
    assert uow.events[: uow.events.index("commit") + 1] == [
        "begin",
        "lock_stale_pending",
        "request_placement",
        "update",
        "request_placement",
        "update",
        "commit",
    ]
    assert uow.repository.stale == set()


def test_orders_that_are_not_stale_or_pending_or_are_locked_elsewhere_are_not_republished() -> None:
    fresh = make_order()
    placed = make_order(status=OrderStatus.PLACED, placed_at=T0)
    failed = make_order(status=OrderStatus.FAILED, last_error="ValueError: no")
    claimed = make_order(claimed_until=T0 + timedelta(minutes=1))
    locked = make_order()
    uow = FakeUnitOfWork(fresh, placed, failed, claimed, locked)
    uow.repository.stale = {placed.id, failed.id, claimed.id, locked.id}
    uow.repository.locked_elsewhere = {locked.id}
    placements = FakePlacementRequests()

    assert republish_stale_orders(lambda: uow, placements, stale_after=STALE_AFTER) == []
    assert placements.requested == []
    assert uow.commits == 0


def test_a_request_the_broker_does_not_confirm_stops_the_sweep_keeping_what_was_confirmed() -> None:
    orders = [make_order() for _ in range(3)]
    uow = FakeUnitOfWork(*orders)
    uow.repository.stale = {order.id for order in orders}

    class FailsOnSecond(FakePlacementRequests):
        def request_placement(self, order_id: uuid.UUID) -> None:
            if len(self.requested) == 1:
                raise PublishError("nack")
            super().request_placement(order_id)

    placements = FailsOnSecond()

    with pytest.raises(SweepInterruptedError) as raised:
        republish_stale_orders(lambda: uow, placements, stale_after=STALE_AFTER, batch_size=10)

    assert raised.value.republished == placements.requested
    assert len(placements.requested) == 1
    assert uow.commits == 1
    assert uow.repository.stale == {order.id for order in orders} - set(placements.requested)


def test_nothing_is_committed_when_the_first_request_is_not_confirmed() -> None:
    order = make_order()
    uow = FakeUnitOfWork(order)
    uow.repository.stale = {order.id}

    with pytest.raises(SweepInterruptedError):
        republish_stale_orders(
            lambda: uow, FakePlacementRequests(fail_with=PublishError("down")), stale_after=STALE_AFTER
        )

    assert uow.commits == 0
    assert uow.repository.stale == {order.id}


def test_a_sweep_works_through_batches_until_no_stale_order_is_left() -> None:
    orders = [make_order() for _ in range(5)]
    uow = FakeUnitOfWork(*orders)
    uow.repository.stale = {order.id for order in orders}
    placements = FakePlacementRequests()

    republished = republish_stale_orders(lambda: uow, placements, stale_after=STALE_AFTER, batch_size=2)

    assert sorted(republished) == sorted(order.id for order in orders)
    assert uow.commits == 3
    assert uow.events.count("lock_stale_pending") == 3


def test_a_sweep_stops_after_its_batch_limit_even_if_orders_keep_going_stale() -> None:
    class StaleAgainAtOnce(FakeOrderRepository):
        """Orders that go stale again as soon as they are touched: each batch finds them once more."""

        def update(self, order: Order) -> None:
            super().update(order)
            self.stale.add(order.id)

    order = make_order()
    uow = FakeUnitOfWork(order)
    uow.repository = StaleAgainAtOnce(events=uow.events)
    uow.repository.stale = {order.id}

    republished = republish_stale_orders(
        lambda: uow, FakePlacementRequests(), stale_after=STALE_AFTER, batch_size=1, max_batches=4
    )

    assert len(republished) == 4


def test_the_schedule_runs_a_pass_at_once_and_stops_when_told() -> None:
    stop = threading.Event()
    passes: list[int] = []

    def run_pass() -> None:
        passes.append(len(passes))
        if len(passes) == 3:
            stop.set()

    run_every(0.01, run_pass, stop)

    assert passes == [0, 1, 2]


def test_the_schedule_runs_no_pass_once_stopped() -> None:
    stop = threading.Event()
    stop.set()
    passes: list[int] = []

    run_every(0.01, lambda: passes.append(1), stop)

    assert passes == []
