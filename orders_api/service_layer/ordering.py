"""Use cases of the API: accept an order and look one up."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from orders_api.domain import Order, OrderType, Side
from orders_api.service_layer.unit_of_work import UnitOfWork


class PlacementRequests(Protocol):
    """Where the API asks for an order to be placed; returns only once the request is durable."""

    def request_placement(self, order_id: uuid.UUID) -> None:
        """Durably ask the workers to place ``order_id``, or raise."""


@dataclass(frozen=True)
class SubmitOrder:
    """A client's validated request to trade."""

    type: OrderType
    side: Side
    instrument: str
    limit_price: Decimal | None
    quantity: int


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC, as every timestamp of the service is."""
    return datetime.now(UTC)


def submit_order(
    command: SubmitOrder,
    uow: UnitOfWork,
    placements: PlacementRequests,
    *,
    now: Callable[[], datetime] = utc_now,
    new_id: Callable[[], uuid.UUID] = uuid.uuid4,
) -> Order:
    """Store the order and durably request its placement, all or nothing.

    The message is published inside the order's transaction and the transaction commits only
    after the broker's confirm, so a returned order is both committed and certain to be placed.
    If anything fails first, the transaction rolls back; a message that was confirmed anyway
    names an order that never committed, which the worker recognises (it waits on the order's
    creation lock) and drops.
    """
    order = Order(
        id=new_id(),
        created_at=now(),
        type=command.type,
        side=command.side,
        instrument=command.instrument,
        limit_price=command.limit_price,
        quantity=command.quantity,
    )
    with uow:
        uow.orders.add(order)
        placements.request_placement(order.id)
        uow.commit()
    return order


def get_order(order_id: uuid.UUID, uow: UnitOfWork) -> Order | None:
    """The order with its placement status, or ``None`` if no such order was committed."""
    with uow:
        return uow.orders.get(order_id)
