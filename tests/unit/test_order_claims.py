"""The claim on an order: a lease that lets only one delivery at a time call the exchange.

These rules are what keeps a redelivered message from placing an order twice, while still
letting the order be placed after a worker crashed holding its claim.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from orders_api.domain import (
    MAX_ABANDONED_CLAIMS,
    ClaimHeldError,
    OrderSettledError,
    OrderStatus,
    PoisonOrderError,
)
from tests.unit.fakes import T0, make_order

pytestmark = pytest.mark.unit

LEASE = timedelta(seconds=60)


def test_claiming_an_unclaimed_pending_order_counts_an_attempt_and_starts_a_lease() -> None:
    order = make_order(attempts=0)

    claimed = order.claim(T0, LEASE)

    assert claimed.status is OrderStatus.PENDING
    assert claimed.attempts == 1
    assert claimed.claimed_until == T0 + LEASE


def test_claiming_changes_nothing_but_the_attempts_and_the_lease() -> None:
    order = make_order(attempts=3, last_error="OrderPlacementError: earlier outage")

    claimed = order.claim(T0, LEASE)

    assert claimed == replace(order, attempts=4, claimed_until=T0 + LEASE)


def test_claiming_returns_a_new_order_and_leaves_the_original_unclaimed() -> None:
    order = make_order()

    order.claim(T0, LEASE)

    assert order.claimed_until is None
    assert order.attempts == 0


@pytest.mark.parametrize(
    "expired_by",
    [
        pytest.param(timedelta(0), id="lease ending exactly now"),
        pytest.param(timedelta(microseconds=1), id="lease ended a microsecond ago"),
        pytest.param(timedelta(hours=1), id="lease ended an hour ago"),
    ],
)
def test_an_expired_claim_can_be_taken_over_so_a_crashed_worker_does_not_strand_the_order(
    expired_by: timedelta,
) -> None:
    order = make_order(attempts=1, claimed_until=T0 - expired_by)

    claimed = order.claim(T0, LEASE)

    assert claimed.attempts == 2
    assert claimed.claimed_until == T0 + LEASE


@pytest.mark.parametrize(
    "remaining",
    [
        pytest.param(timedelta(microseconds=1), id="a microsecond left"),
        pytest.param(timedelta(seconds=42), id="42 seconds left"),
        pytest.param(LEASE, id="the whole lease left"),
    ],
)
def test_a_live_claim_is_refused_with_the_time_left_on_it(remaining: timedelta) -> None:
    order = make_order(attempts=1, claimed_until=T0 + remaining)

    with pytest.raises(ClaimHeldError) as excinfo:
        order.claim(T0, LEASE)

    assert excinfo.value.retry_after == remaining
    assert str(order.id) in str(excinfo.value)


@pytest.mark.parametrize("status", [OrderStatus.PLACED, OrderStatus.FAILED])
def test_a_settled_order_cannot_be_claimed_again(status: OrderStatus) -> None:
    order = make_order(status=status, attempts=1)

    with pytest.raises(OrderSettledError, match=str(order.id)):
        order.claim(T0, LEASE)


@pytest.mark.parametrize("status", [OrderStatus.PLACED, OrderStatus.FAILED])
def test_a_settled_order_reports_settled_rather_than_claimed_even_under_a_live_claim(
    status: OrderStatus,
) -> None:
    # A settled order has nothing left to do: its redelivery must be dropped, not retried later.
    order = make_order(status=status, claimed_until=T0 + LEASE)

    with pytest.raises(OrderSettledError):
        order.claim(T0, LEASE)


def test_taking_over_an_expired_claim_counts_it_as_abandoned() -> None:
    order = make_order(claimed_until=T0 - timedelta(seconds=1))

    claimed = order.claim(T0, LEASE)

    assert claimed.abandoned_claims == 1


def test_an_order_whose_placement_was_cut_short_too_often_in_a_row_is_poison() -> None:
    order = make_order(claimed_until=T0 - timedelta(seconds=1), abandoned_claims=MAX_ABANDONED_CLAIMS - 1)

    with pytest.raises(PoisonOrderError):
        order.claim(T0, LEASE)


def test_a_claim_that_ends_with_an_outcome_clears_the_count_of_abandoned_ones() -> None:
    claimed = make_order(claimed_until=T0 - timedelta(seconds=1), abandoned_claims=1).claim(T0, LEASE)
    assert claimed.abandoned_claims == 2

    released = claimed.released(claimed.attempts, "OrderPlacementError: unavailable")
    placed = claimed.placed(T0, claimed.attempts)

    assert released.abandoned_claims == 0
    assert placed.abandoned_claims == 0


def test_an_expired_claim_is_not_taken_over_before_the_claimer_has_seen_the_database_for_a_lease() -> None:
    # After an outage every claim looks expired, its holder's included; the holder renews it
    # (or records its outcome) as soon as it reaches the database again.
    order = make_order(claimed_until=T0 - timedelta(seconds=1), attempts=1)

    with pytest.raises(ClaimHeldError) as held:
        order.claim(T0, LEASE, takeover_delay=timedelta(seconds=7))

    assert held.value.retry_after == timedelta(seconds=7)


def test_a_release_names_its_claim_by_attempt_so_a_renewed_claim_is_still_released() -> None:
    claimed = make_order(attempts=1).claim(T0, LEASE)
    renewed = replace(claimed, claimed_until=T0 + 2 * LEASE)

    released = renewed.released(claimed.attempts, "OrderPlacementError: unavailable")

    assert released.claimed_until is None
    assert released.last_error == "OrderPlacementError: unavailable"


def test_a_release_of_a_claim_taken_over_since_changes_nothing() -> None:
    ours = make_order(attempts=1).claim(T0, LEASE)
    taken_over = ours.claim(T0 + 2 * LEASE, LEASE)

    assert taken_over.released(ours.attempts, "OrderPlacementError: unavailable") == taken_over


def test_an_order_under_another_deliverys_live_claim_cannot_be_failed() -> None:
    # Its holder is placing it right now, and the exchange's answer decides.
    order = make_order(attempts=2).claim(T0, LEASE)

    with pytest.raises(ClaimHeldError) as held:
        order.failed("OrderPlacementError: retries exhausted", T0 + timedelta(seconds=1))

    assert held.value.retry_after == LEASE - timedelta(seconds=1)


def test_an_order_whose_claim_expired_can_be_failed() -> None:
    order = make_order(attempts=2).claim(T0, LEASE)

    failed = order.failed("OrderPlacementError: retries exhausted", T0 + LEASE)

    assert failed.status is OrderStatus.FAILED
    assert failed.claimed_until is None


def test_a_placement_recorded_by_another_attempt_counts_that_attempt_once_as_a_duplicate() -> None:
    placed = make_order().claim(T0, LEASE).placed(T0, 1)

    again = placed.placed(T0 + LEASE, 2)

    assert again.duplicate_attempts == (2,)
    assert (again.placed_attempt, again.placed_at) == (1, T0)
    assert again.placed(T0 + 2 * LEASE, 2) == again


def test_recording_the_same_attempts_placement_twice_is_no_duplicate() -> None:
    placed = make_order().claim(T0, LEASE).placed(T0, 1)

    assert placed.placed(T0 + LEASE, 1) == placed
