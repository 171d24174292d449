"""Use cases of the API: accept an order and look one up."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from orders_api.clock import utc_now
from orders_api.domain import Order, OrderType, Side
from orders_api.idempotency import IdempotencyKey, IdempotencyKeyReusedError, IdempotentRequest
from orders_api.service_layer.unit_of_work import UnitOfWork


class PlacementRequests(Protocol):
    """Where the API asks for an order to be placed; returns only once the request is durable."""

    def request_placement(self, order_id: uuid.UUID) -> None:
        """Durably ask the workers to place ``order_id``, or raise."""


class BatchPlacementRequests(PlacementRequests, Protocol):
    """Placement requests that can also be made for many orders at once."""

    def request_placements(self, order_ids: Sequence[uuid.UUID]) -> None:
        """Durably ask the workers to place every one of ``order_ids``, or raise."""


@dataclass(frozen=True)
class SubmitOrder:
    """A client's validated request to trade."""

    type: OrderType
    side: Side
    instrument: str
    limit_price: Decimal | None
    quantity: int


def submit_order(
    command: SubmitOrder,
    uow: UnitOfWork,
    placements: PlacementRequests,
    *,
    idempotency: IdempotentRequest | None = None,
    now: Callable[[], datetime] = utc_now,
    new_id: Callable[[], uuid.UUID] = uuid.uuid4,
) -> Order:
    """Store the order and durably request its placement, all or nothing.

    The message is published inside the order's transaction and the transaction commits only
    after the broker's confirm, so a returned order is both committed and certain to be placed.
    If anything fails first, the transaction rolls back; a message that was confirmed anyway
    names an order that never committed, which the worker recognises (it waits on the order's
    creation lock) and drops.

    With ``idempotency``, its key is claimed in the same transaction, after the order row it
    points to and before publishing, so the key is stored exactly when the order is: a failure
    leaves the key free for the client's retry. If the key already names an order (a repeat, or
    a concurrent request that committed first), nothing is placed and that order is returned
    as it stands now, once its commit is durable; an expired key counts as unused.

    :raises IdempotencyKeyReusedError: the key was first used with a different request.
    :raises IdempotencyKeyInFlightError: the request holding the key has not ended in time.
    """
    order = new_order(command, now=now, new_id=new_id)
    with uow:
        uow.orders.add(order)
        earlier = None
        if idempotency is not None:
            holder = _claim_key(idempotency, order, uow)
            if holder.order_id != order.id:
                earlier = _earlier_order(holder, idempotency, uow)
        if earlier is None:
            placements.request_placement(order.id)
            uow.commit()
            return order
    # Leaving without a commit rolled back the order inserted above. The earlier request's
    # commit may still be waiting for the synchronous standby: answer for it once it is durable.
    with uow:
        uow.confirm_durable()
    return earlier


def new_order(
    command: SubmitOrder,
    *,
    now: Callable[[], datetime] = utc_now,
    new_id: Callable[[], uuid.UUID] = uuid.uuid4,
) -> Order:
    """The pending order a client's request describes, with a fresh id, not yet stored."""
    return Order(
        id=new_id(),
        created_at=now(),
        type=command.type,
        side=command.side,
        instrument=command.instrument,
        limit_price=command.limit_price,
        quantity=command.quantity,
    )


def accept_orders(orders: Sequence[Order], uow: UnitOfWork, placements: BatchPlacementRequests) -> None:
    """Store new orders and durably request their placement, all of them or none.

    :func:`submit_order` for a batch (see :mod:`orders_api.service_layer.group_commit`): one
    transaction holds every order and its creation lock, every message is published and
    confirmed before it commits, and anything failing first rolls them all back. A message
    confirmed for a batch that then rolled back names an order that never committed, which the
    worker recognises and drops, as for a single order.
    """
    with uow:
        uow.orders.add_many(orders)
        placements.request_placements([order.id for order in orders])
        uow.commit()


def purge_expired_idempotency_keys(uow: UnitOfWork, *, now: Callable[[], datetime] = utc_now) -> int:
    """Delete the idempotency keys that have expired; return how many.

    Expired keys already count as unused, so this only keeps the table small; any periodic
    job may call it.
    """
    with uow:
        purged = uow.idempotency_keys.purge_expired(now())
        uow.commit()
    return purged


def _claim_key(request: IdempotentRequest, order: Order, uow: UnitOfWork) -> IdempotencyKey:
    """Claim the request's key for ``order``; return the record holding it, ours or an earlier one."""
    record = IdempotencyKey(
        key=request.key,
        request_fingerprint=request.fingerprint,
        order_id=order.id,
        created_at=order.created_at,
    )
    holder = uow.idempotency_keys.claim(record)
    if holder.order_id != order.id and holder.expired(order.created_at):
        uow.idempotency_keys.remove(holder)
        holder = uow.idempotency_keys.claim(record)
    return holder


def _earlier_order(holder: IdempotencyKey, request: IdempotentRequest, uow: UnitOfWork) -> Order:
    """The order an earlier request with the same key created, provided it asked for the same."""
    if holder.request_fingerprint != request.fingerprint:
        raise IdempotencyKeyReusedError(request.key)
    earlier = uow.orders.get(holder.order_id)
    if earlier is None:  # the foreign key makes this impossible
        raise RuntimeError(f"idempotency key {request.key!r} names order {holder.order_id}, which is missing")
    return earlier
