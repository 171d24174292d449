"""What the routes need, built once per app by :func:`orders_api.api.app.create_app`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orders_api.domain import Order
from orders_api.service_layer.group_commit import GroupCommit
from orders_api.service_layer.ordering import PlacementRequests
from orders_api.service_layer.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class IntakeItem:
    """An order for the group commit, with the id of the request that asked for it.

    A batch holds the orders of several requests, so each order brings its request's id along
    for its placement message to carry (:func:`orders_api.request_ids.bind_orders`).
    """

    order: Order
    request_id: str | None


@dataclass(frozen=True)
class OrderServices:
    """The dependencies of the order routes, kept in ``app.extensions["orders"]``."""

    unit_of_work: Callable[[], UnitOfWork]
    placements: PlacementRequests
    #: Accepts orders without an ``Idempotency-Key`` together with the others in flight.
    intake: GroupCommit[IntakeItem]
