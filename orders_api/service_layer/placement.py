"""Use cases of the workers: place a committed order on the exchange exactly once, or fail it.

The exchange call happens outside any transaction: the order is claimed in one short
transaction, the exchange is called, and the outcome is recorded in another. A claim is a lease,
so that a redelivered message finds the order claimed and waits, while a claim left behind by a
crashed worker expires and the order is placed after all.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from orders_api.domain import Order, OrderSettledError, OrderStatus
from orders_api.service_layer.ordering import utc_now
from orders_api.service_layer.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)

#: Seconds before the first retry of recording a placement, doubled up to :data:`LAST_RECORD_RETRY_S`.
FIRST_RECORD_RETRY_S = 0.1
#: Longest pause between two tries of recording a placement.
LAST_RECORD_RETRY_S = 2.0
#: Time kept in hand before the actor's time limit when retrying to record a placement.
RECORD_MARGIN = timedelta(seconds=1)

#: The exchange as the workers see it: places an order or raises.
Exchange = Callable[[Order], None]


class PlacementOutcome(enum.Enum):
    """What handling one placement message achieved."""

    PLACED = "placed"
    ALREADY_PLACED = "already placed"
    ORPHAN_DROPPED = "orphan dropped"


class OrderAlreadyFailedError(Exception):
    """A message for an order that has already failed: dead-letter it (again).

    The first rejection of a failed order's message can be lost with the broker connection, and
    the message then comes back; rejecting it again makes sure the dead-letter queue, where an
    operator looks, holds a message for every failed order.
    """


class UnloadableOrderError(Exception):
    """The message names no valid order id; no retry can make it placeable."""


def parse_order_id(raw: object) -> uuid.UUID:
    """The order id carried by a message.

    :raises UnloadableOrderError: it is not a UUID.
    """
    try:
        return uuid.UUID(str(raw))
    except ValueError as error:
        raise UnloadableOrderError(f"message carries no valid order id: {raw!r}") from error


def place_on_exchange(
    order_id: uuid.UUID,
    uow: UnitOfWork,
    exchange: Exchange,
    *,
    lease: timedelta,
    now: Callable[[], datetime] = utc_now,
    sleep: Callable[[float], None] = time.sleep,
) -> PlacementOutcome:
    """Claim the order, call the exchange once, and record the outcome.

    Once the exchange has taken the order, recording ``placed`` is retried for as long as the
    claim safely lasts: if the database is briefly away, giving up at once would leave the claim
    to expire and another delivery to place the order a second time.

    :raises ClaimHeldError: another delivery is placing the order right now.
    :raises OrderAlreadyFailedError: the order already failed; its message is to be dead-lettered.
    :raises Exception: whatever the exchange raised, after the error is recorded and the claim released.
    """
    claimed = _claim(order_id, uow, lease=lease, now=now)
    if isinstance(claimed, PlacementOutcome):
        return claimed
    try:
        exchange(claimed)
    except BaseException as error:  # a time limit interrupts with a BaseException; release for it too
        reason = _describe(error)
        _record(order_id, uow, lambda order: order.released(claimed.claimed_until, reason))
        raise
    placed_at = now()
    # The actor's time limit (half the lease) ends the message about half a lease after the
    # claim began; stop retrying a margin before that, with the claim still ours.
    deadline = (claimed.claimed_until or placed_at) - lease / 2 - RECORD_MARGIN
    _record_placement(order_id, uow, placed_at, deadline=deadline, now=now, sleep=sleep)
    logger.info("order %s placed on attempt %d", order_id, claimed.attempts)
    return PlacementOutcome.PLACED


def mark_failed(order_id: uuid.UUID, uow: UnitOfWork, error: BaseException) -> bool:
    """Record that the order will not be placed; return whether a pending order was failed."""
    failed = _record(order_id, uow, lambda order: order.failed(_describe(error)))
    if failed is None:
        return False
    logger.warning("order %s failed: %s", order_id, failed.last_error)
    return True


def _claim(
    order_id: uuid.UUID, uow: UnitOfWork, *, lease: timedelta, now: Callable[[], datetime]
) -> Order | PlacementOutcome:
    with uow:
        order = uow.orders.get(order_id, for_update=True)
        if order is None:
            # Not committed, or not yet: wait for the creating transaction, if one is still open,
            # then look again. A row that is visible was committed, so it needs no such wait.
            uow.orders.wait_for_creation(order_id)
            order = uow.orders.get(order_id, for_update=True)
        if order is None:
            logger.warning("dropping message for order %s: the order was never committed", order_id)
            return PlacementOutcome.ORPHAN_DROPPED
        try:
            claimed = order.claim(now(), lease)
        except OrderSettledError as settled:
            if order.status is OrderStatus.FAILED:
                raise OrderAlreadyFailedError(str(settled)) from settled
            logger.info("ignoring repeated message: %s", settled)
            return PlacementOutcome.ALREADY_PLACED
        uow.orders.update(claimed)
        uow.commit()
    return claimed


def _record_placement(
    order_id: uuid.UUID,
    uow: UnitOfWork,
    placed_at: datetime,
    *,
    deadline: datetime,
    now: Callable[[], datetime],
    sleep: Callable[[float], None],
) -> None:
    """Record ``placed``, retrying with backoff until ``deadline``; then the error propagates."""
    delay_s = FIRST_RECORD_RETRY_S
    while True:
        try:
            _record(order_id, uow, lambda order: order.placed(placed_at))
            return
        except Exception as error:
            if now() + timedelta(seconds=delay_s) >= deadline:
                raise
            logger.warning(
                "order %s was placed but cannot be recorded yet (%s); retrying in %.1f s",
                order_id,
                _describe(error),
                delay_s,
            )
        sleep(delay_s)
        delay_s = min(2 * delay_s, LAST_RECORD_RETRY_S)


def _record(order_id: uuid.UUID, uow: UnitOfWork, change: Callable[[Order], Order]) -> Order | None:
    """Apply ``change`` to the order as it is stored now, under its row lock; return it if it changed.

    Re-reading instead of writing back the claimed copy means a change computed from stale
    state can never overwrite what another delivery recorded meanwhile.
    """
    with uow:
        current = uow.orders.get(order_id, for_update=True)
        if current is None:
            return None
        changed = change(current)
        if changed == current:
            return None
        uow.orders.update(changed)
        uow.commit()
        return changed


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
