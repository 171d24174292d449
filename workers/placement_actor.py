"""The ``place_order`` actor: the queue consumer's side of an order's placement."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import dramatiq

from orders_api.adapters.placement_queue import PLACE_ORDER_ACTOR
from orders_api.domain import ClaimHeldError, PoisonOrderError
from orders_api.service_layer.placement import (
    Exchange,
    OrderAlreadyFailedError,
    UnloadableOrderError,
    parse_order_id,
    place_on_exchange,
)
from orders_api.service_layer.unit_of_work import UnitOfWork
from workers.settings import WorkerSettings

logger = logging.getLogger(__name__)

#: Errors that no retry can fix: the message goes straight to the dead-letter queue.
NOT_RETRYABLE = (ValueError, UnloadableOrderError, PoisonOrderError, OrderAlreadyFailedError)


def declare_place_order_actor(
    broker: dramatiq.Broker,
    settings: WorkerSettings,
    unit_of_work: Callable[[], UnitOfWork],
    exchange: Exchange,
) -> dramatiq.Actor[[str], None]:
    """Declare the actor on ``broker`` with its retry policy and its dependencies bound."""

    def place_order(order_id: str) -> None:
        """Place the order named by the message; it carries an id, never the order itself."""
        try:
            place_on_exchange(parse_order_id(order_id), unit_of_work(), exchange, lease=settings.claim_lease)
        except ClaimHeldError as held:
            delay_ms = int(held.retry_after.total_seconds() * 1000) + random.randint(100, 1000)
            raise dramatiq.Retry(str(held), delay=delay_ms) from held

    declare = dramatiq.actor(
        actor_name=PLACE_ORDER_ACTOR,
        queue_name=settings.shared.placement_queue,
        broker=broker,
        max_retries=settings.max_retries,
        min_backoff=settings.min_backoff_ms,
        max_backoff=settings.max_backoff_ms,
        time_limit=settings.time_limit_ms,
        throws=NOT_RETRYABLE,
    )
    actor: dramatiq.Actor[[str], None] = declare(place_order)
    return actor
