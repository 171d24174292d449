"""The repository's compare-and-set against PostgreSQL: the workers' every write goes through it.

A placement reads the order, decides, and writes only if the stored order is still the one it
read; these tests pin the comparison down on the real table, NULLs and timestamps included,
since a comparison that is wrongly true would let a stale decision overwrite another's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from orders_api.adapters.postgres.unit_of_work import SqlAlchemyUnitOfWork
from orders_api.domain import Order, OrderStatus
from tests.unit.fakes import T0, make_order

pytestmark = pytest.mark.integration

LEASE = timedelta(seconds=60)


def stored(unit_of_work: Callable[[], SqlAlchemyUnitOfWork], order: Order) -> Order:
    with unit_of_work() as uow:
        uow.orders.add(order)
        uow.commit()
    return reread(unit_of_work, order)


def reread(unit_of_work: Callable[[], SqlAlchemyUnitOfWork], order: Order) -> Order:
    with unit_of_work() as uow:
        found = uow.orders.get(order.id)
    assert found is not None
    return found


def compare_and_set(unit_of_work: Callable[[], SqlAlchemyUnitOfWork], seen: Order, changed: Order) -> bool:
    with unit_of_work() as uow:
        written = uow.orders.compare_and_set(seen, changed)
        uow.commit()
    return written


def test_writes_the_change_when_the_order_is_as_it_was_read(
    unit_of_work: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    order = stored(unit_of_work, make_order())
    claimed = order.claim(T0, LEASE)

    assert compare_and_set(unit_of_work, order, claimed) is True
    assert reread(unit_of_work, order) == claimed


def test_writes_nothing_when_another_writer_changed_the_order_since_it_was_read(
    unit_of_work: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    order = stored(unit_of_work, make_order())
    rival = order.claim(T0, LEASE)
    assert compare_and_set(unit_of_work, order, rival) is True

    # A second delivery decided on the order as it was before the rival's claim.
    late = order.claim(T0 + timedelta(seconds=1), LEASE)

    assert compare_and_set(unit_of_work, order, late) is False
    assert reread(unit_of_work, order) == rival


CLAIM = T0 + LEASE


@pytest.mark.parametrize(
    ("row", "seen"),
    [
        pytest.param({}, {"claimed_until": CLAIM}, id="a claim where the row has none (NULL)"),
        pytest.param({"claimed_until": CLAIM}, {"claimed_until": None}, id="no claim where the row has one"),
        pytest.param(
            {"claimed_until": CLAIM},
            {"claimed_until": CLAIM + timedelta(microseconds=1)},
            id="claims 1 µs apart",
        ),
        pytest.param({}, {"last_error": "an error"}, id="an error where the row has none (NULL)"),
        pytest.param({}, {"placed_at": T0}, id="a placement time where the row has none (NULL)"),
        pytest.param({}, {"attempts": 1}, id="attempts"),
        pytest.param({}, {"abandoned_claims": 1}, id="abandoned claims"),
        pytest.param({}, {"status": OrderStatus.FAILED}, id="status"),
    ],
)
def test_any_difference_in_a_changeable_field_counts_as_changed(
    unit_of_work: Callable[[], SqlAlchemyUnitOfWork], row: dict[str, Any], seen: dict[str, Any]
) -> None:
    order = stored(unit_of_work, make_order(**row))
    stale = replace(order, **seen)

    assert (
        compare_and_set(unit_of_work, stale, replace(order, status=OrderStatus.PLACED, placed_at=T0)) is False
    )
    assert reread(unit_of_work, order) == order


def test_renewing_claims_extends_only_the_open_claims_of_the_attempts_held(
    unit_of_work: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    held = stored(unit_of_work, make_order().claim(T0, LEASE))
    taken_over = stored(unit_of_work, make_order().claim(T0, LEASE).claim(T0 + 2 * LEASE, LEASE))
    placed = stored(unit_of_work, make_order().claim(T0, LEASE).placed(T0, 1))
    released = stored(unit_of_work, make_order().claim(T0, LEASE).released(1, "refused"))

    with unit_of_work() as uow:
        renewed = uow.orders.renew_claims({held.id: 1, taken_over.id: 1, placed.id: 1, released.id: 1}, LEASE)
        database_now = uow.orders.database_now()
        uow.commit()

    assert renewed == 1
    assert reread(unit_of_work, held) == replace(held, claimed_until=database_now + LEASE)
    for untouched in (taken_over, placed, released):
        assert reread(unit_of_work, untouched) == untouched


def test_renewing_no_claims_is_a_round_trip_that_changes_nothing(
    unit_of_work: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    with unit_of_work() as uow:
        assert uow.orders.renew_claims({}, LEASE) == 0


def test_an_order_is_read_with_the_databases_clock(unit_of_work: Callable[[], SqlAlchemyUnitOfWork]) -> None:
    order = stored(unit_of_work, make_order())

    with unit_of_work() as uow:
        read, read_at = uow.orders.get_with_clock(order.id)
        missing, missing_at = uow.orders.get_with_clock(uuid.uuid4())
        database_now = uow.orders.database_now()

    assert (read, missing) == (order, None)
    assert read_at == missing_at == database_now  # one transaction: PostgreSQL's now() stands still


def test_which_attempts_placed_an_order_survive_a_round_trip(
    unit_of_work: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    placed_twice = make_order().claim(T0, LEASE).placed(T0, 1).placed(T0, 2)

    read = reread(unit_of_work, stored(unit_of_work, placed_twice))

    assert (read.placed_attempt, read.duplicate_attempts) == (1, (2,))
