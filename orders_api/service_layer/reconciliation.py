"""Use case of the reconciliation sweep: ask again for the placement of orders whose message was lost.

A pending order always has a placement message somewhere: in the placement queue, in the delay
queue waiting out a retry, or in a worker's hands. If the broker loses it (an unreplicated queue
on a node that died, a queue purged by mistake), nothing would ever place the order. Every
healthy pending order is touched (``updated_at``) at least once per retry backoff plus a claim's
lease, so one that nobody has touched for much longer than that has most likely lost its
message; the sweep publishes a new placement request for it.

If the message was not lost after all (it sat in a long backlog), the new one is a second
delivery of the same order, which the worker already handles: a claim lets only one delivery
call the exchange at a time, and a delivery for an order that is no longer pending does nothing.
A spurious republish costs one extra message, never a second placement.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta

from orders_api.service_layer.ordering import PlacementRequests
from orders_api.service_layer.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)

#: Orders locked and republished per transaction: bounds how long their rows stay locked (a
#: worker claiming one of them waits for the batch) and how much one failed publish undoes.
BATCH_SIZE = 100
#: Batches per pass at most, so that a pass ends even if orders go stale faster than it works.
MAX_BATCHES = 1000


class SweepInterruptedError(Exception):
    """The broker did not confirm a republished request; the sweep stopped there.

    The orders in :attr:`republished` were republished and committed before it stopped; the one
    that failed stays stale and is retried by the next pass.
    """

    def __init__(self, republished: list[uuid.UUID], order_id: uuid.UUID, cause: Exception) -> None:
        super().__init__(f"could not republish the placement request of order {order_id}: {cause}")
        self.republished = republished


def republish_stale_orders(
    unit_of_work: Callable[[], UnitOfWork],
    placements: PlacementRequests,
    *,
    stale_after: timedelta,
    batch_size: int = BATCH_SIZE,
    max_batches: int = MAX_BATCHES,
) -> list[uuid.UUID]:
    """Republish the placement request of every pending order untouched for ``stale_after``; return their ids.

    Each batch is one transaction: lock stale orders (skipping rows another sweep or a worker
    holds), publish a request for each and wait for its confirm, touch the order, and commit
    once the batch is done. A touched order is fresh again, so neither this pass nor a
    concurrent one republishes it twice; an order is touched only after its request is
    confirmed, so a failed publish leaves it stale for the next pass.

    :raises SweepInterruptedError: a request was not confirmed.
    """
    republished: list[uuid.UUID] = []
    for _ in range(max_batches):
        found = _republish_batch(unit_of_work(), placements, stale_after, batch_size, republished)
        if found < batch_size:
            break
    return republished


def _republish_batch(
    uow: UnitOfWork,
    placements: PlacementRequests,
    stale_after: timedelta,
    batch_size: int,
    republished: list[uuid.UUID],
) -> int:
    """Republish one batch, appending to ``republished`` what was committed; return how many were stale."""
    failure: tuple[uuid.UUID, Exception] | None = None
    done: list[uuid.UUID] = []
    with uow:
        stale = uow.orders.lock_stale_pending(stale_after, limit=batch_size)
        for order in stale:
            try:
                placements.request_placement(order.id)
            except Exception as error:  # PublishError, or the publisher's connection failing
                failure = (order.id, error)
                break
            uow.orders.update(order)  # writes nothing new but updated_at: the order is fresh again
            done.append(order.id)
        if done:
            uow.commit()
    for order_id in done:
        logger.warning(
            "order %s was pending and untouched for over %s: republished its placement request",
            order_id,
            stale_after,
        )
    republished.extend(done)
    if failure is not None:
        raise SweepInterruptedError(republished, *failure) from failure[1]
    return len(stale)
