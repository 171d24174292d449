"""Use cases of the workers: place a committed order on the exchange exactly once, or fail it.

The exchange call happens outside any transaction: the order is claimed in one short
transaction, the exchange is called, and the outcome is recorded in another. A claim is a lease,
so that a redelivered message finds the order claimed and waits, while a claim left behind by a
crashed worker expires and the order is placed after all.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from orders_api.domain import Order, OrderSettledError
from orders_api.service_layer.ordering import utc_now
from orders_api.service_layer.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)

#: The exchange as the workers see it: places an order or raises.
Exchange = Callable[[Order], None]


class PlacementOutcome(enum.Enum):
    """What handling one placement message achieved."""

    PLACED = "placed"
    ALREADY_SETTLED = "already settled"
    ORPHAN_DROPPED = "orphan dropped"


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
) -> PlacementOutcome:
    """Claim the order, call the exchange once, and record the outcome.

    :raises ClaimHeldError: another delivery is placing the order right now.
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
    _record(order_id, uow, lambda order: order.placed(placed_at))
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
        uow.orders.wait_for_creation(order_id)
        order = uow.orders.get(order_id, for_update=True)
        if order is None:
            logger.warning("dropping message for order %s: the order was never committed", order_id)
            return PlacementOutcome.ORPHAN_DROPPED
        try:
            claimed = order.claim(now(), lease)
        except OrderSettledError as settled:
            logger.info("ignoring repeated message: %s", settled)
            return PlacementOutcome.ALREADY_SETTLED
        uow.orders.update(claimed)
        uow.commit()
    return claimed


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
