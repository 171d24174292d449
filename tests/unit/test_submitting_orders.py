"""Accepting an order: stored and durably requested for placement, all or nothing.

A returned order must be both committed and certain to reach a worker; an order whose placement
request failed must not be committed, or it would sit pending forever with no message naming it.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from orders_api.domain import Order, OrderStatus, OrderType, Side
from orders_api.service_layer.ordering import SubmitOrder, accept_orders, submit_order
from tests.unit.fakes import T0, FakePlacementRequests, FakeUnitOfWork, make_order

pytestmark = pytest.mark.unit

ORDER_ID = uuid.UUID("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f")
LIMIT_SELL = SubmitOrder(
    type=OrderType.LIMIT,
    side=Side.SELL,
    instrument="US0378331005",
    limit_price=Decimal("150.50"),
    quantity=10,
)


class BrokerUnavailableError(Exception):
    """The broker did not confirm the placement request."""


class CommitFailedError(Exception):
    """PostgreSQL did not confirm the commit."""


def submit(uow: FakeUnitOfWork, placements: FakePlacementRequests) -> Order:
    """Submit the limit sell order with a fixed id and clock."""
    return submit_order(LIMIT_SELL, uow, placements, now=lambda: T0, new_id=lambda: ORDER_ID)


def test_commits_the_order_once_its_placement_was_requested() -> None:
    uow = FakeUnitOfWork()
    placements = FakePlacementRequests(events=uow.events)

    order = submit(uow, placements)

    assert uow.committed == {ORDER_ID: order}
    assert uow.commits == 1
    assert placements.requested == [ORDER_ID]


def test_the_submitted_order_is_pending_and_carries_the_command_the_clock_and_the_new_id() -> None:
    uow = FakeUnitOfWork()

    order = submit(uow, FakePlacementRequests())

    assert order == Order(
        id=ORDER_ID,
        created_at=T0,
        type=OrderType.LIMIT,
        side=Side.SELL,
        instrument="US0378331005",
        limit_price=Decimal("150.50"),
        quantity=10,
        status=OrderStatus.PENDING,
        placed_at=None,
        attempts=0,
        last_error=None,
        claimed_until=None,
    )


def test_requests_placement_after_storing_the_order_and_before_committing_it() -> None:
    # Inserting first takes the creation lock a worker waits on; committing last makes the
    # commit depend on the broker's confirm.
    uow = FakeUnitOfWork()
    placements = FakePlacementRequests(events=uow.events)

    submit(uow, placements)

    assert uow.events == ["begin", "add", "request_placement", "commit", "end"]


def test_a_failed_placement_request_leaves_nothing_committed_and_is_reraised() -> None:
    uow = FakeUnitOfWork()
    outage = BrokerUnavailableError("no confirm from the broker")
    placements = FakePlacementRequests(events=uow.events, fail_with=outage)

    with pytest.raises(BrokerUnavailableError) as excinfo:
        submit(uow, placements)

    assert excinfo.value is outage
    assert uow.committed == {}
    assert uow.commits == 0
    assert uow.rollbacks == 1
    assert "commit" not in uow.events


def test_an_order_whose_placement_request_failed_cannot_be_looked_up_afterwards() -> None:
    uow = FakeUnitOfWork()

    with pytest.raises(BrokerUnavailableError):
        submit(uow, FakePlacementRequests(fail_with=BrokerUnavailableError()))

    assert ORDER_ID not in uow.committed


def test_a_failed_commit_is_reraised_after_the_placement_was_requested() -> None:
    # The worker copes with the resulting message: it finds no committed order and drops it.
    uow = FakeUnitOfWork()
    failure = CommitFailedError("connection lost during commit")
    uow.fail_commit_with = failure
    placements = FakePlacementRequests(events=uow.events)

    with pytest.raises(CommitFailedError) as excinfo:
        submit(uow, placements)

    assert excinfo.value is failure
    assert uow.committed == {}
    assert placements.requested == [ORDER_ID]


def test_leaves_orders_committed_earlier_untouched_when_a_submission_fails() -> None:
    earlier = make_order()
    uow = FakeUnitOfWork(earlier)

    with pytest.raises(BrokerUnavailableError):
        submit(uow, FakePlacementRequests(fail_with=BrokerUnavailableError()))

    assert uow.committed == {earlier.id: earlier}


def test_a_submitted_order_is_committed_as_returned() -> None:
    uow = FakeUnitOfWork()
    order = submit(uow, FakePlacementRequests())

    assert uow.committed[ORDER_ID] == order


# Accepting a batch of orders (group commit)


def test_a_batch_of_orders_is_stored_requested_and_committed_together() -> None:
    uow = FakeUnitOfWork()
    placements = FakePlacementRequests(events=uow.events)
    batch = [make_order(), make_order(), make_order()]

    accept_orders(batch, uow, placements)

    assert uow.committed == {order.id: order for order in batch}
    assert placements.requested == [order.id for order in batch]
    assert uow.events == ["begin", "add_many", "request_placements", "commit", "end"]


def test_a_failed_placement_request_commits_no_order_of_the_batch() -> None:
    uow = FakeUnitOfWork()
    outage = BrokerUnavailableError("one message of the batch was nacked")
    placements = FakePlacementRequests(events=uow.events, fail_with=outage)

    with pytest.raises(BrokerUnavailableError):
        accept_orders([make_order(), make_order()], uow, placements)

    assert uow.committed == {}
    assert uow.rollbacks == 1
