"""Use cases of the workers: place a committed order on the exchange exactly once, or fail it.

The exchange call happens outside any transaction: the order is claimed by one conditional
``UPDATE``, the exchange is called, and the outcome is recorded by another. A claim is a lease
that its holder renews while it lives (:class:`~orders_api.service_layer.claims.ClaimKeeper`), so
a redelivered message finds the order claimed and waits, while a claim left behind by a crashed
worker expires and the order is placed after all.

Once the exchange has answered, its answer is recorded whatever it takes: the recording is
retried for as long as the process lives, with the claim renewed meanwhile, so that no outage of
the database, however long, lets another delivery call the exchange again for the same order.

Every change is a compare-and-set (:meth:`OrderRepository.compare_and_set`): the change is
computed from the order as read and written only if the stored order is still that one, else
read again. No row lock is held between the read and the write, and a placement costs three
statements (read, claim, record) and no transaction of its own, which is what lets two worker
processes keep 256 placements in flight on two cores (docs/benchmarks.md).
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from orders_api.domain import Order, OrderSettledError, OrderStatus
from orders_api.service_layer.claims import ClaimKeeper
from orders_api.service_layer.ordering import utc_now
from orders_api.service_layer.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)

#: Seconds before the first retry of recording an outcome, doubled up to :data:`LAST_RECORD_RETRY_S`.
FIRST_RECORD_RETRY_S = 0.1
#: Longest pause between two tries of recording an outcome: how late, at worst, it is recorded
#: once the database is back.
LAST_RECORD_RETRY_S = 2.0

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
    claims: ClaimKeeper,
    now: Callable[[], datetime] = utc_now,
    sleep: Callable[[float], None] = time.sleep,
) -> PlacementOutcome:
    """Claim the order, call the exchange once, and record the outcome.

    The claim is renewed by ``claims`` from the moment it is taken until the outcome is
    recorded. Once the exchange has answered (or failed), recording the outcome is retried
    until it succeeds: giving up would leave the claim to expire and another delivery to call
    the exchange a second time. The caller must not interrupt that (the actor lifts its time
    limit once the exchange has answered).

    :raises ClaimHeldError: another delivery is placing the order right now, or may be.
    :raises OrderAlreadyFailedError: the order already failed; its message is to be dead-lettered.
    :raises Exception: whatever the exchange raised, after the error is recorded and the claim released.
    """
    claimed = _claim(order_id, uow, lease=claims.lease, takeover_delay=claims.takeover_delay(), now=now)
    if isinstance(claimed, PlacementOutcome):
        return claimed
    claims.hold(claimed)
    try:
        try:
            exchange(claimed)
        except BaseException as error:  # a time limit interrupts with a BaseException; release for it too
            reason = _describe(error)
            _record_until_done(
                claimed, uow, lambda order: order.released(claimed.attempts, reason), sleep=sleep
            )
            raise
        placed_at = now()
        _record_until_done(claimed, uow, lambda order: order.placed(placed_at), sleep=sleep)
    finally:
        claims.let_go(order_id)
    logger.info("order %s placed on attempt %d", order_id, claimed.attempts)
    return PlacementOutcome.PLACED


def mark_failed(
    order_id: uuid.UUID, uow: UnitOfWork, error: BaseException, *, now: Callable[[], datetime] = utc_now
) -> bool:
    """Record that the order will not be placed; return whether a pending order was failed.

    :raises ClaimHeldError: another delivery holds a live claim on the order; the order is left
        to it, and the caller retries instead of giving up.
    """
    failed = _record(order_id, uow, lambda order: order.failed(_describe(error), now()))
    if failed is None:
        return False
    logger.warning("order %s failed: %s", order_id, failed.last_error)
    return True


def note_still_waiting(order_id: uuid.UUID, uow: UnitOfWork) -> None:
    """Touch a pending order whose message is being put back to wait for the exchange.

    The stale-order sweep takes a pending order that nobody touched for long for one whose
    message was lost, and republishes it. Every claim and release touches the order, but while
    the circuit breaker holds placements back there are none, so the waiting message touches
    the order itself, once per retry: after a long outage the sweep would otherwise republish
    every order in the backlog.
    """
    with uow:
        order = uow.orders.get(order_id)
        if order is not None and order.status is OrderStatus.PENDING:
            uow.orders.compare_and_set(order, order)  # writes nothing new but updated_at
            uow.commit()


def _claim(
    order_id: uuid.UUID,
    uow: UnitOfWork,
    *,
    lease: timedelta,
    takeover_delay: timedelta,
    now: Callable[[], datetime],
) -> Order | PlacementOutcome:
    with uow:
        order = uow.orders.get(order_id)
        if order is None:
            # Not committed, or not yet: wait for the creating transaction, if one is still open,
            # then look again. A row that is visible was committed, so it needs no such wait.
            uow.orders.wait_for_creation(order_id)
            order = uow.orders.get(order_id)
        while order is not None:
            try:
                claimed = order.claim(now(), lease, takeover_delay=takeover_delay)
            except OrderSettledError as settled:
                if order.status is OrderStatus.PLACED:
                    logger.info("ignoring repeated message: %s", settled)
                    return PlacementOutcome.ALREADY_PLACED
                # An operator's replay reopens a failed order and publishes its message before it
                # commits: wait on the row lock the replay holds, and decide on what it committed.
                locked = uow.orders.get(order_id, for_update=True)
                if locked == order:
                    raise OrderAlreadyFailedError(str(settled)) from settled
                order = locked
                continue
            if uow.orders.compare_and_set(order, claimed):
                uow.commit()
                return claimed
            # Another delivery, or the sweep, changed the order since it was read: decide again.
            order = uow.orders.get(order_id)
    logger.warning("dropping message for order %s: the order was never committed", order_id)
    return PlacementOutcome.ORPHAN_DROPPED


def _record_until_done(
    claimed: Order, uow: UnitOfWork, change: Callable[[Order], Order], *, sleep: Callable[[float], None]
) -> None:
    """Apply ``change`` to the claimed order, retrying with backoff for as long as it takes.

    The exchange has answered, and nobody else may ask it again while this claim is held, so
    the answer must reach the database: every failure is logged and retried, every
    :data:`LAST_RECORD_RETRY_S` at most once the database is back.
    """
    delay_s = FIRST_RECORD_RETRY_S
    while True:
        try:
            _record(claimed.id, uow, change, seen=claimed)
            return
        except Exception as error:
            logger.warning(
                "the exchange's answer for order %s cannot be recorded yet (%s); retrying in %.1f s",
                claimed.id,
                _describe(error),
                delay_s,
            )
        sleep(delay_s)
        delay_s = min(2 * delay_s, LAST_RECORD_RETRY_S)


def _record(
    order_id: uuid.UUID, uow: UnitOfWork, change: Callable[[Order], Order], *, seen: Order | None = None
) -> Order | None:
    """Apply ``change`` to the order as it is stored now; return it if it changed.

    ``seen`` is the order as the caller last knew it (its claim): tried first, it saves a read
    when nothing happened meanwhile. Applying the change to the stored order, never writing back
    a stale copy, means a change computed from stale state cannot overwrite what another
    delivery recorded meanwhile.
    """
    with uow:
        current = seen if seen is not None else uow.orders.get(order_id)
        while current is not None:
            changed = change(current)
            if changed == current:
                return None
            if uow.orders.compare_and_set(current, changed):
                uow.commit()
                return changed
            current = uow.orders.get(order_id)
        return None


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
