"""Dramatiq entry point for the benchmark's exchange outage: ``dramatiq bench.outage_workers``.

The production wiring (``workers.bootstrap.bootstrap``) with an exchange that refuses every
call with ``OrderPlacementError``, as a real exchange does while it is down. The benchmark runs
the API beside these workers to show that an outage of the exchange does not reach the
endpoint; the stand-in and the production entry point stay untouched.
"""

from __future__ import annotations

from orders_api.domain import Order
from orders_api.stock_exchange import OrderPlacementError
from workers.bootstrap import bootstrap
from workers.settings import WorkerSettings


def refuse(order: Order) -> None:
    """The exchange during an outage: every call fails, and is retried later by the workers."""
    raise OrderPlacementError(f"exchange outage (benchmark): order {order.id} not placed")


broker = bootstrap(WorkerSettings.from_env(), exchange=refuse)
