"""Submitting with an Idempotency-Key: the first request places the order, a repeat gets it back.

The key is stored in the order's transaction, so it exists exactly when the order does: a
failed submission leaves it free for the client's retry, a successful one makes every repeat
return that order without placing anything again.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from orders_api.domain import Order, OrderStatus, OrderType, Side
from orders_api.idempotency import (
    KEY_TTL,
    IdempotencyKey,
    IdempotencyKeyInFlightError,
    IdempotencyKeyReusedError,
    IdempotentRequest,
)
from orders_api.service_layer.ordering import SubmitOrder, purge_expired_idempotency_keys, submit_order
from tests.unit.fakes import T0, FakeClock, FakePlacementRequests, FakeUnitOfWork

pytestmark = pytest.mark.unit

FIRST_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
SECOND_ID = uuid.UUID("00000000-0000-4000-8000-000000000002")
LIMIT_BUY = SubmitOrder(
    type=OrderType.LIMIT, side=Side.BUY, instrument="US0378331005", limit_price=Decimal("150.50"), quantity=10
)
REQUEST = IdempotentRequest(key="order-2024-01-02-0001", fingerprint="fingerprint-of-the-limit-buy")


class BrokerUnavailableError(Exception):
    """The broker did not confirm the placement request."""


def submit(
    uow: FakeUnitOfWork,
    placements: FakePlacementRequests,
    *,
    new_id: uuid.UUID,
    request: IdempotentRequest | None = REQUEST,
    clock: FakeClock | None = None,
) -> Order:
    """Submit the limit buy with ``request``'s key, a fixed new id and a clock (``T0`` by default)."""
    return submit_order(
        LIMIT_BUY, uow, placements, idempotency=request, now=clock or (lambda: T0), new_id=lambda: new_id
    )


def test_the_first_request_with_a_key_stores_the_key_with_the_order_it_created() -> None:
    uow = FakeUnitOfWork()
    placements = FakePlacementRequests(events=uow.events)

    order = submit(uow, placements, new_id=FIRST_ID)

    assert order.id == FIRST_ID
    assert uow.committed == {FIRST_ID: order}
    assert uow.committed_keys == {
        REQUEST.key: IdempotencyKey(REQUEST.key, REQUEST.fingerprint, FIRST_ID, created_at=T0)
    }
    assert placements.requested == [FIRST_ID]


def test_the_key_is_claimed_after_the_order_is_stored_and_before_its_placement_is_requested() -> None:
    # The key row points at the order row (a foreign key), and claiming it before publishing
    # means a concurrent request with the same key waits instead of publishing a second message.
    uow = FakeUnitOfWork()

    submit(uow, FakePlacementRequests(events=uow.events), new_id=FIRST_ID)

    assert uow.events == ["begin", "add", "claim key", "request_placement", "commit", "end"]


def test_a_repeat_with_the_same_key_and_request_returns_the_first_order_and_places_nothing() -> None:
    uow = FakeUnitOfWork()
    placements = FakePlacementRequests()
    first = submit(uow, placements, new_id=FIRST_ID)
    uow.events.clear()

    repeat = submit(uow, placements, new_id=SECOND_ID)

    assert repeat == first
    assert set(uow.committed) == {FIRST_ID}
    assert placements.requested == [FIRST_ID]
    # The repeat's own order rolled back; the answer waits for the first order to be durable.
    assert uow.events[uow.events.index("rollback") :] == [
        "rollback",
        "end",
        "begin",
        "durability barrier",
        "commit",
        "end",
    ]


def test_a_repeat_returns_the_order_as_it_stands_now() -> None:
    uow = FakeUnitOfWork()
    first = submit(uow, FakePlacementRequests(), new_id=FIRST_ID)
    placed = replace(first, status=OrderStatus.PLACED, placed_at=T0, attempts=1)
    uow.committed[FIRST_ID] = placed

    repeat = submit(uow, FakePlacementRequests(), new_id=SECOND_ID)

    assert repeat == placed


def test_the_same_key_with_a_different_request_is_refused_and_changes_nothing() -> None:
    uow = FakeUnitOfWork()
    first = submit(uow, FakePlacementRequests(), new_id=FIRST_ID)
    keys = dict(uow.committed_keys)
    placements = FakePlacementRequests()
    other = IdempotentRequest(key=REQUEST.key, fingerprint="fingerprint-of-another-order")

    with pytest.raises(IdempotencyKeyReusedError):
        submit(uow, placements, new_id=SECOND_ID, request=other)

    assert uow.committed == {FIRST_ID: first}
    assert uow.committed_keys == keys
    assert placements.requested == []


