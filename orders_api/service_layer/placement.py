"""Use cases of the workers: place a committed order on the exchange exactly once, or fail it.

The exchange call happens outside any transaction: the order is claimed by one conditional
``UPDATE``, the exchange is called, and the outcome is recorded by another. A claim is a lease
that its holder renews while it lives (:class:`~orders_api.service_layer.claims.ClaimKeeper`), so
a redelivered message finds the order claimed and waits, while a claim left behind by a crashed
worker expires and the order is placed after all.

Once the exchange has answered, its answer is recorded whatever it takes, since forgetting it
would let another delivery call the exchange again for the same order. If the database does not
take it at once, the answer is handed to a durable courier (a confirmed message that any worker
records once the database is back), so that the process that got it need not outlive the
outage: a stop, a rollout or a crash after the hand-off loses nothing. Only when the courier
fails too (the broker away as well) does the holder keep trying both, its claim renewed meanwhile.

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
from dataclasses import dataclass
from datetime import datetime, timedelta

from orders_api.clock import utc_now
from orders_api.domain import ClaimHeldError, Order, OrderSettledError, OrderStatus
from orders_api.service_layer.claims import ClaimKeeper
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
    #: Placed by this delivery's exchange call after another attempt had placed it too: the
    #: order is on the exchange twice (a worker paused or killed inside the call).
    PLACED_AGAIN = "placed again"
    ALREADY_PLACED = "already placed"
    ORPHAN_DROPPED = "orphan dropped"


@dataclass(frozen=True)
class ExchangeAnswer:
    """What the exchange answered one attempt (claim) at placing an order: placed, or an error."""

    order_id: uuid.UUID
    attempt: int
    #: When the exchange accepted the order; ``None`` when it did not.
    placed_at: datetime | None = None
    #: Why it did not, when it did not.
    error: str | None = None

    def applied_to(self, order: Order) -> Order:
        """``order`` as this answer leaves it: placed, or its claim released for a retry."""
        if self.placed_at is not None:
            return order.placed(self.placed_at, self.attempt)
        return order.released(self.attempt, self.error or "no reason given")


class _HandedOver(enum.Enum):
    """The answer went to the courier, to be recorded later."""

    HANDED_OVER = "handed over"


_HANDED_OVER = _HandedOver.HANDED_OVER

#: Carries an answer that the database cannot take now to a durable place from which it is
#: recorded later (:func:`record_answer`); raises if it cannot.
AnswerCourier = Callable[[ExchangeAnswer], None]


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
    courier: AnswerCourier | None = None,
    on_takeover: Callable[[uuid.UUID], None] | None = None,
    now: Callable[[], datetime] = utc_now,
    sleep: Callable[[float], None] = time.sleep,
) -> PlacementOutcome:
    """Claim the order, call the exchange once, and record the outcome.

    The claim is renewed by ``claims`` from the moment it is taken until the outcome is
    recorded or handed to ``courier``. Once the exchange has answered (or failed), recording
    the outcome is retried until either succeeds: giving up would leave the claim to expire and
    another delivery to call the exchange a second time. The caller must not interrupt that (the
    actor lifts its time limit once the exchange has answered).

    Just before the call, the claim is confirmed to be still this delivery's
    (:meth:`ClaimKeeper.still_held`, free unless the process was paused since it took it).
    ``on_takeover`` is told when the claim taken over was abandoned mid-placement: the exchange
    may already hold the order, and this call may place it a second time.

    :raises ClaimHeldError: another delivery is placing the order right now, or may be.
    :raises OrderAlreadyFailedError: the order already failed; its message is to be dead-lettered.
    :raises Exception: whatever the exchange raised, after the error is recorded and the claim released.
    """
    taken_at = claims.clock()
    claimed = _claim(
        order_id, uow, lease=claims.lease, takeover_delay=claims.takeover_delay(), on_takeover=on_takeover
    )
    if isinstance(claimed, PlacementOutcome):
        return claimed
    claims.hold(claimed, taken_at)
    try:
        if not claims.still_held(order_id):
            raise ClaimHeldError(order_id, claims.lease)
        try:
            exchange(claimed)
        except BaseException as error:  # a time limit interrupts with a BaseException; release for it too
            refused = ExchangeAnswer(order_id, claimed.attempts, error=_describe(error))
            _record_until_done(refused, claimed, uow, courier, sleep=sleep)
            raise
        placed = ExchangeAnswer(order_id, claimed.attempts, placed_at=now())
        recorded = _record_until_done(placed, claimed, uow, courier, sleep=sleep)
    finally:
        claims.let_go(order_id)
    if recorded is _HANDED_OVER:
        return PlacementOutcome.PLACED
    return placement_outcome(placed, recorded)


def record_answer(answer: ExchangeAnswer, uow: UnitOfWork) -> PlacementOutcome | None:
    """Record an answer that its holder handed to the courier; for a placement, say what it came to.

    Applied to the order as stored now, like every outcome: a release for an attempt whose claim
    was taken over since changes nothing, and a placement of an order another attempt placed is
    counted as a second placement.
    """
    recorded = _record(answer.order_id, uow, answer.applied_to)
    return None if answer.placed_at is None else placement_outcome(answer, recorded)


def placement_outcome(placed: ExchangeAnswer, recorded: Order | None) -> PlacementOutcome:
    """What recording ``placed`` came to: a placement, or a second one (logged at ERROR with both attempts).

    ``recorded`` is the order as the record left it, ``None`` if the record changed nothing
    (recorded before).
    """
    if recorded is not None and placed.attempt in recorded.duplicate_attempts:
        logger.error(
            "order %s placed twice on the exchange: by attempt %s and again by attempt %d",
            placed.order_id,
            recorded.placed_attempt,
            placed.attempt,
        )
        return PlacementOutcome.PLACED_AGAIN
    logger.info("order %s placed on attempt %d", placed.order_id, placed.attempt)
    return PlacementOutcome.PLACED


def mark_failed(order_id: uuid.UUID, uow: UnitOfWork, error: BaseException) -> bool:
    """Record that the order will not be placed; return whether a pending order was failed.

    :raises ClaimHeldError: another delivery holds a live claim on the order (on the database's
        clock); the order is left to it, and the caller retries instead of giving up.
    """
    failed = _record(order_id, uow, lambda order: order.failed(_describe(error), uow.orders.database_now()))
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
    on_takeover: Callable[[uuid.UUID], None] | None,
) -> Order | PlacementOutcome:
    """Claim the order on the database's clock, read with the order itself."""
    with uow:
        order, database_now = uow.orders.get_with_clock(order_id)
        if order is None:
            # Not committed, or not yet: wait for the creating transaction, if one is still open,
            # then look again. A row that is visible was committed, so it needs no such wait.
            uow.orders.wait_for_creation(order_id)
            order, database_now = uow.orders.get_with_clock(order_id)
        while order is not None:
            try:
                claimed = order.claim(database_now, lease, takeover_delay=takeover_delay)
            except OrderSettledError as settled:
                if order.status is OrderStatus.PLACED:
                    uow.confirm_durable()  # the message goes: the placement it read must stay
                    logger.info("ignoring repeated message: %s", settled)
                    return PlacementOutcome.ALREADY_PLACED
                # An operator's replay reopens a failed order and publishes its message before it
                # commits: wait on the row lock the replay holds, and decide on what it committed.
                locked = uow.orders.get(order_id, for_update=True)
                if locked == order:
                    uow.confirm_durable()
                    raise OrderAlreadyFailedError(str(settled)) from settled
                order = locked
                continue
            if uow.orders.compare_and_set(order, claimed):
                uow.commit()
                if claimed.abandoned_claims > order.abandoned_claims:
                    logger.warning(
                        "order %s: attempt %d abandoned mid-placement, taken over by attempt %d;"
                        " the exchange may hold the order already",
                        order_id,
                        order.attempts,
                        claimed.attempts,
                    )
                    if on_takeover is not None:
                        on_takeover(order_id)
                return claimed
            # Another delivery, or the sweep, changed the order since it was read: decide again.
            order, database_now = uow.orders.get_with_clock(order_id)
        # Not on a standby whose replay is behind the primary's commits (a failover's new
        # primary before its promotion): there, a committed order may not be visible yet.
        uow.confirm_durable()
    logger.warning("dropping message for order %s: the order was never committed", order_id)
    return PlacementOutcome.ORPHAN_DROPPED


