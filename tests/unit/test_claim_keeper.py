"""The claim keeper: the claims a worker process holds stay alive while it reaches the database.

And only a process that has reached the database for a whole lease may take over an expired
claim, since after an outage every claim looks expired, those of living holders included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from orders_api.domain import Order, OrderStatus
from orders_api.service_layer.claims import RENEWALS_PER_LEASE, ClaimKeeper
from tests.unit.fakes import T0, FakeClock, FakeUnitOfWork, make_order

pytestmark = pytest.mark.unit

LEASE = timedelta(seconds=15)


def keeper_for(uow: FakeUnitOfWork, clock: FakeClock) -> ClaimKeeper:
    """A keeper on ``uow``, whose fake database runs on ``clock`` as the keeper does."""
    uow.repository.clock = clock
    return ClaimKeeper(lambda: uow, LEASE, now=clock)


def holding_a_claim() -> tuple[FakeClock, Order, FakeUnitOfWork, ClaimKeeper]:
    """A keeper holding a claim taken at T0 on a stored order, with the clock at T0."""
    clock = FakeClock(T0)
    claimed = make_order(attempts=0).claim(T0, LEASE)
    uow = FakeUnitOfWork(claimed)
    keeper = keeper_for(uow, clock)
    keeper.hold(claimed, T0)
    return clock, claimed, uow, keeper


def renew_for(keeper: ClaimKeeper, clock: FakeClock, span: timedelta) -> None:
    """Renew on schedule, every :attr:`ClaimKeeper.renew_every`, for ``span``, each renewal succeeding."""
    end = clock.current + span
    while True:
        assert keeper.renew()
        if clock.current >= end:
            return
        clock.advance(keeper.renew_every)


def test_a_held_claim_is_extended_by_a_lease_from_each_renewal() -> None:
    clock, claimed, uow, keeper = holding_a_claim()

    clock.advance(timedelta(seconds=10))
    keeper.renew()

    assert uow.committed[claimed.id].claimed_until == T0 + timedelta(seconds=10) + LEASE


def test_a_claim_with_more_than_half_its_lease_left_is_not_renewed_yet() -> None:
    # Most placements end within a second: renewing them would only make their record's
    # compare-and-set miss.
    clock, claimed, uow, keeper = holding_a_claim()

    clock.advance(LEASE / 2 - timedelta(seconds=1))
    assert keeper.renew()

    assert uow.committed[claimed.id] == claimed


def test_a_claim_let_go_is_no_longer_renewed() -> None:
    clock, claimed, uow, keeper = holding_a_claim()
    keeper.let_go(claimed.id)

    clock.advance(timedelta(seconds=10))
    keeper.renew()

    assert uow.committed[claimed.id].claimed_until == T0 + LEASE


@pytest.mark.parametrize(
    "since_taken",
    [
        pytest.param(
            lambda order: replace(order, status=OrderStatus.PLACED, claimed_until=None), id="settled"
        ),
        pytest.param(lambda order: replace(order, attempts=order.attempts + 1), id="taken-over"),
    ],
)
def test_a_claim_settled_or_taken_over_since_is_not_renewed(since_taken: Callable[[Order], Order]) -> None:
    clock = FakeClock(T0)
    claimed = make_order(attempts=0).claim(T0, LEASE)
    changed = since_taken(claimed)
    uow = FakeUnitOfWork(changed)
    keeper = keeper_for(uow, clock)
    keeper.hold(claimed, T0)

    clock.advance(timedelta(seconds=10))
    keeper.renew()

    assert uow.committed[claimed.id] == changed


def test_no_claim_may_be_taken_over_before_the_database_was_reached_for_a_whole_lease() -> None:
    clock = FakeClock(T0)
    keeper = keeper_for(FakeUnitOfWork(), clock)
    assert keeper.takeover_delay() == LEASE

    renew_for(keeper, clock, LEASE - keeper.renew_every)
    assert keeper.takeover_delay() == keeper.renew_every

    clock.advance(keeper.renew_every)
    keeper.renew()
    assert keeper.takeover_delay() == timedelta(0)


def test_a_failed_renewal_starts_the_whole_lease_again() -> None:
    clock = FakeClock(T0)
    uow = FakeUnitOfWork()
    keeper = keeper_for(uow, clock)
    renew_for(keeper, clock, 2 * LEASE)
    assert keeper.takeover_delay() == timedelta(0)

    uow.fail_commit_with = RuntimeError("database unavailable")
    clock.advance(keeper.renew_every)
    assert not keeper.renew()
    assert keeper.takeover_delay() == LEASE

    uow.fail_commit_with = None
    clock.advance(keeper.renew_every)
    renew_for(keeper, clock, 2 * keeper.renew_every)
    assert keeper.takeover_delay() == LEASE - 2 * keeper.renew_every


def test_a_renewal_that_took_too_long_counts_as_a_gap() -> None:
    # A frozen server answers at last, once it resumes: the renewal succeeds, but a holder may
    # not have had its chance to renew meanwhile.
    clock = FakeClock(T0)
    keeper = keeper_for(FakeUnitOfWork(), clock)
    renew_for(keeper, clock, 2 * LEASE)

    clock.advance(3 * keeper.renew_every)
    keeper.renew()

    assert keeper.takeover_delay() == LEASE


def test_an_overdue_renewal_forbids_taking_over_even_before_it_fails() -> None:
    clock = FakeClock(T0)
    keeper = keeper_for(FakeUnitOfWork(), clock)
    renew_for(keeper, clock, 2 * LEASE)

    clock.advance(3 * keeper.renew_every)

    assert keeper.takeover_delay() == LEASE


def test_a_lease_is_renewed_several_times_before_it_runs_out() -> None:
    keeper = keeper_for(FakeUnitOfWork(), FakeClock(T0))

    assert keeper.renew_every * RENEWALS_PER_LEASE == LEASE
    assert RENEWALS_PER_LEASE >= 3


def test_a_claim_with_more_than_half_its_lease_left_is_held_without_asking_the_database() -> None:
    clock, claimed, uow, keeper = holding_a_claim()
    clock.advance(LEASE / 2 - timedelta(seconds=1))
    uow.events.clear()

    assert keeper.still_held(claimed.id)
    assert uow.events == []


def test_a_holder_paused_past_half_its_lease_renews_its_claim_before_it_may_call() -> None:
    clock, claimed, uow, keeper = holding_a_claim()
    clock.advance(LEASE * 3)  # paused: no renewal ran, and nobody took the claim over

    assert keeper.still_held(claimed.id)
    assert uow.committed[claimed.id].claimed_until == clock.current + LEASE


def test_a_holder_paused_while_its_claim_was_taken_over_learns_it_before_it_may_call() -> None:
    clock, claimed, uow, keeper = holding_a_claim()
    clock.advance(LEASE * 2)
    taken_over = uow.committed[claimed.id].claim(clock.current, LEASE)
    uow.committed[claimed.id] = taken_over

    assert not keeper.still_held(claimed.id)
    assert uow.committed[claimed.id] == taken_over
