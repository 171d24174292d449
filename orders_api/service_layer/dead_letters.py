"""Use cases of the dead-letter tooling: look at the placement messages given up on, and replay them.

A placement message is dead-lettered when its order is given up on: an error no retry can fix,
retries exhausted, an order that keeps killing its worker. The order is marked ``failed`` in
PostgreSQL at the same time and stays so whatever becomes of the message, so the database, not
the queue (whose messages expire after 7 days), is the record of what failed. (A retry the broker
refused to take is dead-lettered too, but its order stays ``pending``, for the stuck-order
sweep.) Replaying reopens the order and asks for its placement with a fresh message, with a
fresh retry budget; the dead letter is removed only once that is committed.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from orders_api.domain import Order, OrderStatus
from orders_api.service_layer.ordering import PlacementRequests
from orders_api.service_layer.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    """One message in the dead-letter queue, as far as it could be decoded."""

    #: The Dramatiq message id; a replay names the message by it.
    message_id: str
    #: The Dramatiq actor the message was for.
    actor_name: str | None
    #: The order the message asked to place; ``None`` when it names no valid order id.
    order_id: uuid.UUID | None
    #: Retries Dramatiq had made of the message when it was given up.
    retries: int
    #: When the broker dead-lettered it, if the broker said so.
    dead_lettered_at: datetime | None
    #: Why the broker dead-lettered it (``rejected``: the worker gave up; ``delivery_limit``: it was
    #: redelivered too often), if the broker said so.
    reason: str | None
    #: The whole Dramatiq message (empty when the body is not a JSON object).
    message: Mapping[str, Any]
    #: The queue's handle for removing this message while it is held.
    receipt: int = field(compare=False, repr=False)


class HeldDeadLetters(Protocol):
    """Dead letters taken from the queue for a while; those not removed go back when the hold ends."""

    def __iter__(self) -> Iterator[DeadLetter]:
        """The held messages, oldest first, fetched as far as the iteration goes."""

    def remove(self, letter: DeadLetter) -> None:
        """Delete ``letter`` from the queue for good."""


class DeadLetterQueue(Protocol):
    """Where dead-lettered placement messages wait for an operator."""

    def hold(self) -> AbstractContextManager[HeldDeadLetters]:
        """Hold the queue's messages until the context ends; no one else sees them meanwhile."""


class DeadLetterQueueError(Exception):
    """The dead-letter queue could not be read or changed (broker unreachable, connection lost)."""


class DeadLetterNotFoundError(Exception):
    """No message in the dead-letter queue has the given id."""


class NotReplayableError(Exception):
    """The dead letter names no order that exists, so a replay could place nothing; it stays in the queue."""


class ReplayOutcome(enum.Enum):
    """What replaying one dead letter did; in every case the dead letter was removed."""

    REOPENED = "order reopened and its placement requested again"
    REQUESTED_AGAIN = "order still pending; its placement requested again"
    ALREADY_PLACED = "order already placed; nothing to replay"


@dataclass(frozen=True)
class Replay:
    """The result of replaying one dead letter: an outcome, or why it was left in the queue."""

    letter: DeadLetter
    outcome: ReplayOutcome | None = None
    left_because: str | None = None


class ReplayInterruptedError(Exception):
    """Replaying stopped at a dead letter (its placement request was not confirmed, say).

    :attr:`done` holds what was replayed before; the dead letter it stopped at is either still
    in the queue, or (if only its removal failed) replayed already, and a second replay of it
    then just asks once more for the placement of its pending order, which is harmless.
    """

    def __init__(self, done: list[Replay], letter: DeadLetter, cause: Exception) -> None:
        super().__init__(f"replay of dead letter {letter.message_id} failed: {cause}")
        self.done = done


@dataclass(frozen=True)
class DeadLetterReport:
    """A dead letter beside its order as PostgreSQL has it (``None``: no such order)."""

    letter: DeadLetter
    order: Order | None


def list_dead_letters(
    queue: DeadLetterQueue, unit_of_work: Callable[[], UnitOfWork]
) -> list[DeadLetterReport]:
    """Every dead letter with its order; the messages go back to the queue unchanged."""
    with queue.hold() as held:
        letters = list(held)
    logger.info("listed %d dead letters", len(letters))
    return [DeadLetterReport(letter, _order_of(letter, unit_of_work)) for letter in letters]


