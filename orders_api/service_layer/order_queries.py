"""Use cases that only read: one order with its executions, and a page of the list of orders."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from orders_api.domain import Order
from orders_api.executions import ExecutionReport
from orders_api.listing import ListPosition, OrderListing
from orders_api.service_layer.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class OrderDetail:
    """An order and the execution reports applied to it, by ``seq``."""

    order: Order
    executions: list[ExecutionReport]


@dataclass(frozen=True)
class OrderPage:
    """One page of orders, newest first; ``next`` is where the next page starts, ``None`` after the last."""

    orders: list[Order]
    next: ListPosition | None


def get_order_detail(order_id: uuid.UUID, uow: UnitOfWork) -> OrderDetail | None:
    """The order and its executions as of one snapshot, or ``None`` if no such order was committed.

    The order is read before its executions: the applier stores the reports and the totals
    they move in one transaction, so the list may show a report committed between the two
    reads, but never lacks one the totals count.
    """
    with uow:
        order = uow.orders.get(order_id)
        if order is None:
            return None
        return OrderDetail(order, uow.orders.executions_of(order_id))


def list_orders(listing: OrderListing, uow: UnitOfWork) -> OrderPage:
    """A page of the orders ``listing`` asks for, and where the next page starts.

    One order more than the page holds is read, so that the last page says it is the last
    rather than sending the client for an empty one.
    """
    with uow:
        found = uow.orders.list_page(replace(listing, limit=listing.limit + 1))
    page = found[: listing.limit]
    more = len(found) > listing.limit
    return OrderPage(page, ListPosition(page[-1].created_at, page[-1].id) if more else None)