def _record_until_done(
    answer: ExchangeAnswer,
    claimed: Order,
    uow: UnitOfWork,
    courier: AnswerCourier | None,
    *,
    sleep: Callable[[float], None],
) -> Order | _HandedOver | None:
    """Record ``answer`` on the claimed order or hand it to ``courier``, retrying for as long as it takes.

    Return the order as changed, ``None`` if the answer changed nothing, or :data:`_HANDED_OVER`.

    The exchange has answered, and nobody else may ask it again while this claim is held, so
    the answer must reach the database: every failure is logged and retried, every
    :data:`LAST_RECORD_RETRY_S` at most once the database is back.
    """
    delay_s = FIRST_RECORD_RETRY_S
    while True:
        try:
            return _record(claimed.id, uow, answer.applied_to, seen=claimed)
        except Exception as error:
            logger.warning(
                "the exchange's answer for order %s cannot be recorded yet: %s", claimed.id, _describe(error)
            )
        if courier is not None:
            try:
                courier(answer)
            except Exception as error:
                logger.warning(
                    "nor handed to the courier (%s); retrying in %.1f s", _describe(error), delay_s
                )
            else:
                logger.warning("the exchange's answer for order %s handed to the courier", claimed.id)
                return _HANDED_OVER
        sleep(delay_s)
        delay_s = min(2 * delay_s, LAST_RECORD_RETRY_S)


def _record(
    order_id: uuid.UUID, uow: UnitOfWork, change: Callable[[Order], Order], *, seen: Order | None = None
) -> Order | None:
    """Apply ``change`` to the order as it is stored now; return it if it changed.

    ``seen`` is the order as the caller last knew it (its claim): tried first, it saves a read
    when nothing happened meanwhile. Applying the change to the stored order, never writing back
    a stale copy, means a change computed from stale state cannot overwrite what another
    delivery recorded meanwhile. When the stored order already shows the change, the caller
    will drop what it carries; so that record must be durable first.
    """
    with uow:
        current = seen if seen is not None else uow.orders.get(order_id)
        while current is not None:
            changed = change(current)
            if changed == current:
                uow.confirm_durable()
                return None
            if uow.orders.compare_and_set(current, changed):
                uow.commit()
                return changed
            current = uow.orders.get(order_id)
        return None


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