def show_dead_letter(
    message_id: str, queue: DeadLetterQueue, unit_of_work: Callable[[], UnitOfWork]
) -> DeadLetterReport:
    """The dead letter with id ``message_id`` and its order; the message goes back to the queue unchanged.

    :raises DeadLetterNotFoundError: no such message is in the queue.
    """
    with queue.hold() as held:
        letter = _find(held, message_id)
    logger.info("showed dead letter %s (order %s)", message_id, letter.order_id)
    return DeadLetterReport(letter, _order_of(letter, unit_of_work))


def replay_dead_letter(
    message_id: str,
    queue: DeadLetterQueue,
    unit_of_work: Callable[[], UnitOfWork],
    placements: PlacementRequests,
) -> Replay:
    """Replay the dead letter with id ``message_id``: see :func:`replay_all_dead_letters`.

    :raises DeadLetterNotFoundError: no such message is in the queue.
    :raises NotReplayableError: it names no existing order; it stays in the queue.
    :raises ReplayInterruptedError: the replay failed part way.
    """
    with queue.hold() as held:
        letter = _find(held, message_id)
        return _replay_and_remove(letter, held, unit_of_work, placements, done=[])


def replay_all_dead_letters(
    queue: DeadLetterQueue,
    unit_of_work: Callable[[], UnitOfWork],
    placements: PlacementRequests,
) -> list[Replay]:
    """Replay every dead letter; those naming no existing order are left in the queue and reported.

    For each, in one transaction: a ``failed`` order is set back to ``pending`` (its claim
    cleared, its attempts and last error kept), a new placement message is published and
    confirmed, and the transaction commits; then the dead letter is removed. An order still
    ``pending`` only gets the new message; for a ``placed`` one the dead letter is just removed.

    :raises ReplayInterruptedError: a replay failed part way; the dead letters after it were not touched.
    """
    done: list[Replay] = []
    with queue.hold() as held:
        for letter in held:
            try:
                done.append(_replay_and_remove(letter, held, unit_of_work, placements, done=done))
            except NotReplayableError as reason:
                logger.warning("dead letter %s left in the queue: %s", letter.message_id, reason)
                done.append(Replay(letter, left_because=str(reason)))
    return done


def _find(held: HeldDeadLetters, message_id: str) -> DeadLetter:
    for letter in held:
        if letter.message_id == message_id:
            return letter
    raise DeadLetterNotFoundError(f"no dead letter with message id {message_id!r}")


def _order_of(letter: DeadLetter, unit_of_work: Callable[[], UnitOfWork]) -> Order | None:
    if letter.order_id is None:
        return None
    with unit_of_work() as uow:
        return uow.orders.get(letter.order_id)


def _replay_and_remove(
    letter: DeadLetter,
    held: HeldDeadLetters,
    unit_of_work: Callable[[], UnitOfWork],
    placements: PlacementRequests,
    *,
    done: list[Replay],
) -> Replay:
    try:
        outcome = _replay(letter, unit_of_work(), placements)
        held.remove(letter)
    except NotReplayableError:
        raise
    except Exception as error:  # the database, the publish or the removal failed
        raise ReplayInterruptedError(done, letter, error) from error
    logger.info(
        "replayed dead letter %s of order %s: %s; dead letter removed",
        letter.message_id,
        letter.order_id,
        outcome.value,
    )
    return Replay(letter, outcome)


def _replay(letter: DeadLetter, uow: UnitOfWork, placements: PlacementRequests) -> ReplayOutcome:
    """Reopen the letter's order and request its placement in one transaction committed after the confirm."""
    if letter.order_id is None:
        raise NotReplayableError(f"message {letter.message_id} names no valid order id")
    with uow:
        order = uow.orders.get(letter.order_id, for_update=True)
        if order is None:
            raise NotReplayableError(f"order {letter.order_id} does not exist")
        if order.status is OrderStatus.PLACED:
            return ReplayOutcome.ALREADY_PLACED
        uow.orders.update(order.reopened())
        placements.request_placement(order.id)
        uow.commit()
    return ReplayOutcome.REOPENED if order.status is OrderStatus.FAILED else ReplayOutcome.REQUESTED_AGAIN