def test_a_failed_placement_request_stores_neither_the_order_nor_the_key() -> None:
    uow = FakeUnitOfWork()

    with pytest.raises(BrokerUnavailableError):
        submit(uow, FakePlacementRequests(fail_with=BrokerUnavailableError()), new_id=FIRST_ID)

    assert uow.committed == {}
    assert uow.committed_keys == {}


def test_a_retry_after_a_failure_with_the_same_key_places_the_order() -> None:
    uow = FakeUnitOfWork()
    with pytest.raises(BrokerUnavailableError):
        submit(uow, FakePlacementRequests(fail_with=BrokerUnavailableError()), new_id=FIRST_ID)
    placements = FakePlacementRequests()

    order = submit(uow, placements, new_id=SECOND_ID)

    assert set(uow.committed) == {SECOND_ID}
    assert uow.committed_keys[REQUEST.key].order_id == order.id == SECOND_ID
    assert placements.requested == [SECOND_ID]


def test_a_key_still_held_by_a_request_in_flight_is_reported_and_nothing_is_stored() -> None:
    uow = FakeUnitOfWork()
    uow.key_repository.in_flight.add(REQUEST.key)
    placements = FakePlacementRequests()

    with pytest.raises(IdempotencyKeyInFlightError):
        submit(uow, placements, new_id=FIRST_ID)

    assert uow.committed == {}
    assert uow.committed_keys == {}
    assert placements.requested == []


@pytest.mark.parametrize("same_request", [True, False], ids=["same-request", "different-request"])
def test_an_expired_key_counts_as_unused_and_places_a_new_order(same_request: bool) -> None:
    uow = FakeUnitOfWork()
    clock = FakeClock(T0)
    submit(uow, FakePlacementRequests(), new_id=FIRST_ID, clock=clock)
    clock.advance(KEY_TTL + timedelta(seconds=1))
    request = REQUEST if same_request else IdempotentRequest(REQUEST.key, "fingerprint-of-another-order")
    placements = FakePlacementRequests()

    order = submit(uow, placements, new_id=SECOND_ID, request=request, clock=clock)

    assert order.id == SECOND_ID
    assert set(uow.committed) == {FIRST_ID, SECOND_ID}
    assert uow.committed_keys == {
        REQUEST.key: IdempotencyKey(REQUEST.key, request.fingerprint, SECOND_ID, created_at=clock())
    }
    assert placements.requested == [SECOND_ID]


def test_a_key_just_inside_its_lifetime_still_returns_the_first_order() -> None:
    uow = FakeUnitOfWork()
    clock = FakeClock(T0)
    first = submit(uow, FakePlacementRequests(), new_id=FIRST_ID, clock=clock)
    clock.advance(KEY_TTL)

    assert submit(uow, FakePlacementRequests(), new_id=SECOND_ID, clock=clock) == first


def test_without_a_key_every_request_places_an_order_and_stores_no_key() -> None:
    uow = FakeUnitOfWork()
    placements = FakePlacementRequests(events=uow.events)

    submit(uow, placements, new_id=FIRST_ID, request=None)
    submit(uow, placements, new_id=SECOND_ID, request=None)

    assert set(uow.committed) == {FIRST_ID, SECOND_ID}
    assert uow.committed_keys == {}
    assert "claim key" not in uow.events


def test_purging_deletes_only_the_expired_keys_and_counts_them() -> None:
    uow = FakeUnitOfWork()
    clock = FakeClock(T0)
    submit(uow, FakePlacementRequests(), new_id=FIRST_ID, clock=clock)
    clock.advance(timedelta(hours=1))
    fresh = IdempotentRequest(key="order-2024-01-02-0002", fingerprint="fingerprint-of-the-limit-buy")
    submit(uow, FakePlacementRequests(), new_id=SECOND_ID, request=fresh, clock=clock)
    clock.advance(KEY_TTL - timedelta(minutes=30))

    purged = purge_expired_idempotency_keys(uow, now=clock)

    assert purged == 1
    assert set(uow.committed_keys) == {fresh.key}
    assert set(uow.committed) == {FIRST_ID, SECOND_ID}
