"""The courier for exchange answers the database cannot take yet, and the actor that records them.

An answer is the one thing a worker must not lose: forgetting it lets another delivery call the
exchange again. While PostgreSQL is away, the worker that got the answer used to keep it in
memory and retry until the database came back, so a stop during the outage (a rollout, a scale
down, SIGTERM after the shutdown timeout) lost it. Instead it is handed to RabbitMQ as a
confirmed, persistent message on the placement queue itself (one more actor, so the queue's
policies, delivery limit and dead-lettering apply unchanged), and whichever worker receives it
records it once the database answers. The placement message is then acked: the answer lives on
in the broker, not in the process.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime

import dramatiq

from orders_api.service_layer.placement import (
    AnswerCourier,
    ExchangeAnswer,
    PlacementOutcome,
    parse_order_id,
    record_answer,
)
from orders_api.service_layer.unit_of_work import UnitOfWork
from orders_api.settings.workers import DATABASE_RETRY_DELAY_MS, WorkerSettings
from workers.placement_actor import (
    NOT_RETRYABLE,
    PlacementObserver,
    WaitingForDatabaseError,
    waits_for_database,
)

#: Name of the actor that records a handed-over answer.
RECORD_ANSWER_ACTOR = "record_exchange_answer"


def declare_record_answer_actor(
    broker: dramatiq.Broker,
    settings: WorkerSettings,
    unit_of_work: Callable[[], UnitOfWork],
    observer: PlacementObserver | None = None,
) -> dramatiq.Actor[[str, int, str | None, str | None], None]:
    """Declare, on the placement queue, the actor recording answers handed over by :func:`answer_courier`.

    Waiting for the database spends none of its retries, however long the outage. A second
    placement that only this record reveals is told to ``observer``.
    """

    def record_exchange_answer(order_id: str, attempt: int, placed_at: str | None, error: str | None) -> None:
        """Record what the exchange answered attempt ``attempt`` at placing the order."""
        answer = ExchangeAnswer(
            parse_order_id(order_id),
            attempt,
            placed_at=None if placed_at is None else datetime.fromisoformat(placed_at),
            error=error,
        )
        try:
            outcome = record_answer(answer, unit_of_work())
        except Exception as away:
            if not waits_for_database(away):
                raise
            raise WaitingForDatabaseError(str(away), delay=random.randint(*DATABASE_RETRY_DELAY_MS)) from away
        if outcome is PlacementOutcome.PLACED_AGAIN and observer is not None:
            observer.handled(outcome, None)

    declare = dramatiq.actor(
        actor_name=RECORD_ANSWER_ACTOR,
        queue_name=settings.placement_queue,
        broker=broker,
        max_retries=settings.placement_max_retries,
        min_backoff=settings.placement_min_backoff_ms,
        max_backoff=settings.placement_max_backoff_ms,
        throws=NOT_RETRYABLE,
    )
    actor: dramatiq.Actor[[str, int, str | None, str | None], None] = declare(record_exchange_answer)
    return actor


def answer_courier(actor: dramatiq.Actor[[str, int, str | None, str | None], None]) -> AnswerCourier:
    """Hand an answer to ``actor`` as a message the broker confirms; raises if it does not."""

    def hand_over(answer: ExchangeAnswer) -> None:
        placed_at = None if answer.placed_at is None else answer.placed_at.isoformat()
        actor.send(str(answer.order_id), answer.attempt, placed_at, answer.error)

    return hand_over
